//! Correlated top-k (Paulus et al. 2020, "Corr. Top k"): `score(z) = Σ_i u_i z_i +
//! Σ_i p_i z_i z_{i+1}` over `z ∈ {0,1}ⁿ` with `Σ z = k`. A row `w = (u_0…u_{n−1},
//! p_0…p_{n−2})` has `2n − 1` entries and so has the layer's `z = (z_i, z_i z_{i+1})`, whose
//! score is `⟨w, z⟩`. Both solvers are one dynamic program over (position, count, previous
//! bit), O(nk) time, run as vectorized rows: in max-plus with backpointers for the exact solver;
//! for the marginals of `p(z) ∝ exp⟨x, z⟩` (the exponential-family soft solver, DESIGN.md §2)
//! by forward–backward in the linear domain on numbers with an exponent of their own (`ext.rs`:
//! no `exp` or `ln` per cell, the forward table at `√n` checkpoints), which also carry the
//! directional derivative for the backward pass. They run in f64 whatever the precision, on
//! `min(k, n − k)`: with `z' = 1 − z` the score becomes `const + Σ u'_i z'_i + Σ p_i z'_i
//! z'_{i+1}`, `u'_i = −u_i − p_{i−1} − p_i`, over the `(n − k)`-subsets, so `k = n − 1` costs
//! what `k = 1` costs.

use super::ext::{
    pair_sum, product, ratio, row_step, sum, Checkpointed, Ext, Planes, View, ViewMut,
};
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
/// Suffix Viterbi, the recursion of the marginals' `β` (see `run`) in max-plus: `V_i[j][b]` =
/// best score of items `i..n` holding `j` ones after a previous bit `b`, `V_i[j][b] =
/// max(V_{i+1}[j][0], u_i + b·p_{i−1} + V_{i+1}[j−1][1])`, `V_n[0][b] = 0`, `−∞` where no
/// subset fits; the backpointers (whether the one won, ties to the one: `2n(k + 1)` bytes) are
/// traced forward from `(i, j, b) = (0, k, 0)`. Panics if `k > n` or the lengths differ.
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

/// The suffix Viterbi of [`chain_argmax`] on `w` in f64: `(z_i, z_i z_{i+1})`. The rows of `V`
/// are stored reversed like the marginals' (`v[q] = V[k − q][0]`, `v[row + q] = V[k − q][1]`),
/// so that a step reads aligned slices.
fn viterbi(w: &[f64], n: usize, k: usize) -> Vec<f64> {
    let row = k + 1;
    let mut take_one = vec![0u8; 2 * n * row];
    let mut after = vec![f64::NEG_INFINITY; 2 * row];
    (after[k], after[row + k]) = (0.0, 0.0);
    let mut here = after.clone();
    for i in (0..n).rev() {
        let linked = w[i] + if i >= 1 { w[n + i - 1] } else { 0.0 };
        let (zero, one) = after.split_at(row);
        let (here0, here1) = here.split_at_mut(row);
        let (picks0, picks1) = take_one[2 * i * row..2 * (i + 1) * row].split_at_mut(row);
        max_plus_step(&zero[..k], &one[1..], w[i], here0, picks0);
        max_plus_step(&zero[..k], &one[1..], linked, here1, picks1);
        (here0[k], here1[k]) = (zero[k], zero[k]);
        std::mem::swap(&mut here, &mut after);
    }
    let mut z = vec![0.0; w.len()];
    let (mut q, mut b) = (0, 0);
    for i in 0..n {
        let pick = q < k && take_one[(2 * i + b) * row + q] == 1;
        z[i] = f64::from(u8::from(pick));
        q += usize::from(pick);
        b = usize::from(pick);
    }
    for i in 0..n - 1 {
        z[n + i] = z[i] * z[i + 1];
    }
    z
}

#[inline(always)]
fn max_plus_step_body(zero: &[f64], one: &[f64], s: f64, out: &mut [f64], picks: &mut [u8]) {
    let len = zero.len();
    let (one, out, picks) = (&one[..len], &mut out[..len], &mut picks[..len]);
    for q in 0..len {
        let (z, o) = (zero[q], one[q] + s);
        let pick = o >= z;
        out[q] = if pick { o } else { z };
        picks[q] = u8::from(pick);
    }
}

crate::simd::multiversion! {
    /// One row of the Viterbi in max-plus: `out[q] = max(zero[q], one[q] + s)` and
    /// `picks[q] = [one[q] + s ≥ zero[q]]` for every `q` of `zero`, vectorized for this CPU.
    fn max_plus_step / max_plus_step_on(zero: &[f64], one: &[f64], s: f64, out: &mut [f64], picks: &mut [u8]) = max_plus_step_body
}

