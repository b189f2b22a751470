//! Gumbel-Rao, REINFORCE and GenGS counts, from outside: unbiasedness against exact gradients
//! computed by enumeration, variance orderings, and the truncated pmfs — fixed seeds, tolerances
//! from the sample size (4 standard errors).

mod common;

// A SplitMix64 generator for the test's own Gumbel noise (uniforms at the cell centres).
use common::CenteredRng as Rng;
use common::{sigmoid, softmax};
use ndarray::{array, ArrayD};
use sst::{Layer, Mode, Noise, Options};

fn layer(spec: &str) -> Layer {
    sst::compile(spec)
        .unwrap_or_else(|e| panic!("{e}"))
        .layers()[0]
        .clone()
}

/// Per-sample gradients `[N][n]` of `⟨c, z⟩` for `N` hard samples.
fn grads(
    layer: &Layer,
    theta: &ArrayD<f64>,
    cot: &ArrayD<f64>,
    n: usize,
    seed: u64,
) -> Vec<Vec<f64>> {
    let opts = Options::default().seed(seed).samples(n).mode(Mode::Hard);
    let fwd = layer.try_forward(theta.view(), &opts).unwrap();
    let g = layer.try_backward(&fwd, cot.view()).unwrap();
    g.outer_iter()
        .map(|row| row.iter().copied().collect())
        .collect()
}

/// Per-coordinate mean and variance of rows.
fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let dim = rows[0].len();
    let mean: Vec<f64> = (0..dim)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var = (0..dim)
        .map(|j| rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1.0))
        .collect();
    (mean, var)
}

/// Asserts `|a − b| ≤ 4·√(va/na + vb/nb)` coordinate-wise.
fn assert_means_agree(what: &str, a: (&[f64], &[f64], usize), b: (&[f64], &[f64], usize)) {
    for j in 0..a.0.len() {
        let se = (a.1[j] / a.2 as f64 + b.1[j] / b.2 as f64).sqrt();
        let diff = (a.0[j] - b.0[j]).abs();
        assert!(
            diff <= 4.0 * se + 1e-12,
            "{what}[{j}]: {} vs {} (4 SE = {})",
            a.0[j],
            b.0[j],
            4.0 * se
        );
    }
}

/// Asserts the sample mean lies within 4 standard errors of the exact value, per coordinate.
fn assert_mean_is(what: &str, rows: &[Vec<f64>], exact: &[f64]) {
    let (mean, var) = moments(rows);
    let zeros = vec![0.0; exact.len()];
    assert_means_agree(what, (&mean, &var, rows.len()), (exact, &zeros, 1));
}

#[test]
fn gumbel_rao_has_the_straight_through_mean_and_less_variance() {
    let theta = array![1.0, 0.5, -0.5, 0.0].into_dyn();
    let cot = array![1.0, -2.0, 0.5, 3.0].into_dyn();
    let n = 40_000;
    let spec = |e: &str| {
        layer(&format!(
            "layer l: categorical(4) {{ estimator: {e}; temperature: 0.5 }}"
        ))
    };
    let st = grads(&spec("straight_through"), &theta, &cot, n, 11);
    let (st_mean, st_var) = moments(&st);
    let mut total_var = Vec::new();
    for (k, seed) in [(1, 12), (10, 13), (100, 14)] {
        let samples = if k == 100 { n / 4 } else { n };
        let gr = grads(
            &spec(&format!("gumbel_rao(draws = {k})")),
            &theta,
            &cot,
            samples,
            seed,
        );
        let (mean, var) = moments(&gr);
        assert_means_agree(
            &format!("GR K={k} vs ST"),
            (&mean, &var, samples),
            (&st_mean, &st_var, n),
        );
        total_var.push(var.iter().sum::<f64>());
    }
    let st_total: f64 = st_var.iter().sum();
    // K = 1 is straight-through in distribution; K = 10 and 100 average the Jacobian.
    assert!(
        (total_var[0] / st_total - 1.0).abs() < 0.1,
        "K=1 {} vs ST {st_total}",
        total_var[0]
    );
    assert!(
        total_var[1] < 0.6 * total_var[0],
        "K=10 {} vs K=1 {}",
        total_var[1],
        total_var[0]
    );
    assert!(
        total_var[2] < total_var[1],
        "K=100 {} vs K=10 {}",
        total_var[2],
        total_var[1]
    );
}

