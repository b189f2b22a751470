//! Entropy-regularized assignment: `x: n×n → P = argmax_{P ∈ Birkhoff} ⟨x, P⟩ − Σ P log P`,
//! the Sinkhorn operator of Gumbel-Sinkhorn (Mena et al. 2018) on `x = w/T`.
//!
//! The solution is `P_ij = exp(x_ij + α_i + β_j)` with `P 1 = 1`, `Pᵀ 1 = 1`; the duals are found
//! by Sinkhorn's alternating normalisations (Sinkhorn & Knopp 1967; Cuturi 2013):
//! `α_i = −LSE_j(x_ij + β_j)`, `β_j = −LSE_i(x_ij + α_i)`. One iteration is a row and a column
//! update; the output has exact column sums, and the iterations stop when the largest row
//! residual `max_i |Σ_j P_ij − 1|` is at most `tol` (or after `iters` iterations; the residual is
//! returned, never hidden). A stage on `s·x` (below) whose spread `s·(max x − min x)` is at
//! most `LINEAR_SPREAD` runs in the linear domain, `a = 1 ⊘ K b`, `b = 1 ⊘ Kᵀ a` with
//! `K = exp(s·x − s·max x)` (two matrix–vector products an iteration, no exponentials;
//! `Scaling` says why nothing overflows); a wider one in log space, every log-sum-exp
//! max-shifted so that any finite `x` gives finite duals. Both compute the same iterates up to
//! rounding.
//!
//! Low temperatures (a spread of `x` beyond [`SPREAD`]) are solved with ε-scaling (Schmitzer 2019,
//! "Stabilized sparse scaling algorithms for entropy regularized transport problems"): stages on
//! `s·x` for `s = 4⁻ᵐ, …, 4⁻¹, 1`, each stage warm-started from the previous stage's duals scaled
//! by 4; the intermediate stages run to a loose residual of [`STAGE_TOL`], together within at
//! most half of `iters`. The fixed point is the same, reached in tens of iterations instead of
//! thousands. Spreads up to [`SPREAD`] run plain Sinkhorn from zero duals.
//!
//! Sinkhorn converges linearly, at a rate near 1 on near-permutation problems (`tanh(Δ/4)²` per
//! iteration for a 2×2 with log cross-ratio `Δ`: ten thousand iterations at `Δ = 15`). When the
//! last stage stalls (the residual has not halved over [`STALL_WINDOW`] iterations and is above
//! rounding) the solver, unless [`Settings::newton`] is off, switches to Newton's method on the
//! dual with `α` eliminated (Cuturi & Peyré 2016, §4.1; Brauer et al. 2017):
//! `f(β) = Σ_i LSE_j(x_ij + β_j) − Σ_j β_j`, convex, minimised at the same fixed point, with
//! gradient `Pᵀ1 − 1` and Hessian `diag(Pᵀ1) − PᵀP` (rows of `P` exact), solved
//! by the conjugate gradients of the implicit backward and damped by an Armijo backtracking on
//! `f`, so it never diverges. Each Newton iteration is a Newton step on `β` followed by a
//! Sinkhorn iteration and counts as one of `iters`; an iteration that fails to halve the residual
//! hands back to Sinkhorn until the next stall.
//!
//! Backward rules: [`sinkhorn_implicit_vjp`] (implicit function theorem at the fixed point, a
//! linear solve in the duals, memory O(n²) whatever the iterations) and [`sinkhorn_unrolled_vjp`]
//! (reverse mode through the iterations as they ran, memory O(iterations·n) for the duals; in
//! the linear domain each iteration's reverse step is two matrix–vector products and two
//! rank-one terms, summed and multiplied by `K` once per stage).
//! A run that took Newton steps is differentiated by the unrolled rule with the implicit one:
//! Newton's map has a zero Jacobian in its starting point at the fixed point, so the derivative
//! of the computed map is the implicit derivative (up to the residual), not that of the Sinkhorn
//! iterations before it. All of it runs in f64.

use crate::kernels::{add_narrowed, extent, narrow, widen_padded};
use crate::math::{exp_slice_f64, ln_f64};
use crate::real::Real;

/// The largest spread `max x − min x` solved without ε-scaling.
pub const SPREAD: f64 = 32.0;
/// The factor between the scales of consecutive ε-scaling stages.
const STAGE_FACTOR: f64 = 4.0;
/// The residual at which an intermediate ε-scaling stage hands over to the next.
pub const STAGE_TOL: f64 = 1e-2;
/// Sinkhorn has stalled when its residual has not halved over this many iterations.
pub const STALL_WINDOW: usize = 10;
/// The Armijo constant `c` of the Newton line search: accept `f(β + tδ) ≤ f(β) + c t ∇fᵀδ`.
const ARMIJO: f64 = 1e-4;
/// The most step halvings of the Newton line search.
const HALVINGS: usize = 40;
/// Entries of the plan below this are left out of the Newton system (they change a direction
/// by less than rounding would).
const NEWTON_DROP: f64 = 1e-16;

/// The solver's arguments: `sinkhorn(iters, tol)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// At most this many iterations (row + column update), `≥ 1`.
    pub iters: usize,
    /// Stop when `max_i |Σ_j P_ij − 1| ≤ tol`.
    pub tol: f64,
    /// Switch to Newton steps when the last stage stalls (module doc); off, every iteration is
    /// a Sinkhorn iteration, as the unrolled rule differentiates them.
    pub newton: bool,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub iterations: usize,
    /// `max_i |Σ_j P_ij − 1|` of the output (its column sums are exact).
    pub residual: f64,
}

impl Outcome {
    pub fn converged(&self, settings: Settings) -> bool {
        self.residual <= settings.tol
    }
}

/// `P = exp(x + α 1ᵀ + 1 βᵀ)` by Sinkhorn (module doc) for the row-major `n×n` matrix `x`,
/// written into `p`. Panics if the lengths are not `n²` or `iters = 0`.
pub fn sinkhorn(x: &[f64], n: usize, settings: Settings, p: &mut [f64]) -> Outcome {
    assert!(
        x.len() == n * n && p.len() == n * n,
        "sinkhorn: x or p is not n×n"
    );
    let run = run(x, n, settings, None, LINEAR_SPREAD);
    fill_plan(x, n, 1.0, &run.alpha, &run.beta, p);
    run.outcome
}

/// Sinkhorn for a `rows × cols` score matrix, `rows ≤ cols` (rows sum to 1, columns to at most
/// 1): [`sinkhorn`] on the square matrix with `cols − rows` rows of zero scores appended, keeping
/// the first `rows` rows. Written into `s` (`rows × cols`) in the working precision.
pub fn padded_sinkhorn<F: Real>(
    x: &[F],
    rows: usize,
    cols: usize,
    settings: Settings,
    s: &mut [F],
) -> Outcome {
    assert!(
        x.len() == rows * cols && s.len() == rows * cols && rows <= cols,
        "padded_sinkhorn: x or s is not rows × cols, or rows > cols"
    );
    let mut p = vec![0.0; cols * cols];
    let outcome = sinkhorn(&widen_padded(x, cols * cols), cols, settings, &mut p);
    narrow(p, s);
    outcome
}

