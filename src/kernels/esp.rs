//! Exponential-family marginals over k-subsets (DESIGN.md §2): for
//! `p(z) ∝ exp⟨x, z⟩` on `{z ∈ {0,1}ⁿ : Σ z = k}`, `μ = E_p[z] = ∇A(x)`, `A(x) = ln e_k(eˣ)` with
//! `e_k` the elementary symmetric polynomial. The DP `e_j(x_{<i+1}) = e_j(x_{<i}) + e^{x_i}
//! e_{j−1}(x_{<i})` runs forward for prefixes and backward for suffixes, O(nk) (the
//! exponential-family k-subset relaxation of Paulus et al. 2020, "Gradient estimation with
//! stochastic softmax tricks", Table 1). It runs on `min(k, n − k)`: `z ↦ 1 − z` maps k-subsets
//! under `x` to `(n − k)`-subsets under `−x`; and in f64 whatever the precision.
//!
//! Numbers: every term of the DP is positive, so it runs in the linear domain on numbers with an
//! exponent of their own (`Ext`: `m · 2^e`, `m ∈ [1, 2)`, `e` an integer held in an f64), which
//! neither overflow nor underflow whatever `x` (at `|x| = 1e8` the sums span `2^{±1e10}`): a sum
//! aligns the two exponents and renormalises, a product multiplies mantissas and adds exponents.
//! No `exp` or `ln` per cell (the log-space DP took one of each), each row step is one loop
//! over the row that the compiler vectorizes (`src/simd.rs`), and the prefix table is kept at
//! checkpoints only (`run`), so the working memory stays in cache. The backward pass is the
//! directional derivative `d/dε μ(x + ε g)` of the same DP (forward mode): each cell carries its
//! derivative's mantissa on the cell's exponent.

use super::ext::{pair_sum, ratio, row_step, Checkpointed, Ext, Planes, View, ViewMut, ZERO_EXP};
use crate::real::Real;

/// `z = μ(x)`, the marginals `P(z_i = 1)` of `p(z) ∝ exp⟨x, z⟩` over the k-subsets, in
/// `[0, 1]` with `Σ z = k` up to rounding. Finite for any finite `x`. Allocates about
/// `6√n (min(k, n − k) + 1)` numbers (`run`). Panics if the lengths differ or `k > n`.
pub fn esp_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "esp_marginals: x and z differ in length");
    let (flip, w, _) = lifted(x, x, k);
    run::<false>(&w, &[], kept(x.len(), k), |i, mu, _| {
        z[i] = F::of(if flip { 1.0 - mu } else { mu });
    });
}

/// Backward of [`esp_marginals`]: `grad_x += J g`, `J = ∂μ/∂x = Cov_p(z)` (the Hessian of `A`,
/// symmetric, so `Jᵀ g = J g`), computed exactly as the directional derivative
/// `d/dε μ(x + ε g)` of the same DP (forward mode); the complement `μ = 1 − μ'(−x)` has the same
/// Jacobian `J'(−x)`. Adds into `grad_x`.
pub fn esp_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "esp_marginals_jvp: length mismatch"
    );
    let (flip, w, dw) = lifted(x, g, k);
    run::<true>(&w, &dw, kept(x.len(), k), |i, _, dmu| {
        grad_x[i] = grad_x[i] + F::of(if flip { -dmu } else { dmu });
    });
}

/// The subset size the DP runs on, `min(k, n − k)`.
fn kept(n: usize, k: usize) -> usize {
    assert!(k <= n, "esp: k = {k} > n = {n}");
    k.min(n - k)
}

/// The DP's weights and tangents in f64: `(x_i, g_i)`, or `(−x_i, −g_i)` for the complement when
/// `2k > n`; the first value says whether the complement was taken.
fn lifted<F: Real>(x: &[F], g: &[F], k: usize) -> (bool, Vec<f64>, Vec<f64>) {
    let flip = 2 * k > x.len();
    let s = if flip { -1.0 } else { 1.0 };
    let w = x.iter().map(|v| s * v.f64()).collect();
    let dw = g.iter().map(|v| s * v.f64()).collect();
    (flip, w, dw)
}

