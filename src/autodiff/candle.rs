//! sst layers as candle ops (feature `candle`, candle-core 0.11 on the CPU).
//!
//! ```ignore
//! let layer = sst::compile("layer pick: categorical(10) { temperature: 0.5 }")?.layer("pick").clone();
//! let theta = x.matmul(&w)?;                                  // [batch, 10], on the tape
//! let z = sst::autodiff::candle::apply(&layer, &theta, &Options::default().seed(step))?;
//! let loss = (z * target)?.sum_all()?.neg()?;
//! let grads = loss.backward()?;                               // through the layer's backward
//! ```
//!
//! `θ` is an f32 or f64 tensor of the layer's shape with any batch axes; `z` has `θ`'s shape
//! (one sample per batch row). For `reinforce`, [`sample`] and [`Sampled::surrogate`]: add the
//! surrogate of the per-row losses to the loss; its value is 0 and its gradient the
//! score-function estimate.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Error, Layout, Result, Shape, Tensor, WithDType};

use super::Recorded;
use crate::{Layer, Options, Real, RequestError};

/// [`sample`]'s `z`: the layer on `θ` as an op of `θ`'s graph.
pub fn apply(layer: &Layer, theta: &Tensor, opts: &Options) -> Result<Tensor> {
    Ok(sample(layer, theta, opts)?.z)
}

/// The layer on `θ` as an op of `θ`'s graph: `z`, and the forward pass kept for a REINFORCE
/// surrogate.
pub fn sample(layer: &Layer, theta: &Tensor, opts: &Options) -> Result<Sampled> {
    let saved = Arc::new(Mutex::new(None));
    let op = LayerOp {
        layer: layer.clone(),
        opts: *opts,
        saved: Arc::clone(&saved),
    };
    let z = theta.apply_op1(op)?;
    Ok(Sampled {
        z,
        theta: theta.clone(),
        saved,
    })
}

/// A layer's output on a candle graph.
pub struct Sampled {
    /// The output, shaped like `θ` (with a leading samples axis for several samples).
    pub z: Tensor,
    theta: Tensor,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl Sampled {
    /// The REINFORCE surrogate of the `losses` (one per sample and batch row, shaped like `z`
    /// without the support's axes; read as data, not differentiated): a scalar of value 0 whose gradient with respect
    /// to `θ` is `(f − b)·∇_θ log q(z|θ)` with the spec's baseline. Add it to the loss.
    pub fn surrogate(&self, losses: &Tensor) -> Result<Tensor> {
        let losses = losses
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        self.theta.apply_op1(SurrogateOp {
            saved: Arc::clone(&self.saved),
            losses,
        })
    }
}

/// The forward pass of one application, in the precision it ran in.
enum Saved {
    F32(Recorded<f32>),
    F64(Recorded<f64>),
}

/// The layer as a candle op; `saved` keeps its forward pass for `bwd` and the surrogate.
struct LayerOp {
    layer: Layer,
    opts: Options,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl LayerOp {
    /// The layer's forward pass on one `θ`.
    fn record<F: Real>(&self, data: &[F], dims: &[usize]) -> Result<Recorded<F>> {
        Recorded::forward(&self.layer, data, dims, &self.opts).map_err(Error::msg)
    }
}

impl CustomOp1 for LayerOp {
    fn name(&self) -> &'static str {
        "sst_layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let (start, end) = contiguous(&self.layer, layout)?;
        let (saved, z) = match storage {
            CpuStorage::F32(v) => {
                let r = self.record(&v[start..end], dims)?;
                let z = CpuStorage::F32(r.z().iter().copied().collect());
                (Saved::F32(r), z)
            }
            CpuStorage::F64(v) => {
                let r = self.record(&v[start..end], dims)?;
                let z = CpuStorage::F64(r.z().iter().copied().collect());
                (Saved::F64(r), z)
            }
            other => return Err(Error::msg(wrong_dtype(&self.layer, other.dtype()))),
        };
        let shape = match &saved {
            Saved::F32(r) => Shape::from(r.z().shape()),
            Saved::F64(r) => Shape::from(r.z().shape()),
        };
        *lock(&self.saved) = Some(saved);
        Ok((z, shape))
    }

