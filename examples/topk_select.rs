//! L2X-style feature selection (Chen et al. 2018; the SST paper's top-k experiment, in small):
//! `d = 20` features `x ~ U(−1, 1)`, of which `k = 4` carry the signal,
//! `y = 2x₃ − 1.5x₇ + x₁₁ − 2.5x₁₅ + 0.1ε`. A selector's scores `s` (one per feature; `2d − 1`
//! for `corr_topk`, whose selection is the unary part of its output) go through a top-k layer
//! with Gumbel noise, one draw per example; a linear predictor sees only the selected features,
//! `ŷ = Σ_i v_i x_i z_i`; the loss `mean (ŷ − y)²` trains `s` and `v` through the layer (candle,
//! Adam). Held out: the exact top-k of `s` without noise, its test MSE and subset precision
//! `|selected ∩ signal| / k`, for each of the five relaxations of the stdlib.
//!
//! `cargo run --release --features candle --example topk_select -- [STEPS] [--plot PATH]
//! [--check]` (400 steps; `--check` fails when a relaxation's precision is below 0.8).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{plot, progress, uniform, Adam, Args};
use sst::autodiff::candle::apply;
use sst::{Mode, Noise, Options};

const D: usize = 20;
const K: usize = 4;
const BATCH: usize = 64;
const SIGNAL: [(usize, f32); K] = [(3, 2.0), (7, -1.5), (11, 1.0), (15, -2.5)];
const SEED: u64 = 7;
const PRESETS: [&str; 5] = [
    "euclid_topk",
    "cat_ent_topk",
    "bin_ent_topk",
    "ef_ent_topk",
    "corr_topk",
];

/// What one relaxation reached.
struct Outcome {
    preset: &'static str,
    test_mse: f64,
    precision: f64,
    losses: Vec<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse(400);
    let mut outcomes = Vec::new();
    for preset in PRESETS {
        outcomes.push(train(preset, args.steps)?);
    }
    println!(
        "topk_select: d = {D}, k = {K}, {} steps of {BATCH} examples",
        args.steps
    );
    println!("| relaxation | test MSE | subset precision |\n| --- | ---: | ---: |");
    for o in &outcomes {
        println!("| {} | {:.4} | {:.2} |", o.preset, o.test_mse, o.precision);
    }
    if let Some(path) = &args.plot {
        let curves: Vec<(&str, &[f64])> = outcomes
            .iter()
            .map(|o| (o.preset, o.losses.as_slice()))
            .collect();
        plot(
            path,
            "topk_select: training MSE by relaxation",
            "mean (ŷ − y)²",
            &curves,
        );
        println!("plot: {path}");
    }
    let missed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.precision < 0.8)
        .map(|o| o.preset)
        .collect();
    if args.check && !missed.is_empty() {
        return Err(candle_core::Error::msg(format!(
            "precision below 0.8: {missed:?}"
        )));
    }
    Ok(())
}

/// Trains the selector and predictor through `preset(d, k)` for `steps` steps.
fn train(preset: &'static str, steps: usize) -> Result<Outcome> {
    let spec = format!("layer select: {preset}({D}, {K}) {{ temperature: 0.5 }}");
    let module = sst::compile(&spec).map_err(candle_core::Error::msg)?;
    let layer = module.layer("select");
    let len = layer.plan().support.shape()[0];
    let s = Var::zeros((1, len), DType::F32, &Device::Cpu)?;
    let v = Var::zeros((1, D), DType::F32, &Device::Cpu)?;
    let mut adam = Adam::new(0.05);
    let bar = progress(steps);
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let (x, y) = data(BATCH, step as u32)?;
        let theta = s.as_tensor().broadcast_as((BATCH, len))?.contiguous()?;
        let opts = Options::default()
            .seed(SEED + step as u64)
            .step(step as f64);
        let z = apply(layer, &theta, &opts)?.narrow(1, 0, D)?;
        let loss = prediction(&x, &z, v.as_tensor())?
            .sub(&y)?
            .sqr()?
            .mean_all()?;
        adam.step(&[&s, &v], &loss.backward()?)?;
        losses.push(f64::from(loss.to_scalar::<f32>()?));
        bar.set_message(format!("{preset} loss {:.4}", losses[step]));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let hard = Options::default().noise(Noise::None).mode(Mode::Hard);
    let chosen = apply(layer, s.as_tensor(), &hard)?.narrow(1, 0, D)?;
    let (x, y) = data(1000, u32::MAX)?;
    let mask = chosen.broadcast_as((1000, D))?;
    let test_mse = prediction(&x, &mask, v.as_tensor())?
        .sub(&y)?
        .sqr()?
        .mean_all()?;
    let chosen = chosen.flatten_all()?.to_vec1::<f32>()?;
    let hits = SIGNAL.iter().filter(|(i, _)| chosen[*i] == 1.0).count();
    Ok(Outcome {
        preset,
        test_mse: f64::from(test_mse.to_scalar::<f32>()?),
        precision: hits as f64 / K as f64,
        losses,
    })
}

/// `ŷ = Σ_i v_i x_i z_i` per example.
fn prediction(x: &Tensor, z: &Tensor, v: &Tensor) -> Result<Tensor> {
    (x * z)?.broadcast_mul(v)?.sum(1)
}

/// `rows` examples `(x, y)` from stream `stream`: `x ~ U(−1, 1)^d`, `y` the signal plus noise.
fn data(rows: usize, stream: u32) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = uniform(SEED, stream, rows * D)
        .iter()
        .map(|u| 2.0 * u - 1.0)
        .collect();
    let noise = uniform(SEED ^ 1, stream, rows);
    let y: Vec<f32> = (0..rows)
        .map(|r| {
            let signal: f32 = SIGNAL.iter().map(|&(i, w)| w * x[r * D + i]).sum();
            signal + 0.1 * (2.0 * noise[r] - 1.0) * 3f32.sqrt()
        })
        .collect();
    Ok((
        Tensor::from_vec(x, (rows, D), &Device::Cpu)?,
        Tensor::from_vec(y, rows, &Device::Cpu)?,
    ))
}
