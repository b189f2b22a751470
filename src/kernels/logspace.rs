//! Semirings for the dynamic programs over (position, count) (`esp`, `chain_subset`), written
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
//! [`LogSemiring`] adds what only the log semirings have: marginals as ratios to the partition,
//! and the DPs' whole-row steps ([`LogSemiring::add_scaled`], [`LogSemiring::dot`]), written as
//! loops that the compiler vectorizes (`src/simd.rs`) with sst's own `exp` and `ln`
//! (`src/math.rs`: `ln(1 + e)` for `log1p(e)`, `e ≤ 1`, off by at most ~1e-16 absolute).

use crate::math::{exp_f64, ln_f64};
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
    /// `out[t] = a[t] ⊕ (b[t] ⊗ w)` for every `t` (slices of one length): one row of a DP.
    fn add_scaled(a: &[Self], b: &[Self], w: Self, out: &mut [Self]);
    /// `⊕_t a[t] ⊗ b[t]` (slices of one length), max-shifted as one sum.
    fn dot(a: &[Self], b: &[Self]) -> Self;
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

/// `(hi, e)` of `a ⊕ b = hi + ln(1 + e)`: the larger of the two and `e = e^{lo − hi} ∈ [0, 1]`
/// (`e = 0` when both are `−∞`). Branch-free, for vector loops.
#[inline(always)]
fn hi_and_ratio(a: f64, b: f64) -> (f64, f64) {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    let gap = if hi == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        lo - hi
    };
    (hi, exp_f64(gap))
}

/// `ln(eᵃ + eᵇ)` (see [`hi_and_ratio`]).
#[inline(always)]
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, e) = hi_and_ratio(a, b);
    hi + ln_f64(1.0 + e)
}

/// `a ⊕ b` on dual numbers: `d(a ⊕ b) = (ȧ_hi + e·ȧ_lo)/(1 + e)` (0 when both are `−∞`).
#[inline(always)]
fn dual_add(a: Dual<f64>, b: Dual<f64>) -> Dual<f64> {
    let (hi, e) = hi_and_ratio(a.v, b.v);
    let (d_hi, d_lo) = if a.v >= b.v { (a.d, b.d) } else { (b.d, a.d) };
    let d = if hi == f64::NEG_INFINITY {
        0.0
    } else {
        (d_hi + e * d_lo) / (1.0 + e)
    };
    Dual {
        v: hi + ln_f64(1.0 + e),
        d,
    }
}

impl Semiring<f64> for f64 {
    fn zero() -> Self {
        f64::NEG_INFINITY
    }
    fn one() -> Self {
        0.0
    }
    fn lift(v: f64, _: f64) -> Self {
        v
    }
    /// One term at a time (the standard library's `exp` and `ln_1p`: faster than the
    /// vector loops' polynomials when not vectorized).
    fn plus(self, other: Self) -> Self {
        super::logaddexp(self, other)
    }
    fn times(self, other: Self) -> Self {
        self + other
    }
}

#[inline(always)]
fn add_scaled_f64_body(a: &[f64], b: &[f64], w: f64, out: &mut [f64]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = log_add(a, b + w);
    }
}

crate::simd::multiversion! {
    /// [`LogSemiring::add_scaled`] on plain numbers, vectorized for this CPU.
    fn add_scaled_f64 / add_scaled_f64_on(a: &[f64], b: &[f64], w: f64, out: &mut [f64]) = add_scaled_f64_body
}

/// Independent partial sums (and maxima) that let a reduction vectorize.
const LANES: usize = 8;

