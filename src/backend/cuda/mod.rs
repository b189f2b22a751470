//! The CUDA backend (feature `cuda`): the fused kernels of [`crate::backend::fused`] as CUDA C
//! ([`codegen`]), compiled at run time by NVRTC for the device's compute capability, loaded
//! through the driver API, and run one block per row. cudarc loads the driver (`libcuda.so`)
//! and NVRTC (`libnvrtc.so.13`) when first needed: the build needs neither, and a machine
//! without them gets a sentence saying so ([`device`], [`nvrtc_version`]), never a panic.
//!
//! It runs the fused kernels of [`super::fused`] — the forward passes of Sinkhorn and the
//! matrix-tree among them — but the combinatorial hard solvers (run on the host), the DPs and
//! Gaussian noise (programs it refuses, [`kernels`]). A request whose mode needs a kernel it
//! does not generate runs that pass on the reference backend (an exact combinatorial hard
//! solver), as do the
//! backward passes no fused kernel covers (Gumbel-Rao's draws, finite differences, Sinkhorn's
//! and the matrix-tree's linear solves), and a range with a row the device flags (overflow, no
//! convergence, failed identities).
//! Arrays travel per call: `θ` up, `w` and `z` (or the gradient) down.
//!
//! Each kernel is compiled once per process (and kept on disk, keyed by a hash of its source,
//! the NVRTC version and the architecture, under `$XDG_CACHE_HOME/sst/cuda` or
//! `~/.cache/sst/cuda`).

pub mod codegen;

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::PushKernelArg;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig};
use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys, Ptx};

use super::fused::{backward_kernel, forward_kernel, Front, Kernel, Pass, SoftKernel, Solve};
use super::reference::Reference;
use super::{Backend, ForwardOut, Rows, Saved, SolveError, Unsupported};
use crate::ir::Program;
use crate::noise::Perturbation;
use crate::plan::Mode;
use crate::real::Real;

/// The CUDA backend (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cuda;

/// The options every kernel is compiled with: no contracted multiply–add (only the `fma` calls
/// written, as in `crate::math`), so that the noise and
/// `ln`/`exp` give the bits of the CPU backends; IEEE division and square root; no flushing of
/// subnormals.
pub const NVRTC_OPTIONS: &[&str] = &[
    "--fmad=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--ftz=false",
    "--std=c++17",
];

/// NVRTC's version, or why it cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    // SAFETY: `is_culib_present` only tries to open the library by its candidate names.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so.13) was not found: install the CUDA toolkit or the PyPI package \
             nvidia-cuda-nvrtc and put its lib folder on LD_LIBRARY_PATH"
                .into(),
        );
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); the two pointers are valid for writes.
    let status = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    match status {
        nvrtc_sys::nvrtcResult::NVRTC_SUCCESS => Ok((major, minor)),
        other => Err(format!("nvrtcVersion failed: {other:?}")),
    }
}

/// Compiles CUDA C `source` to a CUBIN for `arch` (`"sm_90"`) with [`NVRTC_OPTIONS`]; the
/// compiler's log when it fails.
pub fn compile_cubin(source: &str, arch: &str) -> Result<Vec<u8>, String> {
    nvrtc_version()?;
    let src = CString::new(source).map_err(|_| "the source holds a NUL byte".to_string())?;
    let prog = nvrtc_result::create_program(&src, None).map_err(|e| format!("{e:?}"))?;
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    // SAFETY: `prog` was created above and is destroyed once, at the end; the buffers handed to
    // NVRTC have the sizes it reported.
    let result = unsafe {
        match nvrtc_result::compile_program(prog, &options) {
            Ok(()) => {
                let mut size = 0usize;
                nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| format!("{e:?}"))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        nvrtc_sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                            .result()
                            .map(|()| cubin)
                            .map_err(|e| format!("{e:?}"))
                    })
            }
            Err(e) => {
                let log = nvrtc_result::get_program_log(prog).unwrap_or_default();
                let log: Vec<u8> = log
                    .iter()
                    .map(|&c| c as u8)
                    .take_while(|&c| c != 0)
                    .collect();
                Err(format!(
                    "NVRTC could not compile the kernel ({e:?}):\n{}",
                    String::from_utf8_lossy(&log)
                ))
            }
        }
    };
    // SAFETY: `prog` is live and destroyed only here.
    let _ = unsafe { nvrtc_result::destroy_program(prog) };
    result
}

