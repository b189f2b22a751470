//! The row split over threads changes no number (DESIGN.md §2: noise keyed by (seed, sample,
//! batch row, element); §3: the layer splits rows over threads and merges the reports).
//!
//! `Options::threads(n)` forces the split into `n` ranges whatever the request's size and the
//! machine's core count, so these comparisons are not vacuous on a one-core machine: for every
//! support in `sst::support::REGISTRY` (its random instance), every soft solver, hard and soft,
//! every estimator the support accepts, a batch of [`ROWS`] rows × [`SAMPLES`] samples gives
//! bit-identical `z`, `w`, `∂L/∂θ` and an identical report (diagnostic values and warnings) at
//! 1, 2, 3, 4 threads and at more threads than rows, in f64 and in f32.

mod common;

use common::{layer, Rng};
use ndarray::{Array1, ArrayD, Axis, IxDyn};
use sst::support::{SupportRef, REGISTRY};
use sst::Report;
use sst::{Layer, Mode, Options, Real};

/// Thread counts compared with one thread: uneven ranges (18 rows over 2 and 3 threads are
/// even; over 4 they are 4, 5, 4, 5), and more threads than rows (one row per thread).
const THREADS: [usize; 4] = [2, 3, 4, 64];
const ROWS: usize = 6;
const SAMPLES: usize = 3;
const SEEDS: u64 = 3;

/// What a request produces: `z`, `w`, the gradient of `⟨cotangent, z⟩` (widened to f64, which
/// is exact and keeps every bit of an f32) and the report.
struct Run {
    z: ArrayD<f64>,
    w: ArrayD<f64>,
    grad: ArrayD<f64>,
    report: Report,
}

/// One request in precision `F` (θ and the cotangent rounded to it).
fn run_in<F: Real>(l: &Layer, theta: &ArrayD<f64>, cot: &ArrayD<f64>, opts: &Options) -> Run {
    let (theta, cot) = (theta.mapv(F::of), cot.mapv(F::of));
    let fwd = l.try_forward(theta.view(), opts).unwrap();
    let grad = l.try_backward(&fwd, cot.view()).unwrap();
    let widen = |a: &ArrayD<F>| a.mapv(|x| x.f64());
    Run {
        z: widen(&fwd.z),
        w: widen(&fwd.w),
        grad: widen(&grad),
        report: fwd.report,
    }
}

fn run(l: &Layer, theta: &ArrayD<f64>, cot: &ArrayD<f64>, opts: &Options) -> Run {
    run_in::<f64>(l, theta, cot, opts)
}

/// The bit patterns of an array, so that `-0.0` and `0.0` (and any last-bit change) differ.
fn bits(a: &ArrayD<f64>) -> (Vec<usize>, Vec<u64>) {
    (a.shape().to_vec(), a.iter().map(|x| x.to_bits()).collect())
}

fn assert_identical(what: &str, one: &Run, split: &Run) {
    assert!(bits(&one.z) == bits(&split.z), "{what}: z differs");
    assert!(bits(&one.w) == bits(&split.w), "{what}: w differs");
    assert!(bits(&one.grad) == bits(&split.grad), "{what}: grad differs");
    // `Report`'s values compare as f64 (`==`): check their bits too.
    let value_bits = |r: &Report| -> Vec<(&str, u64)> {
        r.values.iter().map(|(k, v)| (*k, v.to_bits())).collect()
    };
    assert_eq!(
        value_bits(&one.report),
        value_bits(&split.report),
        "{what}: diagnostics differ"
    );
    assert_eq!(
        one.report.warnings, split.report.warnings,
        "{what}: warnings differ"
    );
}

/// `θ` and a cotangent for a batch of [`ROWS`] rows of `support`.
fn batch(support: &SupportRef, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut shape = vec![ROWS];
    shape.extend(support.shape());
    (rng.array(&shape, -2.0, 2.0), rng.array(&shape, -1.0, 1.0))
}

/// The specs of `support` to compare: every soft solver under `straight_through` (its hard and
/// soft modes are both run), and `gumbel_rao` / `reinforce` where the support has them.
fn specs(support: &SupportRef) -> Vec<String> {
    let mut out: Vec<String> = support
        .soft_solvers()
        .iter()
        .map(|s| {
            format!(
                "layer l: {} {{ regularizer: {}; solver: {}; estimator: straight_through }}",
                support.describe(),
                s.regularizer.name(),
                s.name
            )
        })
        .collect();
    if support.conditional_gumbel().is_some() {
        out.push(format!(
            "layer l: {} {{ estimator: gumbel_rao(draws = 3) }}",
            support.describe()
        ));
    }
    if support.score_function().is_some() {
        out.push(format!(
            "layer l: {} {{ estimator: reinforce(baseline = leave_one_out) }}",
            support.describe()
        ));
    }
    out
}

/// Compares 1 thread with each of [`THREADS`] on one layer, one `θ` batch, in `modes` and in
/// both precisions.
fn compare_splits(l: &Layer, spec: &str, theta: &ArrayD<f64>, cot: &ArrayD<f64>, modes: &[Mode]) {
    for &mode in modes {
        let opts = Options::default()
            .seed(11)
            .samples(SAMPLES)
            .temperature(0.7)
            .mode(mode);
        for (dtype, run) in [("f64", run_in::<f64> as RunIn), ("f32", run_in::<f32>)] {
            let one = run(l, theta, cot, &opts.threads(1));
            for n in THREADS {
                let split = run(l, theta, cot, &opts.threads(n));
                let what = format!("{spec} | {mode:?}, {dtype}, {n} threads");
                assert_identical(&what, &one, &split);
            }
        }
    }
}

