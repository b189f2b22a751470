//! Extreme inputs (DESIGN.md §2, §5): logits of ±1e4, temperatures of 1e-4, rows of 100 000
//! elements, f32 noise over a million elements, the exponential race beyond its range, and bad
//! requests (non-finite θ, cotangent or temperature), which must be errors naming the field and
//! never panics or non-finite outputs.

mod common;

use common::{layer, Rng};
use ndarray::{ArrayD, IxDyn};
use sst::{BackendChoice, Forward, Mode, Noise, Options, Real, RequestError};

const BIG: usize = 100_000;

/// Rows of θ with extreme logits, as f64 (converted per precision by the caller).
fn extreme_rows(n: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f64>)> {
    vec![
        ("all +1e4", vec![1e4; n]),
        ("all -1e4", vec![-1e4; n]),
        (
            "mix [1e4, -1e4, 0]",
            (0..n).map(|i| [1e4, -1e4, 0.0][i % 3]).collect(),
        ),
        (
            "mix [-1e4, 0, 1e4]",
            (0..n).map(|i| [-1e4, 0.0, 1e4][i % 3]).collect(),
        ),
        (
            "one +1e4",
            (0..n)
                .map(|i| if i == n / 2 { 1e4 } else { -1e4 })
                .collect(),
        ),
        (
            "random ±1e4",
            (0..n).map(|_| rng.uniform(-1e4, 1e4)).collect(),
        ),
    ]
}

/// `Σ v` by Neumaier's compensated summation, so that the test's own rounding (up to n·ε for
/// a naive loop over 100 000 terms) does not blur the check of the solver's.
fn accurate_sum(v: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for &x in v {
        let t = s + x;
        c += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    s + c
}

/// Checks a forward output: entries in [0, 1] (so finite), finite `w`; categorical rows sum to one
/// (soft) or are one-hot (hard); Bernoulli hard entries are 0 or 1.
fn assert_valid<F: Real>(what: &str, categorical: bool, fwd: &Forward<F>, n: usize) {
    let sum_tol = if F::NAME == "f32" { 1e-6 } else { 1e-12 };
    let z: Vec<f64> = fwd.z.iter().map(|v| v.f64()).collect();
    assert!(
        z.iter().all(|&v| (0.0..=1.0).contains(&v)),
        "{what}: z outside [0, 1] or not finite"
    );
    assert!(fwd.w.iter().all(|v| v.is_finite()), "{what}: non-finite w");
    for row in z.chunks(n) {
        match (categorical, fwd.mode) {
            (true, Mode::Soft) => {
                let s = accurate_sum(row);
                assert!((s - 1.0).abs() <= sum_tol, "{what}: Σ z = {s}");
            }
            (true, Mode::Hard) => {
                assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), 1, "{what}");
                assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), n - 1, "{what}");
            }
            (false, Mode::Hard) => assert!(row.iter().all(|&v| v == 0.0 || v == 1.0)),
            (false, Mode::Soft) => {}
        }
    }
}

