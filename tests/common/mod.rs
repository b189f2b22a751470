//! Helpers shared by the integration tests: deterministic generators for test inputs, naive
//! reference formulas and spec compilation. Each test binary uses a subset of them.
#![allow(dead_code)]

pub mod cli;

use ndarray::{ArrayD, IxDyn};
use sst::support::SupportRef;
use sst::Options;

/// One step of SplitMix64 (Steele, Lea & Flood 2014) on `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An array of `shape` filled in row-major order by `f`.
fn array_from(shape: &[usize], f: impl FnMut() -> f64) -> ArrayD<f64> {
    let len = shape.iter().product();
    let v = std::iter::repeat_with(f).take(len).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny deterministic generator for test inputs.
/// Uniforms are `k / 2⁵³` on `[0, 1)`.
///
/// Not the same sequence of uniforms as [`CenteredRng`] (which adds ½ before scaling): the two
/// are kept apart so that every test keeps the inputs it was written with.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        array_from(shape, || self.uniform(lo, hi))
    }
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Integers in `0..k`, as f64: many ties.
    pub fn ints(&mut self, len: usize, k: u64) -> Vec<f64> {
        (0..len).map(|_| (self.next_u64() % k) as f64).collect()
    }
    /// An `n × n` matrix of uniforms in `[lo, hi)`, row-major.
    pub fn matrix(&mut self, n: usize, lo: f64, hi: f64) -> ArrayD<f64> {
        ArrayD::from_shape_fn(IxDyn(&[n, n]), |_| self.uniform(lo, hi))
    }
}

/// SplitMix64 with uniforms at the centres of the cells, `(k + ½) / 2⁵³` on `(0, 1)` (never 0,
/// so `ln(unit)` is finite). Not the same sequence as [`Rng`]; see there.
pub struct CenteredRng(pub u64);

impl CenteredRng {
    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        array_from(shape, || self.uniform(lo, hi))
    }
}

/// The layer named `l` of a spec that must compile.
pub fn layer(spec: &str) -> sst::Layer {
    let m = sst::compile(spec).unwrap_or_else(|e| panic!("{spec}\n{e}"));
    m.layer("l").clone()
}

/// The checker's message for a spec that must not compile.
pub fn compile_error(spec: &str) -> String {
    match sst::compile(spec) {
        Ok(_) => panic!("{spec} compiled"),
        Err(e) => e.to_string(),
    }
}

/// `⟨c, z_soft(θ)⟩` at the options' seed and temperature (same seed ⇒ same noise).
pub fn loss(l: &sst::Layer, theta: &ArrayD<f64>, cot: &ArrayD<f64>, opts: &Options) -> f64 {
    let z = l.try_forward(theta.view(), opts).unwrap().z;
    z.iter().zip(cot.iter()).map(|(a, b)| a * b).sum()
}

/// Naive softmax `exp(x_i) / Σ exp(x_j)` (max-shifted so that `x/T` with noise never overflows).
pub fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The logistic function `1 / (1 + e^{−x})`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `max |a − b|` over two arrays of one shape.
pub fn max_abs_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `max |a|`.
pub fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// The relaxed count of GenGS, `Σ_k k·softmax(x)_k`, for scores `x = (ℓ + g)/T` over `{0..K}`.
pub fn expected_count(x: &[f64]) -> f64 {
    softmax(x)
        .iter()
        .enumerate()
        .map(|(k, s)| k as f64 * s)
        .sum()
}

/// The backward rules of a solver, by spec name: its native rules, then `finite_diff`.
pub fn rules(solver: &sst::support::SoftSolver) -> Vec<&'static str> {
    solver
        .rules
        .iter()
        .map(|r| r.name())
        .chain(["finite_diff"])
        .collect()
}

/// Whether the support's noise and solvers act on `θ` itself (not on derived scores, as the
/// counts do with their log-pmf).
pub fn scores_are_theta(support: &SupportRef) -> bool {
    support.scores() == sst::ir::ScoreMap::Identity
}

