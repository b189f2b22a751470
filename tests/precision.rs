//! f32 against f64 for every support in `sst::support::REGISTRY`, every soft solver and backward
//! rule, and the hard solver (DESIGN.md §5: `dtype` is the precision of the computation).
//!
//! The noise is drawn per precision (src/noise.rs: the f32 uniform is the midpoint of the 2⁻²³
//! cell that holds the f64 one, not the f64 uniform rounded), so both precisions get the same
//! perturbed scores another way: the test draws `θ = a + G` itself (a uniform in [−2, 2], `G` a
//! standard Gumbel), rounds it to f32, and runs both precisions with `Noise::None` on exactly
//! those numbers. Whatever differs then comes from f32 arithmetic.
//!
//! Soft solutions and gradients. Rounding `x = w/T` to f32 moves `x` by up to `eps32·|x|`
//! (eps32 = 2⁻²³ ≈ 1.2e-7), so a solver whose Jacobian in `x` has norm O(1) moves `z` by
//! O(eps32·‖x‖∞), and the gradient `Jᵀg/T` by O(eps32·‖x‖∞·‖g‖/T); the output's own rounding
//! adds O(eps32). The test asserts
//!
//! `‖z32 − z64‖∞ ≤ C·eps32·(1 + ‖x‖∞)·max(1, ‖z64‖∞)` and
//! `‖∇32 − ∇64‖∞ ≤ C·eps32·(1 + ‖x‖∞)·max(‖∇64‖∞, ‖c‖∞/T)`
//!
//! with the condition factor `C = 2` of [`CONDITION`], the same for every solver: every solver
//! either computes in f64 from the rounded `x` (Sinkhorn, matrix-tree, the DPs, the threshold
//! and projection solvers) or is a closed form with O(1) Jacobian in `x` (softmax, sigmoid,
//! sparsemax). The largest ratio measured, over 40 random and 10 moderate instances per support at
//! T from 0.1 to 1.5 (trees from 0.5), was 0.35; each run prints its largest ratios. Temperatures here are 0.5
//! and 1.5: at T = 0.1 the f64 arborescence gradient is itself wrong (see
//! `expfamily_gradients_match_enumeration_at_low_temperature` in tests/gradients.rs).
//!
//! The noise itself is compared too: f32 Gumbel noise lies within the f64 noise's cell
//! ([`f32_gumbel_noise_is_the_f64_noise_within_its_cell`]).
//!
//! Hard solutions must agree exactly, except where the f64 problem is a near tie: the f32 answer
//! must then be a structure of `Z` whose f64 objective is within f32 rounding of the optimum
//! (see [`near_tie_tolerance`]); such draws are counted, and may be at most 1 % of the hard
//! comparisons of a support.

mod common;

use std::collections::BTreeMap;

use common::{max_abs, max_abs_diff, rules, CenteredRng, Rng};
use ndarray::ArrayD;
use sst::noise::{gumbel, logistic, uniform, Coordinates, NoiseKey};
use sst::support::{Entry, SoftSolver, SupportRef, REGISTRY};
use sst::{Layer, Mode, Noise, Options};

/// f32's machine epsilon, 2⁻²³.
const EPS32: f64 = f32::EPSILON as f64;
/// The condition factor `C` of the module's tolerance.
const CONDITION: f64 = 2.0;
const TEMPERATURES: [f64; 2] = [0.5, 1.5];
/// Random (small) instances per support, and moderate ones.
const SMALL: u64 = 12;
const MODERATE: u64 = 3;

fn to_f32(a: &ArrayD<f64>) -> ArrayD<f32> {
    a.mapv(|x| x as f32)
}

fn to_f64(a: &ArrayD<f32>) -> ArrayD<f64> {
    a.mapv(f64::from)
}

/// `θ = a + G` with `a` uniform in [−2, 2] and `G` standard Gumbel `−ln(−ln u)`, rounded to f32
/// (so that both precisions read the same numbers).
fn perturbed_theta(shape: &[usize], rng: &mut CenteredRng) -> ArrayD<f64> {
    rng.array(shape, 0.0, 1.0).mapv(|u| {
        let a = 4.0 * rng.unit() - 2.0;
        f64::from((a - (-u.ln()).ln()) as f32)
    })
}

/// A cotangent in [−1, 1], rounded to f32.
fn cotangent(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    rng.array(shape, -1.0, 1.0).mapv(|c| f64::from(c as f32))
}

