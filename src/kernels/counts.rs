//! The count laws of Generalized Gumbel-Softmax (Joo et al.) and their truncated log-pmfs.
//!
//! A count `X ∈ {0, 1, …}` with one parameter `θ` per row (Poisson: the log-rate; the others:
//! the logit of the success probability `p`) is relaxed over the outcomes `{0..K}`: the scores
//! are the truncated, renormalised log-pmf `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)`, and the
//! count is the linear map `z = Σ_k k·s_k` of the solution `s` over the outcomes.

use serde::Serialize;

use crate::kernels::logistic::log_sigmoid;
use crate::kernels::{logsumexp_of, narrow};
use crate::real::Real;

/// The most outcomes a truncation may keep.
pub const MAX_OUTCOMES: usize = 100_000;

/// The count distributions and their pmfs, as recurrences `log p_{k+1} = log p_k + log r_k`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountLaw {
    /// `p_k = λ^k e^{−λ} / k!`, `λ = exp θ`.
    Poisson,
    /// `p_k = C(n, k) p^k (1 − p)^{n−k}`, `p = σ(θ)`.
    Binomial { trials: usize },
    /// `p_k = (1 − p)^k p`: failures before the first success.
    Geometric,
    /// `p_k = C(k + r − 1, k) (1 − p)^k p^r`: failures before the r-th success.
    NegativeBinomial { r: f64 },
}

impl CountLaw {
    /// The law's keyword in specs.
    pub fn name(self) -> &'static str {
        match self {
            CountLaw::Poisson => "poisson",
            CountLaw::Binomial { .. } => "binomial",
            CountLaw::Geometric => "geometric",
            CountLaw::NegativeBinomial { .. } => "negative_binomial",
        }
    }

    /// `log p_0`, the true log-probability of the count 0 (Poisson: `−e^θ`, `−∞` past θ ≈ 709).
    fn log_p0(self, theta: f64) -> f64 {
        match self {
            CountLaw::Poisson => -theta.exp(),
            _ => self.log_weight0(theta),
        }
    }

    /// The start of the log-weight recurrence, `log p_0` up to a factor that does not depend
    /// on `k`: Poisson drops `e^{−λ}` (it would swamp every `kθ − log k!` at large rates),
    /// the others keep `log p_0`, finite for every finite θ.
    fn log_weight0(self, theta: f64) -> f64 {
        match self {
            CountLaw::Poisson => 0.0,
            CountLaw::Binomial { trials } => trials as f64 * log_sigmoid(-theta),
            CountLaw::Geometric => log_sigmoid(theta),
            CountLaw::NegativeBinomial { r } => r * log_sigmoid(theta),
        }
    }

    /// `log(p_{k+1} / p_k)`; `−∞` past the support's end.
    fn log_ratio(self, theta: f64, k: usize) -> f64 {
        let k1 = (k + 1) as f64;
        match self {
            CountLaw::Poisson => theta - k1.ln(),
            CountLaw::Binomial { trials } if k >= trials => f64::NEG_INFINITY,
            CountLaw::Binomial { trials } => ((trials - k) as f64).ln() - k1.ln() + theta,
            CountLaw::Geometric => log_sigmoid(-theta),
            CountLaw::NegativeBinomial { r } => (k as f64 + r).ln() - k1.ln() + log_sigmoid(-theta),
        }
    }

    /// `c` in `∂ log p_k / ∂θ = c·k + const` (the constant cancels in the renormalised `ℓ`):
    /// Poisson and binomial 1, geometric and negative binomial `−σ(θ)`.
    fn slope(self, theta: f64) -> f64 {
        match self {
            CountLaw::Poisson | CountLaw::Binomial { .. } => 1.0,
            CountLaw::Geometric | CountLaw::NegativeBinomial { .. } => -log_sigmoid(theta).exp(),
        }
    }

    /// `log p_k + c` for `k = 0..=max`, with `c = log_weight0 − log_p0` the same for every `k`:
    /// Poisson `kθ − log k!`; normalised on `{0..K}` these give the truncated log-pmf `ℓ`.
    /// Computed by the recurrence as they are read (no buffer).
    pub fn log_weights(self, theta: f64, max: usize) -> impl Iterator<Item = f64> + Clone {
        (0..=max).scan(self.log_weight0(theta), move |lw, k| {
            let out = *lw;
            *lw += self.log_ratio(theta, k);
            Some(out)
        })
    }

    /// `P(X ≤ K) = Σ_{k≤K} p_k`, the mass a truncation at `K = max` keeps (in [0, 1]).
    pub fn kept_mass(self, theta: f64, max: usize) -> f64 {
        let log_kept = logsumexp_of(self.log_weights(theta, max)) + self.log_p0(theta)
            - self.log_weight0(theta);
        log_kept.exp().clamp(0.0, 1.0)
    }

    /// The smallest `K ≥ 1` with `P(X > K) < tail` (or the support's end, binomial), `None`
    /// when that needs [`MAX_OUTCOMES`] outcomes or more.
    pub fn auto_max(self, theta: f64, tail: f64) -> Option<usize> {
        let mut lp = self.log_p0(theta);
        let mut cdf = 0.0;
        for k in 0..MAX_OUTCOMES {
            cdf += lp.exp();
            let ratio = self.log_ratio(theta, k);
            if 1.0 - cdf < tail || ratio == f64::NEG_INFINITY {
                return Some(k.max(1));
            }
            lp += ratio;
        }
        None
    }
}

/// `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)` for `k = 0..=K`, `K + 1 = scores.len()`.
pub fn truncated_log_pmf<F: Real>(law: CountLaw, theta: F, scores: &mut [F]) {
    let log_weights = law.log_weights(theta.f64(), scores.len() - 1);
    let norm = logsumexp_of(log_weights.clone());
    narrow(log_weights.map(|lp| lp - norm), scores);
}

/// `Σ_k g_k ∂ℓ_k/∂θ`, with `∂ℓ_k/∂θ = c·(k − E_q[k])`, `q = exp ℓ` the truncated
/// pmf (the softmax of the log-weights, computed as `kernels::softmax` does, with no buffer) and
/// `c` the law's slope.
pub fn truncated_log_pmf_vjp<F: Real>(law: CountLaw, theta: F, grad_scores: &[F]) -> F {
    let log_weights = law.log_weights(theta.f64(), grad_scores.len() - 1);
    let m = log_weights.clone().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for lw in log_weights.clone() {
        s += (lw - m).exp();
    }
    let inv = s.recip();
    let q = log_weights.map(|lw| (lw - m).exp() * inv);
    let mean: f64 = q.enumerate().map(|(k, qk)| k as f64 * qk).sum();
    let dot: f64 = grad_scores
        .iter()
        .enumerate()
        .map(|(k, g)| g.f64() * (k as f64 - mean))
        .sum();
    F::of(law.slope(theta.f64()) * dot)
}

/// The count `z = Σ_k k·s_k` of a solution over the outcomes.
pub fn count_mean<F: Real>(s: &[F]) -> F {
    s.iter()
        .enumerate()
        .fold(F::zero(), |acc, (k, &sk)| acc + F::of(k as f64) * sk)
}

/// The cotangent over the outcomes of [`count_mean`]: `g_k = k·c`.
pub fn count_mean_vjp<F: Real>(c: F, g: &mut [F]) {
    for (k, gk) in g.iter_mut().enumerate() {
        *gk = F::of(k as f64) * c;
    }
}
