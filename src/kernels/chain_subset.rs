//! Correlated top-k (Paulus et al. 2020, "Corr. Top k"): `score(z) = Σ_i u_i z_i +
//! Σ_i p_i z_i z_{i+1}` over `z ∈ {0,1}ⁿ` with `Σ z = k`. A row `w = (u_0…u_{n−1},
//! p_0…p_{n−2})` has `2n − 1` entries and so has the layer's `z = (z_i, z_i z_{i+1})`, whose
//! score is `⟨w, z⟩`. Both solvers are one dynamic program over (position, count, previous
//! bit), O(nk) time, its suffix recursion written once over a [`Semiring`]: max-plus with
//! backpointers for the exact solver, log-space forward–backward for the marginals of
//! `p(z) ∝ exp⟨x, z⟩` (the exponential-family soft solver, DESIGN.md §2). They run in f64
//! whatever the precision, on `min(k, n − k)`: with `z' = 1 − z` the score becomes
//! `const + Σ u'_i z'_i + Σ p_i z'_i z'_{i+1}`, `u'_i = −u_i − p_{i−1} − p_i`, over the
//! `(n − k)`-subsets, so `k = n − 1` costs what `k = 1` costs.

use super::logspace::{Dual, LogSemiring, MaxPlus, Semiring};
use super::{add_narrowed, narrow, widen};
use crate::real::Real;

/// A row in f64 and the subset size the DPs run on: `(w, k)`, or the complement `(A w, n − k)`
/// when `2k > n`, `A` the linear map `u'_i = −u_i − p_{i−1} − p_i`, `p' = p` (applied to
/// tangents too). The second value says whether the complement was taken.
fn kept<F: Real>(w: &[F], k: usize) -> (Vec<f64>, usize, bool) {
    let n = items(w.len());
    assert!(k <= n, "correlated top-k: k = {k} > n = {n}");
    let mut v = widen(w);
    if 2 * k <= n {
        return (v, k, false);
    }
    complement_scores(&mut v, n);
    (v, n - k, true)
}

/// `u'_i = −u_i − p_{i−1} − p_i` in place (`p_{−1} = p_{n−1} = 0`), `p` unchanged.
fn complement_scores(v: &mut [f64], n: usize) {
    for i in 0..n {
        let left = if i >= 1 { v[n + i - 1] } else { 0.0 };
        let right = if i + 1 < n { v[n + i] } else { 0.0 };
        v[i] = -v[i] - left - right;
    }
}

/// Back from the complement's `(z'_i, z'_i z'_{i+1})`: `z_i = c − z'_i`,
/// `z_i z_{i+1} = c − z'_i − z'_{i+1} + z'_i z'_{i+1}`, in place; `c = 1` for values, 0 for
/// tangents.
fn uncomplement(v: &mut [f64], n: usize, c: f64) {
    for i in 0..n - 1 {
        v[n + i] += c - v[i] - v[i + 1];
    }
    for vi in &mut v[..n] {
        *vi = c - *vi;
    }
}

/// The number of items `n` of a row of `2n − 1` entries.
fn items(len: usize) -> usize {
    len.div_ceil(2)
}

/// `z = argmax ⟨w, z⟩` over the correlated k-subsets, ties to ones at the lowest indices (to
/// zeros at the lowest indices when the complement is taken, `2k > n`).
///
/// Suffix Viterbi: the recursion of [`suffix_step`] in max-plus, `V_i[j][b]` = best score of
/// items `i..n` holding `j` ones after a previous bit `b`, `V_i[j][b] = max(V_{i+1}[j][0],
/// u_i + b·p_{i−1} + V_{i+1}[j−1][1])`; the backpointers (one decision per cell, `2n(k + 1)`
/// bytes) are traced forward from `(i, j, b) = (0, k, 0)`, taking a one on ties. Panics if
/// `k > n` or the lengths differ.
pub fn chain_argmax<F: Real>(w: &[F], k: usize, z: &mut [F]) {
    assert_eq!(w.len(), z.len(), "chain_argmax: w and z differ in length");
    let n = items(w.len());
    let (w, k, flipped) = kept(w, k);
    let mut bits = viterbi(&w, n, k);
    if flipped {
        uncomplement(&mut bits, n, 1.0);
    }
    narrow(bits, z);
}

