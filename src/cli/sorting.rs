//! The end of `sst demo`: a model learns through an sst layer, with the host API alone.
//!
//! Sorting 8 numbers (the task of Mena et al. 2018): for `x ∈ U(0, 1)⁸`, the target is the
//! permutation matrix `P*` with `P*_ij = 1` when `x_i` is the `j`-th smallest. A linear scorer
//! `θ_ij = a_j·x_i + b_j` (16 parameters; the assignment is invariant to row constants, so it
//! can express "item `i` belongs near quantile `j`": `−(x_i − q_j)² = 2q_j x_i − q_j² + const`)
//! feeds Gumbel-Sinkhorn at `T = 0.5`; the loss is `½‖z − P*‖²` averaged over a batch of 32,
//! its gradient `(z − P*)/32` goes back through the layer, and Adam updates `a` and `b`.
//! Held out: the exact assignment (no noise) on 1000 new sequences.

use std::fmt::Write;

use ndarray::{Array3, ArrayD, Axis, Ix2, Ix3};
use sst::{Layer, Mode, Noise, Options};

use super::repl::commands::random;
use super::CliError;

/// Items per sequence, sequences per step, steps, held-out sequences.
const N: usize = 8;
const BATCH: usize = 32;
pub const STEPS: usize = 300;
const HELD_OUT: usize = 1000;

/// The layer: Gumbel-Sinkhorn, relaxed, at a fixed temperature.
const SPEC: &str = "layer sort: permutation(8) { noise: gumbel; regularizer: entropy; \
                    estimator: relaxed; temperature: 0.5 }";

/// What training reached: held-out fractions of correct positions and of fully sorted
/// sequences, and the loss of the first and last steps.
pub struct Trained {
    pub positions: f64,
    pub sorted: f64,
    pub first_loss: f64,
    pub last_loss: f64,
}

/// Trains for `steps` steps from seed `seed`, calling `progress(step, loss)` after each.
pub fn train(
    steps: usize,
    seed: u64,
    mut progress: impl FnMut(usize, f64),
) -> Result<Trained, CliError> {
    let module = sst::compile_named("<demo>", SPEC).map_err(|e| CliError::Spec(e.to_string()))?;
    let layer = &module.layers()[0];
    let mut params = Adam::new(2 * N, 0.1);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 0..steps {
        let x = numbers(BATCH, seed, step as u32)?;
        let theta = scores(&params.values, &x);
        let opts = Options::default()
            .seed(seed.wrapping_add(step as u64))
            .step(step as f64);
        let fwd = layer.try_forward(theta.view(), &opts).map_err(request)?;
        let target = sorting_permutations(&x);
        let diff = &fwd.z - &target;
        let loss = 0.5 * diff.iter().map(|d| d * d).sum::<f64>() / BATCH as f64;
        let cotangent = diff / BATCH as f64;
        let grad_theta = layer
            .try_backward(&fwd, cotangent.view())
            .map_err(request)?;
        params.step(&parameter_gradient(&grad_theta, &x));
        if step == 0 {
            first_loss = loss;
        }
        last_loss = loss;
        progress(step, loss);
    }
    let (positions, sorted) = held_out_accuracy(layer, &params.values, seed)?;
    Ok(Trained {
        positions,
        sorted,
        first_loss,
        last_loss,
    })
}

/// The demo's text: what was trained and what it reached.
pub fn report(out: &mut String, t: &Trained) {
    let _ = writeln!(
        out,
        "== a model learns through a layer: sorting {N} numbers ==\n\n  {SPEC}\n  θ_ij = a_j·x_i + b_j, \
         loss ½‖z − P*‖², Adam, {STEPS} steps of {BATCH} sequences\n  loss {:.4} → {:.4}; held \
         out ({HELD_OUT} sequences, exact assignment): {:.1}% of positions correct, {:.1}% fully \
         sorted\n",
        t.first_loss,
        t.last_loss,
        100.0 * t.positions,
        100.0 * t.sorted
    );
}

