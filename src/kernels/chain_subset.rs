//! Correlated top-k (Paulus et al. 2020, "Corr. Top k"): `score(z) = Σ_i u_i z_i +
//! Σ_i p_i z_i z_{i+1}` over `z ∈ {0,1}ⁿ` with `Σ z = k`. A row `w = (u_0…u_{n−1},
//! p_0…p_{n−2})` has `2n − 1` entries and so has the layer's `z = (z_i, z_i z_{i+1})`, whose
//! score is `⟨w, z⟩`. Both solvers are dynamic programs over (position, count, previous bit),
//! O(nk) time: max-plus for the exact solver, log-space forward–backward for the marginals of
//! `p(z) ∝ exp⟨x, z⟩` (the exponential-family soft solver, DESIGN.md §2).

use super::logspace::{Dual, LogNum};
use crate::real::Real;

/// The number of DP cells of `correlated_subset(n, k)`: `n · k` (memory and time scale).
pub fn chain_cells(n: usize, k: usize) -> usize {
    n * k
}

/// The number of items `n` of a row of `2n − 1` entries.
fn items(len: usize) -> usize {
    len.div_ceil(2)
}

/// `z = argmax ⟨w, z⟩` over the correlated k-subsets, ties to ones at the lowest indices.
///
/// Suffix Viterbi: `V_i[j][b]` = best score of items `i..n` holding `j` ones after a previous
/// bit `b`, `V_i[j][b] = max(V_{i+1}[j][0], u_i + b·p_{i−1} + V_{i+1}[j−1][1])`; the decisions
/// (one per cell, `2n(k + 1)` bytes) are traced forward from `(i, j, b) = (0, k, 0)`, taking a
/// one on ties, which prefers ones at the lowest indices. Panics if `k > n` or the lengths differ.
pub fn chain_argmax<F: Real>(w: &[F], k: usize, z: &mut [F]) {
    assert_eq!(w.len(), z.len(), "chain_argmax: w and z differ in length");
    let n = items(w.len());
    assert!(k <= n, "chain_argmax: k = {k} > n = {n}");
    let row = 2 * (k + 1);
    let mut take_one = vec![false; n * row];
    let mut next = vec![F::neg_infinity(); row];
    next[0] = F::zero();
    next[1] = F::zero();
    let mut cur = next.clone();
    for i in (0..n).rev() {
        cur.fill(F::neg_infinity());
        for j in 0..=k.min(n - i) {
            for b in 0..2 {
                let zero = next[2 * j];
                let one = match j {
                    0 => F::neg_infinity(),
                    _ => w[i] + pair_bonus(w, n, i, b) + next[2 * (j - 1) + 1],
                };
                let pick = one > F::neg_infinity() && one >= zero;
                take_one[i * row + 2 * j + b] = pick;
                cur[2 * j + b] = if pick { one } else { zero };
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    let (mut j, mut b) = (k, 0);
    for i in 0..n {
        let pick = take_one[i * row + 2 * j + b];
        z[i] = if pick { F::one() } else { F::zero() };
        j -= usize::from(pick);
        b = usize::from(pick);
    }
    for i in 0..n - 1 {
        z[n + i] = z[i] * z[i + 1];
    }
}

/// `b · p_{i−1}`: the pairwise score earned by a one at item `i` after a bit `b`.
fn pair_bonus<F: Real>(w: &[F], n: usize, i: usize, b: usize) -> F {
    if b == 1 && i >= 1 {
        w[n + i - 1]
    } else {
        F::zero()
    }
}

/// `z = E_p[(z_i, z_i z_{i+1})]` for `p(z) ∝ exp⟨x, z⟩` over the correlated k-subsets: unary and
/// pairwise marginals, in `[0, 1]`. Log space, so finite for any finite `x`. Allocates
/// `2(n + 1)(k + 1)` numbers. Panics if `k > n` or the lengths differ.
pub fn chain_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "chain_marginals: x and z differ in length");
    let weights: Vec<F> = x.to_vec();
    run(&weights, k, |i, mu, _| z[i] = mu);
}

/// Backward of [`chain_marginals`]: `grad_x += J g`, `J = Cov_p((z_i, z_i z_{i+1}))` (the
/// Hessian of the log-partition, symmetric), computed exactly as `d/dε marginals(x + ε g)` by
/// running the same forward–backward on [`Dual`] numbers. Adds into `grad_x`.
pub fn chain_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "chain_marginals_jvp: length mismatch"
    );
    let weights: Vec<Dual<F>> = x.iter().zip(g).map(|(&v, &d)| Dual { v, d }).collect();
    run(&weights, k, |i, _, dmu| grad_x[i] = grad_x[i] + dmu);
}