/// [`run_in`] at one precision.
type RunIn = fn(&Layer, &ArrayD<f64>, &ArrayD<f64>, &Options) -> Run;

/// Every registered support, every solver and estimator: 1 thread against 2, 3, 4 and 64.
#[test]
fn every_support_is_identical_at_every_thread_count() {
    let mut rng = Rng(0x7EAD5);
    for entry in REGISTRY {
        for seed in 0..SEEDS {
            let support = (entry.random_instance)(seed);
            let (theta, cot) = batch(&support, &mut rng);
            for spec in specs(&support) {
                let l = layer(&spec);
                let modes: &[Mode] = if spec.contains("straight_through") {
                    &[Mode::Hard, Mode::Soft]
                } else {
                    &[Mode::Hard]
                };
                compare_splits(&l, &spec, &theta, &cot, modes);
            }
        }
    }
}

/// Compares the split on a spec that must warn: rows of increasing scale (so that the rows'
/// diagnostics and warnings differ), after checking that it does warn.
fn compare_warning_case(spec: &str, shape: &[usize], rng: &mut Rng) {
    let l = layer(spec);
    let mut theta = rng.array(shape, -1.0, 1.0);
    for (b, mut row) in theta.axis_iter_mut(Axis(0)).enumerate() {
        row.mapv_inplace(|x| x * (1.0 + b as f64) + 0.4 * b as f64);
    }
    let cot = rng.array(shape, -1.0, 1.0);
    let opts = Options::default().seed(5).samples(SAMPLES).mode(Mode::Soft);
    let fwd = l.try_forward(theta.view(), &opts.threads(1)).unwrap();
    assert!(
        !fwd.report.warnings.is_empty(),
        "{spec}: expected a warning"
    );
    compare_splits(&l, spec, &theta, &cot, &[Mode::Soft, Mode::Hard]);
}

/// A warning raised before the split (a Poisson truncated at K = 3 drops mass for the rows with
/// large rates, θ = log λ up to about 8) comes through the merge of the ranges' reports
/// unchanged. (The threshold bisection cannot be made to warn: it stops at f64 resolution.)
#[test]
fn truncation_warning_is_identical_at_every_thread_count() {
    let mut rng = Rng(0x3A2B);
    compare_warning_case(
        "layer l: poisson(max = 3) { estimator: straight_through }",
        &[ROWS, 1],
        &mut rng,
    );
}

/// Sinkhorn stopped after 2 iterations warns once per forward pass, quoting the worst marginal
/// residual over the rows: the quoted number must not depend on how the rows were split.
#[test]
fn sinkhorn_warning_is_identical_at_every_thread_count() {
    let mut rng = Rng(0x3A2B);
    compare_warning_case(
        "layer l: permutation(5) { solver: sinkhorn(iters = 2); estimator: straight_through }",
        &[ROWS, 5, 5],
        &mut rng,
    );
}

/// A request big enough for the automatic split (40 samples × 2048 numbers ≥ 2¹⁶) agrees bit
/// for bit with the same request forced onto one thread, and, sample for sample, with a
/// smaller request (21 samples) that the automatic choice keeps on one thread.
#[test]
fn automatic_split_changes_no_number() {
    let l = layer("layer l: categorical(2048) { temperature: 0.7 }");
    let theta = ArrayD::from_shape_fn(IxDyn(&[2048]), |i| ((i[0] * 37) % 101) as f64 / 25.0 - 2.0);
    let cot = theta.mapv(|x| (x * 3.0).sin());
    let opts = Options::default().seed(9);
    let auto = run(&l, &theta, &cot, &opts.samples(40));
    let one = run(&l, &theta, &cot, &opts.samples(40).threads(1));
    assert_identical("40 samples, automatic against 1 thread", &one, &auto);
    let small = run(&l, &theta, &cot, &opts.samples(21));
    for s in 0..21 {
        for (name, big, few) in [
            ("z", &auto.z, &small.z),
            ("w", &auto.w, &small.w),
            ("grad", &auto.grad, &small.grad),
        ] {
            let big = big.index_axis(Axis(0), s).to_owned();
            let few = few.index_axis(Axis(0), s).to_owned();
            assert!(bits(&big) == bits(&few), "{name} of sample {s}");
        }
    }
}

/// `threads = 0` is a request error naming the field `threads` (and so is an absurd count),
/// not a panic; one thread is fine.
#[test]
fn zero_threads_is_a_request_error() {
    let l = layer("layer l: categorical(3)");
    let theta = Array1::from(vec![0.0, 1.0, 2.0]).into_dyn();
    for n in [0, 1_000_000] {
        let err = l
            .try_forward(theta.view(), &Options::default().threads(n))
            .unwrap_err();
        assert_eq!(err.field, "threads", "{n} threads: {err}");
    }
    assert!(l
        .try_forward(theta.view(), &Options::default().threads(1))
        .is_ok());
}
