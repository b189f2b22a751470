//! A small discrete VAE: one categorical latent of 4 classes explains 16-bit patterns, trained
//! through an sst layer with straight-through, Gumbel-Rao (K = 10) and REINFORCE with the
//! leave-one-out baseline (4 samples), at `T = 0.5` and `T = 1` (the Gumbel-Rao paper's
//! comparison, Paulus, Maddison & Krause 2021, in small).
//!
//! Data: 4 prototype patterns, each bit flipped with probability 0.1. Encoder `θ = x·W + b`
//! (logits of `q(z|x)`), decoder `p(x|z) = Bernoulli(σ(z·V + c))`; loss `−ELBO =
//! −E_q log p(x|z) + KL(q ‖ uniform)`, the KL in closed form through candle, the reconstruction
//! term through the layer's estimator (REINFORCE: through its surrogate, the decoder by its own
//! gradient); Adam. Printed: the final ELBO of each run, and the variance over 200 noise draws of
//! the encoder-logit gradient at the straight-through run's final parameters, for
//! straight-through and Gumbel-Rao at `T = 0.5`.
//!
//! `cargo run --release --features candle --example categorical_vae -- [STEPS] [--plot PATH]
//! [--check]` (300 steps; `--check` fails unless Gumbel-Rao's gradient variance is below
//! straight-through's).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use common::{plot, progress, uniform, Adam, Args};
use sst::autodiff::candle::sample;
use sst::ir::Estimator;
use sst::{Layer, Options};

const BITS: usize = 16;
const CLASSES: usize = 4;
const BATCH: usize = 64;
const SEED: u64 = 3;
const ESTIMATORS: [(&str, &str, usize); 3] = [
    ("straight-through", "straight_through", 1),
    ("Gumbel-Rao K = 10", "gumbel_rao(draws = 10)", 1),
    (
        "REINFORCE leave-one-out",
        "reinforce(baseline = leave_one_out)",
        4,
    ),
];

/// The model's parameters: encoder `(W, b)`, decoder `(V, c)`.
struct Model {
    w: Var,
    b: Var,
    v: Var,
    c: Var,
}

impl Model {
    fn new() -> Result<Model> {
        let init = |rows: usize, cols: usize, stream: u32| -> Result<Var> {
            let values: Vec<f32> = uniform(SEED, stream, rows * cols)
                .iter()
                .map(|u| 0.2 * (u - 0.5))
                .collect();
            Var::from_tensor(&Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)
        };
        Ok(Model {
            w: init(BITS, CLASSES, 100)?,
            b: Var::zeros((1, CLASSES), DType::F32, &Device::Cpu)?,
            v: init(CLASSES, BITS, 101)?,
            c: Var::zeros((1, BITS), DType::F32, &Device::Cpu)?,
        })
    }

    fn vars(&self) -> [&Var; 4] {
        [&self.w, &self.b, &self.v, &self.c]
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(self.w.as_tensor())?
            .broadcast_add(self.b.as_tensor())
    }

    /// `−ELBO` averaged over the batch, for `θ` the encoder's logits.
    fn loss(&self, layer: &Layer, theta: &Tensor, x: &Tensor, opts: &Options) -> Result<Tensor> {
        let s = sample(layer, theta, opts)?;
        let samples = opts.samples;
        // z: [B, C] (one sample) or [S, B, C]; the reconstruction log-likelihood per sample and row.
        let z = s.z.reshape((samples * BATCH, CLASSES))?;
        let decoded = z
            .matmul(self.v.as_tensor())?
            .broadcast_add(self.c.as_tensor())?;
        let x_rep = x
            .unsqueeze(0)?
            .broadcast_as((samples, BATCH, BITS))?
            .reshape((samples * BATCH, BITS))?;
        let log_lik = ((&x_rep * &decoded)? - softplus(&decoded)?)?.sum(1)?;
        let mut loss = (log_lik.mean_all()?.neg()? + kl_to_uniform(theta)?)?;
        if matches!(layer.plan().program.estimator, Estimator::Reinforce { .. }) {
            let losses = log_lik.neg()?.reshape((samples, BATCH))?.detach();
            loss = (loss + (s.surrogate(&losses)? / (samples * BATCH) as f64)?)?;
        }
        Ok(loss)
    }
}

