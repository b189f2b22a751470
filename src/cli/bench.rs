//! `sst bench [--json]`: times the workloads that `bench/peers/run.sh` also times in the peer
//! libraries, so that the two can be compared side by side in one run.

use std::time::Instant;

use ndarray::ArrayD;
use serde_json::json;
use sst::{Mode, Options, Real};

use super::CliError;

/// One timed workload: its name (shared with the peer script) and median milliseconds.
struct Timing {
    name: String,
    median_ms: f64,
}

/// Repetitions per workload unless asked otherwise; the median is reported.
pub const REPEATS: u16 = 15;

pub fn run(as_json: bool, repeats: usize) -> Result<String, CliError> {
    let mut timings = Vec::new();
    timings.extend(categorical::<f32>(repeats)?);
    timings.extend(categorical::<f64>(repeats)?);
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

/// Median wall time of `f` over `repeats` runs after one warm-up, in milliseconds.
fn median_ms<T>(repeats: usize, mut f: impl FnMut() -> T) -> f64 {
    std::hint::black_box(f());
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

/// Gumbel-softmax / sparsemax forward + backward and hard sampling on a (1024, 1000) batch.
fn categorical<F: Real>(repeats: usize) -> Result<Vec<Timing>, CliError> {
    let (batch, n) = (1024, 1000);
    let theta = ArrayD::from_shape_fn(vec![batch, n], |i| {
        F::of(((i[0] * 31 + i[1] * 17) % 97) as f64 / 25.0 - 2.0)
    });
    let cotangent = theta.mapv(|x| x * F::of(0.5));
    let mut out = Vec::new();
    for (regularizer, label) in [
        ("entropy", "gumbel_softmax"),
        ("euclidean", "gumbel_sparsemax"),
    ] {
        let spec =
            format!("layer l: categorical({n}) {{ regularizer: {regularizer}; temperature: 0.5 }}");
        let module = sst::compile(&spec).map_err(|e| CliError::Spec(e.to_string()))?;
        let layer = module.layer("l");
        let opts = Options::default().seed(1);
        let run = || -> Result<_, sst::RequestError> {
            let fwd = layer.try_forward(theta.view(), &opts)?;
            layer.try_backward(&fwd, cotangent.view())
        };
        run().map_err(|e| CliError::Request(e.to_string()))?;
        out.push(Timing {
            name: format!("{label}_fwd_bwd_1024x1000_{}", F::NAME),
            median_ms: median_ms(repeats, run),
        });
        if regularizer == "entropy" {
            let hard = Options::default().seed(1).mode(Mode::Hard);
            out.push(Timing {
                name: format!("gumbel_max_hard_1024x1000_{}", F::NAME),
                median_ms: median_ms(repeats, || layer.try_forward(theta.view(), &hard)),
            });
        }
    }
    Ok(out)
}