/// `ln Γ(x)` for `x > 0` by the Lanczos approximation (g = 7, nine coefficients; relative
/// error about 1e-15), with the reflection `Γ(x)Γ(1 − x) = π / sin(πx)` below ½. Written here,
/// apart from the library, so that count pmfs in tests come from closed forms such as
/// `C(k + r − 1, k) = Γ(k + r) / (Γ(r) k!)`, also for non-integer `r`.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// Per-coordinate sample mean and unbiased sample variance of `rows` (one draw per row).
pub fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
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

/// Asserts that two independent Monte Carlo means `(mean, variance, sample size)` agree
/// coordinate-wise within 4 standard errors of their difference, `|ā − b̄| ≤ 4·√(va/na + vb/nb)`
/// (a two-sided normal tail of 6e-5 per coordinate). An exact value is a mean with variance 0.
pub fn assert_means_agree(what: &str, a: (&[f64], &[f64], usize), b: (&[f64], &[f64], usize)) {
    for j in 0..a.0.len() {
        let se = (a.1[j] / a.2 as f64 + b.1[j] / b.2 as f64).sqrt();
        let diff = (a.0[j] - b.0[j]).abs();
        assert!(
            diff <= 4.0 * se,
            "{what}[{j}]: {} vs {} (4 SE = {})",
            a.0[j],
            b.0[j],
            4.0 * se
        );
    }
}

/// The total variance `V = Σ_j Var(x_j)` of `rows` (one draw per row) and its standard error.
/// `V` is the mean of `q_i = Σ_j (x_ij − x̄_j)²` (times `n/(n − 1)`), so by the central limit
/// theorem its standard error is the standard deviation of the `q_i` over `√n` (the fourth
/// moments of the draws; the error of using `x̄` for the mean is `O(1/n)`, negligible).
pub fn total_variance(rows: &[Vec<f64>]) -> (f64, f64) {
    let n = rows.len() as f64;
    let (mean, _) = moments(rows);
    let q: Vec<f64> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(x, m)| (x - m).powi(2))
                .sum::<f64>()
        })
        .collect();
    let q_mean = q.iter().sum::<f64>() / n;
    let q_var = q.iter().map(|x| (x - q_mean).powi(2)).sum::<f64>() / (n - 1.0);
    (q_mean * n / (n - 1.0), (q_var / n).sqrt())
}

/// Every spec of `support` the backends are compared on: each soft solver with each of its
/// rules (relaxed), and each estimator ([`estimator_specs`]).
pub fn solver_and_estimator_specs(support: &SupportRef) -> Vec<String> {
    let mut out = Vec::new();
    for solver in support.soft_solvers() {
        for rule in rules(solver) {
            out.push(format!(
                "layer l: {} {{ regularizer: {}; solver: {}; backward: {rule} }}",
                support.describe(),
                solver.regularizer.name(),
                solver.name
            ));
        }
    }
    out.extend(estimator_specs(support, "reinforce"));
    out
}

/// A layer spec for every estimator `support` offers (relaxed, straight-through, Gumbel-Rao with
/// 3 draws where it has conditional noise, `reinforce` as given where it has a score function),
/// at `T = 0.7`: what the autodiff integration tests loop over.
pub fn estimator_specs(support: &SupportRef, reinforce: &str) -> Vec<String> {
    let mut estimators = vec!["relaxed", "straight_through"];
    if support.conditional_gumbel().is_some() {
        estimators.push("gumbel_rao(draws = 3)");
    }
    if support.score_function().is_some() {
        estimators.push(reinforce);
    }
    estimators
        .iter()
        .map(|e| {
            format!(
                "layer l: {} {{ estimator: {e}; temperature: 0.7 }}",
                support.describe()
            )
        })
        .collect()
}
