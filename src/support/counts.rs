//! Counts relaxed by Generalized Gumbel-Softmax (GenGS, Joo et al.): `poisson(max)`,
//! `binomial(trials)`, `geometric(max)`, `negative_binomial(r, max)`.
//!
//! `θ` is one unconstrained number per row (Poisson: the log-rate `log λ`; the others: the logit
//! of the success probability `p`). The count's pmf is truncated to `{0..K}` and renormalised,
//! `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)`; the noise perturbs `ℓ`, the solvers pick a category
//! (hard: `argmax`, soft: `softmax(w/T)`), and the count is the linear map `z = Σ_k k·s_k`.
//!
//! `K` is the `max` argument, or with `max = auto` the smallest `K` whose dropped tail mass
//! `P(X > K)` is below 1e-6, chosen for each row on its own (the largest is reported as
//! `truncation_k`), so that a row's sample never depends on the rows that share its batch.
//! Binomial counts need no truncation: `K = trials`.

use std::sync::Arc;

use super::categorical::small_size;
use super::{
    ArgError, Entry, Estimate, Param, ParamKind, Regularizer, Report, Rule, Scores, SoftCall,
    SoftSolver, Solve, Structure, SupportRef, Value, MAX_INT,
};
use crate::kernels::logistic::log_sigmoid;
use crate::kernels::{argmax, logsumexp, narrow, softmax};
use crate::real::Real;

/// The dropped tail mass `max = auto` aims below.
const AUTO_TAIL: f64 = 1e-6;
/// The most outcomes a truncation may keep.
const MAX_OUTCOMES: usize = 100_000;
/// A dropped tail mass above this is reported as a warning.
const WARN_TAIL: f64 = 1e-3;

const MAX_PARAM: Param = Param {
    name: "max",
    kind: ParamKind::IntOrName {
        min: 1,
        names: &["auto"],
    },
    default: Some(Value::Name("auto")),
};

/// `Some(K)` for an integer `max`, `None` for `auto`; at most [`MAX_OUTCOMES`] outcomes.
fn max_arg(v: Value, param: usize) -> Result<Option<usize>, ArgError> {
    match v.name() {
        Some(_) => Ok(None),
        None => Ok(Some(outcomes(v, param)?)),
    }
}

/// An integer argument that bounds the outcomes `{0..K}`: `K < MAX_OUTCOMES`.
fn outcomes(v: Value, param: usize) -> Result<usize, ArgError> {
    let k = v.int() as usize;
    if k >= MAX_OUTCOMES {
        return Err(ArgError {
            param,
            message: format!("at most {} outcomes are kept, found {k}", MAX_OUTCOMES - 1),
        });
    }
    Ok(k)
}

pub const POISSON: Entry = Entry {
    name: "poisson",
    summary: "a Poisson count, θ = log-rate, truncated to {0..max}",
    example: "poisson(max = 8)",
    params: &[MAX_PARAM],
    build: |a| Ok(count(Family::Poisson, max_arg(a[0], 0)?)),
    random_instance: |seed| count(Family::Poisson, Some(small_size(seed) + 1)),
    gradient_instance: |seed| count(Family::Poisson, Some(moderate_max(seed))),
};

pub const BINOMIAL: Entry = Entry {
    name: "binomial",
    summary: "a binomial count of `trials` trials, θ = logit of p",
    example: "binomial(trials = 6)",
    params: &[Param {
        name: "trials",
        kind: ParamKind::Int {
            min: 1,
            max: MAX_INT,
        },
        default: None,
    }],
    build: |a| {
        Ok(count(
            Family::Binomial {
                trials: outcomes(a[0], 0)?,
            },
            None,
        ))
    },
    random_instance: |seed| {
        count(
            Family::Binomial {
                trials: small_size(seed),
            },
            None,
        )
    },
    gradient_instance: |seed| {
        count(
            Family::Binomial {
                trials: moderate_max(seed),
            },
            None,
        )
    },
};

