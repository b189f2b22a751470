//! `sst demo`: compiles the bundled presets and example specs and shows, for every layer, its
//! plan and a hard and a soft sample of one fixed `θ`; then a model learns to sort through a
//! Gumbel-Sinkhorn layer (`sorting.rs`), with a progress bar on a terminal.

use std::fmt::Write;

use sst::{Mode, Module, Options};

use super::check::plan_table;
use super::repl::commands::random;
use super::repl::show;
use super::sorting;
use super::CliError;

/// The example specs, embedded so that the demo runs from any directory.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/quickstart.sst",
        include_str!("../../examples/quickstart.sst"),
    ),
    (
        "examples/structures.sst",
        include_str!("../../examples/structures.sst"),
    ),
];

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
    let bar = indicatif::ProgressBar::new(sorting::STEPS as u64).with_style(
        indicatif::ProgressStyle::with_template("learning to sort {bar:30} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    let trained = sorting::train(sorting::STEPS, 7, |_, loss| {
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    sorting::report(&mut out, &trained);
    Ok(out)
}

fn show(out: &mut String, name: &str, text: &str) -> Result<(), CliError> {
    let module: Module =
        sst::compile_named(name, text).map_err(|e| CliError::Spec(e.to_string()))?;
    for layer in module.layers() {
        out.push_str(&plan_table(layer.plan()));
        let shape = layer.plan().support.shape();
        let theta = random(&shape, 2026, 0, 2.0).map_err(CliError::Request)?;
        let opts = Options::default().seed(1);
        let hard = layer
            .try_forward(theta.view(), &opts.mode(Mode::Hard))
            .map_err(|e| CliError::Request(e.to_string()))?;
        let soft = layer
            .try_forward(theta.view(), &opts.mode(Mode::Soft))
            .map_err(|e| CliError::Request(e.to_string()))?;
        let _ = writeln!(out, "  T = {}", soft.temperature);
        let pairs = show::pairs(&hard.z, show::Pairs::for_program(&layer.plan().program));
        for (label, values) in [
            ("theta", &theta),
            ("w", &hard.w),
            ("hard z", &hard.z),
            ("soft z", &soft.z),
        ] {
            let text = show::array(values, label == "soft z");
            if values.ndim() <= 1 {
                let line = text.trim_end();
                let _ = writeln!(
                    out,
                    "  {label:>8} │ {}",
                    line.strip_prefix("  ").unwrap_or(line)
                );
            } else {
                let _ = writeln!(out, "  {label:>8} │");
                for line in text.lines() {
                    let _ = writeln!(out, "           │  {line}");
                }
            }
        }
        if let Some(pairs) = pairs {
            let _ = writeln!(out, "  {:>8} │ {}", "pairs", pairs.trim());
        }
        out.push('\n');
    }
    Ok(())
}
