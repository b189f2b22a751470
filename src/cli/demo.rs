//! `sst demo`: compiles the bundled presets and example specs and shows, for every layer, its
//! plan and a hard and a soft sample of one fixed `θ`.

use std::fmt::Write;

use ndarray::ArrayD;
use sst::noise::{uniforms, NoiseKey};
use sst::{Mode, Module, Options};

use super::check::plan_table;
use super::CliError;

/// The example specs, embedded so that the demo runs from any directory.
const EXAMPLES: &[(&str, &str)] = &[(
    "examples/quickstart.sst",
    include_str!("../../examples/quickstart.sst"),
)];

/// Columns shown before a long row is elided.
const MAX_COLUMNS: usize = 10;

pub fn run() -> Result<String, CliError> {
    let mut out = String::from(
        "sst demo: every built-in preset and example layer, one fixed theta, seed 1\n\n",
    );
    let _ = writeln!(
        out,
        "== built-in presets ({}) ==\n",
        sst::stdlib::FILES
            .iter()
            .map(|f| f.0)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut presets = String::new();
    for preset in sst::stdlib::presets() {
        let entry = sst::support::entry(&preset.support.name).expect("stdlib presets are checked");
        let args = &entry.example[entry.name.len()..];
        let _ = writeln!(presets, "layer {0}_demo: {0}{args}", preset.name.name);
    }
    show(&mut out, "stdlib presets", &presets)?;
    for (name, text) in EXAMPLES {
        let _ = writeln!(out, "== {name} ==\n");
        show(&mut out, name, text)?;
    }
    Ok(out)
}

fn show(out: &mut String, name: &str, text: &str) -> Result<(), CliError> {
    let module: Module =
        sst::compile_named(name, text).map_err(|e| CliError::Spec(e.to_string()))?;
    for layer in module.layers() {
        out.push_str(&plan_table(layer.plan()));
        let shape = layer.plan().support.shape();
        let theta = demo_theta(&shape);
        let opts = Options::default().seed(1);
        let hard = layer
            .try_forward(theta.view(), &opts.mode(Mode::Hard))
            .map_err(|e| CliError::Request(e.to_string()))?;
        let soft = layer
            .try_forward(theta.view(), &opts.mode(Mode::Soft))
            .map_err(|e| CliError::Request(e.to_string()))?;
        let _ = writeln!(out, "  T = {}", soft.temperature);
        for (label, values) in [
            ("theta", &theta),
            ("w", &hard.w),
            ("hard z", &hard.z),
            ("soft z", &soft.z),
        ] {
            let _ = writeln!(out, "  {label:>8} │ {}", row(values));
        }
        out.push('\n');
    }
    Ok(())
}

/// A fixed `θ` with entries in [−2, 2], the same on every run.
fn demo_theta(shape: &[usize]) -> ArrayD<f64> {
    let key = NoiseKey {
        seed: 2026,
        sample: 0,
        batch: 0,
    };
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| 4.0 * uniforms::<f64>(key, i as u64)[0] - 2.0)
        .collect();
    ArrayD::from_shape_vec(shape.to_vec(), data).expect("sizes agree")
}

/// The flattened values in aligned columns, the middle elided beyond [`MAX_COLUMNS`].
fn row(values: &ArrayD<f64>) -> String {
    let cells: Vec<String> = values.iter().map(|x| format!("{x:>7.3}")).collect();
    if cells.len() <= MAX_COLUMNS {
        return cells.join(" ");
    }
    let half = MAX_COLUMNS / 2;
    format!(
        "{} {:>7} {}",
        cells[..half].join(" "),
        "…",
        cells[cells.len() - half..].join(" ")
    )
}