pub const GEOMETRIC: Entry = Entry {
    name: "geometric",
    summary: "failures before the first success, θ = logit of p, truncated to {0..max}",
    example: "geometric(max = 8)",
    params: &[MAX_PARAM],
    build: |a| Ok(count(Family::Geometric, max_arg(a[0], 0)?)),
    random_instance: |seed| count(Family::Geometric, Some(small_size(seed) + 1)),
    gradient_instance: |seed| count(Family::Geometric, Some(moderate_max(seed))),
};

pub const NEGATIVE_BINOMIAL: Entry = Entry {
    name: "negative_binomial",
    summary: "failures before the r-th success, θ = logit of p, truncated to {0..max}",
    example: "negative_binomial(r = 3, max = 10)",
    params: &[
        Param {
            name: "r",
            kind: ParamKind::Positive,
            default: None,
        },
        MAX_PARAM,
    ],
    build: |a| {
        let r = a[0].real();
        if r > 1e6 {
            return Err(ArgError {
                param: 0,
                message: format!("r must be at most 1e6, found {r}"),
            });
        }
        Ok(count(Family::NegativeBinomial { r }, max_arg(a[1], 1)?))
    },
    random_instance: |seed| {
        let r = 0.5 + small_size(seed ^ 0x5eed) as f64 / 2.0;
        count(Family::NegativeBinomial { r }, Some(small_size(seed) + 1))
    },
    gradient_instance: |seed| {
        let r = 0.5 + (seed % 6) as f64 / 2.0;
        count(Family::NegativeBinomial { r }, Some(moderate_max(seed)))
    },
};

/// A truncation `K` in `6..=9` for the gradient instances.
fn moderate_max(seed: u64) -> usize {
    6 + (seed % 4) as usize
}

const SOLVERS: &[SoftSolver] = &[SoftSolver {
    regularizer: Regularizer::Entropy,
    name: "softmax",
    params: &[],
    rules: &[Rule::ClosedForm],
    why_rule: "GenGS is a softmax over the outcomes followed by a linear map: an exact VJP",
}];

fn count(family: Family, max: Option<usize>) -> SupportRef {
    Arc::new(Count { family, max })
}

/// The count distributions and their pmfs, as recurrences `log p_{k+1} = log p_k + log r_k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    /// `p_k = λ^k e^{−λ} / k!`, `λ = exp θ`.
    Poisson,
    /// `p_k = C(n, k) p^k (1 − p)^{n−k}`, `p = σ(θ)`.
    Binomial { trials: usize },
    /// `p_k = (1 − p)^k p`: failures before the first success.
    Geometric,
    /// `p_k = C(k + r − 1, k) (1 − p)^k p^r`: failures before the r-th success.
    NegativeBinomial { r: f64 },
}

impl Family {
    /// `log p_0`, the true log-probability of the count 0 (Poisson: `−e^θ`, `−∞` past θ ≈ 709).
    fn log_p0(self, theta: f64) -> f64 {
        match self {
            Family::Poisson => -theta.exp(),
            _ => self.log_weight0(theta),
        }
    }

    /// The start of the log-weight recurrence, `log p_0` up to a factor that does not depend
    /// on `k`: Poisson drops `e^{−λ}` (it would swamp every `kθ − log k!` at large rates),
    /// the others keep `log p_0`, finite for every finite θ.
    fn log_weight0(self, theta: f64) -> f64 {
        match self {
            Family::Poisson => 0.0,
            Family::Binomial { trials } => trials as f64 * log_sigmoid(-theta),
            Family::Geometric => log_sigmoid(theta),
            Family::NegativeBinomial { r } => r * log_sigmoid(theta),
        }
    }