#[test]
fn gumbel_rao_on_bernoulli_has_the_straight_through_mean() {
    let theta = array![0.8, -0.3, 1.5].into_dyn();
    let cot = array![1.0, -1.0, 2.0].into_dyn();
    let n = 40_000;
    let spec = |e: &str| {
        layer(&format!(
            "layer l: bernoulli(3) {{ estimator: {e}; temperature: 0.5 }}"
        ))
    };
    let (st_mean, st_var) = moments(&grads(&spec("straight_through"), &theta, &cot, n, 21));
    let (gr_mean, gr_var) = moments(&grads(&spec("gumbel_rao(draws = 10)"), &theta, &cot, n, 22));
    assert_means_agree(
        "bernoulli GR vs ST",
        (&gr_mean, &gr_var, n),
        (&st_mean, &st_var, n),
    );
    assert!(gr_var.iter().sum::<f64>() < 0.6 * st_var.iter().sum::<f64>());
}

#[test]
fn gumbel_rao_conditional_draws_reproduce_the_hard_sample() {
    // A hard sample that disagrees with its conditional draws would bias the estimator: with
    // T → 0 the soft solution at every conditional draw is the hard sample itself, so the
    // Gumbel-Rao gradient of ⟨c, z⟩ vanishes for every sample.
    let l =
        layer("layer l: categorical(5) { estimator: gumbel_rao(draws = 20); temperature: 1e-6 }");
    let theta = array![3.0, -2.0, 0.0, 1e4, -1e4].into_dyn();
    let cot = array![1.0, 2.0, 3.0, 4.0, 5.0].into_dyn();
    for row in grads(&l, &theta, &cot, 200, 5) {
        assert!(
            row.iter().all(|g| g.abs() < 1e-9 && g.is_finite()),
            "{row:?}"
        );
    }
}

#[test]
fn reinforce_is_unbiased_and_leave_one_out_lowers_variance() {
    let n = 100_000;
    // Categorical: ∂E⟨c, z⟩/∂θ = (diag p − p pᵀ) c with p = softmax θ.
    let theta = array![1.0, 0.5, -0.5, 0.0].into_dyn();
    let cot = array![10.0, 11.0, 9.0, 10.5].into_dyn();
    let p = softmax(theta.as_slice().unwrap());
    let pc: f64 = p.iter().zip(cot.iter()).map(|(a, b)| a * b).sum();
    let exact: Vec<f64> = (0..4).map(|i| p[i] * (cot[i] - pc)).collect();
    // Bernoulli: ∂/∂θ_i Σ c_i σ(θ_i) = c_i σ(θ_i)(1 − σ(θ_i)).
    let b_theta = array![0.8, -0.3, 1.5].into_dyn();
    let b_cot = array![5.0, 6.0, 4.0].into_dyn();
    let b_exact: Vec<f64> = (0..3)
        .map(|i| b_cot[i] * sigmoid(b_theta[i]) * (1.0 - sigmoid(b_theta[i])))
        .collect();
    for (support, theta, cot, exact) in [
        ("categorical(4)", &theta, &cot, &exact),
        ("bernoulli(3)", &b_theta, &b_cot, &b_exact),
    ] {
        let mut variances = Vec::new();
        for (baseline, seed) in [("none", 31), ("leave_one_out", 32)] {
            let l = layer(&format!(
                "layer l: {support} {{ estimator: reinforce(baseline = {baseline}) }}"
            ));
            let rows = grads(&l, theta, cot, n, seed);
            assert_mean_is(&format!("{support} reinforce({baseline})"), &rows, exact);
            variances.push(moments(&rows).1.iter().sum::<f64>());
        }
        assert!(
            variances[1] < 0.5 * variances[0],
            "{support}: LOO {} vs none {}",
            variances[1],
            variances[0]
        );
    }
}

