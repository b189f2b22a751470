//! The Cranelift JIT backend (feature `jit`): the streaming part of a [`Program`] — perturbation,
//! scale by `1/T`, the solve and its closed-form backward — compiled into one fused function per
//! kernel that loops over a range of rows, vectorized (`f32x4` / `f64x2`), with each row's noise
//! written by [`crate::noise::fill_noise`] (sixteen lanes, AVX-512/AVX2 where the CPU has them)
//! called from the compiled loop.
//!
//! It reads the IR only: [`Jit::supports`] says which programs it runs — identity scores and
//! any noise (the Gaussian and the race's rows written by the reference's row functions):
//! `argmax`/`positive` hard and `softmax`/`sigmoid`/`clip` soft kernels in vector IR; the
//! kernels that are not streaming (`top_k`, the combinatorial hard solvers, `sparsemax`, the
//! subset threshold and capped-simplex solvers, Sinkhorn, the matrix-tree, the DPs) as the Rust
//! kernels called from the compiled row loop (`solve_row`), with their VJPs (`vjp_row`); the
//! layer runs the others (counts' score maps) on the reference backend. Backward passes it does
//! not compile (Gumbel-Rao's conditional draws, finite differences, the race's chain rule) run
//! on the reference backend from the same saved arrays. The Gumbel noise is the reference
//! backend's: the same function.
//!
//! Each kernel is compiled once per process (declare → define → finalize → fetch the pointer,
//! in `compile`) and kept in a cache keyed by [`Kernel`]. A temperature schedule that depends
//! on the step is compiled too ([`schedule`]), once per process and formula.

pub mod schedule;
mod translate;
mod vmath;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cranelift_codegen::ir::{types, AbiParam};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use super::fused::{
    backward_kernel, forward_kernel, Front, Kernel, Pass, Precision, SoftKernel, Solve,
};
use super::reference::{
    clamp_unit, hard, matrix_tree_row, matrix_tree_vjp_row, record_threshold, sinkhorn_row,
    Reference,
};
use super::{Backend, ForwardOut, Report, Rows, Saved, SolveError, Unsupported};
use crate::ir::Program;
use crate::kernels::capped_simplex::{capped_simplex, capped_simplex_vjp};
use crate::kernels::chain_subset::{chain_marginals, chain_marginals_jvp};
use crate::kernels::esp::{esp_marginals, esp_marginals_jvp};
use crate::kernels::sinkhorn::{padded_sinkhorn_vjp, Settings};
use crate::kernels::softmax::exp_normalize;
use crate::kernels::threshold::{solve_threshold, threshold_vjp};
use crate::kernels::{sparsemax::sparsemax, top_k::top_k};
use crate::noise::{fill_gaussian, fill_noise, Coordinates, NoiseKey, Perturbation, Transform};
use crate::plan::{Formula, Mode};
use crate::real::Real;
use translate::Helpers;

/// The JIT backend (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Jit;

/// What a forward kernel reads: pointers to `θ` (every batch row), `w` and `z` (the range's
/// rows), all with the kernel's padded row stride, and a scratch row.
#[repr(C)]
pub(crate) struct ForwardArgs<F> {
    theta: *const F,
    w: *mut F,
    z: *mut F,
    /// One padded row of working memory.
    scratch: *mut F,
    /// One padded row for the noise of the row being worked on.
    noise: *mut F,
    start: u64,
    end: u64,
    batch: u64,
    seed: u64,
    temperature: f64,
    /// Where the Rust solvers called from the kernel record what they report.
    report: *mut Report,
    /// What the range's rows keep for the backward pass, [`Kernel::kept_width`] f64 per row
    /// (the matrix-tree's `L̂⁻ᵀ`; unused by the other kernels).
    kept: *mut f64,
}