    /// `log(p_{k+1} / p_k)`; `−∞` past the support's end.
    fn log_ratio(self, theta: f64, k: usize) -> f64 {
        let k1 = (k + 1) as f64;
        match self {
            Family::Poisson => theta - k1.ln(),
            Family::Binomial { trials } if k >= trials => f64::NEG_INFINITY,
            Family::Binomial { trials } => ((trials - k) as f64).ln() - k1.ln() + theta,
            Family::Geometric => log_sigmoid(-theta),
            Family::NegativeBinomial { r } => (k as f64 + r).ln() - k1.ln() + log_sigmoid(-theta),
        }
    }

    /// `c` in `∂ log p_k / ∂θ = c·k + const` (the constant cancels in the renormalised `ℓ`):
    /// Poisson and binomial 1, geometric and negative binomial `−σ(θ)`.
    fn slope(self, theta: f64) -> f64 {
        match self {
            Family::Poisson | Family::Binomial { .. } => 1.0,
            Family::Geometric | Family::NegativeBinomial { .. } => -log_sigmoid(theta).exp(),
        }
    }

    /// `log p_k + c` for `k = 0..=max`, with `c = log_weight0 − log_p0` the same for every `k`:
    /// Poisson `kθ − log k!`; normalised on `{0..K}` these give the truncated log-pmf `ℓ`.
    fn log_weights(self, theta: f64, max: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(max + 1);
        let mut lw = self.log_weight0(theta);
        for k in 0..=max {
            out.push(lw);
            lw += self.log_ratio(theta, k);
        }
        out
    }

    /// `P(X ≤ K) = Σ_{k≤K} p_k`, the mass a truncation at `K = max` keeps (in [0, 1]).
    fn kept_mass(self, theta: f64, max: usize) -> f64 {
        let log_kept =
            logsumexp(&self.log_weights(theta, max)) + self.log_p0(theta) - self.log_weight0(theta);
        log_kept.exp().clamp(0.0, 1.0)
    }

    /// The smallest `K ≥ 1` with `P(X > K) < AUTO_TAIL`, or an error past [`MAX_OUTCOMES`].
    fn auto_max(self, theta: f64) -> Result<usize, String> {
        let mut lp = self.log_p0(theta);
        let mut cdf = 0.0;
        for k in 0..MAX_OUTCOMES {
            cdf += lp.exp();
            let ratio = self.log_ratio(theta, k);
            // The tail is below the aim, or the support ends at k (binomial).
            if 1.0 - cdf < AUTO_TAIL || ratio == f64::NEG_INFINITY {
                return Ok(k.max(1));
            }
            lp += ratio;
        }
        Err(format!(
            "theta = {theta} needs more than {MAX_OUTCOMES} outcomes to drop less than {AUTO_TAIL:e} \
             of the mass; set `max` or use a smaller theta"
        ))
    }
}

#[derive(Clone, Debug)]
pub struct Count {
    pub family: Family,
    /// The truncation `K`; `None` for `max = auto`.
    pub max: Option<usize>,
}

impl Count {
    fn name(&self) -> &'static str {
        match self.family {
            Family::Poisson => "poisson",
            Family::Binomial { .. } => "binomial",
            Family::Geometric => "geometric",
            Family::NegativeBinomial { .. } => "negative_binomial",
        }
    }

    /// The truncation for one row: the family's end, the explicit `max`, or `auto`'s choice.
    fn truncation(&self, theta: f64) -> Result<usize, String> {
        match (self.family, self.max) {
            (Family::Binomial { trials }, _) => Ok(trials),
            (_, Some(max)) => Ok(max),
            (family, None) => family.auto_max(theta),
        }
    }
}

