//! Pure numerics on slices, shared by the supports: no AST, no tape (STYLE.md item 4).
//!
//! Every forward kernel writes its output into a caller-provided slice; every backward kernel
//! (`*_vjp`) ADDS its vector–Jacobian product into `grad_x` and never overwrites it, as in dfdx.

pub mod assignment;
pub mod capped_simplex;
pub mod chain_subset;
pub mod counts;
pub mod dp;
pub mod esp;
mod ext;
pub mod logistic;
pub mod matrix_tree;
pub mod max_tree;
pub mod sinkhorn;
pub mod softmax;
pub mod sparsemax;
pub mod threshold;
pub mod top_k;

use crate::real::Real;

/// The VJP of a Euclidean projection whose free coordinates are `S = {i : free(z_i)}` and
/// whose active constraint is `Σ_S z = const`: `grad_x_i += g_i − mean_{j∈S} g_j` for `i ∈ S`,
/// nothing elsewhere (Martins & Astudillo 2016 for the simplex; the same for the capped simplex).
/// Adds into `grad_x`.
pub fn centered_on_free_vjp<F: Real>(free: impl Fn(F) -> bool, z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "centered_on_free_vjp: length mismatch"
    );
    let (mut sum, mut count) = (F::zero(), 0usize);
    for (&zi, &gi) in z.iter().zip(g) {
        if free(zi) {
            sum = sum + gi;
            count += 1;
        }
    }
    if count == 0 {
        return;
    }
    let mean = sum / F::of(count as f64);
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        if free(zi) {
            *gx = *gx + (gi - mean);
        }
    }
}