/// The VJP of [`padded_sinkhorn`] at its output `s` (implicit) or by replaying its iterations
/// (`unrolled`). The padding rows are equal (their scores are), so the square plan is `s` over
/// `(1 − Σ_i s_ij)/(cols − rows)` in each padding row. Adds into `grad_x`; false when the
/// gradient is not finite (nothing added).
#[allow(clippy::too_many_arguments)]
pub fn padded_sinkhorn_vjp<F: Real>(
    unrolled: bool,
    x: &[F],
    s: &[F],
    rows: usize,
    cols: usize,
    settings: Settings,
    g: &[F],
    grad_x: &mut [F],
) -> bool {
    let mut grad = vec![0.0; cols * cols];
    let g = widen_padded(g, cols * cols);
    if unrolled {
        sinkhorn_unrolled_vjp(&widen_padded(x, cols * cols), cols, settings, &g, &mut grad);
    } else {
        let mut p = widen_padded(s, cols * cols);
        let spare = (cols - rows) as f64;
        for j in 0..cols {
            let used: f64 = (0..rows).map(|i| p[i * cols + j]).sum();
            for i in rows..cols {
                p[i * cols + j] = ((1.0 - used) / spare).max(0.0);
            }
        }
        sinkhorn_implicit_vjp(&p, cols, &g, &mut grad);
    }
    let grad = &grad[..rows * cols];
    if grad.iter().any(|v| !v.is_finite()) {
        return false;
    }
    add_narrowed(grad.iter().copied(), grad_x);
    true
}

/// One iteration as it ran, for the unrolled backward: `α = A(s·x, ρ·β_prev)`, `β = B(s·x, α)`.
struct Step {
    /// The stage's scale `s`.
    scale: f64,
    /// `s / s_prev` when this iteration starts a stage, else 1.
    rho: f64,
    alpha: Vec<f64>,
    beta: Vec<f64>,
}

struct Run {
    alpha: Vec<f64>,
    beta: Vec<f64>,
    outcome: Outcome,
    /// The Newton steps taken (module doc).
    newton_steps: usize,
}

/// The scales of the ε-scaling stages (the last is 1) and the iteration cap of each intermediate
/// stage: half of the budget shared between them. Scales are powers of 4, so the
/// schedule is piecewise constant in `x` and the unrolled gradient is the exact derivative.
fn schedule(x: &[f64], iters: usize) -> (Vec<f64>, usize) {
    let (lo, hi) = extent(x);
    let spread = hi - lo;
    if spread.is_nan() || spread <= SPREAD {
        return (vec![1.0], 0);
    }
    let stages = (spread / SPREAD).log(STAGE_FACTOR).ceil() as i32;
    let cap = iters / (2 * stages as usize);
    if cap == 0 {
        return (vec![1.0], 0);
    }
    let scales = (0..=stages)
        .map(|m| STAGE_FACTOR.powi(m - stages))
        .collect();
    (scales, cap)
}

crate::simd::multiversion! {
    /// The iterations of [`sinkhorn`], recording each into `trace` when given, in the linear
    /// domain for the stages whose spread is at most `linear` ([`Domain::for_stage`]); compiled
    /// for the CPU's widest vectors.
    fn run / run_on(x: &[f64], n: usize, settings: Settings, trace: Option<&mut Vec<Step>>, linear: f64) -> Run = run_body
}

/// The body of [`run`].
#[inline(always)]
fn run_body(
    x: &[f64],
    n: usize,
    settings: Settings,
    mut trace: Option<&mut Vec<Step>>,
    linear: f64,
) -> Run {
    assert!(settings.iters >= 1, "sinkhorn: iters must be at least 1");
    let (scales, cap) = schedule(x, settings.iters);
    let mut alpha = vec![0.0; n];
    let mut beta = vec![0.0; n];
    let mut next = vec![0.0; n];
    let mut outcome = Outcome {
        iterations: 0,
        residual: f64::INFINITY,
    };
    let mut newton_steps = 0;
    // A residual below this is rounding (`n` terms summed per row), which Newton cannot improve.
    let floor = 16.0 * n as f64 * f64::EPSILON;
    let mut previous_scale = scales[0];
    for &scale in &scales {
        let last = scale == 1.0;
        let mut rho = scale / previous_scale;
        previous_scale = scale;
        beta.iter_mut().for_each(|b| *b *= rho);
        let mut domain = Domain::for_stage(x, n, scale, linear);
        domain.enter(&mut alpha, &mut beta);
        domain.row(x, &beta, &mut alpha);
        let (budget, stop) = if last {
            (settings.iters - outcome.iterations, settings.tol)
        } else {
            (cap, settings.tol.max(STAGE_TOL))
        };
        let mut newton = false;
        let mut checkpoint = f64::INFINITY;
        for it in 1..=budget {
            // Here `α = A(β)`: the rows are exact, as the Newton step needs.
            let before = outcome.residual;
            if newton {
                domain.leave(&mut alpha, &mut beta);
                newton = newton_step(x, n, &mut alpha, &mut beta);
                newton_steps += usize::from(newton);
                domain.enter(&mut alpha, &mut beta);
            }
            domain.col(x, &alpha, &mut beta);
            outcome.iterations += 1;
            if let Some(t) = trace.as_deref_mut() {
                let (mut alpha, mut beta) = (alpha.clone(), beta.clone());
                domain.leave(&mut alpha, &mut beta);
                t.push(Step {
                    scale,
                    rho,
                    alpha,
                    beta,
                });
            }
            rho = 1.0;
            domain.row(x, &beta, &mut next);
            outcome.residual = domain.residual(&alpha, &next);
            if outcome.residual <= stop || it == budget {
                break;
            }
            std::mem::swap(&mut alpha, &mut next);
            if newton && outcome.residual > before / 2.0 {
                newton = false;
            }
            if settings.newton && last && it % STALL_WINDOW == 0 {
                newton |= outcome.residual > checkpoint / 2.0 && outcome.residual > floor;
                checkpoint = outcome.residual;
            }
        }
        domain.leave(&mut alpha, &mut beta);
    }
    Run {
        alpha,
        beta,
        outcome,
        newton_steps,
    }
}

/// How a stage holds and updates its duals: `α`, `β` themselves (log domain), or their
/// exponentials (linear domain, [`Scaling`]). `enter` turns the log-domain duals into the
/// stage's own, `leave` turns them back; `row` and `col` are the two half-iterations
/// `α = A(β)`, `β = B(α)` on the stage's own duals.
enum Domain {
    /// `α_i = −LSE_j(s·x_ij + β_j)`, `β_j = −LSE_i(s·x_ij + α_i)`: an exponential of every
    /// entry in each half-iteration, any spread.
    Log {
        scale: f64,
        work: Vec<f64>,
    },
    Linear(Scaling),
}

