//! Gradients of every (support, soft solver, backward rule) in `sst::support::REGISTRY`, checked
//! against central finite differences of the whole map `θ ↦ ⟨c, z_soft(θ)⟩` at a fixed seed
//! (same seed ⇒ same noise), in f64; and the rules against each other (DESIGN.md §6).
//!
//! Generic: no support is named here. A new support in `REGISTRY` is picked up through
//! `random_instance` (small, possibly trivial), `gradient_instance` (moderate), `describe` and
//! `soft_solvers`.
//!
//! What counts as a check. A draw (one `θ`, cotangent, noise seed, temperature) is compared with
//! every rule, and then classified:
//! - *trivial*: the instance has a single structure (`|Z| = 1`: `k = n` subsets, 1-outcome
//!   categoricals, 2-node trees), so `z` is constant and the gradient is zero; both the
//!   differences and every rule must give 0, but the draw is not counted as a check;
//! - *flat*: the central differences are below [`RESOLVED`] everywhere (a saturated solver, e.g.
//!   a one-hot sparsemax): a zero backward would pass, so it is not counted either;
//! - *kink*: the differences at `h` and `2h` disagree (a piecewise-linear solver within `2h` of a
//!   kink): skipped; *unconverged*: an iterative solver warned (an implicit rule differentiates
//!   the fixed point, not the iterate): skipped;
//! - *checked*: everything else.
//!
//! Budgets compare skips with checks of the same kind (support × solver × noise).

mod common;

use std::collections::BTreeMap;

use common::{loss, max_abs, max_abs_diff, rules, scores_are_theta, Rng};
use ndarray::ArrayD;
use sst::support::{Entry, Regularizer, SoftSolver, SupportRef, REGISTRY};
use sst::{Mode, Noise, Options, Warning};

const SEEDS: usize = 20;
const TEMPERATURES: [f64; 2] = [0.5, 1.5];
/// Perturbations every support accepts (the exponential race is tried where the checker takes it).
const NOISES: [&str; 3] = ["gumbel", "gaussian(sigma = 1)", "neg_exponential"];
/// Step and tolerance of the central differences (f64).
const H: f64 = 1e-6;
const TOL: f64 = 1e-6;
/// A draw counts as a check only if its gradient is resolved above the tolerance by a factor 10
/// somewhere: there, a backward that returned zeros would fail the check.
const RESOLVED: f64 = 10.0 * TOL;

fn compile(spec: &str) -> Result<sst::Layer, String> {
    sst::compile(spec)
        .map(|m| m.layer("l").clone())
        .map_err(|e| e.to_string())
}

/// Central differences of `loss` at step `h`, one coordinate of θ at a time.
fn central(
    l: &sst::Layer,
    theta: &ArrayD<f64>,
    cot: &ArrayD<f64>,
    opts: &Options,
    h: f64,
) -> ArrayD<f64> {
    let mut out = ArrayD::zeros(theta.raw_dim());
    for (idx, _) in theta.indexed_iter() {
        let at = |d: f64| {
            let mut th = theta.clone();
            th[&idx] += d;
            loss(l, &th, cot, opts)
        };
        out[&idx] = (at(h) - at(-h)) / (2.0 * h);
    }
    out
}

/// What became of one draw (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// The support refuses this noise (only the exponential race may be refused).
    Refused,
    Trivial,
    Flat,
    Kink,
    Unconverged,
    Checked,
}

