//! Rates of count data learned through Generalized Gumbel-Softmax (Joo et al.).
//!
//! Five groups with true Poisson rates `λ = 1, 3, 6, 10, 15`, 1000 observed counts each
//! (drawn by inversion, reproducibly). The model's log-rates `φ_g` (starting at 0, rate 1) feed
//! `poisson(max = 40)` with Gumbel noise at `T = 0.3`; 64 relaxed samples per group and step; the
//! loss `Σ_g (mean_s z_gs − ȳ_g)²` matches the samples' mean to the data's, and its gradient
//! reaches `φ` through the relaxed counts (candle, Adam).
//!
//! `cargo run --release --features candle --example poisson_counts -- [STEPS] [--plot PATH]
//! [--check]` (400 steps; `--check` fails when a learned rate is off the true one by more than
//! 10 %).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{plot, progress, uniform, Adam, Args};
use sst::autodiff::candle::apply;
use sst::Options;

const RATES: [f64; 5] = [1.0, 3.0, 6.0, 10.0, 15.0];
const OBSERVED: usize = 1000;
const SAMPLES: usize = 64;
const SEED: u64 = 11;

fn main() -> Result<()> {
    let args = Args::parse(400);
    let g = RATES.len();
    let means: Vec<f32> = (0..g).map(|k| observed_mean(k) as f32).collect();
    let target = Tensor::from_vec(means.clone(), g, &Device::Cpu)?;
    let spec =
        "layer count: poisson(max = 40) { noise: gumbel; estimator: relaxed; temperature: 0.3 }";
    let module = sst::compile(spec).map_err(candle_core::Error::msg)?;
    let layer = module.layer("count");
    let phi = Var::zeros((1, g, 1), DType::F32, &Device::Cpu)?;
    let mut adam = Adam::new(0.05);
    let bar = progress(args.steps);
    let mut history: Vec<Vec<f64>> = vec![Vec::with_capacity(args.steps); g];
    for step in 0..args.steps {
        let theta = phi
            .as_tensor()
            .broadcast_as((SAMPLES, g, 1))?
            .contiguous()?;
        let opts = Options::default()
            .seed(SEED + step as u64)
            .step(step as f64);
        let z = apply(layer, &theta, &opts)?;
        let sample_mean = z.mean(0)?.flatten_all()?;
        let loss = (sample_mean - &target)?.sqr()?.sum_all()?;
        adam.step(&[&phi], &loss.backward()?)?;
        let rates = phi.as_tensor().exp()?.flatten_all()?.to_vec1::<f32>()?;
        for (h, r) in history.iter_mut().zip(&rates) {
            h.push(f64::from(*r));
        }
        bar.set_message(format!("loss {:.4}", loss.to_scalar::<f32>()?));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let learned: Vec<f64> = history.iter().map(|h| h[h.len() - 1]).collect();
    println!(
        "poisson_counts: {} steps, {SAMPLES} relaxed samples per group and step",
        args.steps
    );
    println!(
        "| true rate | data mean | learned rate | relative error |\n| ---: | ---: | ---: | ---: |"
    );
    let mut worst: f64 = 0.0;
    for ((rate, mean), got) in RATES.iter().zip(&means).zip(&learned) {
        let error = (got - rate).abs() / rate;
        worst = worst.max(error);
        println!("| {rate} | {mean:.3} | {got:.3} | {:.1}% |", 100.0 * error);
    }
    if let Some(path) = &args.plot {
        let names: Vec<String> = RATES.iter().map(|r| format!("λ = {r}")).collect();
        let curves: Vec<(&str, &[f64])> = names
            .iter()
            .map(String::as_str)
            .zip(history.iter().map(Vec::as_slice))
            .collect();
        plot(
            path,
            "poisson_counts: learned rates through GenGS",
            "rate exp(φ)",
            &curves,
        );
        println!("plot: {path}");
    }
    if args.check && worst > 0.1 {
        return Err(candle_core::Error::msg(format!(
            "target missed: a learned rate is {:.1}% off",
            100.0 * worst
        )));
    }
    Ok(())
}

/// The mean of `OBSERVED` Poisson counts of group `g`, drawn by inversion of the CDF.
fn observed_mean(g: usize) -> f64 {
    let rate = RATES[g];
    let total: usize = uniform(SEED, g as u32, OBSERVED)
        .iter()
        .map(|&u| {
            let (mut k, mut p) = (0usize, (-rate).exp());
            let mut cdf = p;
            while cdf < f64::from(u) && k < 1000 {
                k += 1;
                p *= rate / k as f64;
                cdf += p;
            }
            k
        })
        .sum();
    total as f64 / OBSERVED as f64
}