/// The device every CUDA layer runs on (GPU 0): its stream and architecture.
struct Device {
    stream: Arc<CudaStream>,
    arch: String,
    name: String,
}

/// GPU 0, or why there is none (no driver, no device, no NVRTC).
fn device() -> Result<&'static Device, String> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            // SAFETY: `is_culib_present` only tries to open the library by its candidate names.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err("no CUDA driver on this machine (libcuda.so was not found)".into());
            }
            nvrtc_version()?;
            let ctx = CudaContext::new(0).map_err(|e| format!("no CUDA device: {e:?}"))?;
            let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
            let name = ctx.name().map_err(|e| format!("{e:?}"))?;
            Ok(Device {
                stream: ctx.default_stream(),
                arch: format!("sm_{major}{minor}"),
                name,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The device's name and architecture (`"NVIDIA H200 (sm_90)"`), or why there is none.
pub fn describe() -> Result<String, String> {
    device().map(|d| format!("{} ({})", d.name, d.arch))
}

/// The report keys of a forward kernel's `stats` ([`codegen::STATS`] per row), the reference
/// backend's for the same solver; `None` for kernels that report nothing.
fn reported(kernel: &Kernel) -> Option<[&'static str; codegen::STATS]> {
    match kernel.pass {
        Pass::Forward {
            solve: Solve::Soft(SoftKernel::Threshold { .. }),
            ..
        } => Some(["tau_iterations", "tau_residual"]),
        Pass::Forward {
            solve: Solve::Soft(SoftKernel::Sinkhorn { .. }),
            ..
        } => Some(["sinkhorn_iterations", "sinkhorn_residual"]),
        _ => None,
    }
}

/// The kernels this backend generates for `program` in `F`: both modes' forward kernels and the
/// backward kernels there are, or why it does not run the program.
///
/// An exact combinatorial hard solver (the assignment, maximum trees, the chain's Viterbi) stays
/// on the host: its forward pass runs on the reference backend, the soft one on the device.
pub fn kernels<F: Real>(program: &Program) -> Result<Vec<Kernel>, Unsupported> {
    let mut out = Vec::new();
    for mode in [Mode::Hard, Mode::Soft] {
        let kernel = forward_kernel::<F>(program, program.noise, mode)?;
        match kernel.pass {
            Pass::Forward {
                front: Front::Gaussian { .. },
                ..
            } => {
                return Err(Unsupported(
                    "gaussian noise is not generated (its cos is the platform's)".into(),
                ))
            }
            Pass::Forward {
                solve: Solve::Combinatorial(_),
                ..
            } => {}
            Pass::Forward {
                solve: Solve::Soft(soft @ (SoftKernel::Esp { .. } | SoftKernel::ChainDp { .. })),
                ..
            } => {
                return Err(Unsupported(format!(
                    "the {} soft kernel is not generated",
                    soft.name()
                )))
            }
            _ => out.push(as_generated(kernel)),
        }
        out.extend(device_backward::<F>(program, program.noise, mode));
    }
    for kernel in &out {
        if let Some(why) = too_large(kernel) {
            return Err(Unsupported(why));
        }
    }
    Ok(out)
}

/// Whether a forward kernel runs on the host: the combinatorial hard solvers, the DPs and
/// Gaussian noise ([`kernels`] says which programs that refuses).
fn on_the_host(kernel: &Kernel) -> bool {
    matches!(
        kernel.pass,
        Pass::Forward {
            front: Front::Gaussian { .. },
            ..
        } | Pass::Forward {
            solve: Solve::Combinatorial(_)
                | Solve::Soft(SoftKernel::Esp { .. } | SoftKernel::ChainDp { .. }),
            ..
        }
    )
}

/// The backward kernel the device runs for `program` in `mode`: none for the kernels whose VJP
/// reads `x` (Sinkhorn's and the matrix-tree's linear solves, the DPs'), which run on the host.
fn device_backward<F: Real>(program: &Program, noise: Perturbation, mode: Mode) -> Option<Kernel> {
    backward_kernel::<F>(program, noise, mode)
        .filter(|kernel| !matches!(kernel.pass, Pass::Backward { soft, .. } if soft.vjp_reads_x()))
}

/// `kernel` as the device runs it: Sinkhorn without Newton steps whatever the backward rule (a
/// row it cannot finish goes to the host, which solves it as the program says), so that one
/// kernel serves both rules.
fn as_generated(kernel: Kernel) -> Kernel {
    match kernel.pass {
        Pass::Forward {
            front,
            solve:
                Solve::Soft(SoftKernel::Sinkhorn {
                    rows,
                    cols,
                    iters,
                    tol_bits,
                    ..
                }),
        } => Kernel {
            pass: Pass::Forward {
                front,
                solve: Solve::Soft(SoftKernel::Sinkhorn {
                    rows,
                    cols,
                    iters,
                    tol_bits,
                    newton: false,
                }),
            },
            ..kernel
        },
        _ => kernel,
    }
}

/// Why a kernel whose per-row arrays would not fit the block's shared memory is not generated.
fn too_large(kernel: &Kernel) -> Option<String> {
    match kernel.pass {
        Pass::Forward {
            solve: Solve::Soft(SoftKernel::Sinkhorn { cols, .. }),
            ..
        } if cols > codegen::MAX_SINKHORN_COLS => Some(format!(
            "Sinkhorn over more than {} columns is not generated",
            codegen::MAX_SINKHORN_COLS
        )),
        Pass::Forward {
            solve: Solve::Soft(SoftKernel::MatrixTree { n, .. }),
            ..
        } if n > codegen::MAX_TREE_NODES => Some(format!(
            "matrix-tree marginals over more than {} nodes are not generated",
            codegen::MAX_TREE_NODES
        )),
        _ => None,
    }
}

/// Every kernel loaded in this process, or why it could not be.
fn cache() -> &'static Mutex<HashMap<Kernel, Result<CudaFunction, String>>> {
    static CACHE: OnceLock<Mutex<HashMap<Kernel, Result<CudaFunction, String>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// `kernel` compiled for the device and loaded, from the cache or now. A CUBIN from the disk
/// cache that the driver refuses (a damaged file) is deleted and compiled again.
fn function(kernel: Kernel) -> Result<CudaFunction, String> {
    let device = device()?;
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(kernel)
        .or_insert_with(|| {
            let source = codegen::source(&kernel);
            let load = |cubin: Vec<u8>| {
                device
                    .stream
                    .context()
                    .load_module(Ptx::from_binary(cubin))
                    .map_err(|e| format!("the driver refused the kernel: {e:?}"))
            };
            let module = match cached_cubin(&source, &device.arch)? {
                (cubin, Some(path)) => load(cubin).or_else(|_| {
                    let _ = std::fs::remove_file(path);
                    load(compile_cubin(&source, &device.arch)?)
                })?,
                (cubin, None) => load(cubin)?,
            };
            module
                .load_function(codegen::ENTRY)
                .map_err(|e| format!("{e:?}"))
        })
        .clone()
}

/// [`compile_cubin`] through the disk cache, keyed by the source, the options, the NVRTC version
/// and the architecture; with the path when the CUBIN was read from the cache. Files are
/// written whole (a temporary file renamed), and a failed read or write only costs a compile.
fn cached_cubin(source: &str, arch: &str) -> Result<(Vec<u8>, Option<PathBuf>), String> {
    let (major, minor) = nvrtc_version()?;
    let options = NVRTC_OPTIONS.join(" ");
    let key = fnv1a(format!("{source}\0{options}\0{major}.{minor}\0{arch}").as_bytes());
    let path = cache_dir().map(|d| d.join(format!("{key:016x}.cubin")));
    if let Some(path) = &path {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok((bytes, Some(path.clone())));
        }
    }
    let cubin = compile_cubin(source, arch)?;
    if let Some(path) = path {
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let written = std::fs::create_dir_all(path.parent().expect("a file in a folder"))
            .and_then(|()| std::fs::write(&partial, &cubin))
            .and_then(|()| std::fs::rename(&partial, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
    }
    Ok((cubin, None))
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sst").join("cuda"))
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `s` as bytes.
fn bytes<F: Real>(s: &[F]) -> &[u8] {
    // SAFETY: `Real` is implemented for f32 and f64 only, plain numbers without padding or
    // invalid bit patterns; the byte slice covers exactly `s`'s memory.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

/// `s` as mutable bytes (see [`bytes`]).
fn bytes_mut<F: Real>(s: &mut [F]) -> &mut [u8] {
    // SAFETY: as in `bytes`; every byte pattern is a valid f32 or f64.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, std::mem::size_of_val(s)) }
}

/// A device failure in the middle of a call, as a solver error on the field `backend`.
fn failed(e: impl std::fmt::Debug) -> SolveError {
    SolveError::Device(format!("{e:?}"))
}

/// One block of [`codegen::THREADS`] threads per row of the range.
fn launch_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (codegen::THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The first row that overflowed on the device, if one did.
fn bad_row(stream: &Arc<CudaStream>, bad: &CudaSlice<u64>) -> Result<Option<u64>, SolveError> {
    let bad = stream.clone_dtoh(bad).map_err(failed)?;
    Ok((bad[0] != u64::MAX).then_some(bad[0]))
}

impl<F: Real> Backend<F> for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    /// The program's kernels are generated and compile for the device.
    fn supports(&self, program: &Program) -> Result<(), Unsupported> {
        for kernel in kernels::<F>(program)? {
            function(kernel).map_err(Unsupported)?;
        }
        Ok(())
    }

    fn forward(&self, rows: &Rows<F>, out: ForwardOut<F>) -> Result<(), SolveError> {
        let kernel = match forward_kernel::<F>(rows.program, rows.noise, rows.mode) {
            Ok(kernel) if !on_the_host(&kernel) => as_generated(kernel),
            _ => return Reference.forward(rows, out),
        };
        // A kernel that does not compile or load (e.g. a request's noise the program does
        // not declare) runs on the reference backend, as in the JIT.
        let Ok(f) = function(kernel) else {
            return Reference.forward(rows, out);
        };
        let (n, count) = (kernel.n, rows.range.len());
        if count == 0 {
            return Ok(());
        }
        let stream = &device().map_err(SolveError::Device)?.stream;
        let theta = stream.clone_htod(bytes(rows.theta)).map_err(failed)?;
        let size = count * n * std::mem::size_of::<F>();
        let mut w = stream.alloc_zeros::<u8>(size).map_err(failed)?;
        let mut z = stream.alloc_zeros::<u8>(size).map_err(failed)?;
        let mut bad = stream.clone_htod(&[u64::MAX]).map_err(failed)?;
        let mut stats = stream
            .alloc_zeros::<f64>(count * codegen::STATS)
            .map_err(failed)?;
        let kept_width = kernel.kept_width();
        assert_eq!(
            out.kept.len(),
            count * kept_width,
            "the layer sizes kept as the kernel writes it"
        );
        let mut kept = stream
            .alloc_zeros::<f64>((count * kept_width).max(1))
            .map_err(failed)?;
        let (start, batch) = (rows.range.start as u64, rows.batch_rows() as u64);
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&theta)
            .arg(&mut w)
            .arg(&mut z)
            .arg(&start)
            .arg(&batch)
            .arg(&rows.seed)
            .arg(&rows.temperature)
            .arg(&mut bad)
            .arg(&mut stats)
            .arg(&mut kept);
        // SAFETY: the arguments are the forward kernel's parameters in order (codegen::forward):
        // θ holds every batch row, `w` and `z` one row of `n` per block of the grid, `bad` one
        // u64, `stats` codegen::STATS per block, `kept` the soft kernel's kept width per block
        // (the matrix-tree's (n − 1)², the only kernel that writes it); the kernel indexes
        // nothing else.
        unsafe { launch.launch(launch_config(count)) }.map_err(failed)?;
        if bad_row(stream, &bad)?.is_some() {
            // A row overflowed: the reference backend finds it and says so.
            return Reference.forward(rows, out);
        }
        stream
            .memcpy_dtoh(&w, bytes_mut(&mut out.w[..count * n]))
            .map_err(failed)?;
        stream
            .memcpy_dtoh(&z, bytes_mut(&mut out.z[..count * n]))
            .map_err(failed)?;
        if kept_width > 0 {
            stream
                .memcpy_dtoh(&kept, &mut out.kept[..count * kept_width])
                .map_err(failed)?;
        }
        if let Some(keys) = reported(&kernel) {
            let stats = stream.clone_dtoh(&stats).map_err(failed)?;
            for row in stats.chunks_exact(codegen::STATS) {
                for (&key, &value) in keys.iter().zip(row) {
                    out.report.record_max(key, value);
                }
            }
        }
        Ok(())
    }

    fn backward_into(
        &self,
        rows: &Rows<F>,
        saved: Saved<F>,
        grad: &mut [F],
    ) -> Result<(), SolveError> {
        let Some(kernel) = device_backward::<F>(rows.program, rows.noise, rows.mode) else {
            return Reference.backward_into(rows, saved, grad);
        };
        let Ok(f) = function(kernel) else {
            return Reference.backward_into(rows, saved, grad);
        };
        let (n, range) = (kernel.n, rows.range.clone());
        let count = range.len();
        if count == 0 {
            return Ok(());
        }
        let stream = &device().map_err(SolveError::Device)?.stream;
        let cotangent = match saved.per_sample {
            true => &saved.cotangent[range.start * n..range.end * n],
            false => &saved.cotangent[..rows.batch_rows() * n],
        };
        let w = stream
            .clone_htod(bytes(&saved.w[range.start * n..range.end * n]))
            .map_err(failed)?;
        let solution = stream
            .clone_htod(bytes(&saved.solution[range.start * n..range.end * n]))
            .map_err(failed)?;
        let cot = stream.clone_htod(bytes(cotangent)).map_err(failed)?;
        // Written whole by the kernel: nothing to upload.
        let mut g = stream
            .alloc_zeros::<u8>(std::mem::size_of_val(grad))
            .map_err(failed)?;
        let mut bad = stream.clone_htod(&[u64::MAX]).map_err(failed)?;
        let (start, batch) = (range.start as u64, rows.batch_rows() as u64);
        let per_sample = i32::from(saved.per_sample);
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&w)
            .arg(&solution)
            .arg(&cot)
            .arg(&mut g)
            .arg(&start)
            .arg(&batch)
            .arg(&per_sample)
            .arg(&rows.temperature)
            .arg(&mut bad);
        // SAFETY: the arguments are the backward kernel's parameters in order
        // (codegen::backward): `w`, the solution and the gradient one row of `n` per block, the
        // cotangent the rows it indexes (the range's per sample, else every batch row), `bad`
        // one u64.
        unsafe { launch.launch(launch_config(count)) }.map_err(failed)?;
        if bad_row(stream, &bad)?.is_some() {
            // `w/T` overflowed in a re-solve: the reference backend names the row.
            let mut scratch = vec![F::zero(); grad.len()];
            Reference.backward_into(rows, saved, &mut scratch)?;
            return Err(SolveError::GradientNotFinite { kernel: "cuda" });
        }
        stream.memcpy_dtoh(&g, bytes_mut(grad)).map_err(failed)?;
        Ok(())
    }
}
