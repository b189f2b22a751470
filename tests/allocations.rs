//! The reference backend allocates per call, not per row: a batch of 1024 rows makes as many
//! allocator calls as a batch of 8, forward and backward, for the streaming kernels (softmax,
//! sparsemax, sigmoid, clipped linear, the k-subset threshold solvers, top-k, argmax) and the
//! count scores; and so does a whole `Layer` call on one thread.
//!
//! A binary of its own: the global allocator counts every `alloc` and `realloc`, and the one
//! test below runs alone, so nothing else allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayD, IxDyn};
use sst::backend::reference::Reference;
use sst::backend::{Backend, ForwardOut, Report, Rows, Saved};
use sst::{Mode, Options};

/// The system allocator, counting the calls that take memory.
struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator under the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocator calls `f` makes (the fewest over three runs, so that a stray allocation of the
/// test harness cannot make two equal counts differ).
fn calls(mut f: impl FnMut()) -> usize {
    (0..3)
        .map(|_| {
            let before = CALLS.load(Ordering::Relaxed);
            f();
            CALLS.load(Ordering::Relaxed) - before
        })
        .min()
        .expect("three runs")
}

/// `θ` with `rows` batch rows of the layer's shape, values in `[−2, 2]`.
fn theta(rows: usize, shape: &[usize]) -> ArrayD<f64> {
    let dims: Vec<usize> = [rows].iter().chain(shape).copied().collect();
    let len: usize = dims.iter().product();
    let values = (0..len).map(|i| ((i * 7919) % 1000) as f64 / 250.0 - 2.0);
    ArrayD::from_shape_vec(IxDyn(&dims), values.collect()).expect("sizes agree")
}

/// Allocator calls of one backend forward and one backward over `rows` rows (its outputs
/// allocated outside the count), and of one layer forward + backward on one thread.
fn count(spec: &str, mode: Mode, rows: usize) -> (usize, usize, usize) {
    let module = sst::compile(spec).expect("the spec compiles");
    let layer = &module.layers()[0];
    let program = &layer.plan().program;
    let theta = theta(rows, &layer.plan().support.shape());
    let opts = Options::default()
        .seed(3)
        .mode(mode)
        .temperature(0.5)
        .threads(1);
    let fwd = layer.try_forward(theta.view(), &opts).expect("forward");
    // Every row here has the same score length (count scores: K + 1 outcomes).
    let lens = fwd.w.len() / rows;
    let mapped = lens != program.row_len;
    let score_lens = vec![lens; rows];
    let call = Rows {
        program,
        theta: theta.as_slice().expect("standard layout"),
        batch: rows,
        range: 0..rows,
        mode,
        temperature: 0.5,
        noise: fwd.noise,
        seed: 3,
        score_lens: mapped.then_some(score_lens.as_slice()),
        stride: lens,
    };
    let (mut w, mut z) = (vec![0.0; rows * lens], vec![0.0; rows * program.row_len]);
    let mut solution = vec![0.0; if mapped { rows * lens } else { 0 }];
    let mut kept = vec![0.0; rows * sst::backend::kept_width(program, mode)];
    let mut report = Report::default();
    let forward = calls(|| {
        let out = ForwardOut {
            w: &mut w,
            z: &mut z,
            solution: &mut solution,
            kept: &mut kept,
            report: &mut report,
        };
        Backend::<f64>::forward(&Reference, &call, out).expect("forward");
    });
    let cotangent = theta.mapv(|t| 0.5 - t / 4.0);
    let saved = Saved {
        w: &w,
        solution: if mapped { &solution } else { &z },
        kept: &kept,
        cotangent: cotangent.as_slice().expect("standard layout"),
        per_sample: false,
    };
    let mut grad = vec![0.0; rows * program.row_len];
    let backward = calls(|| {
        Backend::<f64>::backward_into(&Reference, &call, saved, &mut grad).expect("backward");
    });
    let whole = calls(|| {
        let fwd = layer.try_forward(theta.view(), &opts).expect("forward");
        layer
            .try_backward(&fwd, cotangent.view())
            .expect("backward");
    });
    (forward, backward, whole)
}

#[test]
fn a_batch_of_1024_rows_allocates_as_often_as_a_batch_of_8() {
    let specs = [
        ("layer l: categorical(50)", Mode::Soft),
        ("layer l: categorical(50)", Mode::Hard),
        (
            "layer l: categorical(50) { regularizer: euclidean }",
            Mode::Soft,
        ),
        ("layer l: bernoulli(20)", Mode::Soft),
        (
            "layer l: bernoulli(20) { regularizer: euclidean }",
            Mode::Soft,
        ),
        ("layer l: subset(30, 5)", Mode::Soft),
        (
            "layer l: subset(30, 5) { regularizer: entropy }",
            Mode::Soft,
        ),
        ("layer l: subset(30, 5)", Mode::Hard),
        ("layer l: poisson(max = 12)", Mode::Soft),
        (
            "layer l: categorical(50) { regularizer: entropy; estimator: gumbel_rao(draws = 4) }",
            Mode::Hard,
        ),
    ];
    for (spec, mode) in specs {
        let small = count(spec, mode, 8);
        let large = count(spec, mode, 1024);
        assert_eq!(
            small, large,
            "{spec} {mode:?}: allocator calls (forward, backward, layer) for 8 rows {small:?}, \
             for 1024 rows {large:?}"
        );
        // The count can fail: a kernel that allocated per row would give 1024 − 8 more calls.
        assert!(large.0 < 100 && large.1 < 100, "{spec}: {large:?}");
    }
}