/// The draws of one kind (support × solver × noise), by outcome.
#[derive(Default, Debug)]
struct Tally {
    trivial: usize,
    flat: usize,
    kinks: usize,
    unconverged: usize,
    checked: usize,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Refused => {}
            Outcome::Trivial => self.trivial += 1,
            Outcome::Flat => self.flat += 1,
            Outcome::Kink => self.kinks += 1,
            Outcome::Unconverged => self.unconverged += 1,
            Outcome::Checked => self.checked += 1,
        }
    }

    /// The budgets, per kind: at least `min_checked` checks; kinks at most 10 % and unconverged
    /// draws at most 5 % of the checks (both are rare events: a kink within 2h = 2e-6 of the
    /// draw, a Sinkhorn stall). Flat draws are legitimate (the Euclidean projections are exactly
    /// constant on open sets: a one-hot sparsemax, a clipped coordinate; at T = 0.5 about 40 %
    /// of their draws are flat in both batch rows) and are bounded only through `min_checked`.
    fn assert_budgets(&self, kind: &str, min_checked: usize) {
        eprintln!("{kind}: {self:?}");
        assert!(
            self.checked >= min_checked,
            "{kind}: only {} gradients checked (at least {min_checked}): {self:?}",
            self.checked
        );
        assert!(
            self.kinks * 10 <= self.checked,
            "{kind}: too many draws near kinks: {self:?}"
        );
        assert!(
            self.unconverged * 20 <= self.checked,
            "{kind}: too many draws not converged: {self:?}"
        );
    }
}

/// One draw: a support, one of its soft solvers, a noise (spec syntax) and the request options.
struct Draw<'a> {
    support: &'a SupportRef,
    solver: &'a SoftSolver,
    noise: &'a str,
    opts: Options,
    theta: ArrayD<f64>,
    cot: ArrayD<f64>,
}

impl Draw<'_> {
    fn spec(&self, rule: &str) -> String {
        format!(
            "layer l: {} {{ noise: {}; regularizer: {}; solver: {}; backward: {rule} }}",
            self.support.describe(),
            self.noise,
            self.solver.regularizer.name(),
            self.solver.name,
        )
    }

    /// Every rule against central differences, straight-through against the soft gradient, the
    /// rules against each other; then the draw's [`Outcome`].
    fn check(&self) -> Outcome {
        let layers: Vec<(String, sst::Layer)> = match rules(self.solver)
            .into_iter()
            .map(|rule| compile(&self.spec(rule)).map(|l| (self.spec(rule), l)))
            .collect()
        {
            Ok(layers) => layers,
            Err(_) if self.noise == "neg_exponential" => return Outcome::Refused,
            Err(e) => panic!("{} does not compile:\n{e}", self.spec("…")),
        };
        let (theta, cot, opts) = (&self.theta, &self.cot, &self.opts);
        // Central differences of the whole map at ±h and ±2h; a piecewise-linear solver within
        // 2h of a kink makes them disagree.
        let fd = central(&layers[0].1, theta, cot, opts, H);
        let fd2 = central(&layers[0].1, theta, cot, opts, 2.0 * H);
        if max_abs_diff(&fd, &fd2) > TOL {
            return Outcome::Kink;
        }
        let unconverged = |fwd: &sst::Forward<f64>| {
            [
                Warning::SinkhornNotConverged,
                Warning::BisectionNotConverged,
            ]
            .into_iter()
            .any(|kind| fwd.report.has(kind))
        };
        let fwd = layers[0].1.try_forward(theta.view(), opts).unwrap();
        if unconverged(&fwd) {
            return Outcome::Unconverged;
        }
        if opts.noise == Noise::None && scores_are_theta(self.support) {
            assert_eq!(fwd.w, theta, "Noise::None must give w = θ");
        }
        let mut first: Option<(&str, ArrayD<f64>)> = None;
        for (spec, l) in &layers {
            let fwd = l.try_forward(theta.view(), opts).unwrap();
            // Where the first rule's solve converged and this one's did not, this layer computes
            // another map (the unrolled rule runs Sinkhorn's iterations plain, the others take
            // Newton steps on a stall): it is held to its own central differences and not
            // compared with the other rules.
            let own_map = unconverged(&fwd);
            let fd = match own_map {
                true => {
                    let own = central(l, theta, cot, opts, H);
                    if max_abs_diff(&own, &central(l, theta, cot, opts, 2.0 * H)) > TOL {
                        return Outcome::Kink;
                    }
                    own
                }
                false => fd.clone(),
            };
            let grad = l.try_backward(&fwd, cot.view()).unwrap();
            assert_eq!(grad.shape(), theta.shape(), "{spec}");
            let err = max_abs_diff(&grad, &fd);
            assert!(
                err <= TOL,
                "{spec} | {opts:?}: |backward − central differences| = {err:e}\n\
                 θ = {theta}\n c = {cot}\n backward = {grad}\n central = {fd}"
            );
            // Backward in hard mode (straight-through) is the soft gradient at the same w.
            let hard = l.try_forward(theta.view(), &opts.mode(Mode::Hard)).unwrap();
            assert_eq!(hard.w, fwd.w, "{spec}: the mode must not change the noise");
            let st = l.try_backward(&hard, cot.view()).unwrap();
            let err = max_abs_diff(&st, &grad);
            assert!(err <= 1e-9, "{spec}: straight-through differs by {err:e}");
            // The rules agree with each other (finite_diff to its O(h²/T³) error).
            match &first {
                _ if own_map => {}
                None => first = Some((spec, grad)),
                Some((first_spec, g)) => {
                    let err = max_abs_diff(g, &grad);
                    assert!(err <= TOL, "{spec} differs from {first_spec} by {err:e}");
                }
            }
        }
        if self.support.enumerate().len() < 2 {
            // A single structure: z is constant up to rounding (1e-15 / 2h = 5e-10 in the
            // difference quotients), and the rules were held to them above.
            assert!(max_abs(&fd) <= 1e-9, "{}: |Z| = 1 but z moves", layers[0].0);
            Outcome::Trivial
        } else if max_abs(&fd) < RESOLVED {
            Outcome::Flat
        } else {
            Outcome::Checked
        }
    }
}

