//! A Gumbel-Sinkhorn layer inside a candle model learns to sort 8 numbers (Mena et al. 2018):
//! the scores `θ_ij = a_j·x_i + b_j` are candle ops on two trainable vectors, the layer is an op
//! of the same graph (`sst::autodiff::candle::apply`), the loss `mean (z − P*)²` against the
//! sorting permutation, and candle's `backward()` reaches `a` and `b` through the layer.
//!
//! `cargo run --release --features candle --example candle_sort [-- STEPS]` (default 300);
//! prints the held-out fraction of correct positions under the exact assignment.

use candle_core::{DType, Device, Result, Tensor, Var};
use sst::autodiff::candle::apply;
use sst::{Mode, Noise, Options};

const N: usize = 8;
const BATCH: usize = 32;

fn main() -> Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .map_or(300, |s| s.parse().expect("STEPS is a number"));
    let spec = "layer sort: permutation(8) { noise: gumbel; regularizer: entropy; \
                estimator: relaxed; temperature: 0.5 }";
    let module = sst::compile(spec).map_err(candle_core::Error::msg)?;
    let layer = module.layer("sort");
    let device = Device::Cpu;
    let a = Var::zeros((1, 1, N), DType::F32, &device)?;
    let b = Var::zeros((1, 1, N), DType::F32, &device)?;
    let mut adam = Adam::default();
    for step in 0..steps {
        let x = Tensor::rand(0f32, 1f32, (BATCH, N, 1), &device)?;
        let theta = (x.broadcast_mul(a.as_tensor())?.broadcast_add(b.as_tensor()))?;
        let opts = Options::default().seed(step as u64).step(step as f64);
        let z = apply(layer, &theta.contiguous()?, &opts)?;
        let loss = (z - sorting_permutations(&x)?)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        adam.step(&[&a, &b], &grads)?;
        if step % 50 == 0 || step + 1 == steps {
            println!("step {step:4}  loss {:.5}", loss.to_scalar::<f32>()?);
        }
    }
    // Held out: 1000 new sequences, the exact assignment without noise.
    let x = Tensor::rand(0f32, 1f32, (1000, N, 1), &device)?;
    let theta = x
        .broadcast_mul(a.as_tensor())?
        .broadcast_add(b.as_tensor())?;
    let hard = Options::default().noise(Noise::None).mode(Mode::Hard);
    let z = apply(layer, &theta.contiguous()?, &hard)?;
    let right = (z * sorting_permutations(&x)?)?
        .sum_all()?
        .to_scalar::<f32>()?;
    println!(
        "held out: {:.1}% of positions correct",
        100.0 * right / (1000 * N) as f32
    );
    Ok(())
}

/// `P*[b, i, j] = 1` when `x[b, i]` is the `j`-th smallest of its sequence.
fn sorting_permutations(x: &Tensor) -> Result<Tensor> {
    let rows = x.dims()[0];
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let mut p = vec![0f32; rows * N * N];
    for (r, seq) in values.chunks(N).enumerate() {
        let mut order: Vec<usize> = (0..N).collect();
        order.sort_by(|&i, &k| seq[i].total_cmp(&seq[k]));
        for (j, &i) in order.iter().enumerate() {
            p[r * N * N + i * N + j] = 1.0;
        }
    }
    Tensor::from_vec(p, (rows, N, N), x.device())
}

/// Adam with learning rate 0.1 and the usual `β = (0.9, 0.999)`, `ε = 1e-8`, on candle `Var`s.
#[derive(Default)]
struct Adam {
    t: i32,
    moments: Vec<(Tensor, Tensor)>,
}

impl Adam {
    fn step(&mut self, vars: &[&Var], grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.t += 1;
        let (b1, b2, lr) = (0.9f64, 0.999f64, 0.1f64);
        for (k, var) in vars.iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .expect("every parameter has a gradient");
            if self.moments.len() <= k {
                self.moments.push((g.zeros_like()?, g.zeros_like()?));
            }
            let (m, v) = &mut self.moments[k];
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&*m / (1.0 - b1.powi(self.t)))?;
            let v_hat = (&*v / (1.0 - b2.powi(self.t)))?;
            let update = (m_hat / (v_hat.sqrt()? + 1e-8)?)? * lr;
            var.set(&(var.as_tensor() - update?)?)?;
        }
        Ok(())
    }
}
