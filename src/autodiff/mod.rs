//! Layers inside autodiff frameworks: one op adapter that the integrations share
//! (`candle.rs`, feature `candle`; `dfdx.rs`, feature `dfdx`).
//!
//! A tape needs three things from an op: run it forward on the tape's input, keep what its
//! backward needs, and add `∂L/∂θ` into the input's gradient when the tape is walked back.
//! [`Recorded`] is that, for one application of a [`Layer`] to a `θ` of any batch shape: `z` is
//! shaped like `θ`, with a leading samples axis when `Options::samples` asks for more than one
//! (the samples' gradients are summed into `θ`'s).
//!
//! The estimators through a tape:
//! - `relaxed`, `straight_through`, `gumbel_rao`: the layer's backward for the cotangent the tape
//!   brings ([`Recorded::add_backward`]);
//! - `reinforce`: the output is a hard sample with no pathwise gradient (its backward adds
//!   nothing); the gradient comes from a *surrogate* of the per-row losses
//!   ([`Recorded::add_surrogate`]), whose value is 0 and whose gradient is the score-function
//!   estimate `(f − b)·∇_θ log q(z|θ)` with the spec's baseline.
//!
//! The temperature schedule follows the training step the caller puts in [`Options::step`].

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "dfdx")]
pub mod dfdx;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::ir::Estimator;
use crate::{Forward, Layer, Options, Real, RequestError};

/// One application of a layer on a tape: its forward pass, kept for the backward.
pub struct Recorded<F> {
    layer: Layer,
    fwd: Forward<F>,
}

impl<F: Real> Recorded<F> {
    /// Runs `layer` forward on `θ` (`data` row-major, shaped `shape`).
    pub fn forward(
        layer: &Layer,
        data: &[F],
        shape: &[usize],
        opts: &Options,
    ) -> Result<Self, RequestError> {
        let theta = ArrayViewD::from_shape(IxDyn(shape), data).map_err(|_| {
            layer.error(
                "theta",
                format!("{} numbers do not fill the shape {shape:?}", data.len()),
            )
        })?;
        let fwd = layer.try_forward(theta, opts)?;
        Ok(Recorded {
            layer: layer.clone(),
            fwd,
        })
    }

    /// The output `z`, shaped like `θ` (with a leading samples axis for several samples).
    pub fn z(&self) -> &ArrayD<F> {
        &self.fwd.z
    }

    /// The forward pass (its `w`, mode, temperature, report).
    pub fn forward_pass(&self) -> &Forward<F> {
        &self.fwd
    }

    /// `grad_theta += ∂L/∂θ` for `∂L/∂z = grad_z` (shaped like `z`) by the layer's estimator
    /// and backward rule, summed over the samples; nothing for `reinforce`, whose gradient is
    /// the surrogate's.
    pub fn add_backward(&self, grad_z: &[F], grad_theta: &mut [F]) -> Result<(), RequestError> {
        if let Estimator::Reinforce { .. } = self.layer.plan().program.estimator {
            return Ok(());
        }
        let cotangent = ArrayViewD::from_shape(self.fwd.z.raw_dim(), grad_z).map_err(|_| {
            self.layer.error(
                "cotangent",
                format!(
                    "expected {} numbers shaped {:?}, found {}",
                    self.fwd.z.len(),
                    self.fwd.z.shape(),
                    grad_z.len()
                ),
            )
        })?;
        let grad = self.layer.try_backward(&self.fwd, cotangent)?;
        add_over_samples(grad_theta, grad.iter().copied());
        Ok(())
    }

    /// `grad_theta += scale · (f − b)·∇_θ log q(z|θ)`, summed over the samples, for the losses
    /// `f` (one per sample and batch row, shaped like `z` without the support's axes) and the
    /// spec's baseline (`leave_one_out` takes the other samples of the same row): the
    /// gradient of the REINFORCE surrogate `Σ_rows stop_gradient(f − b) · log q(z|θ)`, scaled by
    /// the cotangent `scale` the tape brings to the surrogate.
    pub fn add_surrogate(
        &self,
        losses: &[f64],
        scale: F,
        grad_theta: &mut [F],
    ) -> Result<(), RequestError> {
        let rows = &self.fwd.z.shape()[..self.fwd.z.ndim() - self.support_axes()];
        let losses = ArrayViewD::from_shape(IxDyn(rows), losses).map_err(|_| {
            self.layer.error(
                "losses",
                format!("expected one loss per batch row, shape {rows:?}"),
            )
        })?;
        let grad = self.layer.try_reinforce(&self.fwd, losses)?;
        add_over_samples(grad_theta, grad.iter().map(|&g| g * scale));
        Ok(())
    }

    /// The number of the support's own axes at the end of `θ`'s shape.
    fn support_axes(&self) -> usize {
        self.layer.plan().support.shape().len()
    }
}

/// `out_i += Σ_s v_{s,i}` for `v` holding one `out`-shaped block per sample.
fn add_over_samples<F: Real>(out: &mut [F], v: impl Iterator<Item = F>) {
    let len = out.len();
    for (k, vi) in v.enumerate() {
        out[k % len] = out[k % len] + vi;
    }
}
