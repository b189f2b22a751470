//! Maximum trees (hard) and matrix-tree marginals with their exact backward (soft) for
//! `spanning_tree` and `arborescence`, n = 16…256, batch 16, f64 — the workloads that
//! `bench/peers/trees.py` times in JAX, NumPy and NetworkX.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::ArrayD;
use sst::{Mode, Options};

const BATCH: usize = 16;
const SIZES: [usize; 4] = [16, 64, 128, 256];

/// The deterministic θ the peer script rebuilds: `((b·31 + i·17 + j·7) mod 97)/25 − 2`.
fn theta(n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(vec![BATCH, n, n], |i| {
        ((i[0] * 31 + i[1] * 17 + i[2] * 7) % 97) as f64 / 25.0 - 2.0
    })
}

fn bench_support(c: &mut Criterion, support: &str) {
    let mut group = c.benchmark_group(format!("{support}_b{BATCH}_f64"));
    group.sample_size(10);
    for n in SIZES {
        let args = if support == "arborescence" {
            format!("{n}, root = 0")
        } else {
            n.to_string()
        };
        let module = sst::compile(&format!(
            "layer l: {support}({args}) {{ temperature: 0.5 }}"
        ))
        .expect("the bench spec compiles");
        let layer = module.layer("l");
        let theta = theta(n);
        let cotangent = theta.mapv(|x| x * 0.5);
        group.bench_function(BenchmarkId::new("hard", n), |b| {
            b.iter(|| layer.forward(theta.view(), &Options::default().seed(1).mode(Mode::Hard)))
        });
        group.bench_function(BenchmarkId::new("soft_fwd_bwd", n), |b| {
            b.iter(|| {
                let fwd = layer.forward(theta.view(), &Options::default().seed(1));
                layer.backward(&fwd, cotangent.view())
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_support(c, "spanning_tree");
    bench_support(c, "arborescence");
}

criterion_group!(trees, benches);
criterion_main!(trees);