/// The suffix Viterbi of [`chain_argmax`] on `w` in f64: `(z_i, z_i z_{i+1})`.
fn viterbi(w: &[f64], n: usize, k: usize) -> Vec<f64> {
    let w: Vec<MaxPlus<f64>> = w.iter().map(|&v| MaxPlus(v)).collect();
    let row = 2 * (k + 1);
    let mut take_one = vec![false; n * row];
    let mut next = vec![MaxPlus::zero(); row];
    next[0] = MaxPlus::one();
    next[1] = MaxPlus::one();
    let mut cur = next.clone();
    for i in (0..n).rev() {
        let picks = &mut take_one[i * row..(i + 1) * row];
        suffix_step(&w, k, i, &next, &mut cur, |cell, zero, one| {
            picks[cell] = one.0 > f64::NEG_INFINITY && one.0 >= zero.0;
        });
        std::mem::swap(&mut cur, &mut next);
    }
    let mut z = vec![0.0; w.len()];
    let (mut j, mut b) = (k, 0);
    for i in 0..n {
        let pick = take_one[i * row + 2 * j + b];
        z[i] = f64::from(u8::from(pick));
        j -= usize::from(pick);
        b = usize::from(pick);
    }
    for i in 0..n - 1 {
        z[n + i] = z[i] * z[i + 1];
    }
    z
}

/// `b ⊗ p_{i−1}`: the pairwise weight earned by a one at item `i` after a bit `b` (`1̸` when
/// `b = 0` or `i = 0`).
fn pair<N: Semiring<f64>>(w: &[N], i: usize, b: usize) -> N {
    if b == 1 && i >= 1 {
        w[items(w.len()) + i - 1]
    } else {
        N::one()
    }
}

/// The suffix weight of a one at item `i` after a bit `b`, with `j` ones in items `i..n`:
/// `u_i ⊗ (b·p_{i−1}) ⊗ β_{i+1}[j−1][1]` (`0̸` when `j = 0`), `after = β_{i+1}`.
fn with_one<N: Semiring<f64>>(w: &[N], i: usize, j: usize, b: usize, after: &[N]) -> N {
    match j {
        0 => N::zero(),
        _ => w[i].times(pair(w, i, b)).times(after[2 * (j - 1) + 1]),
    }
}

/// One step of the suffix recursion shared by both solvers: `β_i[j][b] = β_{i+1}[j][0] ⊕
/// u_i ⊗ (b·p_{i−1}) ⊗ β_{i+1}[j−1][1]` for `j ≤ min(k, n − i)`, `b ∈ {0, 1}`, from
/// `after = β_{i+1}` into `here = β_i` (the other entries of `here` are left as they are).
/// `note(2j + b, zero, one)` sees the two terms of each cell before they are added (the
/// Viterbi records its backpointers there).
fn suffix_step<N: Semiring<f64>>(
    w: &[N],
    k: usize,
    i: usize,
    after: &[N],
    here: &mut [N],
    mut note: impl FnMut(usize, N, N),
) {
    let n = items(w.len());
    for j in 0..=k.min(n - i) {
        for b in 0..2 {
            let (zero, one) = (after[2 * j], with_one(w, i, j, b, after));
            note(2 * j + b, zero, one);
            here[2 * j + b] = zero.plus(one);
        }
    }
}

