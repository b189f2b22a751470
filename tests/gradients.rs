//! Gradients of every (support, soft solver, backward rule) in `sst::support::REGISTRY`, checked
//! against central finite differences of the whole map `θ ↦ ⟨c, z_soft(θ)⟩` at a fixed seed
//! (same seed ⇒ same noise), in f64; and the rules against each other (DESIGN.md §6).
//!
//! Generic: no support is named here. A new support in `REGISTRY` is picked up through
//! `random_instance`, `describe` and `soft_solvers`.

mod common;

use common::{loss, scores_are_theta, Rng};
use ndarray::ArrayD;
use sst::support::{SupportRef, REGISTRY};
use sst::{Mode, Options};

const SEEDS: u64 = 20;
const TEMPERATURES: [f64; 2] = [0.5, 1.5];
/// Perturbations every support accepts (the exponential race is tried where the checker takes it).
const NOISES: [&str; 3] = ["gumbel", "gaussian(sigma = 1)", "neg_exponential"];
/// Step and tolerance of the central differences (f64).
const H: f64 = 1e-6;
const TOL: f64 = 1e-6;

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

fn max_abs_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The backward rules of a solver, by spec name: its native rules, then `finite_diff`.
fn rules(solver: &sst::support::SoftSolver) -> Vec<&'static str> {
    solver
        .rules
        .iter()
        .map(|r| r.name())
        .chain(["finite_diff"])
        .collect()
}

#[derive(Default)]
struct Counts {
    checked: usize,
    kinks: usize,
    /// Draws whose iterative soft solver warned that it did not converge: the rules agree only
    /// at the solution (an implicit rule differentiates the fixed point, not the iterate).
    unconverged: usize,
}

/// One instance: for every soft solver, noise, temperature, rule: backward vs central
/// differences, and the rules against each other.
fn check_instance(support: &SupportRef, seed: u64, rng: &mut Rng, counts: &mut Counts) {
    let shape = support.shape();
    // A batch of two rows, so the batch axis is exercised too.
    let mut theta_shape = vec![2];
    theta_shape.extend(&shape);
    for solver in support.soft_solvers() {
        for noise in NOISES {
            for &t in &TEMPERATURES {
                let theta = rng.array(&theta_shape, -2.0, 2.0);
                let cot = rng.array(&theta_shape, -1.0, 1.0);
                let opts = Options::default()
                    .seed(seed)
                    .mode(Mode::Soft)
                    .temperature(t);
                let mut grads: Vec<(String, ArrayD<f64>)> = Vec::new();
                let mut reference: Option<(ArrayD<f64>, bool)> = None;
                for rule in rules(solver) {
                    let spec = format!(
                        "layer l: {} {{ noise: {noise}; regularizer: {}; solver: {}; backward: {rule} }}",
                        support.describe(),
                        solver.regularizer.name(),
                        solver.name,
                    );
                    let l = match compile(&spec) {
                        Ok(l) => l,
                        // Only the exponential race may be refused by a support.
                        Err(_) if noise == "neg_exponential" => continue,
                        Err(e) => panic!("{spec} does not compile:\n{e}"),
                    };
                    // Central differences of the whole map at ±h and ±2h; a piecewise-linear
                    // solver within 2h of a kink makes them disagree: skip that draw.
                    let (fd, smooth) = reference.get_or_insert_with(|| {
                        let fd = central(&l, &theta, &cot, &opts, H);
                        let fd2 = central(&l, &theta, &cot, &opts, 2.0 * H);
                        let smooth = max_abs_diff(&fd, &fd2) <= TOL;
                        (fd, smooth)
                    });
                    if !*smooth {
                        counts.kinks += 1;
                        break;
                    }
                    let fwd = l.try_forward(theta.view(), &opts).unwrap();
                    if fwd
                        .report
                        .warnings
                        .iter()
                        .any(|w| w.contains("did not converge"))
                    {
                        counts.unconverged += 1;
                        break;
                    }
                    let grad = l.try_backward(&fwd, cot.view()).unwrap();
                    assert_eq!(grad.shape(), theta.shape(), "{spec}");
                    let err = max_abs_diff(&grad, fd);
                    assert!(
                        err <= TOL,
                        "{spec} | seed {seed} T {t}: |backward − central differences| = {err:e}\n\
                         θ = {theta}\n c = {cot}\n backward = {grad}\n central = {fd}"
                    );
                    // Backward in hard mode (straight-through) is the soft gradient at the same w.
                    let hard = l.try_forward(theta.view(), &opts.mode(Mode::Hard)).unwrap();
                    assert_eq!(hard.w, fwd.w, "{spec}: the mode must not change the noise");
                    let st = l.try_backward(&hard, cot.view()).unwrap();
                    let err = max_abs_diff(&st, &grad);
                    assert!(err <= 1e-9, "{spec}: straight-through differs by {err:e}");
                    counts.checked += 1;
                    grads.push((rule.to_string(), grad));
                }
                // The rules agree with each other (finite_diff to its O(h²/T³) error).
                for (name, g) in grads.iter().skip(1) {
                    let err = max_abs_diff(g, &grads[0].1);
                    assert!(
                        err <= TOL,
                        "{}: rule {name} differs from {} by {err:e}",
                        support.describe(),
                        grads[0].0
                    );
                }
            }
        }
    }
}

