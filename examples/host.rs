//! A Rust host program: compile a spec, sample a batch, and take one gradient step on θ so that
//! the relaxed sample puts more mass on category 0.
//!
//! Run with `cargo run --release --example host`.

use ndarray::{Array2, ArrayD};
use rand::SeedableRng;
use sst::{Noise, Options};

const SPEC: &str = r#"
layer pick: gumbel_softmax(5) { temperature: max(0.2, exp(-step / 50)) }
"#;

fn main() -> Result<(), sst::Error> {
    let module = sst::compile(SPEC)?;
    let layer = module.try_layer("pick")?;
    let mut theta: ArrayD<f64> = Array2::zeros((2, 5)).into_dyn(); // a batch of 2 rows
    let mut cotangent = ArrayD::zeros(theta.raw_dim());
    cotangent.index_axis_mut(ndarray::Axis(1), 0).fill(-1.0); // L = −z₀ in every row
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for step in 0..200 {
        let opts = Options::default()
            .noise(Noise::from_rng(&mut rng))
            .step(step as f64);
        let fwd = layer.try_forward(theta.view(), &opts)?;
        let grad = layer.try_backward(&fwd, cotangent.view())?;
        theta.scaled_add(-0.5, &grad);
        if step % 50 == 0 {
            println!(
                "step {step:>3}  T = {:.3}  z[0] = {:.3}",
                fwd.temperature,
                fwd.z[[0, 0]]
            );
        }
    }
    println!(
        "learned theta, row 0: {:.2}",
        theta.index_axis(ndarray::Axis(0), 0)
    );
    Ok(())
}
