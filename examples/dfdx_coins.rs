//! The smallest training loop on a dfdx tape: the logits of 8 binary-concrete coins learn to
//! match target bits. `θ` is a dfdx parameter, the layer `bernoulli(8)` (Gumbel noise, sigmoid
//! at `T = 0.5`) an op on its tape, the loss `mean (z − target)²`, plain SGD.
//!
//! `cargo run --release --features dfdx --example dfdx_coins -- [STEPS] [--check]` (200 steps;
//! `--check` fails unless every coin's probability `σ(θ)` is on the target's side by 0.9).

use dfdx::prelude::*;
use sst::autodiff::dfdx::apply;
use sst::Options;

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map_or(200, |s| s.parse().expect("STEPS"));
    let check = args.any(|a| a == "--check");
    let module = sst::compile("layer coins: bernoulli(8) { temperature: 0.5 }").expect("compiles");
    let layer = module.layer("coins");
    let dev: Cpu = Default::default();
    let target = dev.tensor([1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
    let mut theta: Tensor<Rank1<8>, f32, Cpu> = dev.zeros();
    for step in 0..steps {
        let opts = Options::default().seed(step as u64).step(step as f64);
        let z = apply(layer, theta.leaky_trace(), &opts).expect("a valid request");
        let loss = (z - target.clone()).square().mean();
        let grads = loss.backward();
        theta = theta.clone() - grads.get(&theta) * 2.0;
    }
    let p: Vec<f32> = theta
        .as_vec()
        .iter()
        .map(|t| 1.0 / (1.0 + (-t).exp()))
        .collect();
    println!("dfdx_coins: after {steps} steps, P(coin = 1) = {p:.3?}");
    let right = p
        .iter()
        .zip(target.as_vec())
        .all(|(p, t)| if t > 0.5 { *p > 0.9 } else { *p < 0.1 });
    if check && !right {
        eprintln!("target missed: a coin's probability is not within 0.1 of its target");
        std::process::exit(1);
    }
}