/// Forward–backward in log space. `α[i][j][b]` (stored): log-sum of the scores of items `< i`
/// with `j` ones and last bit `b`; `β[j][b]` (rolled backwards): log-sum over items `> i` with
/// `j` ones after a bit `b` at item `i`, the pair `(i, i+1)` included. Then
/// `P(z_i = 1) ∝ Σ_j α[i+1][j][1] β_{i+1}[k−j][1]` and
/// `P(z_i z_{i+1} = 1) ∝ Σ_j α[i+1][j][1] e^{u_{i+1} + p_i} β_{i+2}[k−j−1][1]`, each over the
/// partition function `Σ_b α[n][k][b]`. Calls `out(index in z, μ, μ̇)`.
fn run<F: Real, N: LogNum<F>>(w: &[N], k: usize, mut out: impl FnMut(usize, F, F)) {
    let n = items(w.len());
    assert!(k <= n, "chain_marginals: k = {k} > n = {n}");
    let row = 2 * (k + 1);
    let pair = |i: usize, b: usize| {
        if b == 1 && i >= 1 {
            w[n + i - 1]
        } else {
            N::one()
        }
    };
    let mut alpha = vec![N::zero(); (n + 1) * row];
    alpha[0] = N::one();
    for i in 0..n {
        let (done, rest) = alpha.split_at_mut((i + 1) * row);
        let (prev, next) = (&done[i * row..], &mut rest[..row]);
        for j in 0..=k.min(i + 1) {
            next[2 * j] = prev[2 * j].plus(prev[2 * j + 1]);
            if j >= 1 {
                let from = prev[2 * (j - 1)].plus(prev[2 * (j - 1) + 1].times(pair(i, 1)));
                next[2 * j + 1] = from.times(w[i]);
            }
        }
    }
    let log_z = alpha[n * row + 2 * k].plus(alpha[n * row + 2 * k + 1]);
    let mut cur = vec![N::zero(); row];
    cur[0] = N::one();
    cur[1] = N::one();
    let mut after = cur.clone();
    let mut fresh = cur.clone();
    for i in (0..n).rev() {
        let a = &alpha[(i + 1) * row..(i + 2) * row];
        let mut unary = N::zero();
        for j in (k + i + 1).saturating_sub(n).max(1)..=k.min(i + 1) {
            unary = unary.plus(a[2 * j + 1].times(cur[2 * (k - j) + 1]));
        }
        emit(unary.ratio(log_z), i, &mut out);
        if i + 1 < n {
            let link = w[i + 1].times(w[n + i]);
            let mut both = N::zero();
            for j in (k + i + 1).saturating_sub(n).max(1)..=(i + 1).min(k.saturating_sub(1)) {
                both = both.plus(a[2 * j + 1].times(link).times(after[2 * (k - j - 1) + 1]));
            }
            emit(both.ratio(log_z), n + i, &mut out);
        }
        for j in 0..=k.min(n - i) {
            for b in 0..2 {
                let one = match j {
                    0 => N::zero(),
                    _ => w[i].times(pair(i, b)).times(cur[2 * (j - 1) + 1]),
                };
                fresh[2 * j + b] = cur[2 * j].plus(one);
            }
        }
        std::mem::swap(&mut after, &mut cur);
        std::mem::swap(&mut cur, &mut fresh);
    }
}

/// Passes a marginal, clamped to `[0, 1]`, and its tangent to `out`.
fn emit<F: Real>((mu, dmu): (F, F), index: usize, out: &mut impl FnMut(usize, F, F)) {
    out(index, mu.max(F::zero()).min(F::one()), dmu);
}