fn run_extremes<F: Real>() {
    let mut rng = Rng(0xE47);
    for (support, regs, noises) in [
        (
            "categorical",
            ["entropy", "euclidean"],
            ["gumbel", "gaussian(sigma = 2)", "none"],
        ),
        (
            "bernoulli",
            ["binary_entropy", "euclidean"],
            ["gumbel", "gaussian(sigma = 2)", "neg_exponential"],
        ),
    ] {
        let categorical = support == "categorical";
        for n in [3, BIG] {
            let rows = extreme_rows(n, &mut rng);
            for reg in regs {
                for noise in noises {
                    let l = layer(&format!(
                        "layer l: {support}({n}) {{ noise: {noise}; regularizer: {reg} }}"
                    ));
                    for (name, row) in &rows {
                        let theta: ArrayD<F> = ArrayD::from_shape_vec(
                            IxDyn(&[n]),
                            row.iter().map(|&v| F::of(v)).collect(),
                        )
                        .unwrap();
                        let cot: ArrayD<F> = ArrayD::from_shape_fn(IxDyn(&[n]), |i| {
                            F::of([1.0, -0.5, 0.25, 2.0][i[0] % 4])
                        });
                        // T = 1 spreads the mass over many entries; in f32 that is checked by
                        // `f32_softmax_sums_to_one_over_100k_entries` (see there).
                        let temperatures: &[f64] = if F::NAME == "f32" && n == BIG {
                            &[1e-4]
                        } else {
                            &[1e-4, 1.0]
                        };
                        for &t in temperatures {
                            for mode in [Mode::Hard, Mode::Soft] {
                                let what = format!(
                                    "{} {support}({n}) {reg} {noise} {name} T {t} {mode:?}",
                                    F::NAME
                                );
                                let opts = Options::default().seed(3).mode(mode).temperature(t);
                                let fwd = l
                                    .try_forward(theta.view(), &opts)
                                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                                assert_valid(&what, categorical, &fwd, n);
                                let grad = l
                                    .try_backward(&fwd, cot.view())
                                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                                assert!(
                                    grad.iter().all(|g| g.is_finite()),
                                    "{what}: non-finite gradient"
                                );
                                if categorical && F::NAME == "f64" {
                                    // 1ᵀJ = 0 for softmax and sparsemax: the gradient sums to 0.
                                    let s: f64 = grad.iter().map(|g| g.f64()).sum();
                                    let scale: f64 = grad.iter().map(|g| g.f64().abs()).sum();
                                    assert!(s.abs() <= 1e-9 * (1.0 + scale), "{what}: Σ grad {s}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn extreme_logits_f64() {
    run_extremes::<f64>();
}

#[test]
fn extreme_logits_f32() {
    run_extremes::<f32>();
}

/// The exponential race on categorical with |θ| ≤ 1e4 is out of range: an error, no panic.
/// It is tested separately below; here, a batch of a million f32 Gumbel / logistic / normal /
/// exponential-race draws stays finite (no log(0) at the extreme uniforms).
#[test]
fn f32_noise_over_a_million_elements_is_finite() {
    let theta = ArrayD::<f32>::zeros(IxDyn(&[1000, 1000]));
    for (support, noise) in [
        ("categorical", "gumbel"),
        ("categorical", "gaussian(sigma = 1)"),
        ("categorical", "neg_exponential"),
        ("bernoulli", "gumbel"),
        ("bernoulli", "neg_exponential"),
    ] {
        let l = layer(&format!(
            "layer l: {support}(1000) {{ noise: {noise}; temperature: 0.1 }}"
        ));
        for seed in [0, u64::MAX] {
            let fwd = l
                .try_forward(
                    theta.view(),
                    &Options::default().seed(seed).mode(Mode::Soft),
                )
                .unwrap();
            assert!(
                fwd.w.iter().all(|v| v.is_finite()),
                "{support} {noise} seed {seed}: non-finite f32 noise"
            );
            assert!(fwd.z.iter().all(|v| v.is_finite()));
            // And the noise is not degenerate: many distinct values.
            let distinct = fwd.w.iter().take(1000).collect::<Vec<_>>();
            let mut sorted: Vec<f32> = distinct.into_iter().copied().collect();
            sorted.sort_by(f32::total_cmp);
            sorted.dedup();
            assert!(
                sorted.len() > 900,
                "{support} {noise}: {} distinct",
                sorted.len()
            );
        }
    }
}

fn assert_request_error(what: &str, err: RequestError, field: &str) {
    assert_eq!(err.layer, "l", "{what}: {err}");
    assert_eq!(err.field, field, "{what}: {err}");
    let text = err.to_string();
    assert!(
        text.contains("`l`") && text.contains(field),
        "{what}: message must name the layer and `{field}`: {text}"
    );
}

/// `neg_exponential` on categorical needs |θ| < 700 (f64) / 80 (f32): beyond, an error naming
/// the layer and `theta`; just inside, a finite answer.
#[test]
fn neg_exponential_out_of_range_is_an_error() {
    let l = layer("layer l: categorical(3) { noise: neg_exponential }");
    for bad in [700.0, -700.0, 701.0, -1e4, 1e4] {
        let theta = ndarray::arr1(&[0.0f64, bad, 1.0]).into_dyn();
        let err = l
            .try_forward(theta.view(), &Options::default().seed(1))
            .expect_err("|θ| ≥ 700 in f64 must be refused");
        assert_request_error(&format!("f64 θ = {bad}"), err, "theta");
    }
    for bad in [80.0f32, -80.0, 81.0, -1e4, 1e4] {
        let theta = ndarray::arr1(&[0.0f32, bad, 1.0]).into_dyn();
        let err = l
            .try_forward(theta.view(), &Options::default().seed(1))
            .expect_err("|θ| ≥ 80 in f32 must be refused");
        assert_request_error(&format!("f32 θ = {bad}"), err, "theta");
    }
    // Inside the range: finite w, z and gradient.
    for ok in [699.0, -699.0] {
        let theta = ndarray::arr1(&[0.0f64, ok, 1.0]).into_dyn();
        let fwd = l
            .try_forward(theta.view(), &Options::default().seed(1))
            .unwrap();
        assert!(
            fwd.w.iter().chain(fwd.z.iter()).all(|v| v.is_finite()),
            "θ = {ok}"
        );
        let cot = ndarray::arr1(&[1.0, -1.0, 0.5]).into_dyn();
        let g = l.try_backward(&fwd, cot.view()).unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "θ = {ok}: {g}");
    }
    for ok in [79.0f32, -79.0] {
        let theta = ndarray::arr1(&[0.0f32, ok, 1.0]).into_dyn();
        let fwd = l
            .try_forward(theta.view(), &Options::default().seed(1))
            .unwrap();
        assert!(
            fwd.w.iter().chain(fwd.z.iter()).all(|v| v.is_finite()),
            "θ = {ok}"
        );
    }
    // Noise::None bypasses the race: no range restriction; w = θ and softmax(θ) is e₁ exactly
    // (e^{−1e4} and e^{1 − 1e4} underflow to 0).
    let theta = ndarray::arr1(&[0.0f64, 1e4, 1.0]).into_dyn();
    let opts = Options::default().noise(Noise::None).mode(Mode::Soft);
    let fwd = l.try_forward(theta.view(), &opts).unwrap();
    assert_eq!(fwd.w, theta);
    assert_eq!(fwd.z.as_slice().unwrap(), &[0.0, 1.0, 0.0]);
}

/// NaN or ±∞ in θ or in the cotangent: an error naming the field, on either CPU backend (the
/// forward pass finds θ's through `w` where the scores are θ itself), in both modes, with every
/// kind of noise.
#[test]
fn non_finite_inputs_are_errors() {
    for spec in [
        "layer l: categorical(3) { }",
        "layer l: categorical(3) { regularizer: euclidean; noise: none }",
        "layer l: categorical(3) { noise: gaussian(sigma = 1) }",
        "layer l: categorical(3) { noise: neg_exponential }",
        "layer l: bernoulli(3) { noise: neg_exponential }",
        "layer l: bernoulli(3) { regularizer: euclidean; backward: finite_diff }",
        "layer l: subset(3, 1) { regularizer: binary_entropy }",
        "layer l: subset(3, 2) { regularizer: euclidean; estimator: straight_through }",
    ] {
        let l = layer(spec);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for pos in 0..3 {
                let mut v = vec![0.5, -0.5, 1.0];
                v[pos] = bad;
                let theta = ndarray::arr1(&v).into_dyn();
                let theta32 = theta.mapv(|x| x as f32);
                for backend in [BackendChoice::Auto, BackendChoice::Reference] {
                    for mode in [Mode::Hard, Mode::Soft] {
                        let opts = Options::default().backend(backend).mode(mode);
                        let what = format!("{spec} {backend:?} {mode:?} θ = {v:?}");
                        // θ's own sentence, naming the entry (not the perturbed scores').
                        let own =
                            |e: &RequestError| e.to_string().contains("every entry must be finite");
                        let err = l.try_forward(theta.view(), &opts).expect_err(&what);
                        assert!(own(&err), "{what}: {err}");
                        assert_request_error(&what, err, "theta");
                        // f32 too.
                        let err = l.try_forward(theta32.view(), &opts).expect_err(&what);
                        assert!(own(&err), "f32 {what}: {err}");
                        assert_request_error(&format!("f32 {what}"), err, "theta");
                    }
                }
                // The cotangent: the forward is fine, the backward refuses.
                let good = ndarray::arr1(&[0.5f64, -0.5, 1.0]).into_dyn();
                let fwd = l.try_forward(good.view(), &Options::default()).unwrap();
                let cot = ndarray::arr1(&v).into_dyn();
                let err = l
                    .try_backward(&fwd, cot.view())
                    .expect_err("non-finite cotangent");
                assert_request_error(&format!("{spec} c = {v:?}"), err, "cotangent");
            }
        }
        // A batch with one bad entry deep inside.
        let mut theta = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        theta[[2, 1]] = f64::NAN;
        let err = l
            .try_forward(theta.view(), &Options::default())
            .expect_err("NaN in a batch");
        assert_request_error(spec, err, "theta");
    }
}

/// T ≤ 0, NaN or ∞ (as an override or from the schedule): an error naming `temperature`.
#[test]
fn bad_temperatures_are_errors() {
    let l = layer("layer l: categorical(3) { }");
    let theta = ndarray::arr1(&[0.5f64, -0.5, 1.0]).into_dyn();
    for t in [
        0.0,
        -0.0,
        -1.0,
        -1e-300,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        for mode in [Mode::Hard, Mode::Soft] {
            let opts = Options::default().temperature(t).mode(mode);
            let err = l
                .try_forward(theta.view(), &opts)
                .expect_err("bad temperature");
            assert_request_error(&format!("T = {t} {mode:?}"), err, "temperature");
        }
    }
    // A schedule that reaches 0 and goes negative: fine at step 0, an error later.
    let l = layer("layer l: categorical(3) { temperature: 1 - step / 10 }");
    assert!(l.try_forward(theta.view(), &Options::default()).is_ok());
    for step in [10.0, 20.0] {
        let err = l
            .try_forward(theta.view(), &Options::default().step(step))
            .expect_err("schedule ≤ 0");
        assert_request_error(&format!("step {step}"), err, "temperature");
    }
    // Tiny but positive is accepted: x = w/T spreads by ~1e300, so softmax(x) is exactly the
    // one-hot of the largest w (every other e^{x_i − max x} underflows to 0).
    let opts = Options::default().temperature(1e-300).mode(Mode::Soft);
    let fwd = l.try_forward(theta.view(), &opts).unwrap();
    let w = fwd.w.as_slice().unwrap();
    let best = (0..3).fold(0, |b, i| if w[i] > w[b] { i } else { b });
    let one_hot: Vec<f64> = (0..3).map(|i| f64::from(u8::from(i == best))).collect();
    assert_eq!(fwd.z.as_slice().unwrap(), one_hot.as_slice(), "w = {w:?}");
}

/// A soft categorical row of 100 000 entries with the mass spread out (θ = 0 or 1e4, T = 1 or
/// 10, Gumbel noise) sums to 1 within 1e-6 in f32, for softmax and sparsemax. Each entry
/// `z_i = e_i / s` carries a relative rounding of a few f32 half-ulps (≲ 3·6e-8), and so does
/// their sum: ~2e-7 of 1 at most, whatever n. A normaliser `s` summed in f32 one term at a time
/// would add rounding that grows with n (up to 1e-5 at this length), and fail.
#[test]
fn f32_softmax_sums_to_one_over_100k_entries() {
    for reg in ["entropy", "euclidean"] {
        let l = layer(&format!(
            "layer l: categorical({BIG}) {{ regularizer: {reg} }}"
        ));
        for val in [0.0f32, 1e4] {
            let theta = ArrayD::<f32>::from_elem(IxDyn(&[BIG]), val);
            for t in [1.0, 10.0] {
                for seed in 0..3 {
                    let opts = Options::default()
                        .seed(seed)
                        .mode(Mode::Soft)
                        .temperature(t);
                    let fwd = l.try_forward(theta.view(), &opts).unwrap();
                    let z: Vec<f64> = fwd.z.iter().map(|v| f64::from(*v)).collect();
                    let s = accurate_sum(&z);
                    assert!(
                        (s - 1.0).abs() <= 1e-6,
                        "{reg} θ = {val} T = {t} seed {seed}: Σ z = {s}"
                    );
                }
            }
        }
    }
}

/// Finite θ and a finite T > 0 whose quotient `x = w/T` overflows must give a valid z and a
/// finite gradient, or an error naming the field, never `Ok` with NaN (DESIGN.md §5: every
/// number of a response is finite). The cases, and what a naive implementation gives there:
/// - f64 `categorical(2)` entropy, θ = [1.7e308, −1.7e308], T = 0.5: x = [inf, −inf], and a
///   max-shifted softmax takes `inf − inf` (z = [NaN, NaN]; the straight-through gradient too);
/// - f64 θ = [1, 2, 3], T = 1e-310 (finite, > 0): x overflows, z = [NaN, NaN, NaN];
/// - f32 θ = [3e38, 1], T = 0.5: the same in f32;
/// - f32 `categorical(2)` euclidean, θ = [3e38, −3e38], T = 0.5: sparsemax of [inf, −inf]
///   gives z = [0, 0], off the simplex;
/// - `gaussian(sigma = 1e308)`: `w = θ + σN` overflows to ±inf for |N| > 1.8.
#[test]
fn overflowing_w_over_t_is_finite_or_an_error() {
    fn check<F: Real>(spec: &str, theta: &[F], t: f64, seeds: u64) {
        let l = layer(spec);
        let theta = ndarray::arr1(theta).into_dyn();
        let cot = ArrayD::from_elem(theta.raw_dim(), F::one());
        for seed in 0..seeds {
            for mode in [Mode::Soft, Mode::Hard] {
                let shown: Vec<String> = theta.iter().map(|v| format!("{:e}", v.f64())).collect();
                let what = format!(
                    "{} {spec} θ = {shown:?} T = {t:e} seed {seed} {mode:?}",
                    F::NAME
                );
                let opts = Options::default().seed(seed).mode(mode).temperature(t);
                let fwd = match l.try_forward(theta.view(), &opts) {
                    Ok(fwd) => fwd,
                    Err(e) => {
                        assert!(["theta", "temperature"].contains(&e.field), "{what}: {e}");
                        continue;
                    }
                };
                assert_valid(&what, true, &fwd, theta.len());
                if let Ok(g) = l.try_backward(&fwd, cot.view()) {
                    assert!(g.iter().all(|v| v.is_finite()), "{what}: gradient {g}");
                }
            }
        }
    }
    check(
        "layer l: categorical(2) { }",
        &[1.7e308f64, -1.7e308],
        0.5,
        1,
    );
    check(
        "layer l: categorical(3) { }",
        &[1.0f64, 2.0, 3.0],
        1e-310,
        1,
    );
    check("layer l: categorical(2) { }", &[3e38f32, 1.0], 0.5, 1);
    check(
        "layer l: categorical(2) { regularizer: euclidean }",
        &[3e38f32, -3e38],
        0.5,
        1,
    );
    check(
        "layer l: categorical(8) { noise: gaussian(sigma = 1e308) }",
        &[0.0f64; 8],
        1.0,
        5,
    );
}