impl Structure for Count {
    fn describe(&self) -> String {
        let max = self.max.map_or("auto".to_string(), |m| m.to_string());
        match self.family {
            Family::Binomial { trials } => format!("binomial(trials = {trials})"),
            Family::NegativeBinomial { r } => format!("negative_binomial(r = {r:?}, max = {max})"),
            _ => format!("{}(max = {max})", self.name()),
        }
    }
    fn shape(&self) -> Vec<usize> {
        vec![1]
    }
    fn hard_solver(&self) -> &'static str {
        "argmax"
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// The counts `0..=K`; only for an explicit truncation (`auto` chooses `K` per request).
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let max = self.truncation(0.0).unwrap_or(0);
        (0..=max).map(|k| vec![k as f64]).collect()
    }
    fn regularizer_value(&self, _: Regularizer, _: &[f64]) -> Option<f64> {
        None
    }
    /// `K + 1` per row, each row truncated on its own (`max = auto`: its own tail below 1e-6);
    /// `truncation_k` and `dropped_mass` report the largest over the rows.
    fn score_lens(
        &self,
        theta: &mut dyn Iterator<Item = f64>,
        report: &mut Report,
    ) -> Result<Option<Vec<usize>>, String> {
        let mut lens = Vec::new();
        for t in theta {
            let k = self.truncation(t)?;
            if self.family.log_weights(t, k).iter().any(|w| !w.is_finite()) {
                return Err(format!(
                    "theta = {t:e} is out of range for {} truncated at K = {k}: its log-pmf overflows",
                    self.name()
                ));
            }
            report.record_max("truncation_k", k as f64);
            let dropped = 1.0 - self.family.kept_mass(t, k);
            report.record_max("dropped_mass", dropped);
            if dropped > WARN_TAIL {
                report.warn(format!(
                    "the truncation at K = {k} drops {dropped:.3e} of the mass of {} at theta = {t}; raise `max`",
                    self.name()
                ));
            }
            lens.push(k + 1);
        }
        Ok(Some(lens))
    }
}

impl<F: Real> Scores<F> for Count {
    /// `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)`, `K + 1 = scores.len()`.
    fn scores(&self, theta: &[F], scores: &mut [F]) {
        let log_weights = self.family.log_weights(theta[0].f64(), scores.len() - 1);
        let norm = logsumexp(&log_weights);
        narrow(log_weights.into_iter().map(|lp| lp - norm), scores);
    }
    /// `∂ℓ_k/∂θ = c·(k − E_q[k])`, `q = exp ℓ` the truncated pmf (see [`Family::slope`]).
    fn scores_vjp(&self, theta: &[F], grad_scores: &[F], grad_theta: &mut [F]) {
        let mut q = vec![0.0; grad_scores.len()];
        let log_weights = self.family.log_weights(theta[0].f64(), q.len() - 1);
        softmax::softmax(&log_weights, &mut q);
        let mean: f64 = q.iter().enumerate().map(|(k, qk)| k as f64 * qk).sum();
        let slope = self.family.slope(theta[0].f64());
        let dot: f64 = grad_scores
            .iter()
            .enumerate()
            .map(|(k, g)| g.f64() * (k as f64 - mean))
            .sum();
        grad_theta[0] = grad_theta[0] + F::of(slope * dot);
    }
    /// `z = Σ_k k·s_k`.
    fn decode(&self, solution: &[F], z: &mut [F]) {
        z[0] = solution
            .iter()
            .enumerate()
            .fold(F::zero(), |acc, (k, &s)| acc + F::of(k as f64) * s);
    }
    /// `g_k = k·c`.
    fn decode_vjp(&self, cotangent: &[F], g: &mut [F]) {
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = F::of(k as f64) * cotangent[0];
        }
    }
}

impl<F: Real> Estimate<F> for Count {}

impl<F: Real> Solve<F> for Count {
    fn hard(&self, w: &[F], s: &mut [F]) {
        s.fill(F::zero());
        s[argmax(w)] = F::one();
    }
    fn soft(&self, _: &SoftCall, x: &[F], s: &mut [F], _: &mut Report) -> Result<(), String> {
        softmax::softmax(x, s);
        Ok(())
    }
    fn soft_vjp(
        &self,
        _: &SoftCall,
        _: Rule,
        _: &[F],
        s: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String> {
        softmax::softmax_vjp(s, g, grad_x);
        Ok(())
    }
}
