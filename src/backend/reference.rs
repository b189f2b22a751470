//! The reference backend: every IR node as a call to the kernels of `src/kernels/`, one row at a
//! time, in the request's precision. It runs every program and is the oracle the other backends
//! are tested against. Its working rows are allocated at most once per call (kernels that are
//! not streaming — trees, assignment, Sinkhorn, the dynamic programs — still allocate their own).

use super::{
    kept_width, Backend, ForwardOut, Report, Rows, Saved, SolveError, Unsupported, Warning,
};
use crate::estimator::{conditional_gumbel_max, conditional_logistic};
use crate::grad::finite_diff;
use crate::ir::{
    Backward, Conditional, Decode, Estimator, Hard, Program, Rule, ScoreMap, Soft, Trees,
};
use crate::kernels::capped_simplex::{capped_simplex, capped_simplex_vjp};
use crate::kernels::chain_subset::{chain_argmax, chain_marginals, chain_marginals_jvp};
use crate::kernels::counts::{
    count_mean, count_mean_vjp, truncated_log_pmf, truncated_log_pmf_vjp,
};
use crate::kernels::dp::{subset_dp_cells, MAX_DP_CELLS};
use crate::kernels::esp::{esp_marginals, esp_marginals_jvp};
use crate::kernels::matrix_tree::{self, Method};
use crate::kernels::sinkhorn::{padded_sinkhorn, padded_sinkhorn_vjp, Settings};
use crate::kernels::threshold::{solve_threshold, threshold_vjp, Solved};
use crate::kernels::{
    all_finite, argmax, assignment, logistic, max_tree, softmax, sparsemax, top_k,
};
use crate::noise::NoiseKey;
use crate::plan::Mode;
use crate::real::Real;

/// The reference backend (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

/// The rows one call works in: each allocated on first use, at the longest score row, so once
/// per call and only if the call needs it.
#[derive(Default)]
struct Workspace<F> {
    scores: Vec<F>,
    g: Vec<F>,
    grad_w: Vec<F>,
    grad_scores: Vec<F>,
    w_draw: Vec<F>,
    soft: SoftScratch<F>,
}

/// What the soft backward works in: `x = w/T`, the re-solved `z` and what its kernel keeps,
/// `∂L/∂x`, and what a re-solve reports (discarded; reused so that recording its values
/// allocates once per call).
#[derive(Default)]
struct SoftScratch<F> {
    x: Vec<F>,
    z: Vec<F>,
    kept: Vec<f64>,
    grad_x: Vec<F>,
    report: Report,
}

/// The first `len` entries of `buf`, grown to `capacity` (≥ `len`) the first time it is used.
fn row<F: Real>(buf: &mut Vec<F>, len: usize, capacity: usize) -> &mut [F] {
    if buf.len() < len {
        buf.resize(capacity.max(len), F::zero());
    }
    &mut buf[..len]
}