impl Domain {
    /// The linear domain for a stage of scale `s` whose spread `s·(max x − min x)` is at most
    /// `linear`, else the log domain.
    #[inline(always)]
    fn for_stage(x: &[f64], n: usize, scale: f64, linear: f64) -> Domain {
        match Scaling::for_stage(x, n, scale, linear) {
            Some(scaling) => Domain::Linear(scaling),
            None => Domain::Log {
                scale,
                work: vec![0.0; n * n],
            },
        }
    }

    #[inline(always)]
    fn enter(&mut self, alpha: &mut [f64], beta: &mut [f64]) {
        if let Domain::Linear(scaling) = self {
            scaling.enter(alpha, beta);
        }
    }

    #[inline(always)]
    fn leave(&self, alpha: &mut [f64], beta: &mut [f64]) {
        if let Domain::Linear(scaling) = self {
            scaling.leave(alpha, beta);
        }
    }

    #[inline(always)]
    fn row(&mut self, x: &[f64], beta: &[f64], alpha: &mut [f64]) {
        match self {
            Domain::Log { scale, work } => row_update(x, beta.len(), *scale, beta, alpha, work),
            Domain::Linear(scaling) => reciprocal_product(&scaling.kernel_t, beta, alpha),
        }
    }

    #[inline(always)]
    fn col(&mut self, x: &[f64], alpha: &[f64], beta: &mut [f64]) {
        match self {
            Domain::Log { scale, work } => col_update(x, alpha.len(), *scale, alpha, beta, work),
            Domain::Linear(scaling) => reciprocal_product(&scaling.kernel, alpha, beta),
        }
    }

    /// The row residual `max_i |Σ_j P_ij − 1| = max_i |e^{α_i − α'_i} − 1|` of the plan with
    /// row duals `alpha` whose exact row duals are `next`.
    #[inline(always)]
    fn residual(&self, alpha: &[f64], next: &[f64]) -> f64 {
        let ratio = |a: f64, b: f64| match self {
            Domain::Log { .. } => (a - b).exp(),
            Domain::Linear(_) => a / b,
        };
        alpha
            .iter()
            .zip(next)
            .map(|(&a, &b)| (ratio(a, b) - 1.0).abs())
            .fold(0.0, f64::max)
    }
}

/// Sinkhorn–Knopp scaling (Sinkhorn & Knopp 1967), the linear domain of a stage of scale `s`:
/// with `K = exp(s·x − m)`, `m = s·max x`, and the scalings `a_i = e^{α_i + m − c}`,
/// `b_j = e^{β_j + c}` (so `P = diag(a) K diag(b)`), the half-iterations are
/// `a = 1 ⊘ K b` and `b = 1 ⊘ Kᵀ a`: two matrix–vector products, no exponentials. The gauge
/// `c = −max β` is set on entering, so `b ≤ 1` then.
///
/// Why nothing overflows: for a stage spread `Δ ≤ LINEAR_SPREAD`, `K ∈ [e^{−Δ}, 1]`; a column
/// update leaves `max β − min β ≤ Δ` (`β_j − β_k ≤ max_i (x_ik − x_ij)·s`), and Sinkhorn's
/// map `β ↦ B(A(β))` commutes with adding constants and is non-expansive in the max norm, so
/// the iterates stay within `Δ` of a fixed point that is within `Δ` of the entering `β`
/// (itself in `[−Δ, 0]` in the gauge): `b ∈ [e^{−3Δ}, e^{2Δ}]`, and `a = 1 ⊘ K b` with
/// `e^{−Δ} max b ≤ (K b)_i ≤ n max b` gives `a ∈ [e^{−2Δ}/n, e^{3Δ}]`, far inside f64 for
/// `Δ ≤ 128`. Sums of
/// positive terms are accurate to rounding relative to the sum, as the max-shifted
/// log-sum-exp is; the two domains differ by rounding only (tested).
struct Scaling {
    /// `K`, row-major.
    kernel: Vec<f64>,
    /// `Kᵀ`, row-major.
    kernel_t: Vec<f64>,
    /// `m = s·max x`.
    shift: f64,
    /// The gauge `c`.
    gauge: f64,
}

/// The largest stage spread `s·(max x − min x)` iterated in the linear domain ([`Scaling`]).
const LINEAR_SPREAD: f64 = 128.0;

impl Scaling {
    /// The linear domain of a stage of scale `s` whose spread `s·(max x − min x)` is at most
    /// `linear`; `None` for a wider one.
    #[inline(always)]
    fn for_stage(x: &[f64], n: usize, scale: f64, linear: f64) -> Option<Scaling> {
        let (lo, hi) = extent(x);
        (scale * (hi - lo) <= linear).then(|| Scaling::new(x, n, scale, hi))
    }

    /// The stage of scale `s` on `x` whose largest entry is `max`.
    #[inline(always)]
    fn new(x: &[f64], n: usize, scale: f64, max: f64) -> Scaling {
        let shift = scale * max;
        let mut kernel: Vec<f64> = x.iter().map(|&xij| scale * xij - shift).collect();
        exp_slice_f64(&mut kernel);
        let mut kernel_t = vec![0.0; n * n];
        for (i, row) in kernel.chunks_exact(n).enumerate() {
            for (j, &k) in row.iter().enumerate() {
                kernel_t[j * n + i] = k;
            }
        }
        Scaling {
            kernel,
            kernel_t,
            shift,
            gauge: 0.0,
        }
    }

    /// `(α, β) → (a, b)`, setting the gauge `c = −max β`.
    #[inline(always)]
    fn enter(&mut self, alpha: &mut [f64], beta: &mut [f64]) {
        self.gauge = exponentiate_duals(self.shift, alpha, beta);
    }

    /// `(a, b) → (α, β)`, by sst's `ln` (the scalings are positive normal numbers: above).
    #[inline(always)]
    fn leave(&self, alpha: &mut [f64], beta: &mut [f64]) {
        alpha
            .iter_mut()
            .for_each(|a| *a = ln_f64(*a) - self.shift + self.gauge);
        beta.iter_mut().for_each(|b| *b = ln_f64(*b) - self.gauge);
    }
}

/// `(α, β) → (e^{α + m − c}, e^{β + c})` in place for the shift `m` and the gauge
/// `c = −max β`, which it returns.
#[inline(always)]
fn exponentiate_duals(shift: f64, alpha: &mut [f64], beta: &mut [f64]) -> f64 {
    let gauge = -beta.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    alpha.iter_mut().for_each(|a| *a = *a + shift - gauge);
    beta.iter_mut().for_each(|b| *b += gauge);
    // sst's `exp`, vectorized (the unrolled backward exponentiates four dual vectors a step).
    exp_slice_f64(alpha);
    exp_slice_f64(beta);
    gauge
}