#[test]
fn reinforce_ema_baseline_is_kept_by_the_layer() {
    let l = layer("layer l: categorical(3) { estimator: reinforce(baseline = ema) }");
    let theta = array![0.2, -0.4, 1.0].into_dyn();
    let p = softmax(theta.as_slice().unwrap());
    let opts = Options::default().seed(3).samples(4);
    let fwd = l.try_forward(theta.view(), &opts).unwrap();
    let first = array![1.0, 2.0, 3.0, 6.0].into_dyn();
    let second = array![5.0, 5.0, 5.0, 5.0].into_dyn();
    let g1 = l.try_reinforce(&fwd, first.view()).unwrap();
    let g2 = l.try_reinforce(&fwd, second.view()).unwrap();
    for s in 0..4 {
        let z: Vec<f64> = fwd.z.outer_iter().nth(s).unwrap().iter().copied().collect();
        for i in 0..3 {
            let score = z[i] - p[i];
            // First call: no history, b = 0. Second call: b = mean of the first call's losses = 3.
            assert!((g1[[s, i]] - first[s] * score).abs() < 1e-12);
            assert!((g2[[s, i]] - (second[s] - 3.0) * score).abs() < 1e-12);
        }
    }
    let bad = array![1.0, 2.0].into_dyn();
    let err = l.try_reinforce(&fwd, bad.view()).unwrap_err();
    assert_eq!(err.field, "losses");
}

/// The Poisson pmf `λ^k e^{−λ}/k!` for `k = 0..=max`, by the product formula.
fn poisson_pmf(lambda: f64, max: usize) -> Vec<f64> {
    (0..=max)
        .map(|k| {
            let log_fact: f64 = (1..=k).map(|i| (i as f64).ln()).sum();
            (k as f64 * lambda.ln() - lambda - log_fact).exp()
        })
        .collect()
}

#[test]
fn gengs_hard_poisson_samples_follow_the_truncated_pmf() {
    let lambda: f64 = 3.0;
    let l = layer("layer l: poisson(max = auto) { estimator: straight_through }");
    let theta = array![lambda.ln()].into_dyn();
    let n = 100_000;
    let fwd = l
        .try_forward(theta.view(), &Options::default().seed(41).samples(n))
        .unwrap();
    // `auto` picks the smallest K whose dropped tail is below 1e-6.
    let k = fwd.report.values["truncation_k"] as usize;
    let tail = |k: usize| 1.0 - poisson_pmf(lambda, k).iter().sum::<f64>();
    assert!(tail(k) < 1e-6 && tail(k - 1) >= 1e-6, "K = {k}");
    let pmf = poisson_pmf(lambda, k);
    let total: f64 = pmf.iter().sum();
    let q: Vec<f64> = pmf.iter().map(|p| p / total).collect();
    let mean: f64 = q.iter().enumerate().map(|(i, p)| i as f64 * p).sum();
    let var: f64 = q
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 - mean).powi(2) * p)
        .sum();
    let z: Vec<f64> = fwd.z.iter().copied().collect();
    let sample_mean = z.iter().sum::<f64>() / n as f64;
    assert!(
        (sample_mean - mean).abs() <= 4.0 * (var / n as f64).sqrt(),
        "{sample_mean} vs {mean}"
    );
    for (count, &qk) in q.iter().enumerate().take(8) {
        let freq = z.iter().filter(|&&x| x == count as f64).count() as f64 / n as f64;
        assert!(
            (freq - qk).abs() <= 4.0 * (qk * (1.0 - qk) / n as f64).sqrt(),
            "P({count}) {freq} vs {qk}"
        );
    }
}

/// The relaxed Poisson count `Σ k·softmax((ℓ(θ) + G)/T)_k` with `ℓ` the truncated log-pmf.
fn relaxed_count(theta: f64, max: usize, gumbels: &[f64], t: f64) -> f64 {
    let pmf = poisson_pmf(theta.exp(), max);
    let total: f64 = pmf.iter().sum();
    let x: Vec<f64> = pmf
        .iter()
        .zip(gumbels)
        .map(|(p, g)| ((p / total).ln() + g) / t)
        .collect();
    softmax(&x)
        .iter()
        .enumerate()
        .map(|(k, s)| k as f64 * s)
        .sum()
}