impl<F: Real> Backend<F> for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn supports(&self, _: &Program) -> Result<(), Unsupported> {
        Ok(())
    }

    fn forward(&self, rows: &Rows<F>, out: ForwardOut<F>) -> Result<(), SolveError> {
        let p = rows.program;
        let (m, l, batch) = (p.row_len, rows.stride, rows.batch_rows());
        let mapped = p.scores != ScoreMap::Identity;
        let t = F::of(rows.temperature);
        let kept_len = kept_width(p, rows.mode);
        let mut ws = Workspace::default();
        for (j, i) in rows.range.clone().enumerate() {
            let (s, b) = (i / batch, i % batch);
            let lb = rows.score_len(b);
            let theta_row = &rows.theta[b * m..(b + 1) * m];
            let scores = scores_of(p.scores, theta_row, &mut ws.scores, lb, l);
            // Past a row's own length, its scores are outcomes it does not have.
            out.w[j * l + lb..(j + 1) * l].fill(F::neg_infinity());
            let w_row = &mut out.w[j * l..j * l + lb];
            rows.noise
                .perturb(p.coordinates, scores, key(rows, s, b), w_row)
                .map_err(SolveError::Noise)?;
            if let Some(bad) = (!all_finite(w_row))
                .then(|| w_row.iter().find(|x| !x.is_finite()))
                .flatten()
            {
                return Err(SolveError::PerturbedOverflow {
                    value: bad.f64(),
                    precision: F::NAME,
                });
            }
            let z_row = &mut out.z[j * m..(j + 1) * m];
            let s_row = match mapped {
                true => &mut out.solution[j * l..j * l + lb],
                false => &mut *z_row,
            };
            match rows.mode {
                Mode::Hard => hard(p.hard, w_row, s_row),
                Mode::Soft => {
                    let x = row(&mut ws.soft.x, lb, l);
                    scale(w_row, t, x)?;
                    let kept = &mut out.kept[j * kept_len..(j + 1) * kept_len];
                    soft(p.soft, p.backward, x, s_row, kept, out.report)?;
                    clamp_unit(s_row);
                }
            }
            if mapped {
                decode(p.decode, &out.solution[j * l..j * l + lb], z_row);
            }
        }
        Ok(())
    }

    fn backward_into(
        &self,
        rows: &Rows<F>,
        saved: Saved<F>,
        grad: &mut [F],
    ) -> Result<(), SolveError> {
        let p = rows.program;
        let (m, l, batch) = (p.row_len, rows.stride, rows.batch_rows());
        let mut ws = Workspace::default();
        for (j, i) in rows.range.clone().enumerate() {
            let (s, b) = (i / batch, i % batch);
            let lb = rows.score_len(b);
            // Read only by the programs that keep it (Program::backward_reads_theta).
            let theta_row = || &rows.theta[b * m..(b + 1) * m];
            let w_row = &saved.w[i * l..i * l + lb];
            let solution_row = &saved.solution[i * l..i * l + lb];
            let g = row(&mut ws.g, lb, l);
            let c = saved.cotangent_row(i, b);
            decode_vjp(p.decode, &saved.cotangent[c * m..(c + 1) * m], g);
            let grad_w = row(&mut ws.grad_w, lb, l);
            grad_w.fill(F::zero());
            match (rows.mode, p.estimator) {
                (Mode::Hard, Estimator::GumbelRao { draws, conditional }) => {
                    let scores = scores_of(p.scores, theta_row(), &mut ws.scores, lb, l);
                    let w_draw = row(&mut ws.w_draw, lb, l);
                    let row_key = key(rows, s, b);
                    for draw in 0..draws as u32 {
                        match conditional {
                            Conditional::GumbelMax => conditional_gumbel_max(
                                scores,
                                argmax(solution_row),
                                row_key,
                                draw,
                                w_draw,
                            ),
                            Conditional::Logistic => {
                                conditional_logistic(scores, solution_row, row_key, draw, w_draw)
                            }
                        }
                        soft_backward(p, w_draw, None, rows.temperature, g, grad_w, &mut ws.soft)?;
                    }
                    let scale = F::of(draws as f64).recip();
                    grad_w.iter_mut().for_each(|x| *x = *x * scale);
                }
                _ => {
                    let kept_len = kept_width(p, rows.mode);
                    let kept = &saved.kept[i * kept_len..(i + 1) * kept_len];
                    let soft_z = (rows.mode == Mode::Soft).then_some((solution_row, kept));
                    soft_backward(p, w_row, soft_z, rows.temperature, g, grad_w, &mut ws.soft)?;
                }
            }
            let grad_scores = row(&mut ws.grad_scores, lb, l);
            grad_scores.fill(F::zero());
            rows.noise.chain(p.coordinates, w_row, grad_w, grad_scores);
            score_map_vjp(
                p.scores,
                theta_row,
                grad_scores,
                &mut grad[j * m..(j + 1) * m],
            );
        }
        Ok(())
    }
}

/// The noise key of sample `s` of batch row `b`.
fn key<F>(rows: &Rows<F>, s: usize, b: usize) -> NoiseKey {
    NoiseKey {
        seed: rows.seed,
        sample: s as u32,
        batch: b as u32,
    }
}

/// `ℓ(θ)` for one row of score length `len`: `θ` itself for the identity map (no copy), else
/// computed into `buf` (grown to `capacity` on first use).
fn scores_of<'a, F: Real>(
    map: ScoreMap,
    theta: &'a [F],
    buf: &'a mut Vec<F>,
    len: usize,
    capacity: usize,
) -> &'a [F] {
    match map {
        ScoreMap::Identity => theta,
        ScoreMap::Counts { law, .. } => {
            let scores = row(buf, len, capacity);
            truncated_log_pmf(law, theta[0], scores);
            scores
        }
    }
}

