//! Gumbel-Sinkhorn inside a candle model learns to sort 8 numbers (Mena et al. 2018).
//!
//! The scores `θ_ij = a_j·x_i + b_j` are candle ops on two trainable vectors (the assignment is
//! invariant to row constants, so this can express "item `i` belongs near quantile `j`"); the
//! layer `permutation(8)` with Gumbel noise, Sinkhorn at `T = 0.5`, is an op of the same graph
//! (`sst::autodiff::candle::apply`); the loss is `mean (z − P*)²` against the sorting
//! permutation `P*`, and candle's `backward()` reaches `a` and `b` through the layer; Adam.
//! Held out: 1000 new sequences under the exact assignment without noise.
//!
//! `cargo run --release --features candle --example sort_numbers -- [STEPS] [--plot PATH]
//! [--check]` (300 steps, about a second; `--check` exits with an error below 90 % of correct
//! positions, the target `scripts/test` checks on a shortened run).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{plot, progress, uniform, Adam, Args};
use sst::autodiff::candle::apply;
use sst::{Mode, Noise, Options};

const N: usize = 8;
const BATCH: usize = 32;
const SEED: u64 = 2026;

fn main() -> Result<()> {
    let args = Args::parse(300);
    let spec = "layer sort: permutation(8) { noise: gumbel; regularizer: entropy; \
                estimator: relaxed; temperature: 0.5 }";
    let module = sst::compile(spec).map_err(candle_core::Error::msg)?;
    let layer = module.layer("sort");
    let a = Var::zeros((1, 1, N), DType::F32, &Device::Cpu)?;
    let b = Var::zeros((1, 1, N), DType::F32, &Device::Cpu)?;
    let scores = |x: &Tensor| -> Result<Tensor> {
        x.broadcast_mul(a.as_tensor())?
            .broadcast_add(b.as_tensor())?
            .contiguous()
    };
    let mut adam = Adam::new(0.1);
    let bar = progress(args.steps);
    let mut losses = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let x = numbers(BATCH, step as u32)?;
        let opts = Options::default()
            .seed(SEED + step as u64)
            .step(step as f64);
        let z = apply(layer, &scores(&x)?, &opts)?;
        let loss = (z - sorting_permutations(&x)?)?.sqr()?.mean_all()?;
        adam.step(&[&a, &b], &loss.backward()?)?;
        losses.push(f64::from(loss.to_scalar::<f32>()?));
        bar.set_message(format!("loss {:.4}", losses[step]));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let x = numbers(1000, u32::MAX)?;
    let hard = Options::default().noise(Noise::None).mode(Mode::Hard);
    let z = apply(layer, &scores(&x)?, &hard)?;
    let target = sorting_permutations(&x)?;
    let right = (&z * &target)?.sum_all()?.to_scalar::<f32>()?;
    let positions = f64::from(right) / (1000 * N) as f64;
    let rows_right = (z * target)?.sum(2)?.sum(1)?.to_vec1::<f32>()?;
    let sorted = rows_right.iter().filter(|&&r| r == N as f32).count() as f64 / 1000.0;
    println!(
        "sort_numbers: loss {:.4} → {:.4} in {} steps; held out: {:.1}% of positions correct, \
         {:.1}% fully sorted",
        losses[0],
        losses[losses.len() - 1],
        args.steps,
        100.0 * positions,
        100.0 * sorted
    );
    if let Some(path) = &args.plot {
        plot(
            path,
            "sort_numbers: Gumbel-Sinkhorn, T = 0.5",
            "mean (z − P*)²",
            &[("training loss", &losses)],
        );
        println!("plot: {path}");
    }
    if args.check && positions < 0.9 {
        return Err(candle_core::Error::msg(format!(
            "target missed: {:.1}% of positions correct, below 90%",
            100.0 * positions
        )));
    }
    Ok(())
}

/// `rows` sequences of `N` numbers in (0, 1), shaped `[rows, N, 1]`, from stream `stream`.
fn numbers(rows: usize, stream: u32) -> Result<Tensor> {
    Tensor::from_vec(uniform(SEED, stream, rows * N), (rows, N, 1), &Device::Cpu)
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
