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
/// sweep keeps its resolution while `|x − max x| < 2⁵²`. O(n log n); allocates a sorted copy.
/// `k = n` gives ones, `k = 0` zeros.
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
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    let m = v[0];
    for vi in v.iter_mut() {
        *vi -= m;
    }
    let tau = threshold(&v, k);
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = F::of(((xi.f64() - m) - tau).clamp(0.0, 1.0));
    }
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
