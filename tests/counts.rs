//! Count layers (GenGS, DESIGN.md §2 "Count distributions") against their pmfs, for all four
//! laws: hard sampling frequencies, pathwise gradients of the relaxed count, and `max = auto` on
//! batches. Every expected value comes from the closed-form pmfs written here (with the test's
//! own log-gamma), never from `src/support/counts.rs`.
//!
//! The laws, with `p = σ(θ)` (Poisson: `λ = e^θ`):
//! Poisson `λ^k e^{−λ}/k!`; binomial `C(n,k) p^k (1−p)^{n−k}`; geometric `(1−p)^k p`;
//! negative binomial `C(k+r−1, k) (1−p)^k p^r`, truncated to `{0..K}` and renormalised (`q`).
//! The relaxed count is `z_T = Σ_k k·softmax((log q(θ) + G)/T)_k`, `G` i.i.d. standard Gumbel.
//!
//! (The Poisson-only GenGS tests live in tests/estimators.rs and are not repeated here.)

mod common;

use common::{expected_count, layer, ln_gamma, loss, sigmoid, CenteredRng};
use ndarray::{ArrayD, IxDyn};
use sst::{Forward, Layer, Mode, Noise, Options};

// THE LAWS, BY CLOSED FORM

#[derive(Clone, Copy, Debug)]
enum Law {
    Poisson,
    Binomial { trials: usize },
    Geometric,
    NegativeBinomial { r: f64 },
}

/// Every law, with a non-integer `r` for the negative binomial.
const LAWS: [Law; 4] = [
    Law::Poisson,
    Law::Binomial { trials: 7 },
    Law::Geometric,
    Law::NegativeBinomial { r: 2.5 },
];

impl Law {
    /// The support in spec syntax with truncation `max` (a number or `auto`; binomial: none).
    fn support(self, max: &str) -> String {
        match self {
            Law::Poisson => format!("poisson(max = {max})"),
            Law::Binomial { trials } => format!("binomial(trials = {trials})"),
            Law::Geometric => format!("geometric(max = {max})"),
            Law::NegativeBinomial { r } => format!("negative_binomial(r = {r}, max = {max})"),
        }
    }