/// `z = E_p[(z_i, z_i z_{i+1})]` for `p(z) ∝ exp⟨x, z⟩` over the correlated k-subsets: unary and
/// pairwise marginals, in `[0, 1]`. Log space in f64, so finite for any finite `x`. Allocates
/// `2(n + 1)(min(k, n − k) + 1)` numbers. Panics if `k > n` or the lengths differ.
pub fn chain_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(
        x.len(),
        z.len(),
        "chain_marginals: x and z differ in length"
    );
    let n = items(x.len());
    let (weights, k, flipped) = kept(x, k);
    let mut mu = vec![0.0; x.len()];
    run(&weights, k, |i, m, _| mu[i] = m);
    if flipped {
        uncomplement(&mut mu, n, 1.0);
    }
    narrow(mu.into_iter().map(|m| m.clamp(0.0, 1.0)), z);
}

/// Backward of [`chain_marginals`]: `grad_x += J g`, `J = Cov_p((z_i, z_i z_{i+1}))` (the
/// Hessian of the log-partition, symmetric), computed exactly as `d/dε marginals(x + ε g)` by
/// running the same forward–backward on [`Dual`] numbers (through the complement's linear maps
/// when it is taken). Adds into `grad_x`.
pub fn chain_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "chain_marginals_jvp: length mismatch"
    );
    let n = items(x.len());
    let (tangents, _, _) = kept(g, k);
    let (values, k, flipped) = kept(x, k);
    let weights: Vec<Dual<f64>> = values
        .iter()
        .zip(tangents)
        .map(|(&v, d)| Dual { v, d })
        .collect();
    let mut dmu = vec![0.0; x.len()];
    run(&weights, k, |i, _, d| dmu[i] = d);
    if flipped {
        uncomplement(&mut dmu, n, 0.0);
    }
    add_narrowed(dmu, grad_x);
}

/// Forward–backward in log space. `α[i][j][b]` (stored): log-sum of the scores of items `< i`
/// with `j` ones and last bit `b`; `β[j][b]` (rolled backwards): log-sum over items `> i` with
/// `j` ones after a bit `b` at item `i`, the pair `(i, i+1)` included. Then
/// `P(z_i = 1) ∝ Σ_j α[i+1][j][1] β_{i+1}[k−j][1]` and
/// `P(z_i z_{i+1} = 1) ∝ Σ_j α[i+1][j][1] e^{u_{i+1} + p_i} β_{i+2}[k−j−1][1]`, each over the
/// partition function `Σ_b α[n][k][b]`. Calls `out(index in z, μ, μ̇)`.
fn run<N: LogSemiring<f64>>(w: &[N], k: usize, mut out: impl FnMut(usize, f64, f64)) {
    let n = items(w.len());
    assert!(k <= n, "chain_marginals: k = {k} > n = {n}");
    let row = 2 * (k + 1);
    let mut alpha = vec![N::zero(); (n + 1) * row];
    alpha[0] = N::one();
    for i in 0..n {
        let (done, rest) = alpha.split_at_mut((i + 1) * row);
        let (prev, next) = (&done[i * row..], &mut rest[..row]);
        for j in 0..=k.min(i + 1) {
            next[2 * j] = prev[2 * j].plus(prev[2 * j + 1]);
            if j >= 1 {
                let from = prev[2 * (j - 1)].plus(prev[2 * (j - 1) + 1].times(pair(w, i, 1)));
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
        let (mu, dmu) = unary.ratio(log_z);
        out(i, mu, dmu);
        if i + 1 < n {
            let link = w[i + 1].times(w[n + i]);
            let mut both = N::zero();
            for j in (k + i + 1).saturating_sub(n).max(1)..=(i + 1).min(k.saturating_sub(1)) {
                both = both.plus(a[2 * j + 1].times(link).times(after[2 * (k - j - 1) + 1]));
            }
            let (mu, dmu) = both.ratio(log_z);
            out(n + i, mu, dmu);
        }
        suffix_step(w, k, i, &cur, &mut fresh, |_, _, _| {});
        std::mem::swap(&mut after, &mut cur);
        std::mem::swap(&mut cur, &mut fresh);
    }
}
