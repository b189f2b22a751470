//! `subset(n, k)` and `correlated_subset(n, k)`: the hard solver and every soft solver for
//! n = 10³, 10⁴, 10⁵ and k = 10, n/10 (the O(n·min(k, n − k)) exponential-family DPs up to
//! n·k = 10⁷), one row, f64, `w = θ` (noise none), T = 1; forward, and forward + backward at
//! n = 10⁴. `bench/peers/subset.py` times the same work in NumPy and JAX.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::ArrayD;
use sst::{Mode, Noise, Options};

/// θ_i in [−5, 5), a fixed hash of i (the peers use the same formula).
fn theta(len: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(vec![len], |i| {
        ((i[0] as u64 * 2_654_435_761) % 100_003) as f64 / 10_000.3 - 5.0
    })
}

fn layer(support: &str, regularizer: &str) -> sst::Layer {
    let spec = format!("layer l: {support} {{ regularizer: {regularizer}; noise: none }}");
    sst::compile(&spec)
        .expect("the bench spec compiles")
        .layer("l")
        .clone()
}

const SOFT: [&str; 4] = ["binary_entropy", "entropy", "euclidean", "expfamily"];

fn sizes() -> Vec<(usize, usize)> {
    [1_000, 10_000, 100_000]
        .into_iter()
        .flat_map(|n| [(n, 10), (n, n / 10)])
        .collect()
}

fn bench_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("subset_forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let soft = Options::default().noise(Noise::None).mode(Mode::Soft);
    let hard = soft.mode(Mode::Hard);
    for (n, k) in sizes() {
        let id = format!("n={n}/k={k}");
        let th = theta(n);
        let l = layer(&format!("subset({n}, {k})"), "binary_entropy");
        group.bench_function(BenchmarkId::new("hard_top_k", &id), |b| {
            b.iter(|| l.forward(th.view(), &hard))
        });
        // The kernel alone, without the layer's request checks and array building.
        let row = th.as_slice().expect("standard layout");
        let mut z = vec![0.0; n];
        group.bench_function(BenchmarkId::new("kernel_top_k", &id), |b| {
            b.iter(|| sst::kernels::top_k::top_k(row, k, &mut z))
        });
        for reg in SOFT {
            if reg == "expfamily" && n * k > 10_000_000 {
                continue;
            }
            let l = layer(&format!("subset({n}, {k})"), reg);
            group.bench_function(BenchmarkId::new(reg, &id), |b| {
                b.iter(|| l.forward(th.view(), &soft))
            });
        }
        if n * k <= 10_000_000 {
            let th = theta(2 * n - 1);
            let l = layer(&format!("correlated_subset({n}, {k})"), "expfamily");
            group.bench_function(BenchmarkId::new("corr_hard_viterbi", &id), |b| {
                b.iter(|| l.forward(th.view(), &hard))
            });
            group.bench_function(BenchmarkId::new("corr_expfamily", &id), |b| {
                b.iter(|| l.forward(th.view(), &soft))
            });
        }
    }
    group.finish();
}

fn bench_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("subset_fwd_bwd");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let soft = Options::default().noise(Noise::None).mode(Mode::Soft);
    let n = 10_000;
    for k in [10, 1_000] {
        let id = format!("n={n}/k={k}");
        let th = theta(n);
        let cot = th.mapv(|x| 0.1 * x);
        for reg in SOFT {
            let l = layer(&format!("subset({n}, {k})"), reg);
            group.bench_function(BenchmarkId::new(reg, &id), |b| {
                b.iter(|| l.backward(&l.forward(th.view(), &soft), cot.view()))
            });
        }
        let th = theta(2 * n - 1);
        let cot = th.mapv(|x| 0.1 * x);
        let l = layer(&format!("correlated_subset({n}, {k})"), "expfamily");
        group.bench_function(BenchmarkId::new("corr_expfamily", &id), |b| {
            b.iter(|| l.backward(&l.forward(th.view(), &soft), cot.view()))
        });
    }
    group.finish();
}

criterion_group!(subset, bench_forward, bench_backward);
criterion_main!(subset);