/// `out = 1 ⊘ Mᵀ v` for a row-major `n×n` matrix `m`, as a sum of rows `Σ_i v_i M_i,·`
/// (vectorizes across the row).
#[inline(always)]
fn reciprocal_product(m: &[f64], v: &[f64], out: &mut [f64]) {
    transposed_product(m, v, out);
    out.iter_mut().for_each(|o| *o = 1.0 / *o);
}

/// `out = Mᵀ v` for a row-major `n×n` matrix `m`, as a sum of rows.
#[inline(always)]
fn transposed_product(m: &[f64], v: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    add_transposed_product(m, v, 1.0, out);
}

/// `out += c·Mᵀ v` for a row-major `n×n` matrix `m`, as a sum of rows `Σ_i (c v_i) M_i,·`
/// (`c = ±1` exactly scales).
#[inline(always)]
fn add_transposed_product(m: &[f64], v: &[f64], c: f64, out: &mut [f64]) {
    for (row, &vi) in m.chunks_exact(out.len()).zip(v) {
        let cv = c * vi;
        out.iter_mut().zip(row).for_each(|(o, &mij)| *o += cv * mij);
    }
}

/// One damped Newton step on `f(β) = Σ_i LSE_j(x_ij + β_j) − Σ_j β_j` (scale 1), given
/// `α = A(β)` and leaving `α = A(β)` for the new `β`: with `P = exp(x + α 1ᵀ + 1 βᵀ)` (rows
/// exact) and `c = Pᵀ1`, the direction solves `(diag(c) − PᵀP) δ = 1 − c` on `1⊥` (the
/// constants are the gauge), and `β ← β + tδ` for the first `t = 1, ½, ¼, …` that passes
/// Armijo's test and lowers the marginal residual `max_j |1 − c_j|` (near the fixed point the
/// objective's decrease is at the edge of rounding, and a step that passes Armijo's test alone
/// can throw the marginals far off). Returns false, changing nothing, when no step passes.
fn newton_step(x: &[f64], n: usize, alpha: &mut [f64], beta: &mut [f64]) -> bool {
    let mut p = vec![0.0; n * n];
    fill_plan(x, n, 1.0, alpha, beta, &mut p);
    let mut cols = vec![0.0; n];
    for prow in p.chunks_exact(n) {
        cols.iter_mut().zip(prow).for_each(|(c, &pij)| *c += pij);
    }
    let descent: Vec<f64> = cols.iter().map(|c| 1.0 - c).collect();
    // Inexact Newton (Eisenstat & Walker 1996): the direction only to the relative residual
    // η = min(0.1, ‖1 − c‖), which keeps the convergence quadratic; the system with the
    // negligible entries of P left out, preconditioned by its diagonal `c_j − Σ_i P_ij²`.
    let forcing = super::dot(&descent, &descent).sqrt().min(0.1);
    let (operator, diagonal) = sparse_operator(&p, n, &cols);
    let delta = conjugate_gradients(operator, &diagonal, descent.clone(), forcing, 4 * n + 50);
    let slope = -super::dot(&descent, &delta);
    let residual = descent.iter().fold(0.0, |m: f64, d| m.max(d.abs()));
    let (mut trial_alpha, mut trial_beta) = (vec![0.0; n], vec![0.0; n]);
    let mut work = vec![0.0; n * n];
    let mut t = 1.0;
    for _ in 0..HALVINGS {
        if objective_change(&p, n, &delta, t) <= ARMIJO * t * slope {
            for ((tb, b), d) in trial_beta.iter_mut().zip(&*beta).zip(&delta) {
                *tb = b + t * d;
            }
            row_update(x, n, 1.0, &trial_beta, &mut trial_alpha, &mut work);
            if column_residual(x, n, &trial_alpha, &trial_beta) < residual {
                alpha.copy_from_slice(&trial_alpha);
                beta.copy_from_slice(&trial_beta);
                return true;
            }
        }
        t /= 2.0;
    }
    false
}

/// `max_j |1 − Σ_i P_ij|` for `P = exp(x + α 1ᵀ + 1 βᵀ)`.
fn column_residual(x: &[f64], n: usize, alpha: &[f64], beta: &[f64]) -> f64 {
    let mut cols = vec![0.0; n];
    for (row, &ai) in x.chunks_exact(n).zip(alpha) {
        for ((c, &xij), &bj) in cols.iter_mut().zip(row).zip(beta) {
            *c += (xij + ai + bj).exp();
        }
    }
    cols.iter().fold(0.0, |m: f64, c| m.max((1.0 - c).abs()))
}

/// `f(β + tδ) − f(β) = Σ_i ln(1 + Σ_j P_ij (e^{tδ_j} − 1)) − t Σ_j δ_j` for `P` with exact rows
/// at `β`, accurate to rounding relative to `tδ` (not to `f`), so the line search still sees the
/// tiny decreases near the fixed point. Overflows to `+∞` or NaN for huge steps: both fail the
/// test.
fn objective_change(p: &[f64], n: usize, delta: &[f64], t: f64) -> f64 {
    let growth: Vec<f64> = delta.iter().map(|d| (t * d).exp_m1()).collect();
    let rows: f64 = p
        .chunks_exact(n)
        .map(|prow| super::dot(prow, &growth).ln_1p())
        .sum();
    rows - t * delta.iter().sum::<f64>()
}

/// `α_i = −LSE_j(s·x_ij + β_j)` (max-shifted), the exponentials of the whole matrix at once in
/// `work` (n², vectorized: [`exp_slice_f64`]).
#[inline(always)]
fn row_update(x: &[f64], n: usize, s: f64, beta: &[f64], alpha: &mut [f64], work: &mut [f64]) {
    for ((wrow, xrow), m) in work
        .chunks_exact_mut(n)
        .zip(x.chunks_exact(n))
        .zip(alpha.iter_mut())
    {
        for ((w, &xij), &bj) in wrow.iter_mut().zip(xrow).zip(beta) {
            *w = s * xij + bj;
        }
        *m = wrow.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        wrow.iter_mut().for_each(|w| *w -= *m);
    }
    exp_slice_f64(work);
    for (a, wrow) in alpha.iter_mut().zip(work.chunks_exact(n)) {
        let sum: f64 = wrow.iter().sum();
        *a = -(*a + sum.ln());
    }
}

/// `β_j = −LSE_i(s·x_ij + α_i)` (max-shifted), in row-major passes, the exponentials in `work`.
#[inline(always)]
fn col_update(x: &[f64], n: usize, s: f64, alpha: &[f64], beta: &mut [f64], work: &mut [f64]) {
    beta.fill(f64::NEG_INFINITY);
    for ((wrow, xrow), &ai) in work.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(alpha) {
        for ((w, mj), &xij) in wrow.iter_mut().zip(beta.iter_mut()).zip(xrow) {
            *w = s * xij + ai;
            *mj = mj.max(*w);
        }
    }
    for wrow in work.chunks_exact_mut(n) {
        wrow.iter_mut().zip(&*beta).for_each(|(w, &mj)| *w -= mj);
    }
    exp_slice_f64(work);
    let mut sum = vec![0.0; n];
    for wrow in work.chunks_exact(n) {
        sum.iter_mut().zip(wrow).for_each(|(sj, &e)| *sj += e);
    }
    for (b, sj) in beta.iter_mut().zip(sum) {
        *b = -(*b + sj.ln());
    }
}