/// What a backward kernel reads: the range's saved `w`, solution and what the forward pass
/// kept, the cotangent (the range's rows when `per_sample`, else every batch row), the range's
/// gradient rows, two rows of scratch and one of kept scratch (for a re-solve).
#[repr(C)]
pub(crate) struct BackwardArgs<F> {
    w: *const F,
    solution: *const F,
    /// [`SoftKernel::kept_width`] f64 per row of the range (soft mode; empty in hard mode).
    kept: *const f64,
    cotangent: *const F,
    grad: *mut F,
    scratch: *mut F,
    scratch_x: *mut F,
    /// [`SoftKernel::kept_width`] f64 that a re-solve keeps.
    kept_scratch: *mut f64,
    start: u64,
    end: u64,
    batch: u64,
    per_sample: u64,
    temperature: f64,
}

/// A compiled kernel's entry point: `fn(&Args) -> i64`, −1 when every row was done, else the
/// first row whose numbers overflowed. Calling it is sound only with the arguments its pass
/// reads, every array holding the rows it indexes (`run_forward`, `run_backward`).
#[derive(Clone, Copy)]
struct Compiled {
    entry: unsafe extern "C" fn(*const u8) -> i64,
}

/// How many calls handed a range back to the reference backend after a compiled kernel met an
/// overflow (the reference then reports the error).
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// How many times this process's JIT calls met an overflow and handed their range to the
/// reference backend (so tests can tell a compiled result from a fallen-back one).
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

/// Every kernel compiled in this process, or why it could not be.
fn cache() -> &'static Mutex<HashMap<Kernel, Result<Compiled, String>>> {
    static CACHE: OnceLock<Mutex<HashMap<Kernel, Result<Compiled, String>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Total time spent compiling kernels and schedules in this process.
fn compile_time() -> &'static Mutex<Duration> {
    static TIME: OnceLock<Mutex<Duration>> = OnceLock::new();
    TIME.get_or_init(Default::default)
}

/// The seconds this process has spent compiling JIT kernels and schedules (`sst check` and
/// `sst bench` print it).
pub fn compile_seconds() -> f64 {
    compile_time()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_secs_f64()
}

/// `formula` compiled ([`schedule::compile`]), from the cache or now (its time added to the
/// process's compile time): once per process and formula, however many layers share it.
pub fn compiled_schedule(formula: &Formula) -> Result<schedule::Schedule, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<schedule::Schedule, String>>>> =
        OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Keyed by the formula's structure as `Debug` writes it (its numbers round-trip), as
    // `Formula` holds f64s and has no `Hash`.
    let entry = cache.entry(format!("{formula:?}")).or_insert_with(|| {
        let started = Instant::now();
        let result = schedule::compile(formula);
        *compile_time().lock().unwrap_or_else(|e| e.into_inner()) += started.elapsed();
        result
    });
    entry.clone()
}

/// `kernel` compiled, from the cache or now.
fn compiled(kernel: Kernel) -> Result<Compiled, Unsupported> {
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache.entry(kernel).or_insert_with(|| {
        let started = Instant::now();
        let result = compile(kernel);
        *compile_time().lock().unwrap_or_else(|e| e.into_inner()) += started.elapsed();
        result
    });
    entry.clone().map_err(Unsupported)
}

