//! Coordinate-wise soft solvers of `bernoulli` (DESIGN.md §2): `x: n → z ∈ [0,1]ⁿ`,
//! `z = argmax_{z ∈ [0,1]ⁿ} ⟨x, z⟩ − f(z)` with `f` the negative binary entropy (sigmoid) or the
//! Euclidean `½‖z − ½‖²` (clipped linear).

use crate::real::Real;

/// `log σ(x) = −log(1 + exp(−x))`, stable for both signs.
pub fn log_sigmoid<F: Real>(x: F) -> F {
    if x >= F::zero() {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

/// `z_i = σ(x_i) = 1 / (1 + exp(−x_i))`, computed as `exp(x_i) / (1 + exp(x_i))` for `x_i < 0`, so
/// `exp` never overflows for either sign. Panics if the lengths differ.
pub fn sigmoid<F: Real>(x: &[F], z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "sigmoid: x and z differ in length");
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = if xi >= F::zero() {
            (F::one() + (-xi).exp()).recip()
        } else {
            let e = xi.exp();
            e / (F::one() + e)
        };
    }
}

/// Backward of [`sigmoid`] from its output `z`: `grad_x += g ⊙ z ⊙ (1 − z)`. Adds into `grad_x`.
pub fn sigmoid_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "sigmoid_vjp: length mismatch"
    );
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        *gx = *gx + gi * zi * (F::one() - zi);
    }
}

/// `z_i = clip(x_i + ½, 0, 1)`: the maximiser of `x_i z_i − ½(z_i − ½)²` over `[0, 1]` (Euclidean
/// regularizer `½‖z − ½‖²`, so `z = ½` at `x = 0`). Panics if the lengths differ.
pub fn clipped_linear<F: Real>(x: &[F], z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "clipped_linear: x and z differ in length");
    let half = F::of(0.5);
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = (xi + half).max(F::zero()).min(F::one());
    }
}

/// Backward of [`clipped_linear`] from its output `z`: `grad_x_i += g_i` where `0 < z_i < 1`, else
/// nothing (the derivative on the clipped pieces, and the kink, is taken as 0). Adds into `grad_x`.
pub fn clipped_linear_vjp<F: Real>(z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "clipped_linear_vjp: length mismatch"
    );
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        if zi > F::zero() && zi < F::one() {
            *gx = *gx + gi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{fd_grad, XorShift};

    #[test]
    fn sigmoid_values_and_extremes() {
        let x = [0.0f64, 2f64.ln(), -(3f64.ln()), 800.0, -800.0, 1e30, -1e30];
        let mut z = [0.0; 7];
        sigmoid(&x, &mut z);
        // σ(0) = ½, σ(ln 2) = 2/3, σ(−ln 3) = 1/4, saturation without overflow.
        let want = [0.5, 2.0 / 3.0, 0.25, 1.0, 0.0, 1.0, 0.0];
        for (a, b) in z.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        let xf = [100.0f32, -100.0, 1e30, -1e30, 0.0];
        let mut zf = [0.0f32; 5];
        sigmoid(&xf, &mut zf);
        assert_eq!([zf[0], zf[2], zf[3], zf[4]], [1.0, 1.0, 0.0, 0.5]);
        // σ(−100) = e⁻¹⁰⁰/(1 + e⁻¹⁰⁰) ≈ 3.72e-44: an f32 subnormal (spacing 2⁻¹⁴⁹), not 0.
        assert!((f64::from(zf[1]) - (-100f64).exp()).abs() <= 2f64.powi(-149));
        // σ(−x) = 1 − σ(x), against the naive formula on moderate x.
        let mut r = XorShift::new(3);
        let x = r.vec(50, -20.0, 20.0);
        let mut z = vec![0.0; 50];
        sigmoid(&x, &mut z);
        for (zi, xi) in z.iter().zip(&x) {
            assert!((zi - 1.0 / (1.0 + (-xi).exp())).abs() < 1e-15);
        }
    }

    #[test]
    fn clipped_linear_values() {
        let x = [-1.0f64, -0.5, -0.25, 0.0, 0.25, 0.5, 3.0, -1e30, 1e30];
        let mut z = [0.0; 9];
        clipped_linear(&x, &mut z);
        assert_eq!(z, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn sigmoid_vjp_matches_finite_differences() {
        for seed in 0..20 {
            let mut r = XorShift::new(200 + seed);
            let n = 1 + (r.next_u64() % 8) as usize;
            let x = r.vec(n, -6.0, 6.0);
            let g = r.vec(n, -1.0, 1.0);
            let mut z = vec![0.0; n];
            sigmoid(&x, &mut z);
            let prior = r.vec(n, -1.0, 1.0);
            let mut grad = prior.clone();
            sigmoid_vjp(&z, &g, &mut grad);
            let fd = fd_grad(sigmoid, &x, &g, 1e-5);
            for i in 0..n {
                assert!((grad[i] - prior[i] - fd[i]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn clipped_linear_vjp_matches_finite_differences() {
        let h = 1e-6;
        for seed in 0..20 {
            let mut r = XorShift::new(300 + seed);
            let n = 1 + (r.next_u64() % 8) as usize;
            // Keep x away from the kinks at ±½ so that x ± h stays on one piece.
            let x: Vec<f64> = (0..n)
                .map(|_| loop {
                    let v = r.uniform(-1.5, 1.5);
                    if (v.abs() - 0.5).abs() > 1e-3 {
                        break v;
                    }
                })
                .collect();
            let g = r.vec(n, -1.0, 1.0);
            let mut z = vec![0.0; n];
            clipped_linear(&x, &mut z);
            let prior = r.vec(n, -1.0, 1.0);
            let mut grad = prior.clone();
            clipped_linear_vjp(&z, &g, &mut grad);
            let fd = fd_grad(clipped_linear, &x, &g, h);
            for i in 0..n {
                assert!((grad[i] - prior[i] - fd[i]).abs() < 1e-7);
            }
        }
    }
}