/// `rows` sequences of `N` numbers in (0, 1), drawn from `(seed, stream)`.
fn numbers(rows: usize, seed: u64, stream: u32) -> Result<ArrayD<f64>, CliError> {
    let r = random(&[rows, N], seed, stream, 1.0).map_err(CliError::Request)?;
    Ok(r.mapv(|v| 0.5 * (v + 1.0)))
}

/// `θ[b, i, j] = a_j·x[b, i] + b_j`, with `params = (a, b)`.
fn scores(params: &[f64], x: &ArrayD<f64>) -> ArrayD<f64> {
    let (a, b) = params.split_at(N);
    let rows = x.len_of(Axis(0));
    Array3::from_shape_fn((rows, N, N), |(r, i, j)| a[j] * x[[r, i]] + b[j]).into_dyn()
}

/// `∂L/∂(a, b)` from `∂L/∂θ`: `Σ_{b,i} g_bij x_bi` and `Σ_{b,i} g_bij`.
fn parameter_gradient(grad_theta: &ArrayD<f64>, x: &ArrayD<f64>) -> Vec<f64> {
    let g = grad_theta
        .view()
        .into_dimensionality::<Ix3>()
        .expect("[B, N, N]");
    let x = x.view().into_dimensionality::<Ix2>().expect("[B, N]");
    let mut grad = vec![0.0; 2 * N];
    for ((r, i, j), &gij) in g.indexed_iter() {
        grad[j] += gij * x[[r, i]];
        grad[N + j] += gij;
    }
    grad
}

/// `P*[b, i, j] = 1` when `x[b, i]` is the `j`-th smallest of its row (ties by index).
fn sorting_permutations(x: &ArrayD<f64>) -> ArrayD<f64> {
    let rows = x.len_of(Axis(0));
    let mut p = Array3::zeros((rows, N, N));
    for r in 0..rows {
        let mut order: Vec<usize> = (0..N).collect();
        order.sort_by(|&i, &k| x[[r, i]].total_cmp(&x[[r, k]]));
        for (j, &i) in order.iter().enumerate() {
            p[[r, i, j]] = 1.0;
        }
    }
    p.into_dyn()
}

/// Fractions of correct positions and of fully sorted sequences, exact assignment, no noise.
fn held_out_accuracy(layer: &Layer, params: &[f64], seed: u64) -> Result<(f64, f64), CliError> {
    let x = numbers(HELD_OUT, seed ^ 0x5EED, u32::MAX / 2)?;
    let opts = Options::default().noise(Noise::None).mode(Mode::Hard);
    let z = layer
        .try_forward(scores(params, &x).view(), &opts)
        .map_err(request)?
        .z;
    let target = sorting_permutations(&x);
    let (mut right, mut sorted) = (0usize, 0usize);
    for (zr, tr) in z.outer_iter().zip(target.outer_iter()) {
        let row_right = zr
            .outer_iter()
            .zip(tr.outer_iter())
            .filter(|(a, b)| a == b)
            .count();
        right += row_right;
        sorted += usize::from(row_right == N);
    }
    Ok((
        right as f64 / (HELD_OUT * N) as f64,
        sorted as f64 / HELD_OUT as f64,
    ))
}

fn request(e: sst::RequestError) -> CliError {
    CliError::Request(e.to_string())
}

/// Adam (Kingma & Ba 2015) with the usual `β = (0.9, 0.999)`, `ε = 1e-8`.
struct Adam {
    values: Vec<f64>,
    lr: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    fn new(len: usize, lr: f64) -> Self {
        Adam {
            values: vec![0.0; len],
            lr,
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    /// One step against `grad`.
    fn step(&mut self, grad: &[f64]) {
        self.t += 1;
        let (b1, b2) = (0.9f64, 0.999f64);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (((p, m), v), &g) in self
            .values
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .zip(grad)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}
