//! Semirings for the dynamic program over (position, count, bit) of `chain_subset` (`esp`
//! runs in the linear domain on numbers with an exponent of their own: `src/kernels/esp.rs`), written
//! once over [`Semiring`] (pytorch-struct's `_dp`; STYLE.md item 13):
//! - the log semiring on plain numbers: `a ⊕ b = ln(eᵃ + eᵇ)`, `a ⊗ b = a + b`, `0̸ = −∞`,
//!   `1̸ = 0` (log-partitions and marginals);
//! - [`Dual`]: the log semiring with a tangent carried along (forward-mode differentiation), so
//!   the same DP gives the directional derivative `d/dε marginals(x + ε g)` (Li & Eisner 2009,
//!   first-order expectation semiring);
//! - [`MaxPlus`]: `a ⊕ b = max(a, b)`, `a ⊗ b = a + b`, `0̸ = −∞`, `1̸ = 0` (the log semiring's
//!   zero-temperature limit), whose DP value is the best score; the argmax follows from its
//!   backpointers (which term of each `⊕` won).
//!
//! [`LogSemiring`] adds what only the log semirings have: marginals as ratios to the partition.

use crate::real::Real;

/// A semiring number of the subset DPs: the log semiring, its dual numbers, or max-plus.
pub trait Semiring<F: Real>: Copy {
    /// The additive identity `0̸ = −∞`.
    fn zero() -> Self;
    /// The multiplicative identity `1̸ = 0`.
    fn one() -> Self;
    /// A weight `v` whose tangent is `d` (ignored by plain numbers and max-plus).
    fn lift(v: F, d: F) -> Self;
    /// `a ⊕ b`: `ln(eᵃ + eᵇ)`, max-shifted (`−∞ ⊕ −∞ = −∞`), or `max(a, b)`.
    fn plus(self, other: Self) -> Self;
    /// `a ⊗ b = a + b`.
    fn times(self, other: Self) -> Self;
}

/// A log-semiring number: plain (`F`) or with a tangent ([`Dual`]).
pub trait LogSemiring<F: Real>: Semiring<F> {
    /// `(e^{a − b}, d/dε e^{a − b})`: a marginal as a ratio to the log-partition `b`.
    fn ratio(self, b: Self) -> (F, F);
}

/// The number of (position, count) cells of the k-subset DPs (`esp`, `chain_subset`) on `n`
/// items: `n · min(k, n − k)`, the scale of their memory and time.
pub fn subset_dp_cells(n: usize, k: usize) -> usize {
    n * k.min(n - k)
}

/// The most cells `n · min(k, n − k)` a k-subset dynamic program may use (each cell one or two
/// numbers, twice that in the backward pass).
pub const MAX_DP_CELLS: usize = 1 << 25;

/// The sentence for a `what` dynamic program of `cells` cells beyond [`MAX_DP_CELLS`].
pub fn dp_too_large(what: &str, cells: usize) -> String {
    format!(
        "the {what} dynamic program needs {cells} cells, more than the {MAX_DP_CELLS} it allows; \
         use a smaller n or k, or another regularizer"
    )
}

/// `ln(eᵃ + eᵇ)` and the weights `(e^{a−s}, e^{b−s})`, `s` the result; `(−∞, 0, 0)` when both
/// are `−∞`.
fn log_add_exp<F: Real>(a: F, b: F) -> (F, F, F) {
    let (hi, lo, swapped) = if a >= b { (a, b, false) } else { (b, a, true) };
    if hi == F::neg_infinity() {
        return (hi, F::zero(), F::zero());
    }
    let e = (lo - hi).exp();
    let whi = (F::one() + e).recip();
    let (wa, wb) = if swapped {
        (e * whi, whi)
    } else {
        (whi, e * whi)
    };
    (hi + e.ln_1p(), wa, wb)
}

impl<F: Real> Semiring<F> for F {
    fn zero() -> Self {
        F::neg_infinity()
    }
    fn one() -> Self {
        F::zero()
    }
    fn lift(v: F, _: F) -> Self {
        v
    }
    fn plus(self, other: Self) -> Self {
        super::logaddexp(self, other)
    }
    fn times(self, other: Self) -> Self {
        self + other
    }
}

impl<F: Real> LogSemiring<F> for F {
    fn ratio(self, b: Self) -> (F, F) {
        ((self - b).exp(), F::zero())
    }
}

/// A log-space value `v` with its tangent `d = dv/dε`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual<F> {
    pub v: F,
    pub d: F,
}

impl<F: Real> Semiring<F> for Dual<F> {
    fn zero() -> Self {
        Dual {
            v: F::neg_infinity(),
            d: F::zero(),
        }
    }
    fn one() -> Self {
        Dual {
            v: F::zero(),
            d: F::zero(),
        }
    }
    fn lift(v: F, d: F) -> Self {
        Dual { v, d }
    }
    /// `d(a ⊕ b) = e^{a−s} da + e^{b−s} db`.
    fn plus(self, other: Self) -> Self {
        let (v, wa, wb) = log_add_exp(self.v, other.v);
        Dual {
            v,
            d: wa * self.d + wb * other.d,
        }
    }
    fn times(self, other: Self) -> Self {
        Dual {
            v: self.v + other.v,
            d: self.d + other.d,
        }
    }
}

impl<F: Real> LogSemiring<F> for Dual<F> {
    fn ratio(self, b: Self) -> (F, F) {
        let r = (self.v - b.v).exp();
        (r, r * (self.d - b.d))
    }
}

/// A max-plus number: `a ⊕ b = max(a, b)`, written `b` if `b ≥ a` else `a` (ties to `b`);
/// `a ⊗ b = a + b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPlus<F>(pub F);

impl<F: Real> Semiring<F> for MaxPlus<F> {
    fn zero() -> Self {
        MaxPlus(F::neg_infinity())
    }
    fn one() -> Self {
        MaxPlus(F::zero())
    }
    fn lift(v: F, _: F) -> Self {
        MaxPlus(v)
    }
    fn plus(self, other: Self) -> Self {
        if other.0 >= self.0 {
            other
        } else {
            self
        }
    }
    fn times(self, other: Self) -> Self {
        MaxPlus(self.0 + other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semiring_by_hand() {
        let s = Semiring::<f64>::plus(2f64.ln(), 3f64.ln());
        assert!((s - 5f64.ln()).abs() < 1e-15);
        assert_eq!(
            Semiring::<f64>::plus(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert_eq!(Semiring::<f64>::plus(1e8, f64::NEG_INFINITY), 1e8);
        // d/dε ln(e^{a + ε} + e^{b}) = eᵃ / (eᵃ + eᵇ).
        let a = Dual { v: 1.0f64, d: 1.0 };
        let b = Dual { v: 2.0f64, d: 0.0 };
        let s = a.plus(b);
        assert!((s.d - 1.0 / (1.0 + 1f64.exp())).abs() < 1e-15);
        let z = Dual::<f64>::zero().plus(Dual::zero());
        assert_eq!((z.v, z.d), (f64::NEG_INFINITY, 0.0));
        // Max-plus: max(2, 3) = 3, 2 ⊗ 3 = 5, −∞ the identity of max.
        let (a, b) = (MaxPlus(2.0f64), MaxPlus(3.0));
        assert_eq!(a.plus(b), b);
        assert_eq!(a.times(b), MaxPlus(5.0));
        assert_eq!(MaxPlus::zero().plus(a), a);
        assert_eq!(MaxPlus::one().times(a), a);
    }
}
