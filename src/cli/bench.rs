//! `sst bench [--json] [--threads N] [--backend B]`: times the workloads that
//! `bench/peers/run.sh` also times in the peer libraries, so that the two can be compared side
//! by side in one run, on the same number of threads. Every call draws fresh noise (a new
//! seed), each call reuses the memory of the last (as a training loop does with
//! `Layer::try_forward_reusing`), and the time spent compiling JIT kernels is reported as a
//! workload of its own.

use std::cell::RefCell;
use std::time::Instant;

use ndarray::ArrayD;
use serde_json::json;
use sst::backend::Choice;
use sst::{Mode, Noise, Options, Real};

use super::CliError;

/// One timed workload: its name (shared with the peer script) and median milliseconds.
struct Timing {
    name: String,
    median_ms: f64,
}

/// Repetitions per workload unless asked otherwise; the median is reported.
pub const REPEATS: u16 = 15;

/// How every workload runs, and which run.
#[derive(Clone, Copy)]
struct Setup<'a> {
    repeats: usize,
    threads: usize,
    backend: Choice,
    /// Only the workloads whose name (with its precision) contains this.
    only: &'a str,
}

pub fn run(
    as_json: bool,
    repeats: usize,
    threads: usize,
    backend: Choice,
    only: &str,
) -> Result<String, CliError> {
    if backend == Choice::Cuda {
        sst::backend::cuda_device()
            .map_err(|why| CliError::Usage(format!("--backend cuda: {why}")))?;
    }
    let setup = Setup {
        repeats,
        threads,
        backend,
        only,
    };
    let mut timings = Vec::new();
    let started = Instant::now();
    for spec in WORKLOADS {
        sst::compile(spec.spec).map_err(|e| CliError::Spec(e.to_string()))?;
    }
    timings.push(Timing {
        name: "compile_specs".to_string(),
        median_ms: started.elapsed().as_secs_f64() * 1e3 / WORKLOADS.len() as f64,
    });
    timings.extend(workloads::<f32>(setup)?);
    timings.extend(workloads::<f64>(setup)?);
    timings.retain(|t| t.name.contains(only) || t.name == "compile_specs");
    timings.push(Timing {
        name: "jit_compile_total".to_string(),
        median_ms: sst::backend::compile_seconds() * 1e3,
    });
    if as_json {
        let rows: Vec<_> = timings
            .iter()
            .map(|t| json!({"name": t.name, "median_ms": t.median_ms}))
            .collect();
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).expect("plain JSON")
        ));
    }
    let width = timings.iter().map(|t| t.name.len()).max().unwrap_or(0);
    Ok(timings
        .iter()
        .map(|t| format!("{:<width$}  {:>9.3} ms\n", t.name, t.median_ms))
        .collect())
}

