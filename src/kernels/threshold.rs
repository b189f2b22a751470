//! Threshold solvers of `subset(n, k)` (DESIGN.md §2): `x: n → z ∈ C_k = {z ∈ [0,1]ⁿ : Σ z = k}`,
//! `z_i = h(x_i − τ)` with the one `τ` for which `Σ z = k`, where `h` is the link of the
//! regularizer (the KKT conditions of `argmax_{z ∈ C_k} ⟨x, z⟩ − f(z)`):
//! - binary entropy `f = Σ z log z + (1 − z) log(1 − z)`: `h = sigmoid`;
//! - entropy `f = Σ z log z`: `h(t) = min(1, exp(t))` (the `−1` of `∂f` is absorbed in `τ`).

use crate::math::exp_f64;
use crate::real::Real;
use crate::simd::multiversion;

/// The most iterations of [`solve_threshold`]; each at least halves the bracket every second
/// step, so this is reached only if the residual never gets within `tol` (reported).
pub const MAX_ITERS: usize = 300;

/// The link `h` of a threshold solver: `z_i = h(x_i − τ)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// `h(t) = 1 / (1 + exp(−t))` (binary entropy).
    Sigmoid,
    /// `h(t) = min(1, exp(t))` (entropy).
    CappedExp,
}

impl Link {
    /// `(h(t), h'(t))`, with `exp` (sst's, [`crate::math`]) of non-positive arguments only, so
    /// finite for any finite `t`.
    #[inline(always)]
    /// At the kink of `CappedExp` (`t = 0`) the derivative is taken from the right, 0.
    fn eval(self, t: f64) -> (f64, f64) {
        match self {
            Link::Sigmoid => {
                let e = exp_f64(-t.abs());
                let d = e / ((1.0 + e) * (1.0 + e));
                if t >= 0.0 {
                    ((1.0 + e).recip(), d)
                } else {
                    (e / (1.0 + e), d)
                }
            }
            Link::CappedExp if t >= 0.0 => (1.0, 0.0),
            Link::CappedExp => {
                let e = exp_f64(t);
                (e, e)
            }
        }
    }

    /// `h'` recovered from `z = h(t)`: `z(1 − z)` for the sigmoid, `z` below the cap (else 0).
    fn slope_from_output(self, z: f64) -> f64 {
        match self {
            Link::Sigmoid => z * (1.0 - z),
            Link::CappedExp if z < 1.0 => z,
            Link::CappedExp => 0.0,
        }
    }

    /// `[lo, hi]` with `Σ h(x − lo) ≥ k ≥ Σ h(x − hi)` (`1 ≤ k < n`): both links have
    /// `h(t) ≤ eᵗ`, so `hi = max x + ln(n/k)`; `1 − sigmoid(t) ≤ e⁻ᵗ` gives
    /// `lo = min x + ln((n − k)/n)`, and the capped exponential is 1 on all of `x` at `lo = min x`.
    fn bracket(self, min: f64, max: f64, n: f64, k: f64) -> (f64, f64) {
        let hi = max + (n / k).ln();
        match self {
            Link::Sigmoid => (min + ((n - k) / n).ln(), hi),
            Link::CappedExp => (min, hi),
        }
    }
}

/// `(Σ_i h(x_i − m − τ), Σ_i h'(x_i − m − τ))` in sixteen lane sums (one link's loop each, so
/// that it vectorizes).
#[inline(always)]
fn sums_body<F: Real>(link: Link, x: &[F], m: f64, tau: f64) -> (f64, f64) {
    const LANES: usize = 16;
    #[inline(always)]
    fn lanes<F: Real>(x: &[F], m: f64, tau: f64, eval: impl Fn(f64) -> (f64, f64)) -> (f64, f64) {
        let (mut s, mut d) = ([0.0; LANES], [0.0; LANES]);
        let mut chunks = x.chunks_exact(LANES);
        for c in chunks.by_ref() {
            for l in 0..LANES {
                let (h, dh) = eval((c[l].f64() - m) - tau);
                s[l] += h;
                d[l] += dh;
            }
        }
        for (l, xi) in chunks.remainder().iter().enumerate() {
            let (h, dh) = eval((xi.f64() - m) - tau);
            s[l] += h;
            d[l] += dh;
        }
        (s.iter().sum(), d.iter().sum())
    }
    match link {
        Link::Sigmoid => lanes(x, m, tau, |t| Link::Sigmoid.eval(t)),
        Link::CappedExp => lanes(x, m, tau, |t| Link::CappedExp.eval(t)),
    }
}

multiversion! {
    /// [`sums_body`] compiled for the CPU's widest vectors.
    fn sums<F: Real> / sums_on(link: Link, x: &[F], m: f64, tau: f64) -> (f64, f64) = sums_body
}

/// What [`solve_threshold`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solved {
    pub tau: f64,
    pub iterations: usize,
    /// `|Σ z − k|` at the returned `τ` (in f64).
    pub residual: f64,
    /// False only when [`MAX_ITERS`] ran out with the residual above `tol`.
    pub converged: bool,
}