/// `grad_theta ← (∂ℓ/∂θ)ᵀ grad_scores`, with `θ`'s row from `theta` (called only by the maps
/// that read it).
fn score_map_vjp<'a, F: Real>(
    map: ScoreMap,
    theta: impl FnOnce() -> &'a [F],
    grad_scores: &[F],
    grad_theta: &mut [F],
) {
    match map {
        ScoreMap::Identity => grad_theta.copy_from_slice(grad_scores),
        ScoreMap::Counts { law, .. } => {
            grad_theta[0] = truncated_log_pmf_vjp(law, theta()[0], grad_scores)
        }
    }
}

/// `z = E s`.
fn decode<F: Real>(map: Decode, solution: &[F], z: &mut [F]) {
    match map {
        Decode::Identity => z.copy_from_slice(solution),
        Decode::CountMean => z[0] = count_mean(solution),
    }
}

/// `g = Eᵀ c`, the cotangent over the solution.
fn decode_vjp<F: Real>(map: Decode, cotangent: &[F], g: &mut [F]) {
    match map {
        Decode::Identity => g.copy_from_slice(cotangent),
        Decode::CountMean => count_mean_vjp(cotangent[0], g),
    }
}

/// `s = argmax_{s∈Z} ⟨w, s⟩`.
pub(super) fn hard<F: Real>(kernel: Hard, w: &[F], s: &mut [F]) {
    match kernel {
        Hard::Argmax => {
            s.fill(F::zero());
            s[argmax(w)] = F::one();
        }
        Hard::Positive => {
            for (si, &wi) in s.iter_mut().zip(w) {
                *si = if wi > F::zero() { F::one() } else { F::zero() };
            }
        }
        Hard::TopK { k } => top_k::top_k(w, k, s),
        Hard::ChainViterbi { k } => chain_argmax(w, k, s),
        Hard::Assignment { rows, cols } => assignment::matching_indicator(w, rows, cols, s),
        Hard::MaxSpanningTree { n } => max_tree::max_spanning_tree_indicator(w, n, s),
        Hard::MaxArborescence { n, root } => max_tree::max_arborescence_indicator(w, n, root, s),
    }
}

/// `s = argmax_{s∈conv Z} ⟨x, s⟩ − f(s)`; what the kernel keeps for its backward pass goes into
/// `kept` (empty: nothing kept). Under the `backward` rule `unrolled`, Sinkhorn runs plain
/// iterations (no Newton steps), the ones that rule differentiates.
fn soft<F: Real>(
    kernel: Soft,
    backward: Backward,
    x: &[F],
    s: &mut [F],
    kept: &mut [f64],
    report: &mut Report,
) -> Result<(), SolveError> {
    match kernel {
        Soft::Softmax => softmax::softmax(x, s),
        Soft::Sparsemax => sparsemax::sparsemax(x, s),
        Soft::Sigmoid => logistic::sigmoid(x, s),
        Soft::Clip => logistic::clipped_linear(x, s),
        Soft::Threshold { link, k, tol } => {
            record_threshold(report, solve_threshold(link, x, k, tol, s), tol);
        }
        Soft::CappedSimplex { k } => capped_simplex(x, k, s),
        Soft::Esp { k } => {
            esp_fits(x.len(), k)?;
            esp_marginals(x, k, s);
        }
        Soft::ChainDp { k } => chain_marginals(x, k, s),
        Soft::Sinkhorn {
            rows,
            cols,
            iters,
            tol,
        } => {
            let newton = backward != Backward::Native(Rule::Unrolled);
            sinkhorn_row((rows, cols), Settings { iters, tol, newton }, x, s, report);
        }
        Soft::MatrixTree { n, trees } => matrix_tree_row(n, trees, x, s, kept, report),
    }
    Ok(())
}

/// Sinkhorn on one row's `rows × cols` scores `x` ([`padded_sinkhorn`]) into `s`, its iterations
/// and residual recorded in `report`, and a warning when it stopped short of `tol`.
pub(super) fn sinkhorn_row<F: Real>(
    (rows, cols): (usize, usize),
    settings: Settings,
    x: &[F],
    s: &mut [F],
    report: &mut Report,
) {
    let outcome = padded_sinkhorn(x, rows, cols, settings, s);
    report.record_max("sinkhorn_iterations", outcome.iterations as f64);
    report.record_max("sinkhorn_residual", outcome.residual);
    if !outcome.converged(settings) {
        // One warning per forward pass, the same whatever rows share it (and however they are
        // split over threads); the worst residual is in the diagnostics.
        report.warn(
            Warning::SinkhornNotConverged,
            format!(
                "Sinkhorn did not converge in {} iterations (tol {:e}); the worst marginal \
                 residual is diagnostics.sinkhorn_residual",
                settings.iters, settings.tol
            ),
        );
    }
}