/// `ln(eᵃ + eᵇ)` without overflow: `max + ln(1 + e^{min − max})`; `−∞` when both are `−∞`.
pub fn logaddexp<F: Real>(a: F, b: F) -> F {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == F::neg_infinity() {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `logsumexp(x) = m + ln Σ_i exp(x_i − m)`, `m = max_i x_i` (max-shifted, so finite for any
/// finite `x`). Returns `−∞` for an empty slice or when every entry is `−∞`, and `+∞` when some
/// entry is `+∞`.
pub fn logsumexp<F: Real>(x: &[F]) -> F {
    logsumexp_of(x.iter().copied())
}

/// [`logsumexp`] of the values an iterator yields (read twice), with no buffer.
pub fn logsumexp_of<F: Real>(x: impl Iterator<Item = F> + Clone) -> F {
    let m = x.clone().fold(F::neg_infinity(), F::max);
    if m.is_infinite() {
        return m;
    }
    m + x.map(|xi| (xi - m).exp()).sum::<F>().ln()
}

/// `argmax(x) = min { i : x_i = max_j x_j }`: the first index of the maximum, so ties go to the
/// lowest index (DESIGN.md §2). Assumes no NaN. Panics on an empty slice.
pub fn argmax<F: Real>(x: &[F]) -> usize {
    assert!(!x.is_empty(), "argmax of an empty slice");
    let mut best = 0;
    for (i, &xi) in x.iter().enumerate().skip(1) {
        if xi > x[best] {
            best = i;
        }
    }
    best
}

/// `dot(a, b) = ⟨a, b⟩ = Σ_i a_i b_i`. Panics if the lengths differ.
pub fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
    a.iter().zip(b).map(|(&ai, &bi)| ai * bi).sum()
}

/// Independent lanes of [`all_finite`]'s and [`copy_finite`]'s running sums.
const FINITE_LANES: usize = 16;

/// Whether the lane sums of `x · 0` stayed 0: `x · 0` is ±0 for a finite `x` and NaN for ±∞ or
/// NaN, and a NaN stays in its lane's sum.
#[inline(always)]
fn lanes_finite<F: Real>(acc: [F; FINITE_LANES]) -> bool {
    acc.iter().all(|&a| a == F::zero())
}

#[inline(always)]
fn all_finite_body<F: Real>(xs: &[F]) -> bool {
    let mut acc = [F::zero(); FINITE_LANES];
    let mut chunks = xs.chunks_exact(FINITE_LANES);
    for c in chunks.by_ref() {
        for l in 0..FINITE_LANES {
            acc[l] = acc[l] + c[l] * F::zero();
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        acc[l] = acc[l] + x * F::zero();
    }
    lanes_finite(acc)
}

crate::simd::multiversion! {
    /// Whether every entry of `xs` is finite: the lane sums of `x · 0` (0, or NaN once an entry
    /// is not finite), with no early exit, over sixteen lanes compiled for the CPU's widest
    /// vectors.
    pub fn all_finite<F: Real> / all_finite_on(xs: &[F]) -> bool = all_finite_body
}

#[inline(always)]
fn copy_finite_body<F: Real>(src: &[F], dst: &mut [F]) -> bool {
    assert_eq!(
        src.len(),
        dst.len(),
        "copy between slices of different lengths"
    );
    let mut acc = [F::zero(); FINITE_LANES];
    let mut from = src.chunks_exact(FINITE_LANES);
    let mut to = dst.chunks_exact_mut(FINITE_LANES);
    for (s, d) in from.by_ref().zip(to.by_ref()) {
        for l in 0..FINITE_LANES {
            d[l] = s[l];
            acc[l] = acc[l] + s[l] * F::zero();
        }
    }
    let rest = from.remainder().iter().zip(to.into_remainder());
    for (l, (&s, d)) in rest.enumerate() {
        *d = s;
        acc[l] = acc[l] + s * F::zero();
    }
    lanes_finite(acc)
}

crate::simd::multiversion! {
    /// `dst ← src`, returning whether every entry is finite ([`all_finite`]'s test in the same
    /// pass over the numbers). Panics if the lengths differ.
    pub fn copy_finite<F: Real> / copy_finite_on(src: &[F], dst: &mut [F]) -> bool = copy_finite_body
}

/// Independent lanes of [`extent`]'s running minimum and maximum.
const EXTENT_LANES: usize = 16;

#[inline(always)]
fn extent_body<F: Real>(x: &[F]) -> (f64, f64) {
    let (mut lo, mut hi) = (
        [f64::INFINITY; EXTENT_LANES],
        [f64::NEG_INFINITY; EXTENT_LANES],
    );
    let mut chunks = x.chunks_exact(EXTENT_LANES);
    for c in chunks.by_ref() {
        for l in 0..EXTENT_LANES {
            lo[l] = lo[l].min(c[l].f64());
            hi[l] = hi[l].max(c[l].f64());
        }
    }
    for (l, xi) in chunks.remainder().iter().enumerate() {
        lo[l] = lo[l].min(xi.f64());
        hi[l] = hi[l].max(xi.f64());
    }
    (
        lo.iter().copied().fold(f64::INFINITY, f64::min),
        hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

crate::simd::multiversion! {
    /// `(min x, max x)` in f64 (`(∞, −∞)` for no entries), over sixteen lanes compiled for the
    /// CPU's widest vectors.
    pub(crate) fn extent<F: Real> / extent_on(x: &[F]) -> (f64, f64) = extent_body
}

/// `x` widened to f64, for the kernels that compute in f64 whatever the precision.
pub fn widen<F: Real>(x: &[F]) -> Vec<f64> {
    x.iter().map(|xi| xi.f64()).collect()
}

/// `x` widened to f64 and padded with zeros to `len` entries (a `rows × cols` matrix padded
/// with zero rows to `cols × cols`, for the matching kernels).
pub fn widen_padded<F: Real>(x: &[F], len: usize) -> Vec<f64> {
    let mut out = widen(x);
    out.resize(len, 0.0);
    out
}

/// `out_i = v_i` rounded to the working precision: the way back from [`widen`]. Writes
/// `min(out.len(), |v|)` entries.
pub fn narrow<F: Real>(v: impl IntoIterator<Item = f64>, out: &mut [F]) {
    for (o, vi) in out.iter_mut().zip(v) {
        *o = F::of(vi);
    }
}

/// `out_i += v_i` rounded to the working precision (a backward adding into `grad_x`).
pub fn add_narrowed<F: Real>(v: impl IntoIterator<Item = f64>, out: &mut [F]) {
    for (o, vi) in out.iter_mut().zip(v) {
        *o = *o + F::of(vi);
    }
}

/// Helpers shared by the kernel tests: a tiny xorshift and a central finite-difference check.
#[cfg(test)]
pub(crate) mod testing {
    /// xorshift64* (Vigna 2016): a deterministic source for test inputs; no `rand` dependency.
    pub struct XorShift(u64);

    impl XorShift {
        pub fn new(seed: u64) -> Self {
            // splitmix64 of the seed, so that small seeds give unrelated streams (never 0).
            let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            XorShift((z ^ (z >> 31)) | 1)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [lo, hi).
        pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            let u = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            lo + (hi - lo) * u
        }
        pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
            (0..n).map(|_| self.uniform(lo, hi)).collect()
        }
    }

    /// Central differences of `L(x) = ⟨g, f(x)⟩`: `∂L/∂x_i ≈ [L(x + h e_i) − L(x − h e_i)] / 2h`.
    pub fn fd_grad(f: impl Fn(&[f64], &mut [f64]), x: &[f64], g: &[f64], h: f64) -> Vec<f64> {
        let loss = |x: &[f64]| {
            let mut z = vec![0.0; g.len()];
            f(x, &mut z);
            z.iter().zip(g).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|i| {
                xp[i] = x[i] + h;
                let lp = loss(&xp);
                xp[i] = x[i] - h;
                let lm = loss(&xp);
                xp[i] = x[i];
                (lp - lm) / (2.0 * h)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logsumexp_closed_forms() {
        // ln(e^0 + e^0) = ln 2; ln(e^1 + e^2 + e^3) by hand.
        assert!((logsumexp(&[0.0f64, 0.0]) - 2f64.ln()).abs() < 1e-15);
        let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((logsumexp(&[1.0f64, 2.0, 3.0]) - want).abs() < 1e-14);
        // Shifted: ln(n·e^c) = c + ln n, finite at c = ±1e4 (naive exp overflows).
        assert!((logsumexp(&[1e4f64; 3]) - (1e4 + 3f64.ln())).abs() < 1e-11);
        assert!((logsumexp(&[-1e4f32; 4]) - (-1e4 + 4f32.ln())).abs() < 1e-3);
        assert!((logsumexp(&[1e4f64, -1e4]) - 1e4).abs() < 1e-11);
        // Edge cases.
        assert_eq!(logsumexp::<f64>(&[]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY; 2]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY, 0.0]), 0.0);
    }

    /// Every length up to a few chunks, a single ±∞ or NaN at every position (in a whole
    /// chunk and in the remainder) among huge finite values, f64 and f32, on every SIMD variant
    /// of the CPU: found each time, and the copy is exact.
    #[test]
    fn finite_checks_find_every_non_finite_entry() {
        for variant in crate::simd::Variant::all_available() {
            for len in [0, 1, 15, 16, 17, 40, 64] {
                // Huge entries (within f32's range, so that the f32 copies stay finite too).
                let clean: Vec<f64> = (0..len).map(|i| 3e38 / (1.0 + i as f64)).collect();
                let mut copy = vec![0.0; len];
                assert!(all_finite_on(variant, &clean));
                assert!(copy_finite_on(variant, &clean, &mut copy));
                assert_eq!(copy, clean);
                for at in 0..len {
                    for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
                        let mut x = clean.clone();
                        x[at] = bad;
                        assert!(!all_finite_on(variant, &x), "{variant:?} {len} {at} {bad}");
                        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                        let mut copy32 = vec![0f32; len];
                        assert!(!copy_finite_on(variant, &x32, &mut copy32));
                        assert!(x32
                            .iter()
                            .zip(&copy32)
                            .all(|(a, b)| a.to_bits() == b.to_bits()));
                        assert!(!copy_finite_on(variant, &x, &mut copy));
                        assert_eq!(copy[at].to_bits(), bad.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn argmax_ties_go_low() {
        assert_eq!(argmax(&[1.0f64, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[5.0f32, 5.0, 5.0]), 0);
        assert_eq!(argmax(&[f64::NEG_INFINITY, -1e300]), 1);
        assert_eq!(argmax(&[-2.0f64]), 0);
        assert_eq!(argmax(&[0.0f64, 1.0, 0.5, 7.0]), 3);
    }

    #[test]
    fn dot_by_hand() {
        assert_eq!(
            dot(&[1.0f64, 2.0, 3.0], &[4.0, -5.0, 6.0]),
            4.0 - 10.0 + 18.0
        );
        assert_eq!(dot::<f32>(&[], &[]), 0.0);
    }
}