/// `z_i = h(x_i − τ)` with `Σ_i h(x_i − τ) = k`, by safeguarded Newton–bisection on `τ`
/// (`rtsafe`, Press et al., Numerical Recipes §9.4): keep a bracket `[lo, hi]` around the root;
/// take the Newton step `τ += (Σ z − k) / Σ h'` when it stays inside the bracket and shrinks
/// fast enough, else bisect. Stops when `|Σ z − k| ≤ tol` or when `τ` can no longer move (the
/// bracket has collapsed to machine precision). Runs in f64 whatever `F` is, on `x − max x`;
/// O(n) per iteration.
/// `k = 0` and `k = n` give zeros and ones. Panics if the lengths differ or `k > n`.
pub fn solve_threshold<F: Real>(link: Link, x: &[F], k: usize, tol: f64, z: &mut [F]) -> Solved {
    assert_eq!(
        x.len(),
        z.len(),
        "solve_threshold: x and z differ in length"
    );
    let n = x.len();
    assert!(k <= n, "solve_threshold: k = {k} > n = {n}");
    if k == 0 || k == n {
        z.fill(if k == n { F::one() } else { F::zero() });
        let tau = if k == n {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        return Solved {
            tau,
            iterations: 0,
            residual: 0.0,
            converged: true,
        };
    }
    let kf = k as f64;
    // τ is solved relative to m = max x, so that its resolution near the root does not
    // depend on the magnitude of x (±1e8 at w = ±1e4, T = 1e-4).
    let (min, m) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), xi| {
            (lo.min(xi.f64()), hi.max(xi.f64()))
        });
    let residual = |tau: f64| -> (f64, f64) {
        let (s, slope) = sums(link, x, m, tau);
        (s - kf, slope)
    };
    let (mut lo, mut hi) = link.bracket(min - m, 0.0, n as f64, kf);
    let (mut dx_old, mut dx) = (hi - lo, hi - lo);
    let mut tau = lo + 0.5 * (hi - lo);
    let mut solved = Solved {
        tau,
        iterations: 0,
        residual: f64::INFINITY,
        converged: false,
    };
    while solved.iterations < MAX_ITERS {
        let (r, slope) = residual(tau);
        solved = Solved {
            tau,
            iterations: solved.iterations + 1,
            residual: r.abs(),
            converged: r.abs() <= tol,
        };
        if solved.converged {
            break;
        }
        if r > 0.0 {
            lo = tau;
        } else {
            hi = tau;
        }
        let step = r / slope;
        let newton = tau + step;
        let use_newton = slope > 0.0 && newton > lo && newton < hi && 2.0 * step.abs() <= dx_old;
        dx_old = dx;
        let next = if use_newton {
            dx = step.abs();
            newton
        } else {
            dx = 0.5 * (hi - lo);
            lo + dx
        };
        if next == tau || next <= lo || next >= hi {
            // No float strictly between: τ is as close to the root as f64 can say.
            solved.converged = true;
            break;
        }
        tau = next;
    }
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = F::of(link.eval((xi.f64() - m) - solved.tau).0);
    }
    Solved {
        tau: solved.tau + m,
        ..solved
    }
}

/// Backward of [`solve_threshold`] by the implicit-function theorem on `Σ_i h(x_i − τ) = k`:
/// `∂τ/∂x_j = d_j / Σ d`, `d = h'(x − τ)`, so `J = diag(d) − d dᵀ / Σ d` (symmetric) and
/// `grad_x_i += d_i (g_i − Σ_j d_j g_j / Σ d)`, with `d` recovered from the output `z`
/// (0 everywhere when `Σ d = 0`). Adds into `grad_x`.
pub fn threshold_vjp<F: Real>(link: Link, z: &[F], g: &[F], grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "threshold_vjp: length mismatch"
    );
    let d = |zi: F| link.slope_from_output(zi.f64());
    let (mut sd, mut sdg) = (0.0, 0.0);
    for (&zi, &gi) in z.iter().zip(g) {
        sd += d(zi);
        sdg += d(zi) * gi.f64();
    }
    if sd <= 0.0 {
        return;
    }
    let mean = sdg / sd;
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        *gx = *gx + F::of(d(zi) * (gi.f64() - mean));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;

    /// The lane sums are the same bits in every CPU variant and the plain sums within rounding;
    /// the solved `z` sums to `k`.
    #[test]
    fn lane_sums_agree_across_variants_and_with_plain_sums() {
        for seed in 0..20 {
            let mut r = XorShift::new(seed);
            let n = 2 + (r.next_u64() % 500) as usize;
            let x = r.vec(n, -6.0, 6.0);
            for link in [Link::Sigmoid, Link::CappedExp] {
                let tau = r.vec(1, -2.0, 2.0)[0];
                let plain = x.iter().fold((0.0, 0.0), |(s, d), &xi| {
                    let (h, dh) = link.eval(xi - 1.0 - tau);
                    (s + h, d + dh)
                });
                let variants = crate::simd::Variant::all_available();
                let got: Vec<(f64, f64)> = variants
                    .iter()
                    .map(|&v| sums_on(v, link, &x, 1.0, tau))
                    .collect();
                assert!(got.iter().all(|g| *g == got[0]), "{link:?} {got:?}");
                assert!(
                    (got[0].0 - plain.0).abs() <= 1e-12 * n as f64,
                    "{got:?} {plain:?}"
                );
                assert!(
                    (got[0].1 - plain.1).abs() <= 1e-12 * n as f64,
                    "{got:?} {plain:?}"
                );
                let k = 1 + (r.next_u64() as usize % (n - 1));
                let mut z = vec![0.0; n];
                let solved = solve_threshold(link, &x, k, 1e-10, &mut z);
                assert!(solved.converged, "{link:?} n {n} k {k}");
                assert!((z.iter().sum::<f64>() - k as f64).abs() <= 1e-8, "{link:?}");
            }
        }
    }
}
