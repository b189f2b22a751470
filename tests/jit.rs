//! The JIT backend against the reference backend, its oracle (issue 14). For every registered
//! support (random instances of several sizes, so rows that are and are not whole vectors),
//! every soft solver and rule, every estimator, both precisions, a batch axis and a samples
//! axis, ordinary and extreme inputs (`θ` up to ±1e4, `T` down to 1e-4):
//! - the perturbed scores `w` and the hard samples are the same bits (the noise is one stream,
//!   `src/noise.rs`, and the argmax of equal numbers is equal);
//! - soft outputs and gradients agree per row within `1e-6·max(1, ‖ref‖∞)` in f64 and
//!   `1e-5·max(1, ‖ref‖∞)` in f32 (the JIT's `exp` and summation order differ by ulps);
//! - an overflow is the same request error on both;
//! - forcing the JIT where it does not apply is a one-line request error naming `backend`,
//!   and `Auto` then runs the reference backend.
#![cfg(feature = "jit")]

mod common;

use common::Rng;
use ndarray::ArrayD;
use sst::backend::jit::{fallbacks, schedule};
use sst::plan::{Arith, Formula, Function};
use sst::support::REGISTRY;
use sst::{BackendChoice as Backend, Layer, Mode, Options, Real};

/// `‖a − b‖∞ / max(1, ‖b‖∞)` over one row.
fn row_error(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The tests of this binary one at a time, so that [`sst::backend::jit::fallbacks`] counts only
/// the calls of the test that reads it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compares the two backends on one request in precision `F`. A request both backends answer
/// must have run in compiled code: the JIT handed no range back to the reference backend.
fn compare<F: Real>(l: &Layer, theta: &ArrayD<f64>, cot: &ArrayD<f64>, opts: Options) {
    let tol = if F::NAME == "f32" { 1e-5 } else { 1e-6 };
    let (theta, cot) = (theta.mapv(F::of), cot.mapv(F::of));
    let before = fallbacks();
    let jit = l.try_forward(theta.view(), &opts.backend(Backend::Auto));
    let reference = l.try_forward(theta.view(), &opts.backend(Backend::Reference));
    let (jit, reference) = match (jit, reference) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "{}", l.plan().name);
            return;
        }
        (a, b) => panic!("one backend failed: {:?} / {:?}", a.err(), b.err()),
    };
    assert_eq!(
        fallbacks(),
        before,
        "the JIT fell back on a request it answers"
    );
    let wide = |a: &ArrayD<F>| a.iter().map(|x| x.f64()).collect::<Vec<f64>>();
    assert_eq!(wide(&jit.w), wide(&reference.w), "w differs");
    let m = l.plan().support.shape().iter().product::<usize>();
    let (z_jit, z_ref) = (wide(&jit.z), wide(&reference.z));
    match jit.mode {
        Mode::Hard => assert_eq!(z_jit, z_ref, "hard samples differ"),
        Mode::Soft => {
            for (a, b) in z_jit.chunks(m).zip(z_ref.chunks(m)) {
                assert!(row_error(a, b) <= tol, "z: {a:?} vs {b:?}");
            }
        }
    }
    if let sst::Estimator::Reinforce { .. } = l.plan().estimator {
        return;
    }
    let g_jit = l.try_backward(&jit, cot.view());
    let g_ref = l.try_backward(&reference, cot.view());
    match (g_jit, g_ref) {
        (Ok(a), Ok(b)) => {
            assert_eq!(fallbacks(), before, "the JIT backward fell back");
            for (a, b) in wide(&a).chunks(m).zip(wide(&b).chunks(m)) {
                assert!(
                    row_error(a, b) <= tol,
                    "{:?} {:?} {}: gradient {a:?} vs {b:?}",
                    l.plan().program,
                    jit.mode,
                    F::NAME
                );
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("one backward failed: {:?} / {:?}", a.err(), b.err()),
    }
}

#[test]
fn jit_agrees_with_the_reference_backend() {
    let _serial = serial();
    let mut rng = Rng(0x0717);
    let mut compiled = 0;
    for entry in REGISTRY {
        for seed in 0..3 {
            for support in [
                (entry.random_instance)(seed),
                (entry.gradient_instance)(seed),
            ] {
                for spec in common::solver_and_estimator_specs(&support) {
                    let l = common::layer(&spec);
                    let runs_jit = l.backend_name::<f64>().0 == "jit";
                    compiled += usize::from(runs_jit);
                    if !runs_jit {
                        let err = l
                            .try_forward(
                                rng.array(&support.shape(), -1.0, 1.0).view(),
                                &Options::default().backend(Backend::Jit),
                            )
                            .unwrap_err();
                        assert_eq!(err.field, "backend", "{err}");
                        // Only counts' score maps stay on the reference backend.
                        let why = err.to_string();
                        assert!(why.contains("count score maps"), "{spec}: {why}");
                        continue;
                    }
                    let mut shape = vec![3];
                    shape.extend(support.shape());
                    for (scale, t) in [(2.0, 1.0), (2.0, 0.05), (1e4, 1e-4)] {
                        let theta = rng.array(&shape, -scale, scale);
                        // One sample; two with a cotangent per sample; two sharing one.
                        for (samples, per_sample) in [(1, false), (2, true), (2, false)] {
                            let opts = Options::default()
                                .seed(rng.next_u64())
                                .samples(samples)
                                .temperature(t);
                            let cot_shape = match per_sample {
                                false => shape.clone(),
                                true => [vec![samples], shape.clone()].concat(),
                            };
                            let cot = rng.array(&cot_shape, -1.0, 1.0);
                            for mode in [Mode::Hard, Mode::Soft] {
                                let opts = opts.mode(mode);
                                compare::<f64>(&l, &theta, &cot, opts);
                                compare::<f32>(&l, &theta, &cot, opts);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(compiled >= 20, "only {compiled} specs ran on the JIT");
}

/// Hard categorical samples of rows full of ties, without noise: the one-hot of the *first*
/// largest element (found by a plain scan here), on both backends, for row lengths that are
/// and are not whole vectors, with an odd and an even number of whole ones, and with the
/// largest in every position (the compiled kernel keeps lane-wise maxima in two chains and then
/// looks for the first element equal to the largest).
#[test]
fn hard_ties_take_the_first_largest() {
    let _serial = serial();
    let mut rng = Rng(0x7135);
    for n in [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 33, 1000] {
        let l = common::layer(&format!("layer l: categorical({n}) {{}}"));
        assert_eq!(l.backend_name::<f32>().0, "jit");
        // Integers in 0..3 (many ties), then rows whose largest is at each position in turn.
        let mut rows: Vec<Vec<f64>> = (0..20)
            .map(|_| (0..n).map(|_| (rng.next_u64() % 3) as f64).collect())
            .collect();
        for at in 0..n.min(40) {
            let mut row = vec![1.0; n];
            row[at] = 2.0;
            row[n - 1 - (at * 7) % n] = 2.0;
            rows.push(row);
        }
        let theta = ArrayD::from_shape_vec(vec![rows.len(), n], rows.concat()).unwrap();
        for backend in [Backend::Jit, Backend::Reference] {
            let opts = Options::default()
                .noise(sst::Noise::None)
                .mode(Mode::Hard)
                .backend(backend);
            let z64 = l.try_forward(theta.view(), &opts).unwrap().z;
            let theta32 = theta.mapv(|x| x as f32);
            let z32 = l.try_forward(theta32.view(), &opts).unwrap().z;
            let z32 = z32.mapv(f64::from);
            for (z, precision) in [(z64, "f64"), (z32, "f32")] {
                for (row, z) in theta.rows().into_iter().zip(z.rows()) {
                    let first = (0..n).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                    let one_hot: Vec<f64> = (0..n).map(|i| f64::from(i == first)).collect();
                    assert_eq!(
                        z.to_vec(),
                        one_hot,
                        "{backend:?} {precision}, n = {n}, {row}"
                    );
                }
            }
        }
    }
}

/// A random temperature formula of depth at most `depth`: numbers (signed zeros, tiny and huge
/// ones among them), the step, negation, the four operations and every function.
fn random_formula(rng: &mut Rng, depth: u32) -> Formula {
    let leaf = depth == 0 || rng.next_u64().is_multiple_of(4);
    if leaf {
        return match rng.next_u64() % 3 {
            0 => Formula::Step,
            _ => Formula::Num(
                [0.0, -0.0, 1.0, 0.5, 1e-300, 1e300, -3.0, 1000.0][rng.next_u64() as usize % 8]
                    * rng.uniform(0.5, 2.0),
            ),
        };
    }
    let sub = |rng: &mut Rng| Box::new(random_formula(rng, depth - 1));
    match rng.next_u64() % 4 {
        0 => Formula::Neg(sub(rng)),
        1 => {
            let op = [Arith::Add, Arith::Sub, Arith::Mul, Arith::Div][rng.next_u64() as usize % 4];
            Formula::Binary(op, sub(rng), sub(rng))
        }
        _ => {
            let functions = [
                Function::Exp,
                Function::Log,
                Function::Sqrt,
                Function::Abs,
                Function::Min,
                Function::Max,
            ];
            let f = functions[rng.next_u64() as usize % functions.len()];
            let count = match f {
                Function::Min | Function::Max => 2 + rng.next_u64() as usize % 3,
                _ => 1,
            };
            Formula::Call(
                f,
                (0..count).map(|_| random_formula(rng, depth - 1)).collect(),
            )
        }
    }
}

/// The compiled temperature schedule gives `Formula::eval`'s bits (NaN for NaN) on random
/// formulas at steps from 0 to 10⁷ (and −1 and NaN), and a layer's schedule on the JIT is the
/// reference backend's, in `temperature_at` and in a forward pass.
#[test]
fn compiled_schedules_are_evaluated_schedules() {
    let mut rng = Rng(0x5c4e);
    let steps = [0.0, 1.0, 7.0, 999.5, 1e3, 12345.0, 1e7, -1.0, f64::NAN];
    for _ in 0..400 {
        let formula = random_formula(&mut rng, 4);
        let compiled = schedule::compile(&formula).unwrap();
        for step in steps {
            let (a, b) = (compiled.at(step), formula.eval(step));
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{formula:?} at {step}: compiled {a:e}, evaluated {b:e}"
            );
        }
    }
    let l = common::layer("layer l: categorical(5) { temperature: max(0.1, exp(-step / 1000)) }");
    for step in [0.0, 10.0, 2500.0, 1e6] {
        let t = l.temperature_at(step, Backend::Jit);
        assert_eq!(
            t.to_bits(),
            l.temperature_at(step, Backend::Reference).to_bits()
        );
        assert_eq!(t, f64::max(0.1, (-step / 1000.0).exp()));
        let opts = Options::default().step(step).backend(Backend::Jit);
        let fwd = l
            .try_forward(ArrayD::<f32>::zeros(vec![2, 5]).view(), &opts)
            .unwrap();
        assert_eq!(fwd.temperature, t);
    }
}

/// Long rows, not a whole number of Philox groups, split over threads: the same bits as the
/// reference backend for `w` and hard samples, and soft rows within tolerance.
#[test]
fn long_rows_and_threads() {
    let _serial = serial();
    let mut rng = Rng(0x1009);
    for (spec, n) in [
        ("layer l: categorical(1003) { temperature: 0.5 }", 1003),
        (
            "layer l: categorical(1000) { estimator: straight_through }",
            1000,
        ),
        (
            "layer l: bernoulli(777) { estimator: relaxed; temperature: 0.3 }",
            777,
        ),
        (
            "layer l: categorical(1001) { regularizer: euclidean; estimator: straight_through }",
            1001,
        ),
        (
            "layer l: bernoulli(66) { regularizer: euclidean; estimator: straight_through }",
            66,
        ),
        (
            "layer l: categorical(1003) { noise: gaussian(sigma = 0.7); temperature: 0.5 }",
            1003,
        ),
        (
            "layer l: categorical(1003) { noise: neg_exponential; temperature: 0.5 }",
            1003,
        ),
        (
            "layer l: bernoulli(777) { noise: neg_exponential; estimator: straight_through }",
            777,
        ),
        (
            "layer l: subset(1001, 40) { regularizer: binary_entropy; temperature: 0.5 }",
            1001,
        ),
        (
            "layer l: subset(999, 7) { regularizer: entropy; estimator: straight_through }",
            999,
        ),
        (
            "layer l: subset(1002, 300) { regularizer: euclidean; estimator: straight_through }",
            1002,
        ),
    ] {
        let l = common::layer(spec);
        assert_eq!(l.backend_name::<f32>().0, "jit");
        let theta = rng.array(&[40, n], -3.0, 3.0);
        let cot = rng.array(&[40, n], -1.0, 1.0);
        for threads in [1, 2, 3] {
            let opts = Options::default().seed(rng.next_u64()).threads(threads);
            compare::<f32>(&l, &theta, &cot, opts);
            compare::<f64>(&l, &theta, &cot, opts);
        }
    }
}

/// An overflow of `w/T` is the reference backend's request error, not silent garbage, in the
/// forward pass and in the straight-through backward pass's re-solve.
#[test]
fn overflow_is_the_reference_error() {
    let _serial = serial();
    let l = common::layer("layer l: categorical(6) { temperature: 1e-30 }");
    let theta = ndarray::Array::from_elem(vec![2, 6], 3e38f32).into_dyn();
    for mode in [Mode::Hard, Mode::Soft] {
        let opts = Options::default().mode(mode);
        let a = l.try_forward(theta.view(), &opts.backend(Backend::Auto));
        let b = l.try_forward(theta.view(), &opts.backend(Backend::Reference));
        assert_eq!(a.as_ref().err(), b.as_ref().err());
        // Hard samples never divide by T; the soft kernel's w/T overflows.
        assert_eq!(a.is_err(), mode == Mode::Soft);
    }
    let l = common::layer("layer l: categorical(6) { estimator: straight_through }");
    let opts = Options::default().temperature(1e-30);
    let cot = ndarray::Array::from_elem(vec![2, 6], 1f32).into_dyn();
    let grads = [Backend::Auto, Backend::Reference].map(|backend| {
        let fwd = l.forward(theta.view(), &opts.backend(backend));
        l.try_backward(&fwd, cot.view()).unwrap_err()
    });
    assert_eq!(grads[0], grads[1]);
}

/// `sst eval --backend`: the three choices give the same hard sample, and forcing the JIT on a
/// layer it does not run is exit 3 with one line naming `backend`. `sst bench --backend
/// reference` runs.
#[test]
fn eval_and_bench_take_backend() {
    let _serial = serial();
    use common::cli::{code, run, text, TempDir};
    let dir = TempDir::new();
    let path = dir.write(
        "two.sst",
        "layer soft: categorical(9) { estimator: straight_through }\n\
         layer count: poisson(max = 8)\n",
    );
    let p = path.to_str().unwrap();
    let request = r#"{"theta": [[0,1,2,3,4,5,6,7,8]], "noise": {"seed": 3}, "dtype": "f32"}"#;
    let answers: Vec<serde_json::Value> = ["auto", "reference", "jit"]
        .iter()
        .map(|b| {
            let out = run(&["eval", p, "--layer", "soft", "--backend", b], request);
            assert_eq!(code(&out), 0, "{}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    assert_eq!(answers[0]["z"], answers[1]["z"]);
    assert_eq!(answers[1]["z"], answers[2]["z"]);
    let rate = r#"{"theta": [[0.5]], "dtype": "f32"}"#;
    let out = run(&["eval", p, "--layer", "count", "--backend", "jit"], rate);
    assert_eq!(code(&out), 3);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("backend") && stderr.contains("count score maps"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let out = run(
        &[
            "bench",
            "--repeats",
            "1",
            "--backend",
            "reference",
            "--threads",
            "2",
        ],
        "",
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("jit_compile_total"));
    // Forcing the JIT runs every workload (Sinkhorn, the assignment and the trees call their
    // Rust kernels from the compiled row loop): none is skipped.
    let out = run(&["bench", "--repeats", "1", "--backend", "jit"], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for workload in [
        "gumbel_softmax_fwd_bwd",
        "sinkhorn_fwd_bwd_64x50x50_it50",
        "sinkhorn_implicit_fwd_bwd_64x50x50_it50",
        "topk_soft_fwd_bwd_256x4096_k64",
    ] {
        assert!(stdout.contains(workload), "{workload} missing: {stdout}");
    }
    assert!(
        !text(&out.stderr).contains("skipped"),
        "{}",
        text(&out.stderr)
    );
}

/// Random valid specs (each support the JIT runs — vectors, subsets, matrices and graphs of 2–7
/// nodes — with every estimator, noise, regularizer, rule and temperature the language offers
/// for it, and some it does not run) and random requests (row length, batch,
/// samples, mode, precision, temperature, scale of θ, per-sample cotangents): the JIT never
/// crashes and gives the reference backend's numbers, or its error.
mod property {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    const SUPPORTS: &[&str] = &[
        "categorical({n})",
        "bernoulli({n})",
        "subset({n}, 1)",
        "subset({n}, {half})",
        "permutation({m})",
        "matching(n = {m}, m = {m1})",
        "spanning_tree(nodes = {m})",
        "arborescence(nodes = {m}, root = 1)",
    ];
    const FIELDS: &[&str] = &[
        "",
        "estimator: straight_through",
        "estimator: relaxed",
        "estimator: gumbel_rao(draws = 2)",
        "estimator: reinforce",
        "noise: none",
        "noise: gaussian(sigma = 0.5)",
        "noise: neg_exponential",
        "regularizer: euclidean",
        "regularizer: entropy",
        "regularizer: binary_entropy; estimator: straight_through",
        "temperature: max(0.1, exp(-step / 10))",
        "backward: finite_diff(eps = 1e-5)",
        "regularizer: expfamily",
        "backward: unrolled",
    ];

    proptest! {
        #![proptest_config(Config { cases: 500, ..Config::default() })]
        #[test]
        fn random_specs_and_requests(
            support in 0..SUPPORTS.len(),
            field in 0..FIELDS.len(),
            n in 1usize..40,
            batch in 1usize..4,
            samples in 1usize..3,
            hard in any::<bool>(),
            single in any::<bool>(),
            t in 1e-3f64..10.0,
            scale in prop_oneof![Just(1.0), Just(30.0), Just(1e4)],
            seed in any::<u64>(),
        ) {
            let _serial = serial();
            // Matrices and graphs of 2 to 7 nodes (a Sinkhorn or matrix-tree row is m² long).
            let m = 2 + n % 6;
            let support = SUPPORTS[support]
                .replace("{n}", &n.to_string())
                .replace("{half}", &n.div_ceil(2).to_string())
                .replace("{m}", &m.to_string())
                .replace("{m1}", &(m + 1).to_string());
            let spec = format!("layer l: {support} {{ {} }}", FIELDS[field]);
            let Ok(module) = sst::compile(&spec) else { return Ok(()) };
            let l = module.layer("l").clone();
            let shape = [vec![batch], l.plan().support.shape()].concat();
            let mut rng = Rng(seed);
            let theta = rng.array(&shape, -scale, scale);
            let cot_shape = match samples {
                1 => shape.clone(),
                _ => [vec![samples], shape.clone()].concat(),
            };
            let cot = rng.array(&cot_shape, -1.0, 1.0);
            let mode = if hard { Mode::Hard } else { Mode::Soft };
            let opts = Options::default()
                .seed(seed)
                .samples(samples)
                .temperature(t)
                .mode(mode);
            if single {
                compare::<f32>(&l, &theta, &cot, opts);
            } else {
                compare::<f64>(&l, &theta, &cot, opts);
            }
        }
    }
}