#[test]
fn every_rule_matches_central_differences() {
    let mut rng = Rng(0x6AAD_1E17);
    for entry in REGISTRY {
        let mut counts = Counts::default();
        for seed in 0..SEEDS {
            let support = (entry.random_instance)(seed);
            check_instance(&support, seed, &mut rng, &mut counts);
        }
        eprintln!(
            "{}: {} gradients checked, {} draws skipped near a kink, {} not converged",
            entry.name, counts.checked, counts.kinks, counts.unconverged
        );
        assert!(
            counts.unconverged * 20 <= counts.checked,
            "{}: too many draws not converged ({} of {})",
            entry.name,
            counts.unconverged,
            counts.checked
        );
        assert!(
            counts.kinks * 10 <= counts.checked,
            "{}: too many draws near kinks ({} of {})",
            entry.name,
            counts.kinks,
            counts.checked
        );
        assert!(counts.checked > 0, "{}: nothing checked", entry.name);
    }
}

/// Every rule also runs with `Noise::None` (w = θ): the gradient is the solver's alone.
#[test]
fn every_rule_without_noise() {
    let mut rng = Rng(0xBEEF);
    for entry in REGISTRY {
        for seed in 0..SEEDS {
            let support = (entry.random_instance)(seed);
            for solver in support.soft_solvers() {
                let theta = rng.array(&support.shape(), -2.0, 2.0);
                let cot = rng.array(&support.shape(), -1.0, 1.0);
                let opts = Options::default()
                    .noise(sst::Noise::None)
                    .mode(Mode::Soft)
                    .temperature(1.0);
                let mut first: Option<ArrayD<f64>> = None;
                for rule in rules(solver) {
                    let spec = format!(
                        "layer l: {} {{ regularizer: {}; backward: {rule} }}",
                        support.describe(),
                        solver.regularizer.name()
                    );
                    let l = compile(&spec).unwrap_or_else(|e| panic!("{e}"));
                    let fd = central(&l, &theta, &cot, &opts, H);
                    let fd2 = central(&l, &theta, &cot, &opts, 2.0 * H);
                    if max_abs_diff(&fd, &fd2) > TOL {
                        continue;
                    }
                    let fwd = l.try_forward(theta.view(), &opts).unwrap();
                    if scores_are_theta(&support) {
                        assert_eq!(fwd.w, theta, "{spec}: Noise::None must give w = θ");
                    }
                    let grad = l.try_backward(&fwd, cot.view()).unwrap();
                    let err = max_abs_diff(&grad, &fd);
                    assert!(err <= TOL, "{spec}: {err:e}");
                    if let Some(f) = &first {
                        assert!(max_abs_diff(f, &grad) <= TOL, "{spec}: rules disagree");
                    } else {
                        first = Some(grad);
                    }
                }
            }
        }
    }
}