/// A batch of two rows (so the batch axis is exercised too) of `θ` in [−2, 2] and a cotangent
/// in [−1, 1].
fn batch_of_two(support: &SupportRef, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut shape = vec![2];
    shape.extend(support.shape());
    (rng.array(&shape, -2.0, 2.0), rng.array(&shape, -1.0, 1.0))
}

/// The instances of `entry` for seeds 0, 1, …, until `count` of them are non-trivial
/// (`|Z| ≥ 2`); the trivial ones met on the way are yielded too (they are checked and counted
/// apart). About 40 % of the small random subsets and trees are trivial (`k = n`, 2 nodes).
fn instances(entry: &Entry, count: usize) -> Vec<SupportRef> {
    let mut out = Vec::new();
    let mut non_trivial = 0;
    for seed in 0..100 * count as u64 {
        let support = (entry.random_instance)(seed);
        non_trivial += usize::from(support.enumerate().len() >= 2);
        out.push(support);
        if non_trivial == count {
            return out;
        }
    }
    panic!("{}: fewer than {count} non-trivial instances", entry.name);
}

/// The key of a kind in the tallies.
fn kind(entry: &str, solver: &SoftSolver, noise: &str) -> String {
    format!(
        "{entry} / {} ({}) / {noise}",
        solver.name,
        solver.regularizer.name()
    )
}

/// Small random instances (sizes 1 to 8: 20 non-trivial ones, and the trivial ones met on the
/// way, counted apart), every solver, noise, temperature and rule: backward against central
/// differences. At least 10 of the 40 non-trivial draws of each kind must be real checks.
#[test]
fn every_rule_matches_central_differences() {
    let mut rng = Rng(0x6AAD_1E17);
    for entry in REGISTRY {
        let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
        for (seed, support) in instances(entry, SEEDS).iter().enumerate() {
            let seed = seed as u64;
            for solver in support.soft_solvers() {
                for noise in NOISES {
                    for &t in &TEMPERATURES {
                        let (theta, cot) = batch_of_two(support, &mut rng);
                        let draw = Draw {
                            support,
                            solver,
                            noise,
                            opts: Options::default()
                                .seed(seed)
                                .mode(Mode::Soft)
                                .temperature(t),
                            theta,
                            cot,
                        };
                        let outcome = draw.check();
                        if outcome != Outcome::Refused {
                            tallies
                                .entry(kind(entry.name, solver, noise))
                                .or_default()
                                .add(outcome);
                        }
                    }
                }
            }
        }
        assert!(!tallies.is_empty(), "{}: nothing drawn", entry.name);
        for (kind, tally) in &tallies {
            tally.assert_budgets(kind, 10);
        }
    }
}