/// The max-shifted sums of `term(t) = (x_t, ẋ_t)` over `t ∈ 0..len`: `(m, Σ e^{x_t − m},
/// Σ e^{x_t − m} ẋ_t)` with `m = max_t x_t`, in [`LANES`] lanes; `m = −∞` (and the sums 0) when
/// every `x_t` is `−∞`.
#[inline(always)]
fn shifted_sums(len: usize, term: impl Fn(usize) -> (f64, f64)) -> (f64, f64, f64) {
    let whole = len - len % LANES;
    let mut tops = [f64::NEG_INFINITY; LANES];
    for c in (0..whole).step_by(LANES) {
        for (l, top) in tops.iter_mut().enumerate() {
            let x = term(c + l).0;
            *top = if x > *top { x } else { *top };
        }
    }
    let top = (whole..len)
        .map(|t| term(t).0)
        .chain(tops)
        .fold(f64::NEG_INFINITY, |m, x| if x > m { x } else { m });
    if top == f64::NEG_INFINITY {
        return (top, 0.0, 0.0);
    }
    let (mut sums, mut dsums) = ([0.0; LANES], [0.0; LANES]);
    for c in (0..whole).step_by(LANES) {
        for l in 0..LANES {
            let (x, d) = term(c + l);
            let e = exp_f64(x - top);
            sums[l] += e;
            dsums[l] += e * d;
        }
    }
    for t in whole..len {
        let (x, d) = term(t);
        let e = exp_f64(x - top);
        sums[0] += e;
        dsums[0] += e * d;
    }
    (top, sums.iter().sum(), dsums.iter().sum())
}

#[inline(always)]
fn dot_f64_body(a: &[f64], b: &[f64]) -> f64 {
    let (a, b) = (&a[..b.len()], &b[..a.len()]);
    let (top, sum, _) = shifted_sums(a.len(), |t| (a[t] + b[t], 0.0));
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + ln_f64(sum)
}

crate::simd::multiversion! {
    /// [`LogSemiring::dot`] on plain numbers, vectorized for this CPU.
    fn dot_f64 / dot_f64_on(a: &[f64], b: &[f64]) -> f64 = dot_f64_body
}

impl LogSemiring<f64> for f64 {
    fn ratio(self, b: Self) -> (f64, f64) {
        ((self - b).exp(), 0.0)
    }
    fn add_scaled(a: &[f64], b: &[f64], w: f64, out: &mut [f64]) {
        add_scaled_f64(a, b, w, out)
    }
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        dot_f64(a, b)
    }
}

/// A log-space value `v` with its tangent `d = dv/dε`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual<F> {
    pub v: F,
    pub d: F,
}

impl Semiring<f64> for Dual<f64> {
    fn zero() -> Self {
        Dual {
            v: f64::NEG_INFINITY,
            d: 0.0,
        }
    }
    fn one() -> Self {
        Dual { v: 0.0, d: 0.0 }
    }
    fn lift(v: f64, d: f64) -> Self {
        Dual { v, d }
    }
    /// `d(a ⊕ b) = e^{a−s} da + e^{b−s} db` (one term at a time: the standard library's
    /// `exp` and `ln_1p`).
    fn plus(self, other: Self) -> Self {
        let (hi, lo) = if self.v >= other.v {
            (self, other)
        } else {
            (other, self)
        };
        if hi.v == f64::NEG_INFINITY {
            return Dual::zero();
        }
        let e = (lo.v - hi.v).exp();
        Dual {
            v: hi.v + e.ln_1p(),
            d: (hi.d + e * lo.d) / (1.0 + e),
        }
    }
    fn times(self, other: Self) -> Self {
        Dual {
            v: self.v + other.v,
            d: self.d + other.d,
        }
    }
}

#[inline(always)]
fn add_scaled_dual_body(a: &[Dual<f64>], b: &[Dual<f64>], w: Dual<f64>, out: &mut [Dual<f64>]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = dual_add(a, b.times(w));
    }
}

crate::simd::multiversion! {
    /// [`LogSemiring::add_scaled`] on dual numbers, vectorized for this CPU.
    fn add_scaled_dual / add_scaled_dual_on(a: &[Dual<f64>], b: &[Dual<f64>], w: Dual<f64>, out: &mut [Dual<f64>]) = add_scaled_dual_body
}

