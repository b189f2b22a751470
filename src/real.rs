//! The two precisions a layer computes in: `f64` (default) and `f32`.
//!
//! Every kernel is generic over [`Real`]; the conversions to and from `f64` are used only at the
//! edges (request parsing, printing, constants in formulas).

use std::fmt::{Debug, Display};

/// A slice of a [`Real`] as the concrete type it is, for code written once per precision (the
/// vectorized row loops).
pub enum Concrete<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

/// `s` as the concrete precision it is.
pub fn concrete<F: Real>(s: &mut [F]) -> Concrete<'_> {
    use std::any::TypeId;
    let (ptr, len) = (s.as_mut_ptr(), s.len());
    if TypeId::of::<F>() == TypeId::of::<f32>() {
        // SAFETY: `F` is `f32` (checked above), so this is the same slice with its own type.
        Concrete::F32(unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, len) })
    } else {
        assert!(
            TypeId::of::<F>() == TypeId::of::<f64>(),
            "Real is f32 or f64"
        );
        // SAFETY: `F` is `f64` (asserted above).
        Concrete::F64(unsafe { std::slice::from_raw_parts_mut(ptr as *mut f64, len) })
    }
}

/// A floating-point type sst computes in.
pub trait Real:
    num_traits::Float
    + num_traits::FloatConst
    + std::iter::Sum
    + Default
    + Debug
    + Display
    + std::fmt::LowerExp
    + Send
    + Sync
    + serde::Serialize
    + 'static
{
    /// The request's spelling of this type: `"f64"` or `"f32"`.
    const NAME: &'static str;
    /// The largest `|θ|` for which `exp(±θ)` stays finite with room to spare (DESIGN.md §2:
    /// 700 in f64, 80 in f32); used by the exponential-race perturbation.
    const EXP_LIMIT: f64;

    /// `x` rounded to this precision.
    fn of(x: f64) -> Self;
    /// This value widened (or kept) as `f64`.
    fn f64(self) -> f64;
    /// sst's own `ln` ([`crate::math`]): the same bits on every backend.
    fn sst_ln(self) -> Self;
    /// sst's own `exp` ([`crate::math`]).
    fn sst_exp(self) -> Self;
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    const EXP_LIMIT: f64 = 700.0;
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn sst_ln(self) -> Self {
        crate::math::ln_f64(self)
    }
    fn sst_exp(self) -> Self {
        crate::math::exp_f64(self)
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    const EXP_LIMIT: f64 = 80.0;
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn sst_ln(self) -> Self {
        crate::math::ln_f32(self)
    }
    fn sst_exp(self) -> Self {
        crate::math::exp_f32(self)
    }
}
