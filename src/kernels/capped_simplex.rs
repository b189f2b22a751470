//! Euclidean projection onto the capped simplex (Wang & Lu 2015, "Projection onto the capped
//! simplex", arXiv:1503.01002): `x: n → z ∈ C_k = {z ∈ [0,1]ⁿ : Σ z = k}`,
//! `z = argmin_{z ∈ C_k} ‖z − x‖² = argmax_{z ∈ C_k} ⟨x, z⟩ − ½‖z‖² = clip(x − τ, 0, 1)`,
//! the Euclidean soft solver of `subset(n, k)` (DESIGN.md §2; `C_k = conv` of the k-subsets).

use crate::kernels::widen;
use crate::real::Real;

/// `z_i = clip(x_i − τ, 0, 1)` with `τ` such that `Σ z = k`; exact, not a tolerance iteration.
///
/// `s(τ) = Σ clip(x_i − τ, 0, 1)` is piecewise linear and nonincreasing, with breakpoints `x_i`
/// (entry `i` starts to grow) and `x_i − 1` (entry `i` saturates at 1). Sort `x` descending into
/// `v`; sweep the breakpoints downwards keeping `c` (the top `c` are saturated) and `a` (the top
/// `a` have entered); at the first breakpoint `b` with `s(b) = c + Σ_{c≤j<a} (v_j − b) ≥ k` the
/// root is on the piece above `b`: `τ = r + (Σ_{c≤j<a} (v_j − r) − (k − c)) / (a − c)`, `r = v_c`
/// (the sum is recomputed around `r`, so every term lies in `[−1, 1]`). Everything runs in f64
/// (in f32, `v − 1 = v` beyond 2²⁴, reached at `w = ±1e4`, `T = 1e-4`) on `x − max x`, so the
/// sweep keeps its resolution while `|x − max x| < 2⁵²`. Only the entries that can be free at the
/// root are sorted (`threshold_by_selection`): O(n) expected plus a sort of those; allocates a
/// copy. `k = n` gives ones, `k = 0` zeros.
/// Panics if the lengths differ or `k > n`.
pub fn capped_simplex<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "capped_simplex: x and z differ in length");
    let n = x.len();
    assert!(k <= n, "capped_simplex: k = {k} > n = {n}");
    if k == 0 || k == n {
        z.fill(if k == n { F::one() } else { F::zero() });
        return;
    }
    let mut v = widen(x);
    let m = v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    for vi in v.iter_mut() {
        *vi -= m;
    }
    let tau = threshold_by_selection(&mut v, k);
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = F::of(((xi.f64() - m) - tau).clamp(0.0, 1.0));
    }
}

/// `τ` of [`capped_simplex`] for `v` in any order (`1 ≤ k < n`; `v` is reordered). With `v_(k)`
/// the k-th largest, `τ ∈ [v_(k) − 1, v_(k))`: at `v_(k)` the top `k − 1` entries carry less
/// than `k`, at `v_(k) − 1` the top `k` carry at least `k`. So the entries `≥ v_(k) + 1` are
/// ones and those `< v_(k) − 1` zeros at the root, and the sweep ([`threshold`]) runs on the
/// others alone with `k` less the ones: a selection (O(n) expected), a filter, and a sort of the
/// candidates. Where the candidates would all be ones (ties at the window's edges), the sweep
/// runs on the whole sorted `v`.
fn threshold_by_selection(v: &mut [f64], k: usize) -> f64 {
    let (_, &mut kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let ones = v.iter().filter(|&&x| x >= kth + 1.0).count();
    let mut candidates: Vec<f64> = v
        .iter()
        .copied()
        .filter(|&x| x < kth + 1.0 && x >= kth - 1.0)
        .collect();
    if k - ones >= candidates.len() {
        v.sort_unstable_by(|a, b| b.total_cmp(a));
        return threshold(v, k);
    }
    candidates.sort_unstable_by(|a, b| b.total_cmp(a));
    threshold(&candidates, k - ones)
}

/// The sweep of [`capped_simplex`] on `v` sorted descending (`1 ≤ k < n`): returns `τ`.
fn threshold(v: &[f64], k: usize) -> f64 {
    let n = v.len();
    let kf = k as f64;
    let (mut a, mut c) = (0, 0);
    let mut sum = 0.0; // Σ_{c≤j<a} v_j
    loop {
        // The next breakpoint: `v_a` enters or `v_c − 1` saturates, whichever is larger.
        let entering = a < n && (c == a || v[a] >= v[c] - 1.0);
        let b = if entering { v[a] } else { v[c] - 1.0 };
        let s = c as f64 + sum - (a - c) as f64 * b;
        if s >= kf {
            if a == c {
                // A flat piece at height c = k (reached only through rounding): top c are ones.
                return b;
            }
            let r = v[c];
            let around: f64 = v[c..a].iter().map(|&vj| vj - r).sum();
            return r + (around - (k - c) as f64) / (a - c) as f64;
        }
        if entering {
            sum += v[a];
            a += 1;
        } else {
            sum -= v[c];
            c += 1;
        }
    }
}

/// Backward of [`capped_simplex`] from its output `z`: with `L = {i : 0 < z_i < 1}`,
/// `grad_x_i += g_i − (1/|L|) Σ_{j∈L} g_j` for `i ∈ L`, nothing elsewhere
/// (`J = diag(1_L) − 1_L 1_Lᵀ/|L|`, symmetric; 0 when `L` is empty). Adds into `grad_x`.
pub fn capped_simplex_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    super::centered_on_free_vjp(|zi: F| zi > F::zero() && zi < F::one(), z, g, grad_x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;

    /// The sweep on the candidates near the k-th largest gives the sweep on the whole sorted
    /// row (to rounding), over spreads from 0.1 to 1e6, ties, and every k.
    #[test]
    fn candidates_give_the_full_sweep() {
        for seed in 0..300 {
            let mut r = XorShift::new(40 + seed);
            let n = 2 + (r.next_u64() % 60) as usize;
            let spread = [0.1, 1.0, 3.0, 1e6][(seed % 4) as usize];
            let mut v: Vec<f64> = r.vec(n, -spread, spread);
            if seed % 5 == 0 {
                // Ties, also one apart (the window's edges).
                v.iter_mut().for_each(|x| *x = (*x / spread * 3.0).round());
            }
            let m = v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            v.iter_mut().for_each(|x| *x -= m);
            let mut sorted = v.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            for k in 1..n {
                let want = threshold(&sorted, k);
                let got = threshold_by_selection(&mut v.clone(), k);
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "{seed} {k}: {got} vs {want}"
                );
            }
        }
    }
}