/// Every rule also runs with `Noise::None` (w = θ): the gradient is the solver's alone. The same
/// classification and budgets, per (support, solver): at least 10 of the 20 non-trivial draws
/// checked.
#[test]
fn every_rule_without_noise() {
    let mut rng = Rng(0xBEEF);
    for entry in REGISTRY {
        let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
        for support in &instances(entry, SEEDS) {
            for solver in support.soft_solvers() {
                let (theta, cot) = batch_of_two(support, &mut rng);
                let draw = Draw {
                    support,
                    solver,
                    noise: "gumbel",
                    opts: Options::default()
                        .noise(Noise::None)
                        .mode(Mode::Soft)
                        .temperature(1.0),
                    theta,
                    cot,
                };
                tallies
                    .entry(kind(entry.name, solver, "none"))
                    .or_default()
                    .add(draw.check());
            }
        }
        for (kind, tally) in &tallies {
            tally.assert_budgets(kind, 10);
        }
    }
}

/// Every support × solver × rule on its moderate instance (`gradient_instance`: n ≥ 6 where the
/// support allows, at least 6 structures), with Gumbel noise at T = 2 (at T = 1 half the
/// sparsemax draws are one-hot in both rows, hence flat): no trivial draw, and at least 5 of the
/// 10 draws per (support, solver) real checks.
#[test]
fn every_rule_on_a_moderate_instance() {
    let mut rng = Rng(0x30DE_7A7E);
    const DRAWS: u64 = 10;
    for entry in REGISTRY {
        let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
        for seed in 0..DRAWS {
            let support = (entry.gradient_instance)(seed);
            assert!(
                support.enumerate().len() >= 6,
                "{}: not a moderate instance",
                support.describe()
            );
            for solver in support.soft_solvers() {
                let (theta, cot) = batch_of_two(&support, &mut rng);
                let draw = Draw {
                    support: &support,
                    solver,
                    noise: "gumbel",
                    opts: Options::default()
                        .seed(seed)
                        .mode(Mode::Soft)
                        .temperature(2.0),
                    theta,
                    cot,
                };
                let outcome = draw.check();
                assert_ne!(
                    outcome,
                    Outcome::Trivial,
                    "{}: a trivial gradient instance",
                    support.describe()
                );
                tallies
                    .entry(kind(entry.name, solver, "gumbel"))
                    .or_default()
                    .add(outcome);
            }
        }
        for (kind, tally) in &tallies {
            tally.assert_budgets(kind, 5);
        }
    }
}

/// `θ ↦ ⟨c, μ(θ)⟩` for an exponential-family relaxation, by enumeration: with
/// `p(z) ∝ exp(⟨m ⊙ θ, z⟩/T)` over `Z` (`m` the support's mask of the entries it reads),
/// `μ = E_p[z]` and `∇_θ ⟨c, μ⟩ = m ⊙ Cov_p(z, ⟨c, z⟩)/T`. Returns `(μ, gradient)`.
fn expfamily_by_enumeration(
    support: &SupportRef,
    theta: &[f64],
    cot: &[f64],
    t: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut mask = vec![1.0; theta.len()];
    support.restrict_gradient(&mut mask);
    let structures = support.enumerate();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let masked: Vec<f64> = theta.iter().zip(&mask).map(|(x, m)| x * m).collect();
    let scores: Vec<f64> = structures.iter().map(|z| dot(&masked, z) / t).collect();
    let p = common::softmax(&scores);
    let mean = |f: &dyn Fn(&[f64]) -> f64| -> f64 {
        structures.iter().zip(&p).map(|(z, pz)| pz * f(z)).sum()
    };
    let mu: Vec<f64> = (0..theta.len()).map(|e| mean(&|z| z[e])).collect();
    let loss = dot(cot, &mu);
    let grad = (0..theta.len())
        .map(|e| mask[e] * mean(&|z| (z[e] - mu[e]) * (dot(cot, z) - loss)) / t)
        .collect();
    (mu, grad)
}