/// `⊕_t a[t] ⊗ b[t]` on dual numbers: value as [`dot_f64_body`], tangent the softmax-weighted
/// sum of the terms' tangents.
#[inline(always)]
fn dot_dual_body(a: &[Dual<f64>], b: &[Dual<f64>]) -> Dual<f64> {
    let (a, b) = (&a[..b.len()], &b[..a.len()]);
    let (top, sum, dsum) = shifted_sums(a.len(), |t| (a[t].v + b[t].v, a[t].d + b[t].d));
    if top == f64::NEG_INFINITY {
        return Dual::zero();
    }
    Dual {
        v: top + ln_f64(sum),
        d: dsum / sum,
    }
}

crate::simd::multiversion! {
    /// [`LogSemiring::dot`] on dual numbers, vectorized for this CPU.
    fn dot_dual / dot_dual_on(a: &[Dual<f64>], b: &[Dual<f64>]) -> Dual<f64> = dot_dual_body
}

impl LogSemiring<f64> for Dual<f64> {
    fn ratio(self, b: Self) -> (f64, f64) {
        let r = (self.v - b.v).exp();
        (r, r * (self.d - b.d))
    }
    fn add_scaled(a: &[Self], b: &[Self], w: Self, out: &mut [Self]) {
        add_scaled_dual(a, b, w, out)
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        dot_dual(a, b)
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
    use crate::kernels::testing::XorShift;
    use crate::simd::Variant;

    /// The whole-row steps agree with the one-term semiring operations (to rounding: the row
    /// steps use sst's `exp`/`ln`, the terms the standard library's), give the same bits on every
    /// instruction-set variant this CPU runs, and handle `−∞` (empty DP cells).
    #[test]
    fn row_steps_match_the_terms_on_every_variant() {
        let mut r = XorShift::new(11);
        for len in [0, 1, 7, 8, 9, 37, 101] {
            let mut a = r.vec(len, -30.0, 30.0);
            let mut b = r.vec(len, -30.0, 30.0);
            let (da, db) = (r.vec(len, -1.0, 1.0), r.vec(len, -1.0, 1.0));
            if len > 2 {
                (a[0], b[1]) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                (a[2], b[2]) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            }
            let w = 0.7;
            let dual = |v: &[f64], d: &[f64]| -> Vec<Dual<f64>> {
                v.iter().zip(d).map(|(&v, &d)| Dual { v, d }).collect()
            };
            let (xa, xb) = (dual(&a, &da), dual(&b, &db));
            let xw = Dual { v: w, d: 0.3 };
            let close = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-13 * (1.0 + y.abs());
            let mut first: Option<(Vec<f64>, Vec<Dual<f64>>, f64, Dual<f64>)> = None;
            for variant in Variant::all_available() {
                let mut out = vec![0.0; len];
                add_scaled_f64_on(variant, &a, &b, w, &mut out);
                let mut dout = vec![Dual::zero(); len];
                add_scaled_dual_on(variant, &xa, &xb, xw, &mut dout);
                let dot = dot_f64_on(variant, &a, &b);
                let ddot = dot_dual_on(variant, &xa, &xb);
                for t in 0..len {
                    let want = a[t].plus(b[t].times(w));
                    assert!(close(out[t], want), "{len} {t}: {} vs {want}", out[t]);
                    let dwant = xa[t].plus(xb[t].times(xw));
                    assert!(
                        close(dout[t].v, dwant.v) && close(dout[t].d, dwant.d),
                        "{t}"
                    );
                }
                let want = (0..len).fold(<f64 as Semiring<f64>>::zero(), |s, t| {
                    s.plus(a[t].times(b[t]))
                });
                assert!(close(dot, want), "{len}: {dot} vs {want}");
                let dwant = (0..len).fold(Dual::zero(), |s, t| s.plus(xa[t].times(xb[t])));
                assert!(close(ddot.v, dwant.v) && close(ddot.d, dwant.d), "{len}");
                match &first {
                    None => first = Some((out, dout, dot, ddot)),
                    Some(f) => assert!(
                        f.0 == out && f.1 == dout && f.2.to_bits() == dot.to_bits() && f.3 == ddot
                    ),
                }
            }
        }
    }

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