/// `P_ij = exp(s·x_ij + α_i + β_j)`.
fn fill_plan(x: &[f64], n: usize, s: f64, alpha: &[f64], beta: &[f64], p: &mut [f64]) {
    for ((prow, xrow), &ai) in p.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(alpha) {
        for ((pij, &xij), &bj) in prow.iter_mut().zip(xrow).zip(beta) {
            *pij = s * xij + ai + bj;
        }
    }
    exp_slice_f64(p);
}

/// Implicit backward at the fixed point `P` (the output of [`sinkhorn`]): `grad_x += Jᵀ g`,
///
/// `Jᵀ g = P ⊙ (g − λ 1ᵀ − 1 μᵀ)`, where `[I P; Pᵀ I] [λ; μ] = [G 1; Gᵀ 1]`, `G = g ⊙ P`,
///
/// from differentiating `P 1 = 1`, `Pᵀ 1 = 1` in the duals (implicit function theorem; Luise et
/// al. 2018, Eisenberger et al. 2022). Eliminating `λ = G 1 − P μ` leaves the Schur complement
/// `(I − PᵀP) μ = Gᵀ1 − Pᵀ G 1`, a Laplacian with the gauge `(λ + t, μ − t)` in its kernel; it is
/// solved by conjugate gradients on `1⊥` (two matrix–vector products per step, memory O(n²),
/// nothing replayed). Adds into `grad_x`.
pub fn sinkhorn_implicit_vjp(p: &[f64], n: usize, g: &[f64], grad_x: &mut [f64]) {
    assert!(
        p.len() == n * n && g.len() == n * n && grad_x.len() == n * n,
        "sinkhorn_implicit_vjp: length mismatch"
    );
    let mut row_g = vec![0.0; n];
    let mut col_g = vec![0.0; n];
    for (i, (prow, grow)) in p.chunks_exact(n).zip(g.chunks_exact(n)).enumerate() {
        for (j, (&pij, &gij)) in prow.iter().zip(grow).enumerate() {
            row_g[i] += pij * gij;
            col_g[j] += pij * gij;
        }
    }
    let mut rhs = col_g;
    add_transposed_product(p, &row_g, -1.0, &mut rhs);
    let ones = vec![1.0; n];
    let mu = conjugate_gradients(dense_operator(p, n, &ones), &ones, rhs, 1e-14, 4 * n + 50);
    let mut lambda = row_g;
    for (li, prow) in lambda.iter_mut().zip(p.chunks_exact(n)) {
        *li -= super::dot(prow, &mu);
    }
    for (i, ((gx, prow), grow)) in grad_x
        .chunks_exact_mut(n)
        .zip(p.chunks_exact(n))
        .zip(g.chunks_exact(n))
        .enumerate()
    {
        for j in 0..n {
            gx[j] += prow[j] * (grow[j] - lambda[i] - mu[j]);
        }
    }
}

/// `v ↦ (diag(d) − PᵀP) v` for a dense row-major `P`: O(n²).
fn dense_operator<'a>(p: &'a [f64], n: usize, d: &'a [f64]) -> impl Fn(&[f64], &mut [f64]) + 'a {
    move |v, out| {
        let pv: Vec<f64> = p.chunks_exact(n).map(|row| super::dot(row, v)).collect();
        out.iter_mut()
            .zip(v.iter().zip(d))
            .for_each(|(o, (vj, dj))| *o = dj * vj);
        add_transposed_product(p, &pv, -1.0, out);
    }
}

/// `v ↦ (diag(d) − PᵀP) v` with the entries of `P` below [`NEWTON_DROP`] left out (near a
/// permutation, at the low temperatures where Newton runs, a row holds a few entries, so a
/// product costs O(n·k) instead of O(n²)), and its diagonal `d_j − Σ_i P_ij²` (kept away from 0)
/// for the preconditioner.
fn sparse_operator<'a>(
    p: &[f64],
    n: usize,
    d: &'a [f64],
) -> (impl Fn(&[f64], &mut [f64]) + 'a, Vec<f64>) {
    let rows: Vec<Vec<(usize, f64)>> = p
        .chunks_exact(n)
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, &pij)| pij > NEWTON_DROP)
                .map(|(j, &pij)| (j, pij))
                .collect()
        })
        .collect();
    let mut diagonal = d.to_vec();
    for &(j, pij) in rows.iter().flatten() {
        diagonal[j] -= pij * pij;
    }
    let floor = 1e-12 * diagonal.iter().fold(0.0, |m: f64, &x| m.max(x));
    diagonal
        .iter_mut()
        .for_each(|x| *x = x.max(floor).max(f64::MIN_POSITIVE));
    let operator = move |v: &[f64], out: &mut [f64]| {
        out.iter_mut()
            .zip(v.iter().zip(d))
            .for_each(|(o, (vj, dj))| *o = dj * vj);
        for row in &rows {
            let pv: f64 = row.iter().map(|&(j, pij)| pij * v[j]).sum();
            for &(j, pij) in row {
                out[j] -= pij * pv;
            }
        }
    };
    (operator, diagonal)
}

/// `v ← v − mean(v)`: the projection onto `1⊥`.
fn center(v: &mut [f64]) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter_mut().for_each(|x| *x -= mean);
}

/// Solves `Π A Π μ = Π rhs` on `1⊥` (`Π` centres) by conjugate gradients (Hestenes & Stiefel
/// 1952), preconditioned by `Π diag(precondition)⁻¹ Π` (Jacobi; all ones for none), for
/// `A = diag(d) − PᵀP` given as `apply(v, out)`: `out = A v` (`d = Pᵀ1` with `P 1 = 1`; `d = 1`
/// at the fixed point): symmetric positive semi-definite with the constants in its kernel.
/// Stops at the relative residual `‖r‖ ≤ rel_tol·‖rhs‖` or after `max_steps` steps.
fn conjugate_gradients(
    apply_a: impl Fn(&[f64], &mut [f64]),
    precondition: &[f64],
    mut rhs: Vec<f64>,
    rel_tol: f64,
    max_steps: usize,
) -> Vec<f64> {
    let n = rhs.len();
    let apply = |v: &[f64], out: &mut Vec<f64>| {
        apply_a(v, out);
        center(out);
    };
    let solve_m = |r: &[f64]| -> Vec<f64> {
        let mut z: Vec<f64> = r.iter().zip(precondition).map(|(r, m)| r / m).collect();
        center(&mut z);
        z
    };
    center(&mut rhs);
    let mut mu = vec![0.0; n];
    let target = rel_tol * rel_tol * super::dot(&rhs, &rhs);
    let mut r = rhs;
    let mut z = solve_m(&r);
    let mut dir = z.clone();
    let mut a_dir = vec![0.0; n];
    let mut rz = super::dot(&r, &z);
    for _ in 0..max_steps {
        let rr = super::dot(&r, &r);
        if rr <= target || rr == 0.0 || rz <= 0.0 {
            break;
        }
        apply(&dir, &mut a_dir);
        let curvature = super::dot(&dir, &a_dir);
        if curvature <= 0.0 || !curvature.is_finite() {
            break;
        }
        let step = rz / curvature;
        for k in 0..n {
            mu[k] += step * dir[k];
            r[k] -= step * a_dir[k];
        }
        z = solve_m(&r);
        let rz_next = super::dot(&r, &z);
        let ratio = rz_next / rz;
        rz = rz_next;
        for (d, &zk) in dir.iter_mut().zip(&z) {
            *d = zk + ratio * *d;
        }
    }
    mu
}