    fn bwd(&self, theta: &Tensor, _z: &Tensor, grad_z: &Tensor) -> Result<Option<Tensor>> {
        let saved = lock(&self.saved);
        let grad = match saved.as_ref().ok_or_else(|| Error::msg(NOT_RUN))? {
            Saved::F32(r) => layer_grad(r, theta, grad_z)?,
            Saved::F64(r) => layer_grad(r, theta, grad_z)?,
        };
        Ok(Some(grad))
    }
}

/// The REINFORCE surrogate of one application: value 0, gradient the score function.
struct SurrogateOp {
    saved: Arc<Mutex<Option<Saved>>>,
    losses: Vec<f64>,
}

impl CustomOp1 for SurrogateOp {
    fn name(&self) -> &'static str {
        "sst_reinforce_surrogate"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let zero = match storage {
            CpuStorage::F32(_) => CpuStorage::F32(vec![0.0]),
            _ => CpuStorage::F64(vec![0.0]),
        };
        Ok((zero, Shape::from(())))
    }

    fn bwd(&self, theta: &Tensor, _: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let saved = lock(&self.saved);
        let grad = match saved.as_ref().ok_or_else(|| Error::msg(NOT_RUN))? {
            Saved::F32(r) => surrogate_grad(r, &self.losses, theta, grad_res)?,
            Saved::F64(r) => surrogate_grad(r, &self.losses, theta, grad_res)?,
        };
        Ok(Some(grad))
    }
}

/// `∂L/∂θ` as a tensor like `θ`, for `∂L/∂z = grad_z`, by the layer's backward.
fn layer_grad<F: Real + WithDType>(
    r: &Recorded<F>,
    theta: &Tensor,
    grad_z: &Tensor,
) -> Result<Tensor> {
    let g = grad_z.flatten_all()?.to_dtype(F::DTYPE)?.to_vec1::<F>()?;
    let mut grad = vec![F::zero(); theta.elem_count()];
    r.add_backward(&g, &mut grad).map_err(Error::msg)?;
    Tensor::from_vec(grad, theta.shape(), theta.device())
}

/// The surrogate's gradient as a tensor like `θ`, scaled by the cotangent `grad_res` it gets.
fn surrogate_grad<F: Real + WithDType>(
    r: &Recorded<F>,
    losses: &[f64],
    theta: &Tensor,
    grad_res: &Tensor,
) -> Result<Tensor> {
    let scale = grad_res.to_dtype(F::DTYPE)?.to_scalar::<F>()?;
    let mut grad = vec![F::zero(); theta.elem_count()];
    r.add_surrogate(losses, scale, &mut grad)
        .map_err(Error::msg)?;
    Tensor::from_vec(grad, theta.shape(), theta.device())
}

const NOT_RUN: &str = "sst: the layer's forward pass did not run on this graph";

/// The forward pass's slot, also after a panic elsewhere (it holds plain data).
fn lock(saved: &Mutex<Option<Saved>>) -> std::sync::MutexGuard<'_, Option<Saved>> {
    saved.lock().unwrap_or_else(|e| e.into_inner())
}

/// The range of a contiguous `θ` in its storage; a strided one is a request error.
fn contiguous(layer: &Layer, layout: &Layout) -> Result<(usize, usize)> {
    layout.contiguous_offsets().ok_or_else(|| {
        Error::msg(layer.error(
            "theta",
            "the tensor is not contiguous; call `.contiguous()` first",
        ))
    })
}

/// The request error for a dtype other than f32 and f64.
fn wrong_dtype(layer: &Layer, dtype: DType) -> RequestError {
    layer.error(
        "theta",
        format!("expected an f32 or f64 tensor, found {dtype:?}"),
    )
}
