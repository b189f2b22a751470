//! Euclidean projection onto the capped simplex (Wang & Lu 2015, "Projection onto the capped
//! simplex", arXiv:1503.01002): `x: n → z ∈ C_k = {z ∈ [0,1]ⁿ : Σ z = k}`,
//! `z = argmin_{z ∈ C_k} ‖z − x‖² = argmax_{z ∈ C_k} ⟨x, z⟩ − ½‖z‖² = clip(x − τ, 0, 1)`,
//! the Euclidean soft solver of `subset(n, k)` (DESIGN.md §2; `C_k = conv` of the k-subsets).

use crate::real::Real;

/// `z_i = clip(x_i − τ, 0, 1)` with `τ` such that `Σ z = k`; exact, not a tolerance iteration.
///
/// `s(τ) = Σ clip(x_i − τ, 0, 1)` is piecewise linear and nonincreasing, with breakpoints `x_i`
/// (entry `i` starts to grow) and `x_i − 1` (entry `i` saturates at 1). Sort `x` descending into
/// `v`; sweep the breakpoints downwards keeping `c` (the top `c` are saturated) and `a` (the top
/// `a` have entered); at the first breakpoint `b` with `s(b) = c + Σ_{c≤j<a} (v_j − b) ≥ k` the
/// root is on the piece above `b`: `τ = r + (Σ_{c≤j<a} (v_j − r) − (k − c)) / (a − c)`, `r = v_c`
/// (the sum is recomputed around `r`, so every term lies in `[−1, 1]`). Everything runs on
/// `x − max x`. O(n log n); `z` is the sort's scratch. `k = n` gives ones, `k = 0` zeros.
/// Panics if the lengths differ or `k > n`.
pub fn capped_simplex<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "capped_simplex: x and z differ in length");
    let n = x.len();
    assert!(k <= n, "capped_simplex: k = {k} > n = {n}");
    if k == 0 || k == n {
        z.fill(if k == n { F::one() } else { F::zero() });
        return;
    }
    z.copy_from_slice(x);
    z.sort_unstable_by(|a, b| b.f64().total_cmp(&a.f64()));
    let m = z[0];
    for v in z.iter_mut() {
        *v = *v - m;
    }
    let tau = threshold(z, k);
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = ((xi - m) - tau).max(F::zero()).min(F::one());
    }
}

/// The sweep of [`capped_simplex`] on `v` sorted descending (`1 ≤ k < n`): returns `τ`.
fn threshold<F: Real>(v: &[F], k: usize) -> F {
    let n = v.len();
    let kf = F::of(k as f64);
    let (mut a, mut c) = (0, 0);
    let mut sum = F::zero(); // Σ_{c≤j<a} v_j
    loop {
        // The next breakpoint: `v_a` enters or `v_c − 1` saturates, whichever is larger.
        let entering = a < n && (c == a || v[a] >= v[c] - F::one());
        let b = if entering { v[a] } else { v[c] - F::one() };
        let s = F::of(c as f64) + sum - F::of((a - c) as f64) * b;
        if s >= kf {
            if a == c {
                // A flat piece at height c = k (reached only through rounding): top c are ones.
                return b;
            }
            let r = v[c];
            let around: F = v[c..a].iter().map(|&vj| vj - r).sum();
            return r + (around - F::of((k - c) as f64)) / F::of((a - c) as f64);
        }
        if entering {
            sum = sum + v[a];
            a += 1;
        } else {
            sum = sum - v[c];
            c += 1;
        }
    }
}

/// Backward of [`capped_simplex`] from its output `z`: with `L = {i : 0 < z_i < 1}`,
/// `grad_x_i += g_i − (1/|L|) Σ_{j∈L} g_j` for `i ∈ L`, nothing elsewhere
/// (`J = diag(1_L) − 1_L 1_Lᵀ/|L|`, symmetric; 0 when `L` is empty). Adds into `grad_x`.
pub fn capped_simplex_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "capped_simplex_vjp: length mismatch"
    );
    let inside = |zi: F| zi > F::zero() && zi < F::one();
    let (mut sum, mut count) = (F::zero(), 0usize);
    for (&zi, &gi) in z.iter().zip(g) {
        if inside(zi) {
            sum = sum + gi;
            count += 1;
        }
    }
    if count == 0 {
        return;
    }
    let mean = sum / F::of(count as f64);
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        if inside(zi) {
            *gx = *gx + (gi - mean);
        }
    }
}