/// `z = E_p[(z_i, z_i z_{i+1})]` for `p(z) ∝ exp⟨x, z⟩` over the correlated k-subsets: unary and
/// pairwise marginals, in `[0, 1]`. On `Ext` numbers, so finite for any finite `x`. Allocates
/// about `12√n (min(k, n − k) + 1)` numbers. Panics if `k > n` or the lengths differ.
pub fn chain_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(
        x.len(),
        z.len(),
        "chain_marginals: x and z differ in length"
    );
    let n = items(x.len());
    let (weights, k, flipped) = kept(x, k);
    let mut mu = vec![0.0; x.len()];
    run::<false>(&weights, &[], k, |i, m, _| mu[i] = m);
    if flipped {
        uncomplement(&mut mu, n, 1.0);
    }
    narrow(mu.into_iter().map(|m| m.clamp(0.0, 1.0)), z);
}

/// Backward of [`chain_marginals`]: `grad_x += J g`, `J = Cov_p((z_i, z_i z_{i+1}))` (the
/// Hessian of the log-partition, symmetric), computed exactly as `d/dε marginals(x + ε g)` by
/// running the same forward–backward with the derivatives of its `Ext` numbers (through the
/// complement's linear maps when it is taken). Adds into `grad_x`.
pub fn chain_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "chain_marginals_jvp: length mismatch"
    );
    let n = items(x.len());
    let (tangents, _, _) = kept(g, k);
    let (values, k, flipped) = kept(x, k);
    let mut dmu = vec![0.0; x.len()];
    run::<true>(&values, &tangents, k, |i, _, d| dmu[i] = d);
    if flipped {
        uncomplement(&mut dmu, n, 0.0);
    }
    add_narrowed(dmu, grad_x);
}

