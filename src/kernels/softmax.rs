//! Softmax: `x: n → z ∈ Δⁿ, z = argmax_{z ∈ Δ} ⟨x, z⟩ + H(z) = exp(x − max x) / Σ exp(x − max x)`
//! (the entropy-regularized soft solver of `categorical`, DESIGN.md §2).

use crate::real::{concrete, Concrete, Real};
use crate::simd::multiversion;

/// `z_i = exp(x_i − m) / Σ_j exp(x_j − m)`, `m = max_j x_j`. Max-shifted, so finite for any finite
/// `x` (±1e30 included, in f64 and f32). The normaliser is summed in f64, so that long f32 rows
/// still sum to 1 within f32 rounding. All-`−∞` input gives NaN. Panics if the lengths differ.
pub fn softmax<F: Real>(x: &[F], z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "softmax: x and z differ in length");
    let m = x.iter().copied().fold(F::neg_infinity(), F::max);
    let mut s = 0.0;
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = (xi - m).exp();
        s += zi.f64();
    }
    let inv = F::of(s.recip());
    for zi in z.iter_mut() {
        *zi = *zi * inv;
    }
}

/// `z_i ← exp(z_i − m) / Σ_j exp(z_j − m)` in place for one precision: sst's `exp`
/// ([`crate::math`]), the normaliser summed in f64 over sixteen lanes, then one reciprocal.
macro_rules! exp_normalize_in {
    ($body:ident, $f:ty, $exp:path) => {
        #[inline(always)]
        fn $body(z: &mut [$f], m: $f) {
            const LANES: usize = 16;
            let mut sums = [0f64; LANES];
            let mut chunks = z.chunks_exact_mut(LANES);
            for c in chunks.by_ref() {
                for (x, s) in c.iter_mut().zip(sums.iter_mut()) {
                    *x = $exp(*x - m);
                    *s += f64::from(*x);
                }
            }
            for (x, s) in chunks.into_remainder().iter_mut().zip(sums.iter_mut()) {
                *x = $exp(*x - m);
                *s += f64::from(*x);
            }
            let inv = (1.0 / sums.iter().sum::<f64>()) as $f;
            for x in z.iter_mut() {
                *x *= inv;
            }
        }
    };
}

exp_normalize_in!(exp_normalize_f32_body, f32, crate::math::exp_f32);
exp_normalize_in!(exp_normalize_f64_body, f64, crate::math::exp_f64);

multiversion! {
    /// The softmax of `x` held in `z`, given `m = max x`, in place (f32; the JIT's softmax
    /// finish), vectorized for this CPU: `z_i = exp(x_i − m) / Σ_j exp(x_j − m)`.
    pub fn exp_normalize_f32 / exp_normalize_f32_on(z: &mut [f32], m: f32) = exp_normalize_f32_body
}

multiversion! {
    /// [`exp_normalize_f32`] in f64.
    pub fn exp_normalize_f64 / exp_normalize_f64_on(z: &mut [f64], m: f64) = exp_normalize_f64_body
}

/// [`exp_normalize_f32`] / [`exp_normalize_f64`] in the precision of `F`.
pub fn exp_normalize<F: Real>(z: &mut [F], m: F) {
    match concrete(z) {
        // `m` is an `F`, so these conversions are exact.
        Concrete::F32(z) => exp_normalize_f32(z, m.f64() as f32),
        Concrete::F64(z) => exp_normalize_f64(z, m.f64()),
    }
}

