//! Gumbel-softmax forward + backward on a batch of categorical rows — the workload of
//! PyTorch's `F.gumbel_softmax` (DESIGN.md §7 has the peers' figures on this machine kind).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::ArrayD;
use sst::{Mode, Options, Real};

fn spec(regularizer: &str) -> sst::Module {
    sst::compile(&format!(
        "layer l: categorical(1000) {{ regularizer: {regularizer}; temperature: 0.5 }}"
    ))
    .expect("the bench spec compiles")
}

fn bench_precision<F: Real>(c: &mut Criterion) {
    let (batch, n) = (1024, 1000);
    let theta = ArrayD::from_shape_fn(vec![batch, n], |i| {
        F::of(((i[0] * 31 + i[1] * 17) % 97) as f64 / 25.0 - 2.0)
    });
    let cotangent = theta.mapv(|x| x * F::of(0.5));
    let mut group = c.benchmark_group(format!("categorical_1024x1000_{}", F::NAME));
    group.throughput(Throughput::Elements((batch * n) as u64));
    group.sample_size(10);
    for regularizer in ["entropy", "euclidean"] {
        let module = spec(regularizer);
        let layer = module.layer("l");
        group.bench_function(BenchmarkId::new("soft_fwd_bwd", regularizer), |b| {
            b.iter(|| {
                let fwd = layer.forward(theta.view(), &Options::default().seed(1));
                layer.backward(&fwd, cotangent.view())
            })
        });
    }
    let module = spec("entropy");
    let layer = module.layer("l");
    group.bench_function("hard_fwd", |b| {
        b.iter(|| layer.forward(theta.view(), &Options::default().seed(1).mode(Mode::Hard)))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_precision::<f32>(c);
    bench_precision::<f64>(c);
}

criterion_group!(categorical, benches);
criterion_main!(categorical);