/// Translates `kernel` into Cranelift IR and compiles it for this machine: declare the
/// function, define its body, finalize the module, fetch the code pointer.
fn compile(kernel: Kernel) -> Result<Compiled, String> {
    kernel.jit_translates()?;
    let (float, symbols) = match kernel.precision {
        Precision::F32 => (types::F32, helper_symbols::<f32>()),
        Precision::F64 => (types::F64, helper_symbols::<f64>()),
    };
    let mut module = new_module(&symbols)?;
    let pointer = module.target_config().pointer_type();
    let mut solve_signature = module.make_signature();
    for ty in [pointer; 5] {
        solve_signature.params.push(AbiParam::new(ty));
    }
    let solve = module
        .declare_function("sst_solve", Linkage::Import, &solve_signature)
        .map_err(|e| e.to_string())?;
    let mut vjp_signature = module.make_signature();
    for ty in [pointer, pointer, pointer, pointer, pointer, float, pointer] {
        vjp_signature.params.push(AbiParam::new(ty));
    }
    vjp_signature.returns.push(AbiParam::new(types::I64));
    let vjp = module
        .declare_function("sst_vjp", Linkage::Import, &vjp_signature)
        .map_err(|e| e.to_string())?;
    let mut noise_signature = module.make_signature();
    for ty in [
        pointer,
        pointer,
        types::I64,
        types::I64,
        types::I64,
        types::I64,
        pointer,
    ] {
        noise_signature.params.push(AbiParam::new(ty));
    }
    noise_signature.returns.push(AbiParam::new(types::I64));
    let noise = module
        .declare_function("sst_noise", Linkage::Import, &noise_signature)
        .map_err(|e| e.to_string())?;
    let mut exp_normalize_signature = module.make_signature();
    for ty in [pointer, types::I64, types::I64, float] {
        exp_normalize_signature.params.push(AbiParam::new(ty));
    }
    let exp_normalize = module
        .declare_function(
            "sst_exp_normalize",
            Linkage::Import,
            &exp_normalize_signature,
        )
        .map_err(|e| e.to_string())?;
    let mut ctx = module.make_context();
    ctx.func.signature = module.make_signature();
    // The Rust solvers read the kernel's description from here; like the code, it is never
    // freed.
    let described: &'static Kernel = Box::leak(Box::new(kernel));
    let helpers = Helpers {
        kernel: described as *const Kernel as i64,
        solve: module.declare_func_in_func(solve, &mut ctx.func),
        vjp: module.declare_func_in_func(vjp, &mut ctx.func),
        noise: module.declare_func_in_func(noise, &mut ctx.func),
        exp_normalize: module.declare_func_in_func(exp_normalize, &mut ctx.func),
    };
    let mut builder_context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_context);
    kernel.translate(&mut b, pointer, helpers);
    b.finalize(module.target_config());
    let signature = ctx.func.signature.clone();
    let code = finalize(module, ctx, &signature)?;
    // SAFETY: `code` is the finalized, executable code of the function just defined, whose
    // signature is the target's default calling convention (`make_signature`, the C convention
    // of this platform) with one pointer parameter and an i64 result, matching the type here;
    // its memory is never freed (`finalize` leaks the module). What a call needs is said at the
    // two calls.
    let entry =
        unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*const u8) -> i64>(code) };
    Ok(Compiled { entry })
}

