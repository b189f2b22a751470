//! Exponential-family marginals over k-subsets (DESIGN.md §2): for
//! `p(z) ∝ exp⟨x, z⟩` on `{z ∈ {0,1}ⁿ : Σ z = k}`, `μ = E_p[z] = ∇A(x)`, `A(x) = ln e_k(eˣ)` with
//! `e_k` the elementary symmetric polynomial. The DP `e_j(x_{<i+1}) = e_j(x_{<i}) + e^{x_i}
//! e_{j−1}(x_{<i})` runs in log space, forward for prefixes and backward for suffixes, O(nk)
//! (the exponential-family k-subset relaxation of Paulus et al. 2020, "Gradient estimation with
//! stochastic softmax tricks", Table 1). It runs on
//! `min(k, n − k)`: `z ↦ 1 − z` maps k-subsets under `x` to `(n − k)`-subsets under `−x`; and in
//! f64 whatever the precision (at `|x| = 1e8`, `w = ±1e4` over `T = 1e-4`, f32 log-partitions
//! would be off by units).

use super::logspace::{Dual, LogSemiring};
use crate::real::Real;

/// `z = μ(x)`, the marginals `P(z_i = 1)` of `p(z) ∝ exp⟨x, z⟩` over the k-subsets, in
/// `[0, 1]` with `Σ z = k` up to rounding. Finite for any finite `x` (log space, max-shifted).
/// Allocates `(n + 1)(min(k, n − k) + 1)` numbers. Panics if the lengths differ or `k > n`.
pub fn esp_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "esp_marginals: x and z differ in length");
    let (flip, weights) = lifted::<F, f64>(x, x, k);
    run(&weights, kept(x.len(), k), |i, mu, _| {
        z[i] = F::of(if flip { 1.0 - mu } else { mu });
    });
}

/// Backward of [`esp_marginals`]: `grad_x += J g`, `J = ∂μ/∂x = Cov_p(z)` (the Hessian of `A`,
/// symmetric, so `Jᵀ g = J g`), computed exactly as the directional derivative
/// `d/dε μ(x + ε g)` by running the same DP on [`Dual`] numbers (forward mode); the complement
/// `μ = 1 − μ'(−x)` has the same Jacobian `J'(−x)`. Adds into `grad_x`.
pub fn esp_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "esp_marginals_jvp: length mismatch"
    );
    let (flip, weights) = lifted::<F, Dual<f64>>(x, g, k);
    run(&weights, kept(x.len(), k), |i, _, dmu| {
        grad_x[i] = grad_x[i] + F::of(if flip { -dmu } else { dmu });
    });
}

/// The subset size the DP runs on, `min(k, n − k)`.
fn kept(n: usize, k: usize) -> usize {
    assert!(k <= n, "esp: k = {k} > n = {n}");
    k.min(n - k)
}

/// The DP's weights in f64: `(x_i, g_i)`, or `(−x_i, −g_i)` for the complement when `2k > n`.
fn lifted<F: Real, N: LogSemiring<f64>>(x: &[F], g: &[F], k: usize) -> (bool, Vec<N>) {
    let flip = 2 * k > x.len();
    let s = if flip { -1.0 } else { 1.0 };
    let w = x
        .iter()
        .zip(g)
        .map(|(xi, gi)| N::lift(s * xi.f64(), s * gi.f64()))
        .collect();
    (flip, w)
}

/// Forward–backward over `α[i][j] = ln e_j(w_{<i})` (stored, `(n + 1) × (k + 1)`) and the
/// suffix row `β[j] = ln e_j(w_{>i})` (rolled, stored reversed: `rb[q] = β[k − q]`, so that the
/// marginal's sum pairs aligned entries): `μ_i = exp(w_i + ln Σ_j e^{α[i][j] + β[k−1−j]}
/// − α[n][k])`; calls `out(i, μ_i, μ̇_i)` for `i = n − 1, …, 0`. Each step is one whole-row
/// operation of the semiring ([`LogSemiring::add_scaled`], [`LogSemiring::dot`]).
fn run<N: LogSemiring<f64>>(w: &[N], k: usize, mut out: impl FnMut(usize, f64, f64)) {
    let n = w.len();
    let row = k + 1;
    let mut alpha = vec![N::zero(); (n + 1) * row];
    alpha[0] = N::one();
    for (i, &wi) in w.iter().enumerate() {
        let (done, rest) = alpha.split_at_mut((i + 1) * row);
        let (prev, next) = (&done[i * row..], &mut rest[..row]);
        let top = k.min(i + 1);
        next[0] = prev[0];
        // e_j(w_{≤i}) = e_j(w_{<i}) + e^{w_i} e_{j−1}(w_{<i}), j = 1..=top
        N::add_scaled(&prev[1..=top], &prev[..top], wi, &mut next[1..=top]);
    }
    let log_z = alpha[n * row + k];
    let mut rb = vec![N::zero(); row];
    rb[k] = N::one();
    let mut old = rb.clone();
    for (i, &wi) in w.iter().enumerate().rev() {
        if k == 0 {
            out(i, 0.0, 0.0);
            continue;
        }
        let a = &alpha[i * row..(i + 1) * row];
        let (lo, hi) = ((k + i).saturating_sub(n), i.min(k - 1));
        let m = N::dot(&a[lo..=hi], &rb[lo + 1..=hi + 1]);
        let (mu, dmu) = m.times(wi).ratio(log_z);
        out(i, mu.min(1.0), dmu);
        // β[j] ← β[j] ⊕ β[j−1] ⊗ w_i for j = 1..=min(k, n − i): rb[q] ⊕ rb[q+1] ⊗ w_i.
        let q0 = k - k.min(n - i);
        old.copy_from_slice(&rb);
        N::add_scaled(&old[q0..k], &old[q0 + 1..=k], wi, &mut rb[q0..k]);
    }
}