fn spec(support: &SupportRef, solver: &SoftSolver, rule: &str) -> String {
    format!(
        "layer l: {} {{ regularizer: {}; solver: {}; backward: {rule} }}",
        support.describe(),
        solver.regularizer.name(),
        solver.name
    )
}

/// The ratios `error / (eps32·(1 + ‖x‖∞)·scale)` of the module's soft tolerance, for `z` and
/// the gradient, at one `θ` (f32-representable), cotangent and temperature.
fn soft_ratios(l: &Layer, theta: &ArrayD<f64>, cot: &ArrayD<f64>, t: f64) -> (f64, f64) {
    let opts = Options::default()
        .noise(Noise::None)
        .mode(Mode::Soft)
        .temperature(t);
    let f64_run = l.try_forward(theta.view(), &opts).unwrap();
    let f32_run = l.try_forward(to_f32(theta).view(), &opts).unwrap();
    let g64 = l.try_backward(&f64_run, cot.view()).unwrap();
    let g32 = to_f64(&l.try_backward(&f32_run, to_f32(cot).view()).unwrap());
    let condition = EPS32 * (1.0 + max_abs(&f64_run.w) / t);
    let z_scale = max_abs(&f64_run.z).max(1.0);
    let g_scale = max_abs(&g64).max(max_abs(cot) / t);
    let z_ratio = max_abs_diff(&to_f64(&f32_run.z), &f64_run.z) / (condition * z_scale);
    let g_ratio = max_abs_diff(&g32, &g64) / (condition * g_scale);
    (z_ratio, g_ratio)
}

/// The instances a support is compared on: [`SMALL`] random ones and [`MODERATE`] moderate ones.
fn instances(entry: &Entry) -> Vec<SupportRef> {
    (0..SMALL)
        .map(entry.random_instance)
        .chain((0..MODERATE).map(entry.gradient_instance))
        .collect()
}

/// Soft `z` and every rule's gradient, f32 against f64, within the module's tolerance.
#[test]
fn soft_solutions_and_gradients_agree_within_f32_rounding() {
    let (mut rng, mut noise) = (Rng(0x0F32_F064), CenteredRng(0x6A55));
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for entry in REGISTRY {
        for support in instances(entry) {
            let mut shape = vec![2];
            shape.extend(support.shape());
            for solver in support.soft_solvers() {
                for &t in &TEMPERATURES {
                    let theta = perturbed_theta(&shape, &mut noise);
                    let cot = cotangent(&shape, &mut rng);
                    for rule in rules(solver) {
                        let spec = spec(&support, solver, rule);
                        let l = common::layer(&spec);
                        let (z_ratio, g_ratio) = soft_ratios(&l, &theta, &cot, t);
                        assert!(
                            z_ratio <= CONDITION && g_ratio <= CONDITION,
                            "{spec} | T = {t}: f32 differs from f64 by {z_ratio:.1} (z) and \
                             {g_ratio:.1} (gradient) times eps32·(1 + ‖x‖∞), above {CONDITION}\n\
                             θ = {theta}\n c = {cot}"
                        );
                        let key = format!("{} / {} / {rule}", entry.name, solver.name);
                        let w = worst.entry(key).or_default();
                        *w = (w.0.max(z_ratio), w.1.max(g_ratio));
                    }
                }
            }
        }
    }
    for (key, (z, g)) in worst {
        eprintln!("{key}: largest ratio {z:.2} (z), {g:.2} (gradient)");
    }
}

/// Where the f32 and f64 hard solutions differ: how far below the f64 optimum the f32 answer's
/// f64 objective is, `⟨w, z64⟩ − ⟨w, z32⟩`, after checking that both are structures of `Z`. For a
/// support with a score map (counts: `w` has one entry per outcome, and `z` is the outcome), the
/// `i`-th structure of `enumerate()` is the `i`-th outcome and scores `w_i`.
fn objective_gap(support: &SupportRef, w: &[f64], z64: &[f64], z32: &[f64]) -> f64 {
    let structures = support.enumerate();
    let index = |z: &[f64]| {
        structures
            .iter()
            .position(|s| s.as_slice() == z)
            .unwrap_or_else(|| panic!("{}: hard z = {z:?} is not in Z", support.describe()))
    };
    let objective = |z: &[f64]| {
        let i = index(z);
        if w.len() == z.len() {
            w.iter().zip(z).map(|(a, b)| a * b).sum::<f64>()
        } else {
            w[i]
        }
    };
    objective(z64) - objective(z32)
}