    /// `log p_k(θ)` by its closed form (`−∞` past the binomial's trials).
    fn log_pmf(self, theta: f64, k: usize) -> f64 {
        let kf = k as f64;
        // log p and log(1 − p) with p = σ(θ); 1 − σ(θ) = σ(−θ).
        let (log_p, log_q) = (sigmoid(theta).ln(), sigmoid(-theta).ln());
        match self {
            Law::Poisson => kf * theta - theta.exp() - ln_gamma(kf + 1.0),
            Law::Binomial { trials } if k > trials => f64::NEG_INFINITY,
            Law::Binomial { trials } => {
                let n = trials as f64;
                ln_gamma(n + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(n - kf + 1.0)
                    + kf * log_p
                    + (n - kf) * log_q
            }
            Law::Geometric => kf * log_q + log_p,
            Law::NegativeBinomial { r } => {
                ln_gamma(kf + r) - ln_gamma(r) - ln_gamma(kf + 1.0) + kf * log_q + r * log_p
            }
        }
    }

    /// The pmf truncated to `{0..max}` and renormalised: `q_k = p_k / Σ_{j≤max} p_j`.
    fn truncated_pmf(self, theta: f64, max: usize) -> Vec<f64> {
        let p: Vec<f64> = (0..=max).map(|k| self.log_pmf(theta, k).exp()).collect();
        let total: f64 = p.iter().sum();
        p.iter().map(|pk| pk / total).collect()
    }

    /// `log q_k` for `k = 0..=max`.
    fn truncated_log_pmf(self, theta: f64, max: usize) -> Vec<f64> {
        self.truncated_pmf(theta, max)
            .iter()
            .map(|q| q.ln())
            .collect()
    }

    /// `P(X > max) = Σ_{k > max} p_k`, summed directly (no `1 − cdf` cancellation) until the
    /// terms fall below 1e-30 of the sum, past the mode.
    fn tail(self, theta: f64, max: usize) -> f64 {
        let mut sum = 0.0;
        for k in max + 1.. {
            let pk = self.log_pmf(theta, k).exp();
            sum += pk;
            let past_mode = k > 10 && pk <= self.log_pmf(theta, k - 1).exp();
            if pk == 0.0 || (past_mode && pk < 1e-30 * sum.max(1e-300)) {
                break;
            }
        }
        sum
    }

    /// The smallest `K ≥ 1` whose tail `P(X > K)` is below 1e-6 (what `max = auto` promises).
    fn smallest_auto_max(self, theta: f64) -> usize {
        (1..).find(|&k| self.tail(theta, k) < 1e-6).unwrap()
    }
}

/// The relaxed count `Σ_k k·softmax((ℓ_k + g_k)/T)_k` for scores `ℓ` and noise `g`.
fn relaxed_count(log_q: &[f64], gumbels: &[f64], t: f64) -> f64 {
    let x: Vec<f64> = log_q
        .iter()
        .zip(gumbels)
        .map(|(l, g)| (l + g) / t)
        .collect();
    expected_count(&x)
}

/// `g ↦ d/dθ Σ_k k·softmax((log q(θ) + g)/T)_k`, by central differences of the closed form
/// (h = 1e-5) with the noise `g` held fixed; the two shifted log-pmfs are computed once.
fn pathwise_derivative(law: Law, theta: f64, max: usize, t: f64) -> impl Fn(&[f64]) -> f64 {
    let h = 1e-5;
    let plus = law.truncated_log_pmf(theta + h, max);
    let minus = law.truncated_log_pmf(theta - h, max);
    move |g: &[f64]| (relaxed_count(&plus, g, t) - relaxed_count(&minus, g, t)) / (2.0 * h)
}

// HELPERS FOR SAMPLES

fn array(shape: &[usize], values: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// `z[s][b]` of a count forward pass with `samples > 1` and a batch axis (`[N, B, 1]`).
fn counts_by_row(fwd: &Forward<f64>) -> Vec<Vec<f64>> {
    let (n, b) = (fwd.z.shape()[0], fwd.z.shape()[1]);
    (0..b)
        .map(|row| (0..n).map(|s| fwd.z[[s, row, 0]]).collect())
        .collect()
}

/// Asserts that integer samples in `0..=K` follow `q` (`K + 1 = q.len()`).
///
/// Each outcome with an expected count `N·q_k ≥ 20` is checked alone, the others pooled into one
/// bin (where the normal approximation would not hold for each). The frequency of a bin with
/// probability `q` has standard error `√(q(1 − q)/N)`; the test allows 5 of them (a two-sided
/// normal tail of 6e-7 per bin, so the few dozen bins of this file stay far from a false alarm).
fn assert_frequencies(what: &str, samples: &[f64], q: &[f64]) {
    let n = samples.len() as f64;
    for &x in samples {
        assert!(
            x == x.round() && x >= 0.0 && x < q.len() as f64,
            "{what}: sample {x} is not a count in 0..={}",
            q.len() - 1
        );
    }
    let freq = |k: usize| samples.iter().filter(|&&x| x == k as f64).count() as f64 / n;
    let check = |label: String, f: f64, p: f64| {
        let se = (p * (1.0 - p) / n).sqrt();
        assert!(
            (f - p).abs() <= 5.0 * se,
            "{what}: {label}: frequency {f} vs probability {p} (5 SE = {})",
            5.0 * se
        );
    };
    let (mut rest_f, mut rest_p, mut checked) = (0.0, 0.0, 0);
    for (k, &qk) in q.iter().enumerate() {
        if n * qk >= 20.0 {
            check(format!("P(X = {k})"), freq(k), qk);
            checked += 1;
        } else {
            rest_f += freq(k);
            rest_p += qk;
        }
    }
    check("the pooled rare outcomes".into(), rest_f, rest_p);
    assert!(
        checked >= 4,
        "{what}: only {checked} outcomes checked alone"
    );
}

// THE TEST'S OWN REFERENCE

/// The test's log-gamma (tests/common) against values known independently: `Γ(½) = √π`,
/// `Γ(n + 1) = n!` by products, and `Γ(x + 1) = x·Γ(x)` at non-integers on both sides of ½.
#[test]
fn the_reference_log_gamma_is_right() {
    let half = 0.5 * std::f64::consts::PI.ln();
    assert!((ln_gamma(0.5) - half).abs() < 1e-14, "{}", ln_gamma(0.5));
    let mut log_fact = 0.0f64;
    for n in 1..=30 {
        log_fact += (n as f64).ln();
        let got = ln_gamma(n as f64 + 1.0);
        assert!(
            (got - log_fact).abs() <= 1e-13 * log_fact.max(1.0),
            "ln {n}! = {log_fact}, got {got}"
        );
    }
    for x in [0.1, 0.3, 0.7, 1.5, 2.5, 7.25, 40.3] {
        let step = ln_gamma(x + 1.0) - ln_gamma(x) - f64::ln(x);
        assert!(step.abs() < 1e-12, "x = {x}: {step}");
    }
}

// (a) HARD SAMPLES FOLLOW THE TRUNCATED, RENORMALISED PMF

/// Gumbel-max over the truncated log-pmf samples `k` with probability `q_k`: the hard counts of
/// every law follow the renormalised closed-form pmf. The instances cut visible mass (Poisson
/// drops 11 %, geometric 1.3 %), so forgetting to renormalise, an off-by-one in the support
/// (geometric counting trials instead of failures), `p` and `1 − p` swapped, or an integer `r`
/// in place of 0.7 all move some frequency by many standard errors.
#[test]
fn hard_counts_follow_the_truncated_pmf_for_every_law() {
    let n = 100_000;
    let cases = [
        (Law::Poisson, "6", 4f64.ln(), 6),
        (Law::Binomial { trials: 7 }, "", -0.4, 7),
        (Law::Geometric, "10", -0.7, 10),
        (Law::NegativeBinomial { r: 2.5 }, "12", 0.3, 12),
        (Law::NegativeBinomial { r: 0.7 }, "8", -0.5, 8),
    ];
    for (seed, (law, max, theta, k)) in cases.into_iter().enumerate() {
        let spec = format!("layer l: {}", law.support(max));
        let fwd = layer(&spec)
            .try_forward(
                array(&[1], vec![theta]).view(),
                &Options::default()
                    .mode(Mode::Hard)
                    .seed(100 + seed as u64)
                    .samples(n),
            )
            .unwrap();
        assert_eq!(fwd.w.shape(), [n, k + 1], "{spec}: w has K + 1 scores");
        let z: Vec<f64> = fwd.z.iter().copied().collect();
        assert_frequencies(&spec, &z, &law.truncated_pmf(theta, k));
    }
}

// (b) PATHWISE GRADIENTS OF THE RELAXED COUNT

/// With `noise: none` the soft count is exactly `Σ_k k·softmax(log q(θ)/T)_k`, and its gradient
/// is that formula's derivative (central differences, h = 1e-5: truncation error ~h² ≈ 1e-10,
/// rounding ~1e-16/h ≈ 1e-11), for every law, on a batch of rows with different θ and
/// cotangents, at three temperatures. A wrong slope of the score map `∂ log p_k/∂θ` (its sign
/// for the logit-parametrised laws: `−σ(θ)·k`), a wrong pmf or a missing `1/T` fails.
#[test]
fn soft_count_without_noise_and_its_gradient_match_the_formula() {
    let cot = [1.0, -0.5, 2.0];
    for law in LAWS {
        let (thetas, max) = match law {
            Law::Poisson => ([-0.5, 0.7, 1.6], 12),
            Law::Binomial { trials } => ([-1.3, 0.2, 1.1], trials),
            _ => ([-1.3, 0.2, 1.1], 14),
        };
        let l = layer(&format!("layer l: {}", law.support(&max.to_string())));
        for t in [0.3, 1.0, 2.5] {
            let opts = Options::default()
                .noise(Noise::None)
                .mode(Mode::Soft)
                .temperature(t);
            let fwd = l
                .try_forward(array(&[3, 1], thetas.to_vec()).view(), &opts)
                .unwrap();
            let grad = l
                .try_backward(&fwd, array(&[3, 1], cot.to_vec()).view())
                .unwrap();
            let zero = vec![0.0; max + 1];
            for (b, &theta) in thetas.iter().enumerate() {
                let what = format!("{law:?} at θ = {theta}, T = {t}");
                let want_z = relaxed_count(&law.truncated_log_pmf(theta, max), &zero, t);
                let want_g = cot[b] * pathwise_derivative(law, theta, max, t)(&zero);
                let (z, g) = (fwd.z[[b, 0]], grad[[b, 0]]);
                assert!(
                    (z - want_z).abs() <= 1e-12 * (1.0 + want_z),
                    "{what}: z {z} vs {want_z}"
                );
                assert!(
                    (g - want_g).abs() <= 1e-7 * (1.0 + want_g.abs()),
                    "{what}: grad {g} vs {want_g}"
                );
            }
        }
    }
}

/// With seeded noise, each sample's gradient is the derivative of the relaxed count at that
/// sample's Gumbels held fixed (common random numbers): the noise `G = w − log q(θ)` is read back
/// from the response's `w` (the closed-form `log q` subtracted), then `θ` alone moves. Checks,
/// per sample, that the noise is added to the truncated log-pmf (not to θ) and that the backward
/// differentiates through the log-pmf with the noise fixed.
#[test]
fn each_sample_gradient_is_the_derivative_at_its_own_noise() {
    let (n, t, c) = (200, 0.6, 1.5);
    for (seed, law) in LAWS.into_iter().enumerate() {
        let (theta, max) = match law {
            Law::Poisson => (1.2, 10),
            Law::Binomial { trials } => (0.4, trials),
            _ => (-0.6, 12),
        };
        let l = layer(&format!("layer l: {}", law.support(&max.to_string())));
        let opts = Options::default()
            .seed(200 + seed as u64)
            .samples(n)
            .mode(Mode::Soft)
            .temperature(t);
        let fwd = l
            .try_forward(array(&[1], vec![theta]).view(), &opts)
            .unwrap();
        let grad = l.try_backward(&fwd, array(&[1], vec![c]).view()).unwrap();
        let log_q = law.truncated_log_pmf(theta, max);
        let derivative = pathwise_derivative(law, theta, max, t);
        for s in 0..n {
            let g: Vec<f64> = (0..=max).map(|k| fwd.w[[s, k]] - log_q[k]).collect();
            let want_z = relaxed_count(&log_q, &g, t);
            let want_g = c * derivative(&g);
            assert!(
                (fwd.z[[s, 0]] - want_z).abs() <= 1e-10 * (1.0 + want_z),
                "{law:?} sample {s}: z {} vs {want_z}",
                fwd.z[[s, 0]]
            );
            assert!(
                (grad[[s, 0]] - want_g).abs() <= 1e-6 * (1.0 + want_g.abs()),
                "{law:?} sample {s}: grad {} vs {want_g}",
                grad[[s, 0]]
            );
        }
    }
}

/// Mean and sample variance.
fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// The layer's pathwise gradient is unbiased for `d E[z_T]/dθ`: its mean over the layer's own
/// noise agrees with an independent Monte Carlo estimate of the same derivative — central
/// differences of `E[z_T(θ)]` with common random numbers (Gumbels drawn here by inversion,
/// `G = −ln(−ln U)`), through the closed-form pmf. Both are sample means of independent draws,
/// so their difference has standard error `√(v₁/n₁ + v₂/n₂)` from the sample variances; 4.5 of
/// them are allowed. A layer whose noise was not standard Gumbel (e.g. logistic, or scaled)
/// gives another mean. (Poisson: tests/estimators.rs.)
#[test]
fn mean_gradient_is_the_derivative_of_the_expected_relaxed_count() {
    let (n, m, t) = (40_000, 100_000, 0.5);
    let laws = [
        (Law::Binomial { trials: 7 }, 0.3, 7),
        (Law::Geometric, -0.4, 12),
        (Law::NegativeBinomial { r: 2.5 }, 0.2, 14),
    ];
    for (i, (law, theta, max)) in laws.into_iter().enumerate() {
        let l = layer(&format!(
            "layer l: {} {{ temperature: {t} }}",
            law.support(&max.to_string())
        ));
        let opts = Options::default()
            .seed(300 + i as u64)
            .samples(n)
            .mode(Mode::Soft);
        let fwd = l
            .try_forward(array(&[1], vec![theta]).view(), &opts)
            .unwrap();
        let grad = l.try_backward(&fwd, array(&[1], vec![1.0]).view()).unwrap();
        let layer_grads: Vec<f64> = grad.iter().copied().collect();
        let mut rng = CenteredRng(7 + i as u64);
        let derivative = pathwise_derivative(law, theta, max, t);
        let quotients: Vec<f64> = (0..m)
            .map(|_| {
                let g: Vec<f64> = (0..=max).map(|_| -(-rng.unit().ln()).ln()).collect();
                derivative(&g)
            })
            .collect();
        let (a, va) = mean_var(&layer_grads);
        let (b, vb) = mean_var(&quotients);
        let se = (va / n as f64 + vb / m as f64).sqrt();
        assert!(
            (a - b).abs() <= 4.5 * se,
            "{law:?}: layer mean gradient {a} vs Monte Carlo d E[z_T]/dθ {b} (4.5 SE = {})",
            4.5 * se
        );
    }
}

// (c) `max = auto` ON A BATCH

/// The batches for `max = auto`: rows whose rates differ by an order of magnitude, so that the
/// rows' own smallest truncations differ.
fn auto_batches() -> [(Law, [f64; 3]); 3] {
    [
        (Law::Poisson, [0.3f64.ln(), 2f64.ln(), 6f64.ln()]),
        (Law::Geometric, [2.0, 0.5, -0.5]),
        (Law::NegativeBinomial { r: 1.5 }, [1.0, 0.0, -0.5]),
    ]
}

/// `max = auto` on a batch truncates each row on its own: at the smallest `K_b` with tail
/// `P(X > K_b) < 1e-6`; `truncation_k` is the largest `K_b`, `dropped_mass` the largest row tail;
/// `w` has `K + 1` scores per row (a row's entries past its `K_b` are `−∞`); and each row's hard
/// counts follow that row's own truncated pmf.
#[test]
fn auto_truncation_on_a_batch_keeps_every_row_within_its_tail_and_pmf() {
    let n = 30_000;
    for (i, (law, thetas)) in auto_batches().into_iter().enumerate() {
        let l = layer(&format!("layer l: {}", law.support("auto")));
        let fwd = l
            .try_forward(
                array(&[3, 1], thetas.to_vec()).view(),
                &Options::default()
                    .mode(Mode::Hard)
                    .seed(400 + i as u64)
                    .samples(n),
            )
            .unwrap();
        let k = fwd.report.values["truncation_k"] as usize;
        let own: Vec<usize> = thetas.iter().map(|&t| law.smallest_auto_max(t)).collect();
        assert_eq!(
            k,
            *own.iter().max().unwrap(),
            "{law:?}: K vs the rows' own {own:?}"
        );
        assert!(own.iter().min() < own.iter().max(), "{law:?}: {own:?}");
        let tails: Vec<f64> = thetas
            .iter()
            .zip(&own)
            .map(|(&t, &kb)| law.tail(t, kb))
            .collect();
        assert!(tails.iter().all(|&x| x < 1e-6), "{law:?}: {tails:?}");
        let worst = tails.iter().copied().fold(0.0, f64::max);
        let dropped = fwd.report.values["dropped_mass"];
        assert!(
            (dropped - worst).abs() <= 1e-13,
            "{law:?}: dropped_mass {dropped} vs {worst}"
        );
        assert_eq!(fwd.w.shape(), [n, 3, k + 1], "{law:?}");
        for (b, (z, &theta)) in counts_by_row(&fwd).iter().zip(&thetas).enumerate() {
            let kb = own[b];
            let what = format!("{law:?} row {b} (θ = {theta}, K = {kb})");
            assert_frequencies(&what, z, &law.truncated_pmf(theta, kb));
            // Past its own K, a row's scores are −∞ (outcomes it does not have).
            let w_row = fwd.w.index_axis(ndarray::Axis(0), 0);
            let w_row = w_row.index_axis(ndarray::Axis(0), b);
            assert!(w_row.iter().skip(kb + 1).all(|&x| x == f64::NEG_INFINITY));
            assert!(w_row.iter().take(kb + 1).all(|x| x.is_finite()));
        }
    }
}

/// `⟨c, z_T(θ)⟩` at a fixed seed under `max = auto`, differentiated by central differences in
/// f64 (one row of θ at a time), equals the layer's backward, on batches whose rows have
/// different rates, for three seeds. The truncation `K` depends on θ; the check asserts that
/// the ±h moves keep the same `K` (K is piecewise constant, so the derivative ignores it).
/// Tolerance: central differences with h = 1e-6 on a function of curvature O(1/T²) err by about
/// h²/T³ ≈ 1e-11, plus rounding 1e-16/h = 1e-10; 1e-6 relative leaves room and still fails for a
/// gradient off by any visible factor.
#[test]
fn auto_truncation_gradient_matches_central_differences() {
    let (h, t) = (1e-6, 0.5);
    let cot = array(&[3, 1], vec![1.0, -2.0, 0.5]);
    for (law, thetas) in auto_batches() {
        let l: Layer = layer(&format!("layer l: {}", law.support("auto")));
        for seed in [1, 2, 3] {
            let opts = Options::default()
                .seed(seed)
                .mode(Mode::Soft)
                .temperature(t);
            let theta = array(&[3, 1], thetas.to_vec());
            let fwd = l.try_forward(theta.view(), &opts).unwrap();
            let grad = l.try_backward(&fwd, cot.view()).unwrap();
            let k = fwd.report.values["truncation_k"];
            for b in 0..3 {
                let moved = |step: f64| {
                    let mut th = theta.clone();
                    th[[b, 0]] += step;
                    let f = l.try_forward(th.view(), &opts).unwrap();
                    assert_eq!(f.report.values["truncation_k"], k, "{law:?}: K moved");
                    loss(&l, &th, &cot, &opts)
                };
                let fd = (moved(h) - moved(-h)) / (2.0 * h);
                let g = grad[[b, 0]];
                assert!(
                    (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                    "{law:?} seed {seed} row {b}: backward {g} vs central differences {fd}"
                );
            }
        }
    }
}
