//! Sparsemax (Martins & Astudillo 2016): `x: n → z ∈ Δⁿ, z = argmin_{z ∈ Δ} ‖z − x‖²
//! = argmax_{z ∈ Δ} ⟨x, z⟩ − ½‖z‖² = max(x − τ, 0)`, the Euclidean soft solver of `categorical`.

use crate::real::Real;

/// Euclidean projection onto the probability simplex: `z_i = max(x_i − τ, 0)` with `Σ z = 1`.
///
/// Sort `x` descending into `x₍₁₎ ≥ … ≥ x₍ₙ₎`; the support size is
/// `k = max { j : 1 + j·x₍ⱼ₎ > Σ_{i≤j} x₍ᵢ₎ }` and `τ = (Σ_{i≤k} x₍ᵢ₎ − 1) / k`.
/// Since `τ ≥ max x − 1` (the largest entry alone carries at most mass 1), only the candidates
/// `x_i ≥ max x − 1` can be in the support, and the rule needs only them sorted: one pass to
/// select them, a sort of the candidates (usually a few of the `n`), a scan. The prefix sums
/// are those of the full sort, so the result is the same to the bit. `z` is the scratch, so
/// nothing is allocated. The rule runs on `x − max x`, so inputs of ±1e4 (or any finite
/// magnitude) lose no precision in the prefix sums. Panics if the lengths differ or `x` is
/// empty.
pub fn sparsemax<F: Real>(x: &[F], z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "sparsemax: x and z differ in length");
    assert!(!x.is_empty(), "sparsemax of an empty slice");
    let m = x.iter().copied().fold(F::neg_infinity(), F::max);
    let floor = m - F::one();
    let mut c = 0;
    for &xi in x {
        if xi >= floor {
            z[c] = xi;
            c += 1;
        }
    }
    let candidates = &mut z[..c];
    // Descending; `f64` is exact for both precisions and has `total_cmp`.
    candidates.sort_unstable_by(|a, b| b.f64().total_cmp(&a.f64()));
    // Prefix rule on the shifted values s_j = x₍ⱼ₎ − m ≤ 0. The condition holds exactly for
    // j = 1..k (it holds at j = 1 since s₁ = 0), so the scan stops at the first failure (or
    // after the last candidate: the next entry, below max − 1, would fail).
    let mut cum = F::zero();
    let mut k = F::zero();
    let mut cum_k = F::zero();
    for (j, &v) in candidates.iter().enumerate() {
        let s = v - m;
        let jf = F::of((j + 1) as f64);
        let c = cum + s;
        if F::one() + jf * s > c {
            cum = c;
            k = jf;
            cum_k = c;
        } else {
            break;
        }
    }
    // τ − m = (Σ_{i≤k} s_i − 1) / k.
    let tau_shift = (cum_k - F::one()) / k;
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = ((xi - m) - tau_shift).max(F::zero());
    }
}

