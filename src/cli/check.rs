//! `sst check FILE [--json]`: each layer's plan and why each default was chosen.

use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use super::{load_showing, CliError};

pub fn run(file: &Path, as_json: bool, max_errors: usize) -> Result<String, CliError> {
    let module = load_showing(file, max_errors)?;
    if as_json {
        let layers: Vec<_> = module
            .layers()
            .iter()
            .map(|l| {
                let mut plan = l.plan().to_json(None);
                plan["program"] = l.plan().program_json();
                let (name, why) = l.backend_name::<f64>();
                plan["backend"] = json!({ "name": name, "why_not_jit": why });
                #[cfg(feature = "cuda")]
                {
                    plan["backend"]["cuda"] = cuda_json(l);
                }
                plan
            })
            .collect();
        let out = json!({ "file": file.display().to_string(), "layers": layers });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&out).expect("plain JSON")
        ));
    }
    let mut out = String::new();
    for layer in module.layers() {
        out.push_str(&plan_table(layer.plan()));
        out.push_str(&backend_line(layer));
        #[cfg(feature = "cuda")]
        out.push_str(&cuda_line(layer));
        out.push('\n');
    }
    Ok(out)
}

/// Which backend runs the layer and why (f64 and f32 are alike in this), with the time its f64
/// JIT kernels and its temperature schedule (where it depends on the step) took to compile in
/// this process (f32 kernels compile on first use).
fn backend_line(layer: &sst::Layer) -> String {
    let before = sst::backend::compile_seconds();
    let (_, why) = layer.backend_name::<f64>();
    if why.is_none() {
        layer.temperature_at(0.0, sst::BackendChoice::Auto);
    }
    let ms = (sst::backend::compile_seconds() - before) * 1e3;
    let schedule = match layer.plan().temperature.uses_step() {
        true => " and the temperature schedule",
        false => "",
    };
    match why {
        None => format!(
            "  {:<12} jit  # fused Cranelift kernels{schedule}, compiled in {ms:.1} ms\n",
            "backend"
        ),
        Some(why) => format!(
            "  {:<12} reference  # the jit does not apply: {why}\n",
            "backend"
        ),
    }
}

/// Which kernels `--backend cuda` runs on the device for this layer (f32 and f64 alike), and
/// the device or why there is none.
#[cfg(feature = "cuda")]
fn cuda_line(layer: &sst::Layer) -> String {
    let device = sst::backend::cuda_device().unwrap_or_else(|why| format!("no device: {why}"));
    match sst::backend::cuda::kernels::<f32>(&layer.plan().program) {
        Ok(kernels) => format!(
            "  {:<12} cuda  # with --backend cuda: {} fused kernels on the device ({}){}; {device}\n",
            "",
            kernels.len(),
            kernel_names(&kernels).join(", "),
            match hard_on_device(&kernels) {
                true => "",
                false => ", the hard pass on the host",
            }
        ),
        Err(why) => format!("  {:<12} reference  # with --backend cuda: {}\n", "", why.0),
    }
}

#[cfg(feature = "cuda")]
fn cuda_json(layer: &sst::Layer) -> serde_json::Value {
    match sst::backend::cuda::kernels::<f32>(&layer.plan().program) {
        Ok(kernels) => json!({
            "kernels": kernel_names(&kernels),
            "hard_on_device": hard_on_device(&kernels),
            "device": sst::backend::cuda_device().ok(),
        }),
        Err(why) => json!({ "kernels": [], "why_not": why.0 }),
    }
}

/// The kernels' passes in words: `forward gumbel argmax`, `backward softmax (re-solved)`.
#[cfg(feature = "cuda")]
fn kernel_names(kernels: &[sst::backend::fused::Kernel]) -> Vec<String> {
    use sst::backend::fused::Pass;
    kernels
        .iter()
        .map(|k| match k.pass {
            Pass::Forward { front, solve } => {
                format!("forward {} {}", front.name(), solve.name())
            }
            Pass::Backward { soft, recompute } => format!(
                "backward {}{}",
                soft.name(),
                if recompute { " (re-solved)" } else { "" }
            ),
        })
        .collect()
}

/// Whether the hard mode's forward pass is among the device's kernels (exact combinatorial
/// solvers run on the host).
#[cfg(feature = "cuda")]
fn hard_on_device(kernels: &[sst::backend::fused::Kernel]) -> bool {
    use sst::backend::fused::Pass;
    kernels
        .iter()
        .any(|k| matches!(k.pass, Pass::Forward { solve, .. } if solve.is_hard()))
}

/// A plan as an aligned table: field, value, why.
pub fn plan_table(plan: &sst::Plan) -> String {
    let shape = plan.support.shape();
    let mut out = format!("layer {}: theta {shape:?} -> z {shape:?}", plan.name);
    if let Some(p) = &plan.preset {
        let _ = write!(out, "  (preset {p})");
    }
    out.push('\n');
    let width = plan
        .decisions
        .iter()
        .map(|d| d.value.chars().count())
        .max()
        .unwrap_or(0);
    for d in &plan.decisions {
        let pad = width - d.value.chars().count();
        let _ = writeln!(
            out,
            "  {:<12} {}{}  # {}",
            d.field,
            d.value,
            " ".repeat(pad),
            d.why
        );
    }
    let _ = writeln!(
        out,
        "  {:<12} {}",
        "mode",
        plan.estimator.default_mode().name()
    );
    out
}
