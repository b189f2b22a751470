//! Numbers of the log semiring for the dynamic programs (`esp`, `chain_subset`):
//! `a ⊕ b = ln(eᵃ + eᵇ)`, `a ⊗ b = a + b`, `0̸ = −∞`, `1̸ = 0`. [`Dual`] carries a tangent along
//! (forward-mode differentiation), so one DP written over [`LogNum`] gives both the marginals
//! and their directional derivative `d/dε marginals(x + ε g)` (Li & Eisner 2009, first-order
//! expectation semiring).

use crate::real::Real;

/// A log-semiring number.
pub trait LogNum<F: Real>: Copy {
    /// `ln 0 = −∞`.
    fn zero() -> Self;
    /// `ln 1 = 0`.
    fn one() -> Self;
    /// A weight `v` whose tangent is `d` (ignored by plain numbers).
    fn lift(v: F, d: F) -> Self;
    /// `ln(eᵃ + eᵇ)`, max-shifted; `−∞ ⊕ −∞ = −∞`.
    fn plus(self, other: Self) -> Self;
    /// `a + b`.
    fn times(self, other: Self) -> Self;
    /// `(e^{a − b}, d/dε e^{a − b})`: a marginal as a ratio to the log-partition `b`.
    fn ratio(self, b: Self) -> (F, F);
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

impl<F: Real> LogNum<F> for F {
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

impl<F: Real> LogNum<F> for Dual<F> {
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
    fn ratio(self, b: Self) -> (F, F) {
        let r = (self.v - b.v).exp();
        (r, r * (self.d - b.d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semiring_by_hand() {
        let s = LogNum::<f64>::plus(2f64.ln(), 3f64.ln());
        assert!((s - 5f64.ln()).abs() < 1e-15);
        assert_eq!(
            LogNum::<f64>::plus(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert_eq!(LogNum::<f64>::plus(1e8, f64::NEG_INFINITY), 1e8);
        // d/dε ln(e^{a + ε} + e^{b}) = eᵃ / (eᵃ + eᵇ).
        let a = Dual { v: 1.0f64, d: 1.0 };
        let b = Dual { v: 2.0f64, d: 0.0 };
        let s = a.plus(b);
        assert!((s.d - 1.0 / (1.0 + 1f64.exp())).abs() < 1e-15);
        let z = Dual::<f64>::zero().plus(Dual::zero());
        assert_eq!((z.v, z.d), (f64::NEG_INFINITY, 0.0));
    }
}