/// Unrolled backward: `grad_x += Jᵀ g` with `J` the Jacobian of the iterations of [`sinkhorn`]
/// as they ran on `x` (they are re-run here, keeping every iteration's duals: memory
/// O(iterations·n) on top of O(n²)). Reverse mode through `P = exp(x + α_K + β_K)`, then for
/// `k = K … 1` through `β_k = −LSE_i(s_k x + α_k)` (column weights `Q = exp(s_k x + α_k + β_k)`)
/// and `α_k = −LSE_j(s_k x + ρ_k β_{k−1})` (row weights `R = exp(s_k x + α_k + ρ_k β_{k−1})`):
///
/// `x̄ −= s_k Q ⊙ 1β̄ᵀ`, `ᾱ −= Q β̄`, then `x̄ −= s_k R ⊙ ᾱ1ᵀ`, `β̄ ← −ρ_k Rᵀ ᾱ`, `ᾱ ← 0`.
///
/// A run that took Newton steps is differentiated by [`sinkhorn_implicit_vjp`] at its output
/// (module doc). Adds into `grad_x`.
pub fn sinkhorn_unrolled_vjp(
    x: &[f64],
    n: usize,
    settings: Settings,
    g: &[f64],
    grad_x: &mut [f64],
) {
    unrolled_vjp(x, n, settings, g, grad_x, LINEAR_SPREAD);
}

crate::simd::multiversion! {
    /// [`sinkhorn_unrolled_vjp`] with the stages of spread at most `linear` replayed in the
    /// linear domain, as [`run`] ran them; compiled for the CPU's widest vectors.
    fn unrolled_vjp / unrolled_vjp_on(x: &[f64], n: usize, settings: Settings, g: &[f64], grad_x: &mut [f64], linear: f64) = unrolled_vjp_body
}

/// The body of [`unrolled_vjp`].
#[inline(always)]
fn unrolled_vjp_body(
    x: &[f64],
    n: usize,
    settings: Settings,
    g: &[f64],
    grad_x: &mut [f64],
    linear: f64,
) {
    assert!(
        x.len() == n * n && g.len() == n * n && grad_x.len() == n * n,
        "sinkhorn_unrolled_vjp: length mismatch"
    );
    let mut steps = Vec::new();
    let run = run(x, n, settings, Some(&mut steps), linear);
    let mut w = vec![0.0; n * n];
    fill_plan(x, n, 1.0, &run.alpha, &run.beta, &mut w);
    if run.newton_steps > 0 {
        return sinkhorn_implicit_vjp(&w, n, g, grad_x);
    }
    let mut alpha_bar = vec![0.0; n];
    let mut beta_bar = vec![0.0; n];
    for (i, ((gx, wrow), grow)) in grad_x
        .chunks_exact_mut(n)
        .zip(w.chunks_exact(n))
        .zip(g.chunks_exact(n))
        .enumerate()
    {
        for j in 0..n {
            let gp = grow[j] * wrow[j];
            gx[j] += gp;
            alpha_bar[i] += gp;
            beta_bar[j] += gp;
        }
    }
    let zeros = vec![0.0; n];
    let mut stage: Option<(f64, Option<Scaling>)> = None;
    // The linear stages' `Σ_k u_k v_kᵀ` (see `Scaling::step_back`), flushed at a stage's start.
    let mut outer = vec![0.0; n * n];
    for (k, step) in steps.iter().enumerate().rev() {
        if stage.as_ref().is_none_or(|(scale, _)| *scale != step.scale) {
            if let Some((scale, Some(scaling))) = &stage {
                scaling.flush(*scale, &mut outer, grad_x);
            }
            stage = Some((step.scale, Scaling::for_stage(x, n, step.scale, linear)));
        }
        let beta_prev = if k == 0 { &zeros } else { &steps[k - 1].beta };
        let Some((_, domain)) = &stage else {
            unreachable!("set above")
        };
        match domain {
            Some(scaling) => {
                scaling.step_back(step, beta_prev, &mut alpha_bar, &mut beta_bar, &mut outer)
            }
            None => log_step_back(
                x,
                step,
                beta_prev,
                &mut alpha_bar,
                &mut beta_bar,
                &mut w,
                grad_x,
            ),
        }
    }
    if let Some((scale, Some(scaling))) = &stage {
        scaling.flush(*scale, &mut outer, grad_x);
    }
}

/// One iteration of the unrolled backward in the log domain (the plans exponentiated in `w`):
/// `x̄ −= s Q ⊙ 1β̄ᵀ`, `ᾱ −= Q β̄`, then `x̄ −= s R ⊙ ᾱ1ᵀ`, `β̄ ← −ρ Rᵀ ᾱ`, `ᾱ ← 0`
/// ([`sinkhorn_unrolled_vjp`]).
#[inline(always)]
fn log_step_back(
    x: &[f64],
    step: &Step,
    beta_prev: &[f64],
    alpha_bar: &mut [f64],
    beta_bar: &mut [f64],
    w: &mut [f64],
    grad_x: &mut [f64],
) {
    let n = alpha_bar.len();
    // Through β_k = B(s x, α_k).
    fill_plan(x, n, step.scale, &step.alpha, &step.beta, w);
    for ((gx, q), ab) in grad_x
        .chunks_exact_mut(n)
        .zip(w.chunks_exact(n))
        .zip(alpha_bar.iter_mut())
    {
        for j in 0..n {
            gx[j] -= step.scale * q[j] * beta_bar[j];
            *ab -= q[j] * beta_bar[j];
        }
    }
    // Through α_k = A(s x, ρ β_{k−1}).
    let shifted: Vec<f64> = beta_prev.iter().map(|b| step.rho * b).collect();
    fill_plan(x, n, step.scale, &step.alpha, &shifted, w);
    beta_bar.fill(0.0);
    for ((gx, r), &ab) in grad_x
        .chunks_exact_mut(n)
        .zip(w.chunks_exact(n))
        .zip(alpha_bar.iter())
    {
        for j in 0..n {
            gx[j] -= step.scale * r[j] * ab;
            beta_bar[j] -= step.rho * r[j] * ab;
        }
    }
    alpha_bar.fill(0.0);
}