/// The gap below which two structures tie within f32 rounding: an objective summed in f32 over
/// the `m` entries of `w` errs by at most `(m − 1)·u·‖w‖₁` (Higham 2002, §4.2; `u = eps32/2`),
/// and a rounded score `w_i` by `u·|w_i|`; two such errors make at most `m·eps32·‖w‖₁`.
fn near_tie_tolerance(w: &[f64]) -> f64 {
    w.len() as f64 * EPS32 * w.iter().map(|x| x.abs()).sum::<f64>()
}

/// Hard solutions, f32 against f64, on the same perturbed scores: identical, except at near ties
/// (the f32 answer is then a structure whose f64 objective is within [`near_tie_tolerance`] of the
/// optimum), which may be at most 1 % of a support's comparisons.
#[test]
fn hard_solutions_agree_except_at_near_ties() {
    let mut noise = CenteredRng(0x4A2D);
    for entry in REGISTRY {
        let (mut compared, mut ties) = (0, 0);
        for support in instances(entry) {
            let l = common::layer(&format!("layer l: {}", support.describe()));
            let mut shape = vec![4];
            shape.extend(support.shape());
            let theta = perturbed_theta(&shape, &mut noise);
            let opts = Options::default().noise(Noise::None).mode(Mode::Hard);
            let f64_run = l.try_forward(theta.view(), &opts).unwrap();
            let f32_run = l.try_forward(to_f32(&theta).view(), &opts).unwrap();
            let z32 = to_f64(&f32_run.z);
            let rows = |a: &ArrayD<f64>| -> Vec<Vec<f64>> {
                a.outer_iter()
                    .map(|r| r.iter().copied().collect())
                    .collect()
            };
            let (w, z64, z32) = (rows(&f64_run.w), rows(&f64_run.z), rows(&z32));
            for b in 0..shape[0] {
                compared += 1;
                if z64[b] == z32[b] {
                    continue;
                }
                let gap = objective_gap(&support, &w[b], &z64[b], &z32[b]);
                let tol = near_tie_tolerance(&w[b]);
                assert!(
                    gap.abs() <= tol,
                    "{}: f32 picks {:?}, f64 {:?}, f64 objectives {gap:e} apart (> {tol:e})\nw = {:?}",
                    support.describe(),
                    z32[b],
                    z64[b],
                    w[b]
                );
                ties += 1;
            }
        }
        eprintln!(
            "{}: {compared} hard rows compared, {ties} near ties",
            entry.name
        );
        assert!(
            ties * 100 <= compared,
            "{}: {ties} near ties in {compared} rows",
            entry.name
        );
    }
}

/// The noise every support's layer draws is the documented stream, bit for bit, in both
/// precisions: `w = ℓ + gumbel(u)` (logistic on binary coordinates) with
/// `u = noise::uniform(key(seed, sample, batch row), element)` and sst's own `ln`. (f32 and f64
/// draw different uniforms: each uses all the bits of its Philox blocks.)
#[test]
fn gumbel_noise_is_the_documented_stream_in_both_precisions() {
    fn check<F: sst::Real>(l: &Layer, theta: &ArrayD<F>, coords: Coordinates, seed: u64) {
        let opts = Options::default().seed(seed).samples(3);
        let base = l
            .try_forward(theta.view(), &opts.noise(Noise::None))
            .unwrap()
            .w;
        let w = l.try_forward(theta.view(), &opts).unwrap().w;
        let batch = theta.shape()[0];
        let per_row = w.len() / (3 * batch);
        for (i, (&got, &s)) in w.iter().zip(base.iter()).enumerate() {
            let (row, element) = (i / per_row, (i % per_row) as u64);
            let key = NoiseKey {
                seed,
                sample: (row / batch) as u32,
                batch: (row % batch) as u32,
            };
            let u = uniform::<F>(key, element);
            let g = match coords {
                Coordinates::Joint => gumbel(u),
                Coordinates::Binary => logistic(u),
            };
            assert!(
                got == s + g,
                "row {row}, element {element}: {got} vs {}",
                s + g
            );
        }
    }
    let mut rng = Rng(0x6E01_5E32);
    for entry in REGISTRY {
        for support in instances(entry) {
            let l = common::layer(&format!(
                "layer l: {} {{ noise: gumbel }}",
                support.describe()
            ));
            let mut shape = vec![2];
            shape.extend(support.shape());
            let theta = rng.array(&shape, -2.0, 2.0);
            let coords = support.coordinates();
            check(&l, &theta, coords, rng.next_u64());
            check(&l, &to_f32(&theta), coords, rng.next_u64());
        }
    }
}