#[test]
fn gengs_relaxed_gradient_matches_the_derivative_of_the_expected_relaxed_count() {
    let (max, t, theta0) = (12, 0.5, 2f64.ln());
    let l = layer(&format!(
        "layer l: poisson(max = {max}) {{ temperature: {t} }}"
    ));
    let n = 50_000;
    let rows = grads_soft(&l, theta0, n, 51);
    let (mean, var) = moments(&rows);
    // Independent: central differences of the Monte Carlo E[z_T(θ)] with common random numbers.
    let mut rng = Rng(7);
    let (m, h) = (200_000, 1e-5);
    let quotients: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            let g: Vec<f64> = (0..=max).map(|_| -(-rng.unit().ln()).ln()).collect();
            vec![
                (relaxed_count(theta0 + h, max, &g, t) - relaxed_count(theta0 - h, max, &g, t))
                    / (2.0 * h),
            ]
        })
        .collect();
    let (mc_mean, mc_var) = moments(&quotients);
    assert_means_agree("d E[z_T]/dθ", (&mean, &var, n), (&mc_mean, &mc_var, m));
}

/// Per-sample relaxed gradients of `z` for a one-entry θ.
fn grads_soft(l: &Layer, theta: f64, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let opts = Options::default().seed(seed).samples(n).mode(Mode::Soft);
    let fwd = l
        .try_forward(array![theta].into_dyn().view(), &opts)
        .unwrap();
    let g = l.try_backward(&fwd, array![1.0].into_dyn().view()).unwrap();
    g.iter().map(|x| vec![*x]).collect()
}

#[test]
fn gengs_gradient_tends_to_the_exact_derivative_as_t_vanishes() {
    // d E[X]/dθ for the truncated Poisson with θ = log λ is Var_q[X] (≈ λ when little mass is cut).
    let (max, lambda) = (20, 2.0f64);
    let pmf = poisson_pmf(lambda, max);
    let total: f64 = pmf.iter().sum();
    let mean: f64 = pmf
        .iter()
        .enumerate()
        .map(|(k, p)| k as f64 * p / total)
        .sum();
    let exact: f64 = pmf
        .iter()
        .enumerate()
        .map(|(k, p)| (k as f64 - mean).powi(2) * p / total)
        .sum();
    let mut errors = Vec::new();
    for (t, seed) in [(1.0, 61), (0.3, 62), (0.1, 63)] {
        let l = layer(&format!(
            "layer l: poisson(max = {max}) {{ temperature: {t} }}"
        ));
        let rows = grads_soft(&l, lambda.ln(), 100_000, seed);
        let (m, v) = moments(&rows);
        errors.push((
            (m[0] - exact).abs(),
            4.0 * (v[0] / rows.len() as f64).sqrt(),
        ));
    }
    assert!(
        errors[0].0 > errors[0].1,
        "at T = 1 the relaxation is visibly biased: {errors:?}"
    );
    assert!(
        errors[2].0 < errors[0].0,
        "the bias shrinks with T: {errors:?}"
    );
    assert!(
        errors[2].0 <= errors[2].1 + 0.05 * exact,
        "at T = 0.1: {errors:?} vs {exact}"
    );
}

#[test]
fn gengs_relaxed_counts_tend_to_the_pmf_as_t_vanishes() {
    let lambda: f64 = 2.5;
    let l = layer("layer l: poisson(max = 15) { temperature: 0.001 }");
    let n = 50_000;
    let fwd = l
        .try_forward(
            array![lambda.ln()].into_dyn().view(),
            &Options::default().seed(71).samples(n),
        )
        .unwrap();
    let pmf = poisson_pmf(lambda, 15);
    let total: f64 = pmf.iter().sum();
    let z: Vec<f64> = fwd.z.iter().copied().collect();
    let near = z.iter().filter(|x| (*x - x.round()).abs() < 1e-2).count() as f64 / n as f64;
    assert!(near > 0.99, "{near}");
    for (k, p) in pmf.iter().enumerate().take(6) {
        let qk = p / total;
        let freq = z.iter().filter(|x| x.round() == k as f64).count() as f64 / n as f64;
        assert!(
            (freq - qk).abs() <= 4.0 * (qk * (1.0 - qk) / n as f64).sqrt() + 0.01,
            "P({k}) {freq} vs {qk}"
        );
    }
}