impl Scaling {
    /// The scalings `(a, b)` of the plan `exp(s·x + α 1ᵀ + 1 βᵀ) = diag(a) K diag(b)`, in the
    /// gauge `c = −max β`.
    #[inline(always)]
    fn scalings(&self, alpha: &[f64], beta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (mut a, mut b) = (alpha.to_vec(), beta.to_vec());
        exponentiate_duals(self.shift, &mut a, &mut b);
        (a, b)
    }

    /// One iteration of the unrolled backward in the linear domain: with `Q = diag(a) K
    /// diag(b)` (the iteration's output duals `(α_k, β_k)`) and `R = diag(a′) K diag(b′)` (the
    /// pair `(α_k, ρ β_{k−1})` it read), the log-domain step's products become
    /// `ᾱ −= a ⊙ K (b ⊙ β̄)`, `β̄ ← −ρ b′ ⊙ Kᵀ (a′ ⊙ ᾱ)`, and its `x̄` the rank-one terms
    /// `a (b ⊙ β̄)ᵀ + (a′ ⊙ ᾱ) b′ᵀ`, summed into `outer` and multiplied by `−s K` once per
    /// stage ([`Scaling::flush`]). `a` and `a′` differ: each pair is scaled by its own gauge.
    #[inline(always)]
    fn step_back(
        &self,
        step: &Step,
        beta_prev: &[f64],
        alpha_bar: &mut [f64],
        beta_bar: &mut [f64],
        outer: &mut [f64],
    ) {
        let n = alpha_bar.len();
        let mut product = vec![0.0; n];
        // Through β_k = B(s x, α_k).
        let (a, b) = self.scalings(&step.alpha, &step.beta);
        let t: Vec<f64> = b.iter().zip(&*beta_bar).map(|(b, bb)| b * bb).collect();
        transposed_product(&self.kernel_t, &t, &mut product);
        for ((ab, ai), p) in alpha_bar.iter_mut().zip(&a).zip(&product) {
            *ab -= ai * p;
        }
        add_outer(&a, &t, outer);
        // Through α_k = A(s x, ρ β_{k−1}).
        let shifted: Vec<f64> = beta_prev.iter().map(|b| step.rho * b).collect();
        let (a, b_in) = self.scalings(&step.alpha, &shifted);
        let v: Vec<f64> = a.iter().zip(&*alpha_bar).map(|(a, ab)| a * ab).collect();
        transposed_product(&self.kernel, &v, &mut product);
        for ((bb, bi), p) in beta_bar.iter_mut().zip(&b_in).zip(&product) {
            *bb = -step.rho * bi * p;
        }
        add_outer(&v, &b_in, outer);
        alpha_bar.fill(0.0);
    }

    /// `x̄ −= s K ⊙ outer`, `outer ← 0`.
    #[inline(always)]
    fn flush(&self, scale: f64, outer: &mut [f64], grad_x: &mut [f64]) {
        for ((gx, o), &k) in grad_x.iter_mut().zip(outer.iter_mut()).zip(&self.kernel) {
            *gx -= scale * k * *o;
            *o = 0.0;
        }
    }
}