/// The edge marginals of one row's `trees` on `n` nodes into `s`, `L̂⁻ᵀ` into `kept`; a row
/// computed in log space is recorded in `report`.
pub(super) fn matrix_tree_row<F: Real>(
    n: usize,
    trees: Trees,
    x: &[F],
    s: &mut [F],
    kept: &mut [f64],
    report: &mut Report,
) {
    let method = match trees {
        Trees::Undirected => matrix_tree::undirected_marginals(x, n, s, kept),
        Trees::Rooted(root) => matrix_tree::rooted_marginals(x, n, root, s, kept),
    };
    if method == Method::LogSpace {
        report.record_max("log_space_marginals", 1.0);
    }
}

/// Records a threshold solve in `report`: its iterations and residual, and a warning when it
/// stopped short of `tol`.
pub(super) fn record_threshold(report: &mut Report, solved: Solved, tol: f64) {
    report.record_max("tau_iterations", solved.iterations as f64);
    report.record_max("tau_residual", solved.residual);
    if !solved.converged {
        report.warn(
            Warning::BisectionNotConverged,
            format!(
                "bisection stopped after {} iterations with |Σz − k| = {:e} > tol = {tol:e}",
                solved.iterations, solved.residual
            ),
        );
    }
}

/// `grad_x += J(x)ᵀ g` at the soft solution `s = soft(x)` by the kernel's native `rule`, with
/// what the kernel `kept` when it solved.
fn soft_vjp<F: Real>(
    kernel: Soft,
    rule: Rule,
    (x, s, kept): (&[F], &[F], &[f64]),
    g: &[F],
    grad_x: &mut [F],
) -> Result<(), SolveError> {
    match kernel {
        Soft::Softmax => softmax::softmax_vjp(s, g, grad_x),
        Soft::Sparsemax => sparsemax::sparsemax_vjp(s, g, grad_x),
        Soft::Sigmoid => logistic::sigmoid_vjp(s, g, grad_x),
        Soft::Clip => logistic::clipped_linear_vjp(s, g, grad_x),
        Soft::Threshold { link, .. } => threshold_vjp(link, s, g, F::one(), grad_x),
        Soft::CappedSimplex { .. } => capped_simplex_vjp(s, g, grad_x),
        Soft::Esp { k } => {
            esp_fits(x.len(), k)?;
            esp_marginals_jvp(x, k, g, grad_x);
        }
        Soft::ChainDp { k } => chain_marginals_jvp(x, k, g, grad_x),
        Soft::Sinkhorn {
            rows,
            cols,
            iters,
            tol,
        } => {
            let unrolled = rule == Rule::Unrolled;
            let settings = Settings {
                iters,
                tol,
                newton: !unrolled,
            };
            if !padded_sinkhorn_vjp(unrolled, x, s, rows, cols, settings, g, grad_x) {
                return Err(SolveError::GradientNotFinite { kernel: "Sinkhorn" });
            }
        }
        Soft::MatrixTree { n, trees } => matrix_tree_vjp_row(n, trees, x, g, kept, grad_x),
    }
    Ok(())
}

/// `grad_x += J(x)ᵀ g` of one row's matrix-tree marginals, through the `L̂⁻ᵀ` the solve `kept`.
pub(super) fn matrix_tree_vjp_row<F: Real>(
    n: usize,
    trees: Trees,
    x: &[F],
    g: &[F],
    kept: &[f64],
    grad_x: &mut [F],
) {
    match trees {
        Trees::Undirected => matrix_tree::undirected_marginals_vjp(x, n, g, Some(kept), grad_x),
        Trees::Rooted(root) => matrix_tree::rooted_marginals_vjp(x, n, root, g, Some(kept), grad_x),
    }
}

