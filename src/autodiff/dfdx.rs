//! sst layers on dfdx tapes (feature `dfdx`, dfdx 0.13 on the CPU).
//!
//! `apply(&layer, theta, &opts)` takes a `Tensor<S, E, Cpu, T>` of the layer's shape with any
//! batch axes (`E` = f32 or f64) and returns `z` of the same shape (so one sample per batch row:
//! dfdx's shapes are types) carrying the same tape: with
//! an `OwnedTape`, `backward()` adds the layer's `∂L/∂θ` into `θ`'s gradient. dfdx keeps its
//! `try_unary_op` private, so the op is made by dfdx's public route: `split_tape`, a backward op
//! on the tape that reads `z`'s gradient and adds into `θ`'s (`Gradients::get_or_alloc_mut`),
//! `put_tape`. For `reinforce`, [`sample`] and [`Surrogate::add_to`].

use std::rc::Rc;

use dfdx::dtypes::Unit;
use dfdx::prelude::{
    Cpu, Gradients, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec,
};
use dfdx::tensor::CpuError;

use super::Recorded;
use crate::{Layer, Options, Real, RequestError};

/// The layer on `θ`, on `θ`'s tape: `z`, shaped like `θ`.
pub fn apply<S, E, T>(
    layer: &Layer,
    theta: Tensor<S, E, Cpu, T>,
    opts: &Options,
) -> Result<Tensor<S, E, Cpu, T>, RequestError>
where
    S: Shape,
    E: Real + Unit,
    T: Tape<E, Cpu>,
{
    Ok(sample(layer, theta, opts)?.0)
}

/// [`apply`], and the forward pass kept for a REINFORCE surrogate.
#[allow(clippy::type_complexity)]
pub fn sample<S, E, T>(
    layer: &Layer,
    theta: Tensor<S, E, Cpu, T>,
    opts: &Options,
) -> Result<(Tensor<S, E, Cpu, T>, Surrogate<S, E>), RequestError>
where
    S: Shape,
    E: Real + Unit,
    T: Tape<E, Cpu>,
{
    if opts.samples != 1 {
        return Err(layer.error(
            "samples",
            format!(
                "dfdx keeps z in θ's shape type, so one sample per batch row, found {}; add a \
                 batch axis to θ for more (each row has noise of its own)",
                opts.samples
            ),
        ));
    }
    let (theta, mut tape) = theta.split_tape();
    let dims: Vec<usize> = theta.shape().concrete().into_iter().collect();
    let recorded = Rc::new(Recorded::forward(layer, &theta.as_vec(), &dims, opts)?);
    let z = theta
        .device()
        .tensor_from_vec(recorded.z().iter().copied().collect(), *theta.shape());
    let (theta_ghost, z_ghost) = (theta.ghost(), z.ghost());
    let saved = Rc::clone(&recorded);
    tape.add_backward_op(move |grads: &mut Gradients<E, Cpu>| {
        let grad_z = grads.get_or_alloc_mut(&z_ghost)?.to_vec();
        let grad_theta = grads.get_or_alloc_mut(&theta_ghost)?;
        saved
            .add_backward(&grad_z, grad_theta)
            .map_err(backward_failed)
    });
    let surrogate = Surrogate {
        theta: theta.clone(),
        recorded,
    };
    Ok((z.put_tape(tape), surrogate))
}

/// The REINFORCE surrogate of one application of a layer.
pub struct Surrogate<S: Shape, E: Unit> {
    theta: Tensor<S, E, Cpu>,
    recorded: Rc<Recorded<E>>,
}

impl<S: Shape, E: Real + Unit> Surrogate<S, E> {
    /// Puts the REINFORCE surrogate of the per-row `losses` (read as data) on `tape`, scaled by
    /// `scale`: when the tape is walked back, `θ`'s gradient gains
    /// `scale·(f − b)·∇_θ log q(z|θ)` with the spec's baseline. Call it on the tape of the loss
    /// before `backward()` (take it with `split_tape`, put it back with `put_tape`).
    pub fn add_to<T: Tape<E, Cpu>>(&self, tape: &mut T, losses: Vec<f64>, scale: E) {
        let theta_ghost = self.theta.ghost();
        let recorded = Rc::clone(&self.recorded);
        tape.add_backward_op(move |grads: &mut Gradients<E, Cpu>| {
            let grad_theta = grads.get_or_alloc_mut(&theta_ghost)?;
            recorded
                .add_surrogate(&losses, scale, grad_theta)
                .map_err(backward_failed)
        });
    }
}

/// dfdx's backward ops can only fail with a `CpuError`, which carries no message: the layer's
/// sentence goes to stderr and the walk back stops with the nearest variant.
fn backward_failed(e: RequestError) -> CpuError {
    eprintln!("sst: {e}");
    CpuError::WrongNumElements
}