/// `m += u vᵀ` for a row-major `m`.
#[inline(always)]
fn add_outer(u: &[f64], v: &[f64], m: &mut [f64]) {
    for (row, &ui) in m.chunks_exact_mut(v.len()).zip(u) {
        row.iter_mut().zip(v).for_each(|(mij, &vj)| *mij += ui * vj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{fd_grad, XorShift};

    /// Central differences of `⟨g, sinkhorn(x)⟩`.
    fn sinkhorn_fd(x: &[f64], n: usize, s: Settings, g: &[f64]) -> Vec<f64> {
        fd_grad(
            |x, p| {
                sinkhorn(x, n, s, p);
            },
            x,
            g,
            1e-6,
        )
    }

    fn marginals(p: &[f64], n: usize) -> (f64, f64) {
        let rows = (0..n)
            .map(|i| (p[i * n..(i + 1) * n].iter().sum::<f64>() - 1.0).abs())
            .fold(0.0, f64::max);
        let cols = (0..n)
            .map(|j| ((0..n).map(|i| p[i * n + j]).sum::<f64>() - 1.0).abs())
            .fold(0.0, f64::max);
        (rows, cols)
    }

    #[test]
    fn doubly_stochastic_to_tolerance() {
        let mut r = XorShift::new(3);
        for n in [1, 2, 5, 17] {
            for scale in [1.0, 4.0] {
                let x = r.vec(n * n, -scale, scale);
                let mut p = vec![0.0; n * n];
                let s = Settings {
                    iters: 5000,
                    tol: 1e-10,
                    newton: true,
                };
                let out = sinkhorn(&x, n, s, &mut p);
                assert!(out.converged(s), "n {n} scale {scale}: {out:?}");
                let (rows, cols) = marginals(&p, n);
                assert!(rows <= 1e-10 + 1e-14 && cols < 1e-13, "{rows} {cols}");
            }
        }
    }

    #[test]
    fn two_by_two_closed_form() {
        // P = [[q, 1−q], [1−q, q]], q/(1−q) = exp((x11 + x22 − x12 − x21)/2).
        let x = [1.0, -0.5, 0.25, 2.0];
        let mut p = [0.0; 4];
        sinkhorn(
            &x,
            2,
            Settings {
                iters: 1000,
                tol: 1e-14,
                newton: true,
            },
            &mut p,
        );
        let q = 1.0 / (1.0 + (-(1.0 + 2.0 + 0.5 - 0.25) / 2.0f64).exp());
        assert!(
            (p[0] - q).abs() < 1e-13 && (p[1] - (1.0 - q)).abs() < 1e-13,
            "{p:?}"
        );
    }

    /// The 2×2 of the bug report: `Δ = x11 + x22 − x12 − x21 ≈ −15.1`, Sinkhorn's rate
    /// `tanh(Δ/4)² ≈ 0.998` needs ~10⁴ iterations; the closed form is
    /// `P = [[q, 1−q], [1−q, q]]`, `q/(1−q) = sqrt(exp(Δ))`.
    const STALLING_2X2: [f64; 4] = [
        -1.7969297687145243,
        7.206844642204471,
        4.819857234733627,
        -1.2741665827346944,
    ];

    #[test]
    fn near_permutation_2x2_converges_to_the_closed_form() {
        let x = STALLING_2X2;
        let s = Settings {
            iters: 1000,
            tol: 1e-9,
            newton: true,
        };
        let mut p = [0.0; 4];
        let out = sinkhorn(&x, 2, s, &mut p);
        assert!(out.converged(s), "{out:?}");
        let delta = x[0] + x[3] - x[1] - x[2];
        let q = 1.0 / (1.0 + (-delta / 2.0).exp());
        let expected = [q, 1.0 - q, 1.0 - q, q];
        for (got, want) in p.iter().zip(expected) {
            assert!((got - want).abs() <= 1e-12, "{p:?} vs {expected:?}");
        }
    }

    #[test]
    fn near_permutation_50_converges_within_the_default_budget() {
        // x = 20·Q + U[0, 1) for a random permutation matrix Q (Fisher–Yates).
        let mut r = XorShift::new(50);
        let n = 50;
        let mut sigma: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            sigma.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut x = r.vec(n * n, 0.0, 1.0);
        for (i, &j) in sigma.iter().enumerate() {
            x[i * n + j] += 20.0;
        }
        let s = Settings {
            iters: 1000,
            tol: 1e-9,
            newton: true,
        };
        let mut p = vec![0.0; n * n];
        let out = sinkhorn(&x, n, s, &mut p);
        assert!(out.converged(s), "{out:?}");
        let (rows, cols) = marginals(&p, n);
        assert!(rows <= 1e-9 && cols < 1e-13, "{rows} {cols}");
    }

    #[test]
    fn unrolled_after_newton_is_the_implicit_derivative() {
        let x = STALLING_2X2;
        let g = [0.3, -1.0, 0.7, 0.2];
        let s = Settings {
            iters: 1000,
            tol: 1e-13,
            newton: true,
        };
        let mut p = [0.0; 4];
        assert!(sinkhorn(&x, 2, s, &mut p).converged(s));
        let fd = sinkhorn_fd(&x, 2, s, &g);
        let mut implicit = [0.0; 4];
        sinkhorn_implicit_vjp(&p, 2, &g, &mut implicit);
        let mut unrolled = [0.0; 4];
        sinkhorn_unrolled_vjp(&x, 2, s, &g, &mut unrolled);
        for k in 0..4 {
            assert_eq!(unrolled[k], implicit[k]);
            assert!((unrolled[k] - fd[k]).abs() < 1e-7, "{unrolled:?} vs {fd:?}");
        }
    }

    #[test]
    fn both_rules_match_finite_differences_and_add() {
        for seed in 0..12 {
            let mut r = XorShift::new(40 + seed);
            let n = 1 + (r.next_u64() % 5) as usize;
            let spread = if seed % 3 == 0 { 60.0 } else { 3.0 };
            let x = r.vec(n * n, -spread, spread);
            let g = r.vec(n * n, -1.0, 1.0);
            let s = Settings {
                iters: 2000,
                tol: 1e-13,
                newton: true,
            };
            let mut p = vec![0.0; n * n];
            sinkhorn(&x, n, s, &mut p);
            let fd = sinkhorn_fd(&x, n, s, &g);
            let prior = r.vec(n * n, -1.0, 1.0);
            let mut implicit = prior.clone();
            sinkhorn_implicit_vjp(&p, n, &g, &mut implicit);
            let mut unrolled = prior.clone();
            sinkhorn_unrolled_vjp(&x, n, s, &g, &mut unrolled);
            for k in 0..n * n {
                let (a, b) = (implicit[k] - prior[k], unrolled[k] - prior[k]);
                assert!(
                    (a - fd[k]).abs() < 1e-6,
                    "implicit {a} vs fd {} (seed {seed})",
                    fd[k]
                );
                assert!(
                    (b - fd[k]).abs() < 1e-6,
                    "unrolled {b} vs fd {} (seed {seed})",
                    fd[k]
                );
            }
        }
    }

    #[test]
    fn linear_and_log_domains_agree() {
        // Ranges of x: one linear stage; two linear ε-scaling stages; two linear stages, then
        // two in the log domain (spreads 9, 38, 150, 600).
        for (seed, range) in [(1, 10.0), (2, 100.0), (3, 600.0)] {
            let mut r = XorShift::new(seed);
            let n = 12;
            let x = r.vec(n * n, -range / 2.0, range / 2.0);
            let g = r.vec(n * n, -1.0, 1.0);
            for newton in [true, false] {
                let s = Settings {
                    iters: 400,
                    tol: 1e-11,
                    newton,
                };
                let plan = |linear: f64| {
                    let run = run(&x, n, s, None, linear);
                    let mut p = vec![0.0; n * n];
                    fill_plan(&x, n, 1.0, &run.alpha, &run.beta, &mut p);
                    (p, run.outcome.iterations)
                };
                let ((log, log_iters), (lin, lin_iters)) = (plan(0.0), plan(LINEAR_SPREAD));
                assert!(
                    log_iters.abs_diff(lin_iters) <= 1,
                    "{log_iters} {lin_iters}"
                );
                for (a, b) in log.iter().zip(&lin) {
                    assert!((a - b).abs() <= 1e-10, "range {range}: {a} vs {b}");
                }
                let grad = |linear: f64| {
                    let mut grad = vec![0.0; n * n];
                    unrolled_vjp(&x, n, s, &g, &mut grad, linear);
                    grad
                };
                let (log, lin) = (grad(0.0), grad(LINEAR_SPREAD));
                let scale = log.iter().fold(1.0, |m: f64, v| m.max(v.abs()));
                for (a, b) in log.iter().zip(&lin) {
                    assert!((a - b).abs() <= 1e-9 * scale, "range {range}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn without_newton_every_iteration_is_sinkhorn() {
        // The stalling 2×2 within 200 iterations: Newton converges, plain Sinkhorn does not
        // and runs all of them; the unrolled rule is then the derivative of those iterations.
        let x = STALLING_2X2;
        let g = [0.3, -1.0, 0.7, 0.2];
        let mut p = [0.0; 4];
        let with = Settings {
            iters: 200,
            tol: 1e-12,
            newton: true,
        };
        assert!(sinkhorn(&x, 2, with, &mut p).converged(with));
        let plain = Settings {
            newton: false,
            ..with
        };
        let out = sinkhorn(&x, 2, plain, &mut p);
        assert!(out.iterations == 200 && out.residual > 1e-3, "{out:?}");
        let fd = sinkhorn_fd(&x, 2, plain, &g);
        let mut grad = [0.0; 4];
        sinkhorn_unrolled_vjp(&x, 2, plain, &g, &mut grad);
        for k in 0..4 {
            assert!((grad[k] - fd[k]).abs() < 1e-7, "{grad:?} vs {fd:?}");
        }
    }

    #[test]
    fn unrolled_is_exact_for_few_iterations() {
        // Not converged: the unrolled rule is still the derivative of the computed map.
        let mut r = XorShift::new(9);
        let n = 4;
        let x = r.vec(n * n, -4.0, 4.0);
        let g = r.vec(n * n, -1.0, 1.0);
        let s = Settings {
            iters: 3,
            tol: 1e-15,
            newton: true,
        };
        let fd = sinkhorn_fd(&x, n, s, &g);
        let mut grad = vec![0.0; n * n];
        sinkhorn_unrolled_vjp(&x, n, s, &g, &mut grad);
        for k in 0..n * n {
            assert!((grad[k] - fd[k]).abs() < 1e-7, "{} vs {}", grad[k], fd[k]);
        }
    }
}
