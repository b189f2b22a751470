//! Backward rules that work for every soft kernel. The native rules (closed forms, implicit
//! differentiation, unrolling) live with their kernels in `src/kernels/`.

use crate::real::Real;

/// The generic finite-difference rule along the cotangent:
///
/// `dL/dw ≈ [z_T(w + h·g) − z_T(w − h·g)] / (2h)`, `h = eps/‖g‖`, `z_T(w) = solve(w/T)`,
///
/// exact up to `O(h²/T³)` because `∂z_T/∂w` is symmetric (a Hessian of a convex conjugate),
/// so `Jᵀg = Jg`. It works in the kernel's own coordinates: the cotangent is folded into `w`
/// space first (`fold`) and the entries the kernel does not read are zeroed in the result
/// (`restrict`). `solve` runs in f64 whatever the request's precision, so that the difference
/// quotient keeps its digits in f32. Adds into `grad_w`.
#[allow(clippy::too_many_arguments)]
pub fn finite_diff<F: Real, E>(
    solve: impl Fn(&[f64], &mut [f64]) -> Result<(), E>,
    fold: impl Fn(&mut [f64]),
    restrict: impl Fn(&mut [f64]),
    w: &[F],
    temperature: f64,
    g: &[F],
    eps: f64,
    grad_w: &mut [F],
) -> Result<(), E> {
    let mut g = crate::kernels::widen(g);
    fold(&mut g);
    // The rule is linear in g: difference along g / max|g| and scale back, so that cotangents of
    // 1e±300 neither overflow nor vanish in ‖g‖.
    let scale = g.iter().fold(0.0, |m: f64, gi| m.max(gi.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return Ok(());
    }
    g.iter_mut().for_each(|gi| *gi /= scale);
    let norm = g.iter().map(|gi| gi * gi).sum::<f64>().sqrt();
    let h = eps / norm;
    let solve_at = |sign: f64| -> Result<Vec<f64>, E> {
        let x: Vec<f64> = w
            .iter()
            .zip(&g)
            .map(|(wi, gi)| (wi.f64() + sign * h * gi) / temperature)
            .collect();
        let mut z = vec![0.0; w.len()];
        solve(&x, &mut z)?;
        Ok(z)
    };
    let (plus, minus) = (solve_at(1.0)?, solve_at(-1.0)?);
    let mut diff: Vec<f64> = plus
        .iter()
        .zip(&minus)
        .map(|(p, m)| (p - m) / (2.0 * h) * scale)
        .collect();
    restrict(&mut diff);
    for (gw, d) in grad_w.iter_mut().zip(diff) {
        *gw = *gw + F::of(d);
    }
    Ok(())
}