/// Forward–backward. `α[i][j][b]`: the sum of `e^{score}` over the items `< i` with `j` ones
/// and last bit `b`, `α[i+1][j][0] = α[i][j][0] + α[i][j][1]`,
/// `α[i+1][j][1] = e^{u_i} α[i][j−1][0] + e^{u_i + p_{i−1}} α[i][j−1][1]` (kept at checkpoints,
/// [`Checkpointed`]; a row holds `b = 0` then `b = 1`); `β[j][b]` (rolled backwards, stored
/// reversed: `rb[q] = β[k − q]`, so that the sums pair aligned entries): the sum over the items
/// `> i` with `j` ones after a bit `b` at item `i`, the pair `(i, i+1)` included,
/// `β_i[j][b] = β_{i+1}[j][0] + e^{u_i + b·p_{i−1}} β_{i+1}[j−1][1]`. Then
/// `P(z_i = 1) ∝ Σ_j α[i+1][j][1] β_{i+1}[k−j][1]` and
/// `P(z_i z_{i+1} = 1) ∝ Σ_j α[i+1][j][1] e^{u_{i+1} + p_i} β_{i+2}[k−j−1][1]`, each over the
/// partition function `Σ_b α[n][k][b]`. `T`: whether derivatives (along `dw`) are carried. Calls
/// `out(index in z, μ, μ̇)`.
fn run<const T: bool>(w: &[f64], dw: &[f64], k: usize, mut out: impl FnMut(usize, f64, f64)) {
    let n = items(w.len());
    assert!(k <= n, "chain_marginals: k = {k} > n = {n}");
    let weight = |q: usize| Ext::exp(w[q], if T { dw[q] } else { 0.0 });
    // e^{u_i}, and e^{u_i + p_{i−1}} (the pair's weight; e^{u_0} for the first item).
    let unary: Vec<Ext> = (0..n).map(weight).collect();
    let linked: Vec<Ext> = (0..n)
        .map(|i| match i {
            0 => unary[0],
            _ => product(unary[i], weight(n + i - 1)),
        })
        .collect();
    let row = k + 1;
    let step = |i: usize, prev: View, next: ViewMut| {
        let (zero, one) = next.split_at(row);
        let (a0, a1) = (prev.slice(0..row), prev.slice(row..2 * row));
        row_step::<T>(a0, Ext::ONE, a1, Ext::ONE, zero);
        let (mut first, rest) = one.split_at(1);
        first.set(0, Ext::ZERO);
        row_step::<T>(a0.slice(0..k), unary[i], a1.slice(0..k), linked[i], rest);
    };
    // Row 0: α[0][0][0] = 1, nothing else.
    let origin = |row: ViewMut| (row.m[0], row.e[0]) = (1.0, 0.0);
    let mut alpha = Checkpointed::new(n, 2 * row, origin, step);
    let (blocks, c) = (alpha.blocks(), alpha.c);
    alpha.fill(blocks - 1);
    let last = alpha.row(n - (blocks - 1) * c);
    let partition = sum(last.get(k), last.get(row + k));
    // β_n[0][b] = 1.
    let mut rb = Planes::zeros(2 * row);
    rb.set(k, Ext::ONE);
    rb.set(row + k, Ext::ONE);
    let (mut after, mut old) = (rb.clone(), rb.clone());
    for b in (0..blocks).rev() {
        alpha.fill(b);
        for r in (b * c..((b + 1) * c).min(n + 1)).rev().filter(|&r| r >= 1) {
            let i = r - 1;
            let ones = alpha.row(r - b * c).slice(row..2 * row);
            let lo = (k + i + 1).saturating_sub(n).max(1);
            let hi = k.min(i + 1);
            let s = pair_sum::<T>(ones.slice(lo..hi + 1), rb.slice(row + lo..row + hi + 1));
            let (mu, dmu) = ratio(s, Ext::ONE, partition);
            out(i, mu, dmu);
            if i + 1 < n {
                let hi = (i + 1).min(k.saturating_sub(1));
                let s = match lo <= hi {
                    true => pair_sum::<T>(
                        ones.slice(lo..hi + 1),
                        after.slice(row + lo + 1..row + hi + 2),
                    ),
                    false => Ext::ZERO,
                };
                let (mu, dmu) = ratio(s, linked[i + 1], partition);
                out(n + i, mu, dmu);
            }
            // β_i from β_{i+1}: rb[q] ← rb[q] + e^{u_i}·rb1[q + 1] (b = 0) and
            // rb1[q] ← rb[q] + e^{u_i + p_{i−1}}·rb1[q + 1] (b = 1), q < k; rb1[k] ← rb[k] = 1.
            old.copy_from(&rb);
            let (b0, b1) = (old.slice(0..row), old.slice(row..2 * row));
            let (_, rest) = rb.split(0..2 * row);
            let (zero, one) = rest.split_at(row);
            let (zero, _) = zero.split_at(k);
            let (one, mut top) = one.split_at(k);
            row_step::<T>(b0.slice(0..k), Ext::ONE, b1.slice(1..row), unary[i], zero);
            row_step::<T>(b0.slice(0..k), Ext::ONE, b1.slice(1..row), linked[i], one);
            top.set(0, b0.get(k));
            std::mem::swap(&mut after, &mut old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;

    /// `Σ u_i z_i + Σ p_i z_i z_{i+1}` of the bits `z` under `w = (u, p)`.
    fn chain_score(w: &[f64], z: &[f64]) -> f64 {
        let n = z.len();
        let unary: f64 = (0..n).map(|i| w[i] * z[i]).sum();
        unary + (0..n - 1).map(|i| w[n + i] * z[i] * z[i + 1]).sum::<f64>()
    }

    /// Beyond brute force's reach (tests/subset.rs goes to n = 12): the Viterbi's subset has `k`
    /// ones, its pairs are the products of its bits, and no exchange of a one with a zero scores
    /// higher (complement included); all-equal scores give the ones at the lowest indices.
    #[test]
    fn no_exchange_improves_the_viterbi() {
        let mut r = XorShift::new(3);
        for (n, k) in [(60, 7), (60, 50), (41, 20)] {
            let w = r.vec(2 * n - 1, -2.0, 2.0);
            let mut z = vec![0.0; 2 * n - 1];
            chain_argmax(&w, k, &mut z);
            let (bits, pairs) = z.split_at(n);
            assert_eq!(bits.iter().sum::<f64>(), k as f64, "n {n} k {k}");
            for i in 0..n - 1 {
                assert_eq!(pairs[i], bits[i] * bits[i + 1], "n {n} k {k} pair {i}");
            }
            let best = chain_score(&w, bits);
            let mut other = bits.to_vec();
            for (a, b) in (0..n).flat_map(|a| (0..n).map(move |b| (a, b))) {
                if bits[a] == 1.0 && bits[b] == 0.0 {
                    (other[a], other[b]) = (0.0, 1.0);
                    let s = chain_score(&w, &other);
                    assert!(s <= best + 1e-12, "n {n} k {k}: {a}↔{b} gives {s} > {best}");
                    (other[a], other[b]) = (1.0, 0.0);
                }
            }
        }
        let mut z = vec![0.0; 9];
        chain_argmax(&[0.0; 9], 2, &mut z);
        assert_eq!(&z[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
    }

    /// Over many checkpoint blocks and at logits far beyond `exp`'s range: the unary marginals
    /// sum to `k`, and each pair's marginal is a joint probability of its two items
    /// (`max(0, μ_i + μ_{i+1} − 1) ≤ μ_{i,i+1} ≤ min(μ_i, μ_{i+1})`), the complement (`2k > n`)
    /// included.
    #[test]
    fn marginals_hold_their_identities_across_blocks() {
        let mut r = XorShift::new(8);
        for (n, k, scale) in [(500, 60, 5.0), (300, 150, 1e4), (97, 90, 30.0)] {
            let x = r.vec(2 * n - 1, -scale, scale);
            let mut z = vec![0.0; 2 * n - 1];
            chain_marginals(&x, k, &mut z);
            let (unary, pairs) = z.split_at(n);
            let total: f64 = unary.iter().sum();
            assert!(
                (total - k as f64).abs() <= 1e-9 * k as f64,
                "n {n} k {k}: {total}"
            );
            for (i, &p) in pairs.iter().enumerate() {
                let (a, b) = (unary[i], unary[i + 1]);
                assert!(p <= a.min(b) + 1e-12, "n {n} pair {i}: {p} > min({a}, {b})");
                assert!(
                    p >= a + b - 1.0 - 1e-12,
                    "n {n} pair {i}: {p} < {a} + {b} − 1"
                );
            }
        }
    }
}