/// A JIT module for this machine (Cranelift's `speed` optimizations) that resolves the Rust
/// helpers `symbols` the compiled code calls.
fn new_module(symbols: &[(&'static str, *const u8)]) -> Result<JITModule, String> {
    let mut flags = settings::builder();
    for (name, value) in [("opt_level", "speed"), ("is_pic", "false")] {
        flags.set(name, value).map_err(|e| e.to_string())?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| format!("this machine has no Cranelift target: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())?;
    let mut jit_builder = JITBuilder::with_isa(isa, default_libcall_names());
    for &(name, code) in symbols {
        jit_builder.symbol(name, code);
    }
    Ok(JITModule::new(jit_builder))
}

/// Compiles the function built in `ctx` (of type `signature`) as the module's one function:
/// define it, finalize the module, fetch the code pointer. The module is leaked, so that the
/// code outlives every use of the pointer.
fn finalize(
    mut module: JITModule,
    mut ctx: cranelift_codegen::Context,
    signature: &cranelift_codegen::ir::Signature,
) -> Result<*const u8, String> {
    let id = module
        .declare_function("compiled", Linkage::Local, signature)
        .map_err(|e| e.to_string())?;
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("Cranelift could not compile the function: {e:?}"))?;
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let code = module.get_finalized_function(id);
    Box::leak(Box::new(module));
    Ok(code)
}

/// A row solved by the Rust kernel of `kernel` (its hard `top_k` or combinatorial solver, or
/// its soft kernel clamped into `[0, 1]`), the reference backend's computation: `z[..n]` from
/// `x[..n]`, what the kernel keeps into `kept`. A solve's diagnostics are recorded in `report`
/// unless it is null (a backward re-solve, whose report the reference backend discards too).
///
/// # Safety
/// `kernel` is the description the compiled code was built from ([`compile`] leaks it); `x`
/// and `z` point to `kernel.n` readable / writable elements that do not overlap (the kernel
/// passes its `w` or scratch row and its `z` or scratch row, of the padded row length); `report`
/// is null or the forward pass's report, which nothing else uses during the call; `kept` points
/// to the row's [`SoftKernel::kept_width`] writable f64 where that is not zero.
unsafe extern "C" fn solve_row<F: Real>(
    kernel: *const Kernel,
    x: *const F,
    z: *mut F,
    report: *mut Report,
    kept: *mut f64,
) {
    // SAFETY: the caller's contract above.
    let (kernel, report) = unsafe { (&*kernel, report.as_mut()) };
    // SAFETY: the caller's contract above.
    let (x, z) = unsafe {
        (
            std::slice::from_raw_parts(x, kernel.n),
            std::slice::from_raw_parts_mut(z, kernel.n),
        )
    };
    let soft = match kernel.pass {
        Pass::Forward {
            solve: Solve::TopK { k },
            ..
        } => return top_k(x, k, z),
        Pass::Forward {
            solve: Solve::Combinatorial(kernel),
            ..
        } => return hard(kernel, x, z),
        Pass::Forward {
            solve: Solve::Soft(soft),
            ..
        }
        | Pass::Backward { soft, .. } => soft,
        Pass::Forward { .. } => unreachable!("the compiled code solves its other hard kernels"),
    };
    // A straight-through re-solve in a backward pass (report null) records into a report of its
    // own, discarded as the reference backend discards its re-solve's (an empty report costs no
    // allocation); a threshold's records nothing then.
    let mut discarded = Report::default();
    match soft {
        SoftKernel::Sparsemax => sparsemax(x, z),
        SoftKernel::Threshold { link, k, tol_bits } => {
            let tol = f64::from_bits(tol_bits);
            let solved = solve_threshold(link, x, k, tol, z);
            if let Some(report) = report {
                record_threshold(report, solved, tol);
            }
        }
        SoftKernel::CappedSimplex { k } => capped_simplex(x, k, z),
        SoftKernel::Sinkhorn { rows, cols, .. } => {
            let report = report.unwrap_or(&mut discarded);
            sinkhorn_row((rows, cols), sinkhorn_settings(soft), x, z, report)
        }
        SoftKernel::MatrixTree { n, trees } => {
            let width = soft.kept_width();
            // SAFETY: the caller's contract above (the matrix-tree keeps (n − 1)² > 0 f64).
            let kept = unsafe { std::slice::from_raw_parts_mut(kept, width) };
            matrix_tree_row(n, trees, x, z, kept, report.unwrap_or(&mut discarded))
        }
        SoftKernel::Esp { k } => esp_marginals(x, k, z),
        SoftKernel::ChainDp { k } => chain_marginals(x, k, z),
        other => unreachable!("the {} kernel is not a Rust row solver", other.name()),
    }
    clamp_unit(z);
}

/// The VJP of a soft kernel solved in Rust, as compiled code calls it: `grad[..n] = J_sᵀ g / T`
/// at the solution `s` of `x = w/T` (the threshold's by the implicit-function theorem, the
/// capped simplex's closed form, Sinkhorn's implicit or unrolled, the matrix-tree's through
/// the `L̂⁻ᵀ` it `kept`, the DPs' second passes), as the reference backend computes it. Returns
/// 1 where the VJP is not finite (Sinkhorn's linear solve), else 0.
///
/// # Safety
/// `kernel` is the backward kernel's description ([`compile`] leaks it); `s` and `g` point to
/// `kernel.n` readable elements and `grad` to as many writable ones that overlap neither; `x`
/// points to `kernel.n` readable elements and `kept` to the soft kernel's
/// [`SoftKernel::kept_width`] readable f64 where [`SoftKernel::vjp_reads_x`] (else either may
/// be null).
unsafe extern "C" fn vjp_row<F: Real>(
    kernel: *const Kernel,
    x: *const F,
    s: *const F,
    g: *const F,
    grad: *mut F,
    t: F,
    kept: *const f64,
) -> i64 {
    // SAFETY: the caller's contract above.
    let kernel = unsafe { &*kernel };
    let n = kernel.n;
    // SAFETY: the caller's contract above.
    let (s, g, grad) = unsafe {
        (
            std::slice::from_raw_parts(s, n),
            std::slice::from_raw_parts(g, n),
            std::slice::from_raw_parts_mut(grad, n),
        )
    };
    let Pass::Backward { soft, .. } = kernel.pass else {
        unreachable!("a forward kernel has no VJP")
    };
    if let SoftKernel::Threshold { link, .. } = soft {
        // It writes `grad` and divides by `t` itself.
        threshold_vjp(link, s, g, t, grad);
        return 0;
    }
    let (x, kept) = match soft.vjp_reads_x() {
        // SAFETY: the caller's contract above (a kernel whose VJP reads x).
        true => unsafe {
            (
                std::slice::from_raw_parts(x, n),
                match soft.kept_width() {
                    0 => &[][..],
                    width => std::slice::from_raw_parts(kept, width),
                },
            )
        },
        false => (&[][..], &[][..]),
    };
    grad.fill(F::zero());
    let finite = soft_vjp_row(soft, x, s, kept, g, grad);
    grad.iter_mut().for_each(|x| *x = *x / t);
    i64::from(!finite)
}

/// A Sinkhorn kernel's iterations, tolerance and Newton steps (none under the unrolled rule).
fn sinkhorn_settings(soft: SoftKernel) -> Settings {
    let SoftKernel::Sinkhorn {
        iters,
        tol_bits,
        newton,
        ..
    } = soft
    else {
        unreachable!("not a Sinkhorn kernel")
    };
    Settings {
        iters,
        tol: f64::from_bits(tol_bits),
        newton,
    }
}

/// `grad_x += J(x)ᵀ g` of a soft kernel solved in Rust at its solution `s` (with `x` and what
/// its solve `kept`, for the kernels whose VJP reads them); false where Sinkhorn's linear solve
/// is not finite.
fn soft_vjp_row<F: Real>(
    soft: SoftKernel,
    x: &[F],
    s: &[F],
    kept: &[f64],
    g: &[F],
    grad_x: &mut [F],
) -> bool {
    match soft {
        SoftKernel::Sinkhorn { rows, cols, .. } => {
            let settings = sinkhorn_settings(soft);
            let unrolled = !settings.newton;
            return padded_sinkhorn_vjp(unrolled, x, s, rows, cols, settings, g, grad_x);
        }
        SoftKernel::CappedSimplex { .. } => capped_simplex_vjp(s, g, grad_x),
        SoftKernel::MatrixTree { n, trees } => matrix_tree_vjp_row(n, trees, x, g, kept, grad_x),
        SoftKernel::Esp { k } => esp_marginals_jvp(x, k, g, grad_x),
        SoftKernel::ChainDp { k } => chain_marginals_jvp(x, k, g, grad_x),
        other => unreachable!("the compiled code computes the {} VJP", other.name()),
    }
    true
}

/// The Rust helpers compiled code calls in precision `F`, by the names it imports them under.
fn helper_symbols<F: Real>() -> [(&'static str, *const u8); 4] {
    [
        ("sst_solve", solve_row::<F> as *const u8),
        ("sst_vjp", vjp_row::<F> as *const u8),
        ("sst_noise", noise_row::<F> as *const u8),
        ("sst_exp_normalize", exp_normalize_row::<F> as *const u8),
    ]
}

/// The softmax finish as compiled code calls it: `row[..n] ← exp(row − m) / Σ exp(row − m)`
/// ([`exp_normalize`]), `row[n..stride] ← 0`.
///
/// # Safety
/// `row` points to `stride ≥ n` writable elements: the compiled kernel passes a row of its
/// padded length.
unsafe extern "C" fn exp_normalize_row<F: Real>(row: *mut F, n: i64, stride: i64, m: F) {
    // SAFETY: the caller's contract above.
    let row = unsafe { std::slice::from_raw_parts_mut(row, stride as usize) };
    let (z, padding) = row.split_at_mut(n as usize);
    exp_normalize(z, m);
    padding.fill(F::zero());
}

/// The noise row as compiled code calls it: `out[..n]` = the noise of the kernel's front under
/// the key `(seed, sample, batch)`: Gumbel or logistic ([`crate::noise::fill_noise`]), Gaussian
/// ([`crate::noise::fill_gaussian`]), or, for the exponential race (not additive), `w` itself
/// from `θ` ([`Perturbation::perturb`], the reference backend's row function). Returns 1 where
/// the race refuses `θ` (the reference backend then says why), else 0.
///
/// # Safety
/// `out` points to `n` writable elements and `theta` to `n` readable ones that `out` does not
/// overlap: the compiled forward kernel passes its noise row and the row's `θ`, of the padded
/// row length ≥ `n`; `kernel` is the forward kernel's description ([`compile`] leaks it).
unsafe extern "C" fn noise_row<F: Real>(
    out: *mut F,
    theta: *const F,
    n: i64,
    seed: u64,
    sample: u64,
    batch: u64,
    kernel: *const Kernel,
) -> i64 {
    // SAFETY: the caller's contract above.
    let (out, theta, kernel) = unsafe {
        (
            std::slice::from_raw_parts_mut(out, n as usize),
            std::slice::from_raw_parts(theta, n as usize),
            &*kernel,
        )
    };
    let key = NoiseKey {
        seed,
        sample: sample as u32,
        batch: batch as u32,
    };
    let Pass::Forward { front, .. } = kernel.pass else {
        unreachable!("a backward kernel draws no noise")
    };
    let refused = match front {
        Front::Gumbel => {
            fill_noise(key, Transform::Gumbel, out);
            false
        }
        Front::Logistic => {
            fill_noise(key, Transform::Logistic, out);
            false
        }
        Front::Gaussian { sigma_bits } => {
            fill_gaussian(key, f64::from_bits(sigma_bits), out);
            false
        }
        Front::Race | Front::RaceLogistic => {
            let coordinates = match front {
                Front::Race => Coordinates::Joint,
                _ => Coordinates::Binary,
            };
            let race = Perturbation::NegExponential;
            race.perturb(coordinates, theta, key, out).is_err()
        }
        Front::None => unreachable!("no noise is drawn"),
    };
    i64::from(refused)
}

impl<F: Real> Backend<F> for Jit {
    fn name(&self) -> &'static str {
        "jit"
    }

    /// Both modes' forward kernels compile for the program's own noise.
    fn supports(&self, program: &Program) -> Result<(), Unsupported> {
        for mode in [Mode::Hard, Mode::Soft] {
            compiled(forward_kernel::<F>(program, program.noise, mode)?)?;
            if let Some(kernel) = backward_kernel::<F>(program, program.noise, mode) {
                compiled(kernel)?;
            }
        }
        Ok(())
    }

    fn forward(&self, rows: &Rows<F>, out: ForwardOut<F>) -> Result<(), SolveError> {
        let kernel = match forward_kernel::<F>(rows.program, rows.noise, rows.mode) {
            Ok(kernel) => kernel,
            Err(_) => return Reference.forward(rows, out),
        };
        let Ok(code) = compiled(kernel) else {
            return Reference.forward(rows, out);
        };
        let mut out = out;
        if run_forward(code, kernel, rows, &mut out) {
            Ok(())
        } else {
            // A row overflowed: the reference backend finds it and says so.
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            Reference.forward(rows, out)
        }
    }

    fn backward_into(
        &self,
        rows: &Rows<F>,
        saved: Saved<F>,
        grad: &mut [F],
    ) -> Result<(), SolveError> {
        let compiled_kernel = backward_kernel::<F>(rows.program, rows.noise, rows.mode)
            .and_then(|kernel| compiled(kernel).ok().map(|code| (kernel, code)));
        let Some((kernel, code)) = compiled_kernel else {
            return Reference.backward_into(rows, saved, grad);
        };
        if run_backward(code, kernel, rows, saved, grad) {
            return Ok(());
        }
        // `w/T` overflowed in a re-solve: the reference backend names the row (into a scratch
        // gradient, since this one already holds some rows' sums). Its re-solve scales the same
        // `w` by the same `T`, so it fails too; the last line is not expected to run.
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
        let mut scratch = vec![F::zero(); grad.len()];
        Reference.backward_into(rows, saved, &mut scratch)?;
        Err(SolveError::GradientNotFinite { kernel: "jit" })
    }
}

/// `rows` of `src` (stride `from`) copied into rows of stride `to ≥ from`, zero-padded.
fn padded<F: Real>(src: &[F], from: usize, to: usize) -> Vec<F> {
    let rows = src.len() / from;
    let mut out = vec![F::zero(); rows * to];
    for (o, s) in out.chunks_mut(to).zip(src.chunks(from)) {
        o[..from].copy_from_slice(s);
    }
    out
}

/// The first `to` entries of each row of `src` (stride `from`) into `dst`.
fn unpad<F: Real>(src: &[F], from: usize, dst: &mut [F], to: usize) {
    for (d, s) in dst.chunks_mut(to).zip(src.chunks(from)) {
        d.copy_from_slice(&s[..to]);
    }
}

/// Runs a forward kernel on `rows.range`; `false` if a row overflowed.
fn run_forward<F: Real>(
    code: Compiled,
    kernel: Kernel,
    rows: &Rows<F>,
    out: &mut ForwardOut<F>,
) -> bool {
    let (n, stride, count) = (kernel.n, kernel.stride(), rows.range.len());
    let ForwardOut {
        w, z, kept, report, ..
    } = out;
    assert!(
        rows.theta.len() == rows.batch_rows() * n && w.len() >= count * n && z.len() >= count * n
    );
    assert_eq!(
        kept.len(),
        count * kernel.kept_width(),
        "the layer sizes kept as the kernel writes it"
    );
    assert!(count == 0 || rows.batch_rows() > 0);
    let pad = stride != n;
    let theta = match pad {
        true => padded(rows.theta, n, stride),
        false => Vec::new(),
    };
    let (mut w_pad, mut z_pad) = match pad {
        true => (
            vec![F::zero(); count * stride],
            vec![F::zero(); count * stride],
        ),
        false => (Vec::new(), Vec::new()),
    };
    let mut scratch = vec![F::zero(); 2 * stride];
    let (scratch, noise) = scratch.split_at_mut(stride);
    let args = ForwardArgs {
        scratch: scratch.as_mut_ptr(),
        noise: noise.as_mut_ptr(),
        theta: if pad {
            theta.as_ptr()
        } else {
            rows.theta.as_ptr()
        },
        w: if pad {
            w_pad.as_mut_ptr()
        } else {
            w.as_mut_ptr()
        },
        z: if pad {
            z_pad.as_mut_ptr()
        } else {
            z.as_mut_ptr()
        },
        start: rows.range.start as u64,
        end: rows.range.end as u64,
        batch: rows.batch_rows() as u64,
        seed: rows.seed,
        temperature: rows.temperature,
        report: &mut **report,
        kept: kept.as_mut_ptr(),
    };
    // SAFETY: `args` is the `ForwardArgs` a forward kernel reads; `theta` holds every batch row
    // and `w`, `z` every row of the range, at the kernel's stride (padded copies when it is not
    // `n`), `scratch` one row of it (checked above), `batch > 0` for the row arithmetic,
    // `report` is borrowed for the call, and `kept` holds the kernel's kept width per row of
    // the range (checked above).
    let status = unsafe { (code.entry)(&args as *const ForwardArgs<F> as *const u8) };
    if pad {
        unpad(&w_pad, stride, w, n);
        unpad(&z_pad, stride, z, n);
    }
    status < 0
}

/// Runs a backward kernel on `rows.range`, writing `grad`; `false` if a re-solve overflowed.
fn run_backward<F: Real>(
    code: Compiled,
    kernel: Kernel,
    rows: &Rows<F>,
    saved: Saved<F>,
    grad: &mut [F],
) -> bool {
    let (n, stride) = (kernel.n, kernel.stride());
    let range = rows.range.clone();
    let count = range.len();
    let w = &saved.w[range.start * n..range.end * n];
    let solution = &saved.solution[range.start * n..range.end * n];
    let cotangent = match saved.per_sample {
        true => &saved.cotangent[range.start * n..range.end * n],
        false => &saved.cotangent[..rows.batch_rows() * n],
    };
    assert_eq!(grad.len(), count * n);
    assert!(count == 0 || rows.batch_rows() > 0);
    let pad = stride != n;
    let copies = pad.then(|| {
        (
            padded(w, n, stride),
            padded(solution, n, stride),
            padded(cotangent, n, stride),
            padded(grad, n, stride),
        )
    });
    let mut scratch = vec![F::zero(); 2 * stride];
    let (scratch, scratch_x) = scratch.split_at_mut(stride);
    let Pass::Backward { soft, .. } = kernel.pass else {
        unreachable!("a backward kernel")
    };
    let width = soft.kept_width();
    let kept = match rows.mode {
        Mode::Soft => &saved.kept[range.start * width..range.end * width],
        Mode::Hard => &[][..],
    };
    let mut kept_scratch = vec![0.0; width];
    let (w_ptr, s_ptr, c_ptr, mut grad_pad) = match copies {
        Some((w, s, c, g)) => (w.as_ptr(), s.as_ptr(), c.as_ptr(), Some((w, s, c, g))),
        None => (w.as_ptr(), solution.as_ptr(), cotangent.as_ptr(), None),
    };
    let grad_ptr = match grad_pad.as_mut() {
        Some((_, _, _, g)) => g.as_mut_ptr(),
        None => grad.as_mut_ptr(),
    };
    let args = BackwardArgs {
        w: w_ptr,
        solution: s_ptr,
        kept: kept.as_ptr(),
        cotangent: c_ptr,
        grad: grad_ptr,
        scratch: scratch.as_mut_ptr(),
        scratch_x: scratch_x.as_mut_ptr(),
        kept_scratch: kept_scratch.as_mut_ptr(),
        start: range.start as u64,
        end: range.end as u64,
        batch: rows.batch_rows() as u64,
        per_sample: u64::from(saved.per_sample),
        temperature: rows.temperature,
    };
    // SAFETY: `args` is the `BackwardArgs` a backward kernel reads: the range's rows of `w`, the
    // solution and `grad`, the cotangent rows it indexes (the range's per sample, else every
    // batch row), two scratch rows, all at the kernel's stride (checked above), and the kept
    // rows of the range (soft mode: the saved ones are read; hard mode re-solves into
    // `kept_scratch`, one row).
    let status = unsafe { (code.entry)(&args as *const BackwardArgs<F> as *const u8) };
    if let Some((_, _, _, g)) = grad_pad {
        unpad(&g, stride, grad, n);
    }
    status < 0
}