/// Median wall time of `f(seed)` over `repeats` runs after one warm-up, in milliseconds, with a
/// fresh seed for every call.
fn median_ms<T>(repeats: usize, mut f: impl FnMut(u64) -> T) -> f64 {
    std::hint::black_box(f(0));
    let mut times: Vec<f64> = (1..=repeats as u64)
        .map(|seed| {
            let start = Instant::now();
            std::hint::black_box(f(seed));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

/// A workload: a layer on a batch of `θ` rows, timed forward + backward (soft), and optionally
/// forward alone and hard.
struct Workload {
    /// The soft forward + backward's name (`None`: not timed).
    fwd_bwd: Option<&'static str>,
    spec: &'static str,
    /// Batch rows and the support's shape.
    batch: usize,
    shape: &'static [usize],
    /// Also time the soft forward alone and the hard forward under these names.
    forward_only: Option<&'static str>,
    hard: Option<&'static str>,
    /// Gumbel noise (a fresh seed per call), or none: the kernel alone.
    noise: bool,
    /// Timed in f64 only (kernels that compute in f64 whatever the request's precision).
    f64_only: bool,
    /// `θ` uniform in `[0, 1)` ([`uniform_theta`]) instead of [`theta`]'s pattern.
    uniform: bool,
}

/// The workloads `bench/peers/peers.py` times too (the names are shared).
const WORKLOADS: [Workload; 12] = [
    Workload {
        fwd_bwd: Some("gumbel_softmax_fwd_bwd_1024x1000"),
        spec: "layer l: categorical(1000) { temperature: 0.5 }",
        batch: 1024,
        shape: &[1000],
        forward_only: Some("gumbel_softmax_fwd_1024x1000"),
        hard: Some("gumbel_max_hard_1024x1000"),
        noise: true,
        f64_only: false,
        uniform: false,
    },
    Workload {
        fwd_bwd: Some("gumbel_sparsemax_fwd_bwd_1024x1000"),
        spec: "layer l: categorical(1000) { regularizer: euclidean; temperature: 0.5 }",
        batch: 1024,
        shape: &[1000],
        forward_only: None,
        hard: None,
        noise: true,
        f64_only: false,
        uniform: false,
    },
    Workload {
        fwd_bwd: Some("binary_concrete_fwd_bwd_4096x1024"),
        spec: "layer l: binary_concrete(1024) { temperature: 0.5 }",
        batch: 4096,
        shape: &[1024],
        forward_only: None,
        hard: None,
        noise: true,
        f64_only: false,
        uniform: false,
    },
    Workload {
        fwd_bwd: Some("topk_soft_fwd_bwd_256x4096_k64"),
        spec: "layer l: subset(4096, 64) { regularizer: binary_entropy; temperature: 0.5 }",
        batch: 256,
        shape: &[4096],
        forward_only: None,
        hard: None,
        noise: true,
        f64_only: false,
        uniform: false,
    },
    // Gumbel-Sinkhorn under both rules: the unrolled one replays the 50 iterations, the
    // implicit one solves the fixed point's linear system (its peer: OTT-JAX's implicit
    // differentiation).
    gumbel_sinkhorn(
        "sinkhorn_fwd_bwd_64x50x50_it50",
        "layer l: permutation(50) { solver: sinkhorn(iters = 50, tol = 1e-300); \
         backward: unrolled; temperature: 0.5 }",
    ),
    gumbel_sinkhorn(
        "sinkhorn_implicit_fwd_bwd_64x50x50_it50",
        "layer l: permutation(50) { solver: sinkhorn(iters = 50, tol = 1e-300); \
         backward: implicit; temperature: 0.5 }",
    ),
    // The exponential-family k-subset dynamic programs (no peer offers them): one row, 10⁶
    // cells, f64 (they run in f64 whatever the precision).
    subset_dp(
        "esp_topk_fwd_bwd_1x10000_k100",
        "layer l: subset(10000, 100) { regularizer: expfamily; temperature: 0.5 }",
        &[10000],
    ),
    subset_dp(
        "chain_topk_fwd_bwd_1x10000_k100",
        "layer l: correlated_subset(10000, 100) { regularizer: expfamily; temperature: 0.5 }",
        &[19999],
    ),
    // The exact assignment through the layer, no noise (SciPy's linear_sum_assignment is the
    // peer), on distinct weights.
    Workload {
        fwd_bwd: None,
        spec: "layer l: permutation(1024) {}",
        batch: 1,
        shape: &[1024, 1024],
        forward_only: None,
        hard: Some("assignment_hard_1x1024"),
        noise: false,
        f64_only: true,
        uniform: true,
    },
    arborescence_marginals(
        "layer l: arborescence(64) { temperature: 0.5 }",
        &[64, 64],
        [
            "arborescence_marginals_fwd_bwd_16x64",
            "arborescence_marginals_fwd_16x64",
        ],
    ),
    arborescence_marginals(
        "layer l: arborescence(128) { temperature: 0.5 }",
        &[128, 128],
        [
            "arborescence_marginals_fwd_bwd_16x128",
            "arborescence_marginals_fwd_16x128",
        ],
    ),
    arborescence_marginals(
        "layer l: arborescence(256) { temperature: 0.5 }",
        &[256, 256],
        [
            "arborescence_marginals_fwd_bwd_16x256",
            "arborescence_marginals_fwd_16x256",
        ],
    ),
];

/// Gumbel-Sinkhorn on 64 matrices of 50 × 50, forward + backward, named `name`.
const fn gumbel_sinkhorn(name: &'static str, spec: &'static str) -> Workload {
    Workload {
        fwd_bwd: Some(name),
        spec,
        batch: 64,
        shape: &[50, 50],
        forward_only: None,
        hard: None,
        noise: true,
        f64_only: false,
        uniform: false,
    }
}

/// A k-subset dynamic program's forward + backward on one row of `shape`, with Gumbel noise, in
/// f64 only.
const fn subset_dp(name: &'static str, spec: &'static str, shape: &'static [usize]) -> Workload {
    Workload {
        fwd_bwd: Some(name),
        spec,
        batch: 1,
        shape,
        forward_only: None,
        hard: None,
        noise: true,
        f64_only: true,
        uniform: false,
    }
}

/// The matrix-tree marginals of 16 rooted digraphs of `shape` and their backward pass, named
/// `[forward + backward, forward]`: no noise (the kernel alone), f64 only.
const fn arborescence_marginals(
    spec: &'static str,
    shape: &'static [usize],
    [name, forward_only]: [&'static str; 2],
) -> Workload {
    Workload {
        fwd_bwd: Some(name),
        spec,
        batch: 16,
        shape,
        forward_only: Some(forward_only),
        hard: None,
        noise: false,
        f64_only: true,
        uniform: false,
    }
}

/// `θ[i, j] = ((31 i + 17 j) mod 97)/25 − 2` over batch row `i` and flat element `j`; the
/// cotangent is `θ/2`.
fn theta<F: Real>(batch: usize, shape: &[usize]) -> ArrayD<F> {
    let m: usize = shape.iter().product();
    let flat = ArrayD::from_shape_fn(vec![batch, m], |i| {
        F::of(((i[0] * 31 + i[1] * 17) % 97) as f64 / 25.0 - 2.0)
    });
    flat.into_shape_with_order([vec![batch], shape.to_vec()].concat())
        .expect("same size")
}

/// `θ` uniform in `[0, 1)`: SplitMix64 of the flat index `k`, its top 53 bits over `2⁵³`
/// (`bench/peers/peers.py` builds the same).
fn uniform_theta<F: Real>(batch: usize, shape: &[usize]) -> ArrayD<F> {
    let len = batch * shape.iter().product::<usize>();
    let splitmix = |k: u64| {
        let z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let values = (0..len as u64).map(|k| F::of((splitmix(k) >> 11) as f64 / (1u64 << 53) as f64));
    ArrayD::from_shape_vec([vec![batch], shape.to_vec()].concat(), values.collect())
        .expect("sizes agree")
}

fn workloads<F: Real>(setup: Setup) -> Result<Vec<Timing>, CliError> {
    let request = |e: sst::RequestError| CliError::Request(e.to_string());
    let mut out = Vec::new();
    // The time to stream the Gumbel-softmax workload's bytes once: read θ, write a copy.
    let theta1000 = theta::<F>(1024, &[1000]);
    let wanted = |name: &str| format!("{name}_{}", F::NAME).contains(setup.only);
    if wanted("copy_bandwidth_1024x1000") {
        out.push(Timing {
            name: format!("copy_bandwidth_1024x1000_{}", F::NAME),
            median_ms: median_ms(setup.repeats, |_| theta1000.to_owned()),
        });
    }
    let chosen = WORKLOADS.iter().filter(|w| {
        let names = [w.fwd_bwd, w.forward_only, w.hard];
        (F::NAME == "f64" || !w.f64_only) && names.into_iter().flatten().any(wanted)
    });
    for w in chosen {
        let module = sst::compile(w.spec).map_err(|e| CliError::Spec(e.to_string()))?;
        let layer = module.layer("l");
        let theta = match w.uniform {
            true => uniform_theta::<F>(w.batch, w.shape),
            false => theta::<F>(w.batch, w.shape),
        };
        let cotangent = theta.mapv(|x| x * F::of(0.5));
        let opts = |seed| {
            let noise = if w.noise {
                Noise::Seed(seed)
            } else {
                Noise::None
            };
            Options::default()
                .noise(noise)
                .threads(setup.threads)
                .backend(setup.backend)
        };
        // As a training loop runs a layer: each call reuses the memory of the last one's
        // forward pass and gradient (`try_forward_reusing`, `try_backward_reusing`).
        let spare = RefCell::new(None);
        let step = |seed, mode, backward: bool| -> Result<(), sst::RequestError> {
            let opts = opts(seed).mode(mode);
            let (fwd, grad) = match spare.take() {
                Some((fwd, grad)) => (layer.try_forward_reusing(theta.view(), &opts, fwd)?, grad),
                None => (
                    layer.try_forward(theta.view(), &opts)?,
                    ArrayD::zeros(vec![0]),
                ),
            };
            let grad = match backward {
                true => layer.try_backward_reusing(&fwd, cotangent.view(), grad)?,
                false => grad,
            };
            spare.replace(Some((fwd, grad)));
            Ok(())
        };
        let fwd_bwd = |seed| step(seed, Mode::Soft, true);
        let first = w.fwd_bwd.or(w.hard).expect("a workload times something");
        let probe = match w.fwd_bwd {
            Some(_) => fwd_bwd(0),
            None => step(0, Mode::Hard, false),
        };
        match probe {
            // A forced backend that does not run this workload: say so and go on.
            Err(e) if e.field == "backend" => {
                eprintln!("sst bench: {first} skipped: {}", e.message);
                continue;
            }
            other => other.map_err(request)?,
        }
        if let Some(name) = w.fwd_bwd {
            out.push(Timing {
                name: format!("{name}_{}", F::NAME),
                median_ms: median_ms(setup.repeats, fwd_bwd),
            });
        }
        if let Some(name) = w.forward_only {
            out.push(Timing {
                name: format!("{name}_{}", F::NAME),
                median_ms: median_ms(setup.repeats, |seed| step(seed, Mode::Soft, false)),
            });
        }
        if let Some(name) = w.hard {
            out.push(Timing {
                name: format!("{name}_{}", F::NAME),
                median_ms: median_ms(setup.repeats, |seed| step(seed, Mode::Hard, false)),
            });
        }
    }
    Ok(out)
}