#[test]
fn a_truncation_that_drops_too_much_mass_is_reported() {
    let l = layer("layer l: poisson(max = 3)");
    let fwd = l
        .try_forward(array![5f64.ln()].into_dyn().view(), &Options::default())
        .unwrap();
    let dropped = 1.0 - poisson_pmf(5.0, 3).iter().sum::<f64>();
    assert!((fwd.report.values["dropped_mass"] - dropped).abs() < 1e-12);
    assert!(
        fwd.report
            .warnings
            .iter()
            .any(|w| w.contains("K = 3") && w.contains("max")),
        "{:?}",
        fwd.report.warnings
    );
    let fine = l
        .try_forward(array![-3.0].into_dyn().view(), &Options::default())
        .unwrap();
    assert!(fine.report.warnings.is_empty());
}

#[test]
fn count_pmfs_match_their_closed_forms() {
    // With noise none and T → 0 the hard count is the mode; with noise none the scores w are the
    // truncated log-pmf: compare each family with its closed form.
    let p = sigmoid(0.4);
    let choose = |n: f64, k: f64| -> f64 {
        let lg = |x: f64| (1..=(x as usize)).map(|i| (i as f64).ln()).sum::<f64>();
        (lg(n) - lg(k) - lg(n - k)).exp()
    };
    let cases: Vec<(&str, Vec<f64>)> = vec![
        (
            "binomial(trials = 5)",
            (0..=5)
                .map(|k| choose(5.0, k as f64) * p.powi(k) * (1.0 - p).powi(5 - k))
                .collect(),
        ),
        (
            "geometric(max = 6)",
            (0..=6).map(|k| (1.0 - p).powi(k) * p).collect(),
        ),
        (
            "negative_binomial(r = 3, max = 6)",
            (0..=6)
                .map(|k| choose(k as f64 + 2.0, k as f64) * (1.0 - p).powi(k) * p.powi(3))
                .collect(),
        ),
        ("poisson(max = 6)", poisson_pmf(0.4f64.exp(), 6)),
    ];
    for (support, pmf) in cases {
        let l = layer(&format!("layer l: {support}"));
        let fwd = l
            .try_forward(
                array![0.4].into_dyn().view(),
                &Options::default().noise(Noise::None),
            )
            .unwrap();
        let total: f64 = pmf.iter().sum();
        assert_eq!(fwd.w.len(), pmf.len(), "{support}");
        for (w, p) in fwd.w.iter().zip(&pmf) {
            assert!(
                (w - (p / total).ln()).abs() < 1e-10,
                "{support}: {w} vs {}",
                (p / total).ln()
            );
        }
    }
}

#[test]
fn estimators_and_count_arguments_are_checked_at_compile_time() {
    let cases = [
        (
            "layer l: poisson(max = auto) { estimator: gumbel_rao }",
            "not available for poisson",
        ),
        (
            "layer l: poisson { estimator: reinforce }",
            "not available for poisson",
        ),
        (
            "layer l: categorical(3) { noise: gaussian; estimator: gumbel_rao }",
            "needs `noise: gumbel`",
        ),
        (
            "layer l: bernoulli(3) { noise: neg_exponential; estimator: reinforce }",
            "needs `noise: gumbel`",
        ),
        (
            "layer l: categorical(3) { estimator: reinforce(baseline = loo) }",
            "cannot be `loo`",
        ),
        ("layer l: binomial(trials = 0)", "integer ≥ 1"),
        ("layer l: negative_binomial(r = 0)", "number > 0"),
        ("layer l: poisson(max = 0)", "integer ≥ 1 or `auto`"),
        (
            "layer l: geometric(max = automatic)",
            "cannot be `automatic`",
        ),
        (
            "layer l: categorical(3) { estimator: gumbel_rao(draws = 0) }",
            "integer ≥ 1",
        ),
    ];
    for (spec, expected) in cases {
        match sst::compile(spec) {
            Err(sst::Error::Compile(e)) => {
                assert!(
                    e.diagnostics.iter().any(|d| d.message.contains(expected)),
                    "{spec}: {e}"
                )
            }
            other => panic!(
                "{spec}: expected a compile error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    let l = layer("layer l: categorical(3) { estimator: gumbel_rao }");
    let err = l
        .try_forward(
            array![0.0, 1.0, 2.0].into_dyn().view(),
            &Options::default().noise(Noise::None),
        )
        .unwrap_err();
    assert_eq!(err.field, "noise");
}