/// Backward of [`softmax`] from its output `z`: `grad_x += J g = z ⊙ (g − ⟨g, z⟩)`
/// (`J = diag(z) − z zᵀ`, symmetric). Adds into `grad_x`.
pub fn softmax_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "softmax_vjp: length mismatch"
    );
    let gz = super::dot(g, z);
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        *gx = *gx + zi * (gi - gz);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{fd_grad, XorShift};

    #[test]
    fn matches_naive_formula() {
        for seed in 0..50 {
            let mut r = XorShift::new(seed);
            let n = 1 + (r.next_u64() % 12) as usize;
            let x = r.vec(n, -5.0, 5.0);
            let denom: f64 = x.iter().map(|v| v.exp()).sum();
            let mut z = vec![0.0; n];
            softmax(&x, &mut z);
            for (zi, xi) in z.iter().zip(&x) {
                assert!(
                    (zi - xi.exp() / denom).abs() < 1e-15,
                    "{zi} vs {}",
                    xi.exp() / denom
                );
            }
        }
        // By hand: softmax(0, ln 3) = (1/4, 3/4).
        let mut z = [0.0; 2];
        softmax(&[0.0, 3f64.ln()], &mut z);
        assert!((z[0] - 0.25).abs() < 1e-16 && (z[1] - 0.75).abs() < 1e-16);
    }

    /// The JIT's in-place finish: every CPU variant gives the same bits, and the softmax of the
    /// reference kernel within rounding (sst's `exp` is within 2 ulp of the standard library's).
    #[test]
    fn exp_normalize_is_the_softmax_in_every_variant() {
        for seed in 0..20 {
            let mut r = XorShift::new(seed);
            let n = 1 + (r.next_u64() % 300) as usize;
            let x = r.vec(n, -30.0, 30.0);
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut want = vec![0.0; n];
            softmax(&x, &mut want);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let m32 = x32.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut first: Option<(Vec<f64>, Vec<f32>)> = None;
            for variant in crate::simd::Variant::all_available() {
                let mut z = x.clone();
                exp_normalize_f64_on(variant, &mut z, m);
                let mut z32 = x32.clone();
                exp_normalize_f32_on(variant, &mut z32, m32);
                for i in 0..n {
                    assert!(
                        (z[i] - want[i]).abs() <= 1e-14,
                        "{variant:?} {i}: {} vs {}",
                        z[i],
                        want[i]
                    );
                    assert!(
                        (f64::from(z32[i]) - want[i]).abs() <= 2e-6,
                        "{variant:?} f32 {i}"
                    );
                }
                match &first {
                    None => first = Some((z, z32)),
                    Some((a, a32)) => {
                        assert_eq!(a, &z, "{variant:?}");
                        assert_eq!(a32, &z32, "{variant:?}");
                    }
                }
            }
        }
    }

    fn check_extreme<F: Real>(scale: f64) {
        let x: Vec<F> = [1.0, -1.0, 0.5, 1.0, -0.25]
            .iter()
            .map(|&v| F::of(v * scale))
            .collect();
        let mut z = vec![F::zero(); x.len()];
        softmax(&x, &mut z);
        assert!(z.iter().all(|v| v.is_finite() && *v >= F::zero()), "{z:?}");
        let s: f64 = z.iter().map(|v| v.f64()).sum();
        assert!((s - 1.0).abs() < 1e-6, "sum {s}");
        // The two tied maxima share the mass; the rest underflow to 0.
        assert!(
            (z[0].f64() - 0.5).abs() < 1e-6 && (z[3].f64() - 0.5).abs() < 1e-6,
            "{z:?}"
        );
    }

    #[test]
    fn finite_and_normalised_at_extremes() {
        for scale in [1e4, 1e30] {
            check_extreme::<f64>(scale);
            check_extreme::<f32>(scale);
        }
    }

    #[test]
    fn shift_invariant() {
        let mut r = XorShift::new(7);
        for _ in 0..20 {
            let x = r.vec(6, -3.0, 3.0);
            let c = r.uniform(-100.0, 100.0);
            let xs: Vec<f64> = x.iter().map(|v| v + c).collect();
            let (mut a, mut b) = (vec![0.0; 6], vec![0.0; 6]);
            softmax(&x, &mut a);
            softmax(&xs, &mut b);
            for (ai, bi) in a.iter().zip(&b) {
                assert!((ai - bi).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn vjp_matches_finite_differences_and_adds() {
        for seed in 0..20 {
            let mut r = XorShift::new(100 + seed);
            let n = 1 + (r.next_u64() % 8) as usize;
            let x = r.vec(n, -3.0, 3.0);
            let g = r.vec(n, -1.0, 1.0);
            let mut z = vec![0.0; n];
            softmax(&x, &mut z);
            let prior = r.vec(n, -1.0, 1.0);
            let mut grad = prior.clone();
            softmax_vjp(&z, &g, &mut grad);
            let fd = fd_grad(softmax, &x, &g, 1e-5);
            for i in 0..n {
                assert!(
                    (grad[i] - prior[i] - fd[i]).abs() < 1e-9,
                    "{} vs {}",
                    grad[i] - prior[i],
                    fd[i]
                );
            }
        }
    }
}
