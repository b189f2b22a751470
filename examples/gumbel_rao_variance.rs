//! Measures the per-coordinate variance of the straight-through and Gumbel-Rao gradient
//! estimators of `⟨c, z⟩` for a categorical layer, at several temperatures, and prints the
//! ratios to straight-through (the table in BENCHMARKS.md).
//!
//! Run with `cargo run --release --example gumbel_rao_variance`.

use ndarray::array;
use sst::{Mode, Options};

fn total_variance(estimator: &str, t: f64, samples: usize) -> Result<f64, sst::Error> {
    let module = sst::compile(&format!(
        "layer l: categorical(8) {{ estimator: {estimator}; temperature: {t} }}"
    ))?;
    let layer = module.try_layer("l")?;
    let theta = array![1.0, 0.5, -0.5, 0.0, 2.0, -1.0, 0.3, 1.2].into_dyn();
    let cot = array![1.0, -2.0, 0.5, 3.0, -1.0, 0.0, 2.0, -0.5].into_dyn();
    let opts = Options::default()
        .seed(2026)
        .samples(samples)
        .mode(Mode::Hard);
    let fwd = layer.try_forward(theta.view(), &opts)?;
    let grads = layer.try_backward(&fwd, cot.view())?;
    let mean = grads.mean_axis(ndarray::Axis(0)).expect("samples");
    Ok(grads
        .outer_iter()
        .map(|g| (&g - &mean).mapv(|x| x * x).sum())
        .sum::<f64>()
        / (samples - 1) as f64)
}

fn main() -> Result<(), sst::Error> {
    let samples = 20_000;
    println!("categorical(8), {samples} samples: total variance of the gradient, and its ratio to straight-through");
    println!(
        "{:>5} {:>12} {:>18} {:>18} {:>18}",
        "T", "ST", "GR K=1", "GR K=10", "GR K=100"
    );
    for t in [0.1, 0.5, 1.0] {
        let st = total_variance("straight_through", t, samples)?;
        let mut row = format!("{t:>5} {st:>12.4}");
        for k in [1, 10, 100] {
            let v = total_variance(&format!("gumbel_rao(draws = {k})"), t, samples)?;
            row.push_str(&format!(" {v:>10.4} ({:>4.2})", v / st));
        }
        println!("{row}");
    }
    Ok(())
}