/// Forward–backward over `α[i][j] = e_j(w_{<i})` and the suffix row `β[j] = e_j(w_{>i})`
/// (rolled, stored reversed: `rb[q] = β[k − q]`, so that the marginal's sum pairs aligned
/// entries): `μ_i = e^{w_i} Σ_j α[i][j] β[k−1−j] / α[n][k]` and `μ̇_i = μ_i (ẇ_i + Ṡ/S − Ż/Z)`
/// (`S` the sum, `Z = α[n][k]`); calls `out(i, μ_i, μ̇_i)` for `i = n − 1, …, 0`. `T`: whether
/// derivatives (along `dw`) are carried. `α` is kept at checkpoints ([`Checkpointed`]).
fn run<const T: bool>(w: &[f64], dw: &[f64], k: usize, mut out: impl FnMut(usize, f64, f64)) {
    let n = w.len();
    let row = k + 1;
    let t: Vec<Ext> = (0..n)
        .map(|i| Ext::exp(w[i], if T { dw[i] } else { 0.0 }))
        .collect();
    let step = |i: usize, prev: View, next: ViewMut| alpha_step::<T>(prev, t[i], i, k, next);
    // Row 0: e_0 = 1, e_j = 0 for j ≥ 1.
    let one = |row: ViewMut| (row.m[0], row.e[0]) = (1.0, 0.0);
    let mut alpha = Checkpointed::new(n, row, one, step);
    let (blocks, c) = (alpha.blocks(), alpha.c);
    alpha.fill(blocks - 1);
    let z = alpha.row(n - (blocks - 1) * c).get(k);
    let mut rb = Planes::zeros(row);
    rb.set(k, Ext::ONE);
    let mut old = rb.clone();
    for b in (0..blocks).rev() {
        alpha.fill(b);
        for i in (b * c..((b + 1) * c).min(n)).rev() {
            let ti = t[i];
            if k == 0 {
                out(i, 0.0, 0.0);
                continue;
            }
            let (lo, hi) = ((k + i).saturating_sub(n), i.min(k - 1));
            let a = alpha.row(i - b * c);
            let s = pair_sum::<T>(a.slice(lo..hi + 1), rb.slice(lo + 1..hi + 2));
            let (mu, dmu) = ratio(s, ti, z);
            out(i, mu, dmu);
            // β[j] ← β[j] + e^{w_i} β[j−1] for j = 1..=min(k, n − i): rb[q] + e^{w_i} rb[q + 1].
            let q0 = k - k.min(n - i);
            old.copy_from(&rb);
            let (_, out) = rb.split(q0..k);
            row_step::<T>(
                old.slice(q0..k),
                Ext::ONE,
                old.slice(q0 + 1..k + 1),
                ti,
                out,
            );
        }
    }
}

/// Row `i + 1` of `α` from row `i`: `e_j(w_{≤i}) = e_j(w_{<i}) + e^{w_i} e_{j−1}(w_{<i})` for
/// `j ≤ min(k, i + 1)`, zero beyond.
fn alpha_step<const T: bool>(prev: View, ti: Ext, i: usize, k: usize, next: ViewMut) {
    let top = k.min(i + 1);
    let ViewMut { m, e, dm } = next;
    (m[0], e[0], dm[0]) = (prev.m[0], prev.e[0], prev.dm[0]);
    m[top + 1..].fill(0.0);
    e[top + 1..].fill(ZERO_EXP);
    dm[top + 1..].fill(0.0);
    let out = ViewMut {
        m: &mut m[1..=top],
        e: &mut e[1..=top],
        dm: &mut dm[1..=top],
    };
    row_step::<T>(
        prev.slice(1..top + 1),
        Ext::ONE,
        prev.slice(0..top),
        ti,
        out,
    );
}