/// The elementary-symmetric-polynomial DP on `n` items fits [`MAX_DP_CELLS`].
fn esp_fits(n: usize, k: usize) -> Result<(), SolveError> {
    let cells = subset_dp_cells(n, k);
    match cells > MAX_DP_CELLS {
        true => Err(SolveError::DpTooLarge {
            what: "elementary-symmetric-polynomial",
            cells,
        }),
        false => Ok(()),
    }
}

/// The cotangent in the kernel's weight coordinates along which `finite_diff` perturbs `w`:
/// an undirected tree's folded onto the upper triangle, where its weights are; elsewhere the
/// entries the kernel reads ([`restrict_gradient`]).
fn fold_cotangent(kernel: Soft, c: &mut [f64]) {
    match kernel {
        Soft::MatrixTree {
            n,
            trees: Trees::Undirected,
        } => matrix_tree::fold_undirected(c, n),
        _ => restrict_gradient(kernel, c),
    }
}

/// Zeroes the entries of a gradient in `w` coordinates that the kernel does not read.
fn restrict_gradient(kernel: Soft, grad: &mut [f64]) {
    match kernel {
        Soft::MatrixTree {
            n,
            trees: Trees::Undirected,
        } => matrix_tree::restrict_undirected(grad, n),
        Soft::MatrixTree {
            n,
            trees: Trees::Rooted(root),
        } => matrix_tree::restrict_rooted(grad, n, root),
        _ => {}
    }
}

/// `grad_w += (∂s_T/∂w)ᵀ g` at one row `w` by the program's backward rule; `soft_z` is the soft
/// solution at `w` and what its kernel kept, when the forward pass already computed them;
/// `scratch` holds the working rows.
fn soft_backward<F: Real>(
    p: &Program,
    w: &[F],
    soft_z: Option<(&[F], &[f64])>,
    temperature: f64,
    g: &[F],
    grad_w: &mut [F],
    scratch: &mut SoftScratch<F>,
) -> Result<(), SolveError> {
    let rule = match p.backward {
        Backward::FiniteDiff { eps } => {
            let solve = |x: &[f64], z: &mut [f64]| {
                soft(p.soft, p.backward, x, z, &mut [], &mut Report::default())
            };
            return finite_diff(
                solve,
                |c| fold_cotangent(p.soft, c),
                |d| restrict_gradient(p.soft, d),
                w,
                temperature,
                g,
                eps,
                grad_w,
            );
        }
        Backward::Native(rule) => rule,
    };
    let len = w.len();
    let t = F::of(temperature);
    let x = row(&mut scratch.x, len, len);
    scale(w, t, x)?;
    let (z, kept) = match soft_z {
        Some(solved) => solved,
        None => {
            let z = row(&mut scratch.z, len, len);
            let kept_len = p.soft.kept_len();
            let kept = row(&mut scratch.kept, kept_len, kept_len);
            soft(p.soft, p.backward, x, z, kept, &mut scratch.report)?;
            // The solution a soft forward pass would have given (clamped as it is).
            clamp_unit(z);
            (&*z, &*kept)
        }
    };
    let grad_x = row(&mut scratch.grad_x, len, len);
    grad_x.fill(F::zero());
    soft_vjp(p.soft, rule, (x, z, kept), g, grad_x)?;
    for (gw, &gx) in grad_w.iter_mut().zip(grad_x.iter()) {
        *gw = *gw + gx / t;
    }
    Ok(())
}

/// `x = w / T`, the soft kernels' input; an overflow is a temperature error. (Divides every
/// entry, then looks for an overflow: a loop without an exit vectorizes.)
fn scale<F: Real>(w: &[F], t: F, x: &mut [F]) -> Result<(), SolveError> {
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = wi / t;
    }
    if all_finite(x) {
        return Ok(());
    }
    match x.iter().position(|xi| !xi.is_finite()) {
        Some(i) => Err(SolveError::ScaledOverflow {
            w: w[i].f64(),
            temperature: t.f64(),
            precision: F::NAME,
        }),
        None => Ok(()),
    }
}

/// Clamps a soft solution into `[0, 1]`, where every kernel's solution lies (probabilities,
/// marginals, doubly stochastic entries): a rounding error of 1e-15 outside it would make
/// `log z` in a loss NaN.
pub(super) fn clamp_unit<F: Real>(s: &mut [F]) {
    for x in s {
        *x = x.max(F::zero()).min(F::one());
    }
}
