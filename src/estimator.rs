//! The numerics of the estimators beyond relaxed and straight-through: conditional noise for
//! Gumbel-Rao, score functions and baselines for REINFORCE. Plain functions on slices; the
//! supports that offer an estimator call them, the layer combines them.

use crate::ir::{Baseline, ScoreFunction};
use crate::kernels::logistic::log_sigmoid;
use crate::kernels::{logaddexp, logsumexp, softmax::softmax};
use crate::noise::{gumbel, uniform, NoiseKey};
use crate::real::Real;

/// The uniform of conditional draw `draw` for `element`: a stream of its own, disjoint from the
/// forward noise (which uses elements below 2³²).
fn draw_uniform<F: Real>(key: NoiseKey, draw: u32, element: usize) -> F {
    uniform(key, ((u64::from(draw) + 1) << 32) | element as u64)
}

/// Gumbel-max perturbations `w = θ + G` conditioned on `argmax w = d` (Paulus, Maddison,
/// Krause 2021, App. B): the maximum `M = w_d ~ Gumbel(log Σ exp θ)`, and for `j ≠ d` a
/// `Gumbel(θ_j)` truncated below `M`, `w_j = −log(exp(−M) + exp(−θ_j)·(−log U))`, computed as
/// `−logaddexp(−M, −θ_j + log(−log U))` (finite for logits of ±1e4).
pub fn conditional_gumbel_max<F: Real>(
    theta: &[F],
    d: usize,
    key: NoiseKey,
    draw: u32,
    w: &mut [F],
) {
    let top = logsumexp(theta) + gumbel(draw_uniform::<F>(key, draw, d));
    for (j, (wj, &tj)) in w.iter_mut().zip(theta).enumerate() {
        *wj = if j == d {
            top
        } else {
            let u = draw_uniform::<F>(key, draw, j);
            -logaddexp(-top, -tj + (-u.ln()).ln())
        };
    }
}

/// Logistic perturbations `w_i = θ_i + logit(u_i)` conditioned on `[w_i > 0] = z_i`: the
/// uniform is drawn on the side of `1 − σ(θ_i)` that gives `z_i` — `u ~ U(1 − σ(θ_i), 1)` for
/// `z_i = 1`, `u ~ U(0, 1 − σ(θ_i))` for `z_i = 0` — with `v ~ U(0, 1)`:
/// - `z_i = 1`: `u = σ(−θ) + σ(θ)·v`, so `e^w = (1 + v·e^θ)/(1 − v)` and
///   `w = softplus(θ + ln v) − ln(1 − v)`;
/// - `z_i = 0`: `u = σ(−θ)·v`, so `e^w = v/(1 + (1 − v)·e^{−θ})` and
///   `w = ln v − softplus(ln(1 − v) − θ)`.
///
/// Each is a sum of terms of one sign, so the sign of `w` is exact and nothing cancels at
/// logits of ±1e4 (`θ + logit(u)` would round to 0 there in f32).
pub fn conditional_logistic<F: Real>(theta: &[F], z: &[F], key: NoiseKey, draw: u32, w: &mut [F]) {
    let softplus = |x: F| logaddexp(F::zero(), x);
    for (i, ((wi, &ti), &zi)) in w.iter_mut().zip(theta).zip(z).enumerate() {
        let v = draw_uniform::<F>(key, draw, i);
        *wi = if zi > F::zero() {
            softplus(ti + v.ln()) - (-v).ln_1p()
        } else {
            v.ln() - softplus((-v).ln_1p() - ti)
        };
    }
}

/// `∇_θ log q(z|θ)` for a one-hot `z` under Gumbel-max sampling (`q = softmax θ`):
/// `z − softmax(θ)`. Adds into `grad`.
pub fn score_categorical<F: Real>(theta: &[F], z: &[F], grad: &mut [F]) {
    let mut p = vec![F::zero(); theta.len()];
    softmax(theta, &mut p);
    for ((g, &zi), pi) in grad.iter_mut().zip(z).zip(p) {
        *g = *g + zi - pi;
    }
}

/// `∇_θ log q(z|θ)` for independent coins `q(z_i = 1) = σ(θ_i)`: `z − σ(θ)`. Adds into `grad`.
pub fn score_bernoulli<F: Real>(theta: &[F], z: &[F], grad: &mut [F]) {
    for ((g, &zi), &ti) in grad.iter_mut().zip(z).zip(theta) {
        *g = *g + zi - log_sigmoid(ti).exp();
    }
}

/// `grad += ∇_θ log q(z|θ)` by the support's score function.
pub fn score<F: Real>(function: ScoreFunction, theta: &[F], z: &[F], grad: &mut [F]) {
    match function {
        ScoreFunction::Categorical => score_categorical(theta, z, grad),
        ScoreFunction::Bernoulli => score_bernoulli(theta, z, grad),
    }
}

/// The weights `f_s − b_s` that multiply each sample's score, for the losses `f_s` of the
/// samples of one batch row. `ema` is the layer's running baseline (used as `b` by
/// [`Baseline::Ema`]); leave-one-out uses `b_s = mean_{j≠s} f_j`, which equals the scaled
/// `S/(S−1)·(f_s − mean f)`. One sample with leave-one-out has no other sample: `b = 0`.
pub fn baseline_weights(baseline: Baseline, losses: &[f64], ema: f64) -> Vec<f64> {
    let s = losses.len();
    match baseline {
        Baseline::None => losses.to_vec(),
        Baseline::Ema => losses.iter().map(|f| f - ema).collect(),
        Baseline::LeaveOneOut if s < 2 => losses.to_vec(),
        Baseline::LeaveOneOut => {
            let mean = losses.iter().sum::<f64>() / s as f64;
            let scale = s as f64 / (s as f64 - 1.0);
            losses.iter().map(|f| scale * (f - mean)).collect()
        }
    }
}

/// The moving average after a call: `b ← 0.9·b + 0.1·mean(f)`, or `mean(f)` on the first call.
pub fn updated_ema(previous: Option<f64>, losses: &[f64]) -> f64 {
    let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
    match previous {
        Some(b) => 0.9 * b + 0.1 * mean,
        None => mean,
    }
}