/// Backward of [`sparsemax`] from its output `z`: with `S = {i : z_i > 0}`,
/// `grad_x_i += g_i − (1/|S|) Σ_{j∈S} g_j` for `i ∈ S`, nothing elsewhere
/// (`J = diag(s) − s sᵀ/|S|`, `s` the support indicator; symmetric). Adds into `grad_x`.
pub fn sparsemax_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    super::centered_on_free_vjp(|zi: F| zi > F::zero(), z, g, grad_x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{fd_grad, XorShift};

    /// Independent reference: bisection on τ for `Σ max(x − τ, 0) = 1` (τ ∈ [max − 1, max]),
    /// run until the bracket stops shrinking (≪ 1e-14 for moderate x).
    fn sparsemax_bisect(x: &[f64]) -> Vec<f64> {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut lo, mut hi) = (m - 1.0, m);
        let mass = |t: f64| x.iter().map(|&v| (v - t).max(0.0)).sum::<f64>();
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if mass(mid) > 1.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let tau = 0.5 * (lo + hi);
        x.iter().map(|&v| (v - tau).max(0.0)).collect()
    }

    /// The textbook rule on the whole sorted row (Martins & Astudillo, Algorithm 1), written
    /// here in f64.
    fn sparsemax_full_sort(x: &[f64]) -> Vec<f64> {
        let mut sorted = x.to_vec();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let m = sorted[0];
        let (mut cum, mut k, mut cum_k) = (0.0, 0.0, 0.0);
        for (j, &v) in sorted.iter().enumerate() {
            let (s, jf) = (v - m, (j + 1) as f64);
            if 1.0 + jf * s > cum + s {
                cum += s;
                k = jf;
                cum_k = cum;
            } else {
                break;
            }
        }
        let tau_shift = (cum_k - 1.0) / k;
        x.iter().map(|&v| ((v - m) - tau_shift).max(0.0)).collect()
    }

    /// Sorting only the candidates `x ≥ max − 1` gives the full sort's result to the bit: spread
    /// and clustered rows, ties, entries exactly at `max − 1`, rows where every entry is a
    /// candidate.
    #[test]
    fn candidates_give_the_full_sort_to_the_bit() {
        let mut r = XorShift::new(77);
        for case in 0..400 {
            let n = 1 + (r.next_u64() % 60) as usize;
            let spread = [0.3, 1.0, 3.0, 30.0][case % 4];
            let mut x = r.vec(n, -spread, spread);
            if case % 5 == 0 {
                // Ties and an entry exactly one below the maximum.
                let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                x[n / 2] = m - 1.0;
                x[n / 3] = m;
            }
            let mut z = vec![0.0; n];
            sparsemax(&x, &mut z);
            let want = sparsemax_full_sort(&x);
            let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&z), bits(&want), "{x:?}");
        }
    }

    fn assert_in_simplex<F: Real>(z: &[F], tol: f64) {
        assert!(z.iter().all(|v| v.is_finite() && *v >= F::zero()), "{z:?}");
        let s: f64 = z.iter().map(|v| v.f64()).sum();
        assert!((s - 1.0).abs() < tol, "sum {s}: {z:?}");
    }

    #[test]
    fn matches_bisection_on_random_inputs() {
        for seed in 0..500 {
            let mut r = XorShift::new(seed);
            let n = 1 + (r.next_u64() % 20) as usize;
            let scale = [0.1, 1.0, 10.0][(seed % 3) as usize];
            let x = r.vec(n, -scale, scale);
            let mut z = vec![0.0; n];
            sparsemax(&x, &mut z);
            assert_in_simplex(&z, 1e-13);
            let want = sparsemax_bisect(&x);
            for (a, b) in z.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "seed {seed}: {z:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn closed_forms_and_edge_cases() {
        let mut z = [0.0];
        sparsemax(&[-3.7f64], &mut z);
        assert_eq!(z, [1.0]);
        let mut z = [0.0; 4];
        sparsemax(&[2.0f64; 4], &mut z);
        assert_eq!(z, [0.25; 4]);
        // Two close entries share the mass: (x1 − x2 + 1)/2, (x2 − x1 + 1)/2; the third is cut.
        let mut z = [0.0; 3];
        sparsemax(&[0.3f64, 0.1, -2.0], &mut z);
        assert!((z[0] - 0.6).abs() < 1e-15 && (z[1] - 0.4).abs() < 1e-15 && z[2] == 0.0);
        // A gap of at least 1 gives a one-hot.
        sparsemax(&[0.0f64, 1.0, -1.0], &mut z);
        assert_eq!(z, [0.0, 1.0, 0.0]);
        // Ties among the maxima with a far entry.
        let mut z = [0.0; 5];
        sparsemax(&[1.0f64, 5.0, 5.0, 5.0, -7.0], &mut z);
        for (a, b) in z.iter().zip([0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]) {
            assert!((a - b).abs() < 1e-15);
        }
    }

    #[test]
    fn robust_at_large_magnitudes() {
        // x = ±1e4: the pair (1e4, 1e4 − 0.3) shares the mass as (0.65, 0.35).
        let x = [1e4f64, -1e4, 1e4 - 0.3, -1e4, 1e4 - 5.0];
        let mut z = [0.0; 5];
        sparsemax(&x, &mut z);
        assert_in_simplex(&z, 1e-12);
        assert!(
            (z[0] - 0.65).abs() < 1e-11 && (z[2] - 0.35).abs() < 1e-11,
            "{z:?}"
        );
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut zf = [0.0f32; 5];
        sparsemax(&xf, &mut zf);
        assert_in_simplex(&zf, 1e-6);
        // 1e4 − 0.3 rounds in f32 (spacing 2⁻¹⁰), so allow that much.
        assert!(
            (zf[0] - 0.65).abs() < 1e-3 && (zf[2] - 0.35).abs() < 1e-3,
            "{zf:?}"
        );
        // All equal at 1e4, and all equal at −1e4: uniform.
        let mut z = [0.0; 3];
        sparsemax(&[-1e4f64; 3], &mut z);
        assert_eq!(z, [1.0 / 3.0; 3]);
        let mut zf = [0.0f32; 3];
        sparsemax(&[1e4f32; 3], &mut zf);
        assert_eq!(zf, [1.0 / 3.0; 3]);
    }

    #[test]
    fn vjp_matches_finite_differences_and_adds() {
        let h = 1e-6;
        let mut checked = 0;
        for seed in 0..100 {
            let mut r = XorShift::new(1000 + seed);
            let n = 1 + (r.next_u64() % 8) as usize;
            let x = r.vec(n, -1.0, 1.0);
            let g = r.vec(n, -1.0, 1.0);
            let mut z = vec![0.0; n];
            sparsemax(&x, &mut z);
            // Sparsemax is piecewise linear: skip draws within h of a kink (support change).
            let support = |x: &[f64]| {
                let mut z = vec![0.0; x.len()];
                sparsemax(x, &mut z);
                z.iter().map(|&v| v > 0.0).collect::<Vec<_>>()
            };
            let s0 = support(&x);
            let near_kink = (0..n).any(|i| {
                let mut xp = x.clone();
                xp[i] += h;
                let mut xm = x.clone();
                xm[i] -= h;
                support(&xp) != s0 || support(&xm) != s0
            });
            if near_kink {
                continue;
            }
            checked += 1;
            let prior = r.vec(n, -1.0, 1.0);
            let mut grad = prior.clone();
            sparsemax_vjp(&z, &g, &mut grad);
            let fd = fd_grad(sparsemax, &x, &g, h);
            for i in 0..n {
                assert!((grad[i] - prior[i] - fd[i]).abs() < 1e-7, "seed {seed}");
            }
        }
        assert!(checked > 80, "only {checked} draws away from kinks");
    }
}
