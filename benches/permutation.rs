//! Permutations: the exact assignment (n = 64, 256, 1024; SciPy's `linear_sum_assignment` is
//! timed on the same kind of matrices by `bench/peers/permutation.py`), Gumbel-Sinkhorn forward +
//! backward (batch 32, n = 64 and 256, 20 iterations, both backward rules), and the memory of
//! the `implicit` and `unrolled` rules as the iterations grow, measured by a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{ArrayD, IxDyn};
use sst::kernels::assignment::max_weight_assignment;
use sst::{Mode, Options};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// SplitMix64 uniforms in [0, 1).
fn uniforms(len: usize, mut state: u64) -> Vec<f64> {
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn assignment(c: &mut Criterion) {
    let mut group = c.benchmark_group("assignment_uniform_f64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for n in [64, 256, 1024] {
        let w = uniforms(n * n, n as u64);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| max_weight_assignment(&w, n))
        });
    }
    group.finish();
}

fn sinkhorn_layer(n: usize, iters: usize, rule: &str) -> sst::Layer {
    let spec = format!(
        "layer l: permutation({n}) {{ solver: sinkhorn(iters = {iters}, tol = 1e-300); backward: {rule} }}"
    );
    sst::compile(&spec)
        .expect("the bench spec compiles")
        .layer("l")
        .clone()
}

fn sinkhorn(c: &mut Criterion) {
    let batch = 32;
    let mut group = c.benchmark_group("gumbel_sinkhorn_fwd_bwd_b32_20it_f64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for n in [64, 256] {
        let theta = ArrayD::from_shape_vec(IxDyn(&[batch, n, n]), uniforms(batch * n * n, 7))
            .expect("sizes agree");
        let cotangent = theta.mapv(|x| x - 0.5);
        for rule in ["implicit", "unrolled"] {
            let layer = sinkhorn_layer(n, 20, rule);
            let opts = Options::default().seed(1).mode(Mode::Soft);
            group.bench_function(BenchmarkId::new(rule, n), |b| {
                b.iter(|| {
                    let fwd = layer.forward(theta.view(), &opts);
                    layer.backward(&fwd, cotangent.view())
                })
            });
        }
    }
    group.finish();
}

/// Peak bytes allocated during one backward pass (one row, n = 64) as the iterations grow; the
/// temperature is low enough (0.02) that Sinkhorn does not stop early.
fn memory(_: &mut Criterion) {
    let n = 64;
    let theta = ArrayD::from_shape_vec(IxDyn(&[n, n]), uniforms(n * n, 3)).expect("sizes agree");
    let cotangent = theta.mapv(|x| x - 0.5);
    let opts = Options::default()
        .seed(1)
        .mode(Mode::Soft)
        .temperature(0.02);
    println!("backward peak memory, permutation({n}), one row (bytes above the forward's state):");
    for iters in [10, 100, 1000, 10000] {
        let mut line = format!("  iters = {iters:>5}:");
        for rule in ["implicit", "unrolled"] {
            let layer = sinkhorn_layer(n, iters, rule);
            let fwd = layer.forward(theta.view(), &opts);
            let base = IN_USE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let grad = layer.backward(&fwd, cotangent.view());
            let peak = PEAK.load(Ordering::Relaxed) - base;
            drop(grad);
            let used = fwd.report.values["sinkhorn_iterations"];
            line += &format!("  {rule} {peak:>9} B ({used} iterations)");
        }
        println!("{line}");
    }
}

criterion_group!(permutation, assignment, sinkhorn, memory);
criterion_main!(permutation);