/// `log(1 + eᵃ)`, stable: `max(a, 0) + log(1 + e^{−|a|})`.
fn softplus(a: &Tensor) -> Result<Tensor> {
    a.relu()? + (a.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// `KL(softmax θ ‖ uniform) = Σ q log q + log C`, averaged over the rows.
fn kl_to_uniform(theta: &Tensor) -> Result<Tensor> {
    let m = theta.max_keepdim(D::Minus1)?;
    let shifted = theta.broadcast_sub(&m)?;
    let log_q = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let kl = (log_q.exp()? * &log_q)?.sum(D::Minus1)?;
    (kl + (CLASSES as f64).ln())?.mean_all()
}

/// `rows` patterns from stream `stream`: a prototype with each bit flipped with probability 0.1.
fn data(rows: usize, stream: u32) -> Result<Tensor> {
    let protos = uniform(SEED, 0, CLASSES * BITS);
    let pick = uniform(SEED ^ 5, stream, rows);
    let flip = uniform(SEED ^ 9, stream, rows * BITS);
    let x: Vec<f32> = (0..rows * BITS)
        .map(|k| {
            let (r, d) = (k / BITS, k % BITS);
            let class = ((pick[r] * CLASSES as f32) as usize).min(CLASSES - 1);
            let bit = protos[class * BITS + d] > 0.5;
            f32::from(u8::from(bit != (flip[k] < 0.1)))
        })
        .collect();
    Tensor::from_vec(x, (rows, BITS), &Device::Cpu)
}

fn layer(estimator: &str, t: f64) -> Result<Layer> {
    let spec =
        format!("layer z: categorical({CLASSES}) {{ estimator: {estimator}; temperature: {t} }}");
    let module = sst::compile(&spec).map_err(candle_core::Error::msg)?;
    Ok(module.layer("z").clone())
}

/// Trains one model; returns its ELBO curve and the final model.
fn train(estimator: &str, samples: usize, t: f64, steps: usize) -> Result<(Vec<f64>, Model)> {
    let layer = layer(estimator, t)?;
    let model = Model::new()?;
    let mut adam = Adam::new(0.02);
    let bar = progress(steps);
    let mut elbo = Vec::with_capacity(steps);
    for step in 0..steps {
        let x = data(BATCH, step as u32)?;
        let opts = Options::default()
            .seed(SEED + step as u64)
            .samples(samples)
            .step(step as f64);
        let loss = model.loss(&layer, &model.logits(&x)?, &x, &opts)?;
        adam.step(&model.vars(), &loss.backward()?)?;
        elbo.push(-f64::from(loss.to_scalar::<f32>()?));
        bar.set_message(format!("{estimator} T = {t}: ELBO {:.3}", elbo[step]));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((elbo, model))
}

/// The variance of `∂(−ELBO)/∂θ` over `draws` noise seeds at fixed parameters and batch, summed
/// over the entries of `θ` (the encoder's logits of one batch).
fn gradient_variance(model: &Model, estimator: &str, t: f64, draws: usize) -> Result<f64> {
    let layer = layer(estimator, t)?;
    let x = data(BATCH, u32::MAX)?;
    let theta = Var::from_tensor(&model.logits(&x)?.detach())?;
    let mut grads = Vec::with_capacity(draws);
    for draw in 0..draws {
        let opts = Options::default().seed(1_000_000 + draw as u64);
        let loss = model.loss(&layer, theta.as_tensor(), &x, &opts)?;
        let g = loss
            .backward()?
            .get(theta.as_tensor())
            .expect("θ has a gradient")
            .flatten_all()?;
        grads.push(g.to_vec1::<f32>()?);
    }
    let n = grads[0].len();
    let total: f64 = (0..n)
        .map(|k| {
            let mean = grads.iter().map(|g| f64::from(g[k])).sum::<f64>() / draws as f64;
            grads
                .iter()
                .map(|g| (f64::from(g[k]) - mean).powi(2))
                .sum::<f64>()
                / (draws - 1) as f64
        })
        .sum();
    Ok(total)
}

fn main() -> Result<()> {
    let args = Args::parse(300);
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    let mut st_model = None;
    println!(
        "categorical_vae: {CLASSES} classes, {BITS} bits, {} steps of {BATCH}",
        args.steps
    );
    println!("| estimator | T | final ELBO (mean of the last 20 steps) |\n| --- | ---: | ---: |");
    for t in [0.5, 1.0] {
        for (name, estimator, samples) in ESTIMATORS {
            let (elbo, model) = train(estimator, samples, t, args.steps)?;
            let tail = &elbo[elbo.len().saturating_sub(20)..];
            println!(
                "| {name} | {t} | {:.3} |",
                tail.iter().sum::<f64>() / tail.len() as f64
            );
            if t == 0.5 && estimator == "straight_through" {
                st_model = Some(model);
            }
            curves.push((format!("{name}, T = {t}"), elbo));
        }
    }
    let model = st_model.expect("trained above");
    let st = gradient_variance(&model, "straight_through", 0.5, 200)?;
    let gr = gradient_variance(&model, "gumbel_rao(draws = 10)", 0.5, 200)?;
    println!(
        "gradient variance of the encoder logits at T = 0.5 (200 draws): straight-through {st:.3e}, \
         Gumbel-Rao K = 10 {gr:.3e} ({:.2}×)",
        gr / st
    );
    if let Some(path) = &args.plot {
        let named: Vec<(&str, &[f64])> = curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        plot(
            path,
            "categorical_vae: ELBO by estimator and temperature",
            "ELBO",
            &named,
        );
        println!("plot: {path}");
    }
    if args.check && gr >= st {
        return Err(candle_core::Error::msg(
            "target missed: Gumbel-Rao's variance is not below straight-through's",
        ));
    }
    Ok(())
}