/// Exponential-family relaxations (`f = A*`) against enumeration at temperature `t`: the
/// marginals within the solvers' accepted error 1e-6, every native rule's gradient within 1e-5/T
/// (the accepted marginal error of the backward, 1e-5, through the chain's 1/T), or a request
/// error asking for a higher temperature (counted; at most half of a support's draws).
/// `finite_diff` is left out: it divides the forward's accepted error by its step (DESIGN.md §2:
/// test it at moderate T), which `every_rule_*` do.
fn check_expfamily_against_enumeration(temperatures: &[f64]) {
    let mut rng = Rng(0x10_7E3B);
    for entry in REGISTRY {
        for &t in temperatures {
            let (mut checked, mut refused) = (0, 0);
            for support in &instances(entry, SEEDS) {
                for solver in support.soft_solvers() {
                    if solver.regularizer != Regularizer::ExpFamily {
                        continue;
                    }
                    let theta = rng.array(&support.shape(), -2.0, 2.0);
                    let cot = rng.array(&support.shape(), -1.0, 1.0);
                    let (theta_v, cot_v): (Vec<f64>, Vec<f64>) = (
                        theta.iter().copied().collect(),
                        cot.iter().copied().collect(),
                    );
                    let (mu, grad) = expfamily_by_enumeration(support, &theta_v, &cot_v, t);
                    let opts = Options::default()
                        .noise(Noise::None)
                        .mode(Mode::Soft)
                        .temperature(t);
                    for rule in solver.rules.iter().map(|r| r.name()) {
                        let spec = format!(
                            "layer l: {} {{ regularizer: expfamily; solver: {}; backward: {rule} }}",
                            support.describe(),
                            solver.name
                        );
                        let l = compile(&spec).unwrap();
                        let fwd = l.try_forward(theta.view(), &opts).unwrap();
                        let z: Vec<f64> = fwd.z.iter().copied().collect();
                        let z_err = z
                            .iter()
                            .zip(&mu)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f64::max);
                        assert!(
                            z_err <= 1e-6,
                            "{spec} | T = {t}: marginals off by {z_err:e}\nθ = {theta}"
                        );
                        let Ok(g) = l.try_backward(&fwd, cot.view()) else {
                            refused += 1;
                            continue;
                        };
                        let g_err = g
                            .iter()
                            .zip(&grad)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f64::max);
                        assert!(
                            g_err <= 1e-5 / t,
                            "{spec} | T = {t}: gradient off by {g_err:e}\nθ = {theta}\nc = {cot}\n\
                             backward = {g}\nenumeration = {grad:?}"
                        );
                        checked += 1;
                    }
                }
            }
            if checked + refused > 0 {
                eprintln!(
                    "{} | T = {t}: {checked} gradients checked, {refused} refused",
                    entry.name
                );
                assert!(
                    refused <= checked,
                    "{} | T = {t}: {refused} refused, {checked} checked",
                    entry.name
                );
            }
        }
    }
}

/// Exponential-family gradients against enumeration at T = 0.25 and 1, where the logits `w/T`
/// of θ in [−2, 2] span up to 16.
#[test]
fn expfamily_gradients_match_enumeration() {
    check_expfamily_against_enumeration(&[0.25, 1.0]);
}

/// The same at T = 0.1, where the logits span up to 40 (more than f64 resolves in a sum of
/// exponentials): an accurate gradient or a request error, never a wrong number.
#[test]
fn expfamily_gradients_match_enumeration_at_low_temperature() {
    check_expfamily_against_enumeration(&[0.1]);
}
