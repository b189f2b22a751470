//! The CUDA backend (feature `cuda`, issue 17). Without a GPU (CI and every developer machine):
//! - every kernel the backend generates, for every plan it accepts (every registered support,
//!   instances of several sizes, every soft solver and rule, every estimator, gumbel noise or
//!   none, f32 and f64), compiles with the real NVRTC to a CUBIN for sm_80 and sm_90 (NVRTC from
//!   the CUDA toolkit or the PyPI package `nvidia-cuda-nvrtc` on LD_LIBRARY_PATH; without it the
//!   test fails and says so);
//! - the generated prelude (Philox, the uniforms' layout, `ln`, `exp`, the Gumbel and logistic
//!   transforms), compiled as C by the host's compiler without contraction, gives the Rust
//!   noise bit for bit: the same IEEE operations the GPU runs under `--fmad=false`;
//! - every kind of generated kernel, compiled by the host's C++ compiler after an emulation of
//!   the CUDA it uses (`tests/cuda_host/emulation.hpp`: a thread per CUDA thread, barriers for
//!   `__syncthreads` and the warp shuffles), computes what the reference backend does;
//! - `--backend cuda` on a machine without a driver is one line and exit 2.
//!
//! With a GPU (`cargo test --release --features cuda --test cuda -- --ignored`, DEVELOPERS'
//! device script): the device agrees with the reference backend on every accepted plan.
#![cfg(feature = "cuda")]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::cli::{code, run, text, TempDir};
use common::Rng;
use ndarray::ArrayD;
use sst::backend::cuda::{self, codegen};
use sst::backend::fused::{Front, Kernel, Pass, Precision, SoftKernel, Solve};
use sst::noise::{block_and_slot, gumbel, logistic, uniform, NoiseKey};
use sst::support::{SupportRef, REGISTRY};
use sst::{BackendChoice, Mode, Options, Real};

/// Every compared spec of `support` ([`common::solver_and_estimator_specs`]), with the support's
/// default noise, with none and with the exponential race.
fn specs(support: &SupportRef) -> Vec<String> {
    let base = common::solver_and_estimator_specs(support);
    let mut out = base.clone();
    for noise in ["none", "neg_exponential"] {
        let with = format!("{{ noise: {noise}; ");
        out.extend(base.iter().map(|s| s.replacen("{ ", &with, 1)));
    }
    out
}

/// The layers of every registered support at a few sizes, with their specs.
fn layers() -> Vec<(String, sst::Layer)> {
    let mut out = Vec::new();
    for entry in REGISTRY {
        for seed in [1, 2, 5] {
            let support = (entry.random_instance)(seed);
            for spec in specs(&support) {
                if let Ok(m) = sst::compile(&spec) {
                    out.push((spec, m.layer("l").clone()));
                }
            }
        }
    }
    out
}

/// A kernel's precision and pass without its parameters (`k`, the tolerance).
fn kind(kernel: &Kernel) -> String {
    let mut out = format!("{:?} ", kernel.precision);
    for c in format!("{:?}", kernel.pass).chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// Every kernel the CUDA backend generates for the accepted plans, and how many plans it
/// accepted and refused.
fn generated_kernels() -> (BTreeSet<String>, Vec<Kernel>, usize, usize) {
    let (mut seen, mut kernels, mut accepted, mut refused) = (BTreeSet::new(), Vec::new(), 0, 0);
    for (_, layer) in layers() {
        for result in [
            cuda::kernels::<f32>(&layer.plan().program),
            cuda::kernels::<f64>(&layer.plan().program),
        ] {
            match result {
                Ok(ks) => {
                    accepted += 1;
                    for k in ks {
                        if seen.insert(format!("{k:?}")) {
                            kernels.push(k);
                        }
                    }
                }
                Err(_) => refused += 1,
            }
        }
    }
    (seen, kernels, accepted, refused)
}

#[test]
fn every_generated_kernel_compiles_to_cubin_for_sm_80_and_sm_90() {
    if let Err(why) = cuda::nvrtc_version() {
        panic!(
            "this test needs NVRTC: {why} (scripts/test puts python/.venv's on LD_LIBRARY_PATH)"
        );
    }
    let (_, kernels, accepted, refused) = generated_kernels();
    assert!(
        accepted >= 20,
        "{accepted} plans accepted, {refused} refused"
    );
    // Every kind of kernel is among them, in both precisions: forward with Gumbel noise and the
    // exponential race (argmax, softmax, sparsemax, top-k, the two threshold links, the capped
    // simplex, Sinkhorn, the directed and undirected matrix-tree), their binary forms (positive,
    // sigmoid, clip) and none (all thirteen); backward of the soft kernels but Sinkhorn's and the
    // matrix-tree's, from the saved solution or re-solved.
    let kinds: BTreeSet<String> = kernels.iter().map(kind).collect();
    assert_eq!(kinds.len(), 2 * (2 * (10 + 3) + 13 + 7 * 2), "{kinds:#?}");
    for kernel in &kernels {
        let source = codegen::source(kernel);
        for arch in ["sm_80", "sm_90"] {
            let cubin = cuda::compile_cubin(&source, arch)
                .unwrap_or_else(|e| panic!("{kernel:?} for {arch}: {e}\n{source}"));
            assert_eq!(&cubin[..4], b"\x7fELF", "{kernel:?} {arch}: not a CUBIN");
        }
    }
    eprintln!(
        "{} kernels ({} kinds) for {accepted} accepted plans compiled for sm_80 and sm_90",
        kernels.len(),
        kinds.len()
    );
}

/// The host's C compiler on the prelude and a driver printing, for three keys and the first
/// 200 elements of a row, each element's Gumbel and logistic noise in both precisions through
/// the kernels' own block/slot → element map, then `ln` and `exp` over a sweep; the lines are
/// compared with the Rust code's bits.
#[test]
fn the_device_prelude_computes_the_rust_noise_bit_for_bit() {
    let dir = TempDir::new();
    let driver = r#"
#include <stdio.h>
int main(void) {
    u64 seeds[3] = {0ull, 12345ull, 0xfedcba9876543210ull};
    for (int k = 0; k < 3; k++) {
        for (int per_block = 2; per_block <= 4; per_block += 2) {
            for (int block = 0; block < 100; block++) {
                u32 words[4];
                sst_block_words(words, seeds[k], 3u, 7u, 0u, (u64)block);
                for (int slot = 0; slot < per_block; slot++) {
                    int e = sst_element(block, slot, per_block);
                    if (e >= 200) continue;
                    if (per_block == 4) {
                        float u = sst_uniform_f32(words, slot);
                        printf("f32 %d %d %08x %08x\n", k, e, bits_f32(sst_gumbel_f32(u)), bits_f32(sst_logistic_f32(u)));
                    } else {
                        double u = sst_uniform_f64(words, slot);
                        printf("f64 %d %d %016llx %016llx\n", k, e, bits_f64(sst_gumbel_f64(u)), bits_f64(sst_logistic_f64(u)));
                    }
                }
            }
        }
    }
    for (int i = 0; i < 4000; i++) {
        double x = -750.0 + 0.3751 * i;
        printf("exp 0 %d %08x %016llx\n", i, bits_f32(sst_exp_f32((float)x)), bits_f64(sst_exp_f64(x)));
        double y = 1e-300 * __builtin_pow(10.0, 0.15 * i);
        if (y < 1e300) printf("ln 0 %d %08x %016llx\n", i, bits_f32(sst_ln_f32((float)(y > 1e-37 && y < 1e38 ? y : 1.5))), bits_f64(sst_ln_f64(y)));
    }
    return 0;
}
"#;
    let file = dir.write("prelude.c", &(codegen::prelude() + driver));
    let exe = file.with_extension("exe");
    let compiled = Command::new("cc")
        .args([
            "-O2",
            "-std=c99",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-o",
        ])
        .arg(&exe)
        .arg(&file)
        .arg("-lm")
        .output()
        .expect("the host's C compiler `cc` (which links Rust programs too)");
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
    let out = Command::new(&exe)
        .output()
        .expect("the compiled driver runs");
    assert!(out.status.success());
    let (mut noise_lines, mut math_lines) = (0, 0);
    let seeds = [0u64, 12345, 0xfedc_ba98_7654_3210];
    for line in text(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let i: usize = f[2].parse().unwrap();
        let hex32 = |s: &str| u32::from_str_radix(s, 16).unwrap();
        let hex64 = |s: &str| u64::from_str_radix(s, 16).unwrap();
        match f[0] {
            "f32" | "f64" => {
                let key = NoiseKey {
                    seed: seeds[f[1].parse::<usize>().unwrap()],
                    sample: 3,
                    batch: 7,
                };
                if f[0] == "f32" {
                    let u: f32 = uniform(key, i as u64);
                    assert_eq!(hex32(f[3]), gumbel(u).to_bits(), "{line}");
                    assert_eq!(hex32(f[4]), logistic(u).to_bits(), "{line}");
                    assert_eq!(block_and_slot::<f32>(i as u64).0 % 4, (i % 4) as u64);
                } else {
                    let u: f64 = uniform(key, i as u64);
                    assert_eq!(hex64(f[3]), gumbel(u).to_bits(), "{line}");
                    assert_eq!(hex64(f[4]), logistic(u).to_bits(), "{line}");
                }
                noise_lines += 1;
            }
            "exp" => {
                let x = -750.0 + 0.3751 * i as f64;
                assert_eq!(
                    hex32(f[2 + 1]),
                    sst::math::exp_f32(x as f32).to_bits(),
                    "{line}"
                );
                assert_eq!(hex64(f[4]), sst::math::exp_f64(x).to_bits(), "{line}");
                math_lines += 1;
            }
            "ln" => {
                let y = 1e-300 * 10f64.powf(0.15 * i as f64);
                let y32 = if y > 1e-37 && y < 1e38 { y } else { 1.5 } as f32;
                assert_eq!(hex32(f[3]), sst::math::ln_f32(y32).to_bits(), "{line}");
                assert_eq!(hex64(f[4]), sst::math::ln_f64(y).to_bits(), "{line}");
                math_lines += 1;
            }
            other => panic!("unexpected line {other}: {line}"),
        }
    }
    // 3 keys × 200 elements × 2 precisions; the sweeps.
    assert_eq!(noise_lines, 3 * 200 * 2);
    assert!(math_lines > 6000, "{math_lines}");
}

#[test]
fn without_a_driver_backend_cuda_is_one_line_and_exit_2() {
    if cuda::describe().is_ok() {
        eprintln!("this machine has a GPU: the no-driver path is not exercised here");
        return;
    }
    let dir = TempDir::new();
    let spec = dir.write("l.sst", "layer l: categorical(4) {}");
    let out = run(
        &["eval", spec.to_str().unwrap(), "--backend", "cuda"],
        r#"{"theta": [0, 1, 2, 3]}"#,
    );
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cuda") && err.contains("driver"), "{err}");
    assert!(text(&out.stdout).is_empty());
    // The host API: a request error naming the field.
    let layer = sst::compile("layer l: categorical(4) {}").unwrap();
    let theta = ndarray::array![0.0f32, 1.0, 2.0, 3.0].into_dyn();
    let e = layer
        .layer("l")
        .try_forward(
            theta.view(),
            &Options::default().backend(BackendChoice::Cuda),
        )
        .unwrap_err();
    assert_eq!(e.field, "backend");
    assert!(e.message.contains("driver"), "{e}");
}

/// `sst check` names the kernels `--backend cuda` runs on the device, says when the hard pass
/// stays on the host, and why a layer runs on the reference backend.
#[test]
fn check_says_which_kernels_run_on_the_device() {
    let dir = TempDir::new();
    let spec = dir.write(
        "l.sst",
        "layer p: permutation(6) {}\nlayer s: subset(8, k = 3) {}\nlayer t: subset(8, k = 3) { regularizer: expfamily }",
    );
    let out = run(&["check", spec.to_str().unwrap()], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("with --backend cuda"))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains(
            "1 fused kernels on the device (forward gumbel sinkhorn), the hard pass on the host"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("(forward gumbel top_k, backward threshold (re-solved), forward gumbel threshold, backward threshold);"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]
            .contains("reference  # with --backend cuda: the esp_dp soft kernel is not generated"),
        "{}",
        lines[2]
    );
}

/// `‖a − b‖∞ / max(1, ‖b‖∞)`.
fn relative<F: Real>(a: &[F], b: &[F]) -> f64 {
    let scale = b.iter().fold(1.0f64, |m, x| m.max(x.f64().abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.f64() - y.f64()).abs()))
        / scale
}

fn agree<F: Real>(layer: &sst::Layer, spec: &str, rng: &mut Rng, tol: f64) {
    let shape = layer.plan().support.shape();
    let mut dims = vec![3];
    dims.extend(&shape);
    let theta = rng.array(&dims, -3.0, 3.0).mapv(F::of);
    let cot = rng.array(&dims, -1.0, 1.0).mapv(F::of);
    for mode in [Mode::Hard, Mode::Soft] {
        let opts = Options::default().seed(9).mode(mode).samples(2);
        let on = |b| layer.try_forward(theta.view(), &opts.backend(b));
        let (gpu, cpu) = (on(BackendChoice::Cuda), on(BackendChoice::Reference));
        let (gpu, cpu) = match (gpu, cpu) {
            (Ok(g), Ok(c)) => (g, c),
            (Err(g), Err(c)) => {
                assert_eq!(g.field, c.field, "{spec}");
                continue;
            }
            (g, c) => panic!("{spec} {mode:?}: {g:?} vs {c:?}"),
        };
        assert_eq!(gpu.w, cpu.w, "{spec} {mode:?}: w");
        match mode {
            Mode::Hard => assert_eq!(gpu.z, cpu.z, "{spec}: hard samples"),
            Mode::Soft => assert!(relative(&flat(&gpu.z), &flat(&cpu.z)) <= tol, "{spec}: z"),
        }
        let g = layer.try_backward(&gpu, cot.view()).unwrap();
        let c = layer.try_backward(&cpu, cot.view()).unwrap();
        assert!(
            relative(&flat(&g), &flat(&c)) <= tol,
            "{spec} {mode:?}: gradient"
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: cargo test --release --features cuda --test cuda -- --ignored"]
fn on_a_gpu_the_device_agrees_with_the_reference_on_every_accepted_plan() {
    let device = cuda::describe().unwrap_or_else(|why| panic!("no GPU: {why}"));
    let mut rng = Rng(17);
    let mut checked = 0;
    for (spec, layer) in layers() {
        if cuda::kernels::<f32>(&layer.plan().program).is_err() {
            continue;
        }
        agree::<f32>(&layer, &spec, &mut rng, 1e-5);
        agree::<f64>(&layer, &spec, &mut rng, 1e-6);
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    eprintln!("{checked} plans agree on {device}");
}

/// The forward and backward drivers' `main`: arguments `input output rows start batch seed
/// temperature` (forward: the input holds θ's batch rows, the output `w`, `z`, the bad row, and
/// `output.stats` the rows' stats) or
/// `input output rows start batch per_sample temperature` (backward: the input holds `w`, the
/// solution, the cotangent and the gradient; the output the gradient and the bad row).
const FORWARD_MAIN: &str = r#"
int main(int argc, char** argv) {
    if (argc != 8) return 2;
    u64 rows = strtoull(argv[3], 0, 10), start = strtoull(argv[4], 0, 10);
    u64 batch = strtoull(argv[5], 0, 10), seed = strtoull(argv[6], 0, 10);
    double temperature = strtod(argv[7], 0);
    FILE* in = fopen(argv[1], "rb");
    std::vector<real> theta = sst_read<real>(in, batch * SST_N), w(rows * SST_N), z(rows * SST_N);
    std::vector<u64> bad(1, ~0ull);
    std::vector<double> stats(rows * STATS), kept(rows * KEPT);
    sst_launch(rows, THREADS, [&] {
        sst_kernel(theta.data(), w.data(), z.data(), start, batch, seed, temperature, bad.data(),
                   stats.data(), kept.data());
    });
    FILE* out = fopen(argv[2], "wb");
    sst_write(out, w); sst_write(out, z); sst_write(out, bad);
    FILE* report = fopen((std::string(argv[2]) + ".stats").c_str(), "wb");
    sst_write(report, stats);
    return fclose(out) | fclose(report);
}
"#;
const BACKWARD_MAIN: &str = r#"
int main(int argc, char** argv) {
    if (argc != 8) return 2;
    u64 rows = strtoull(argv[3], 0, 10), start = strtoull(argv[4], 0, 10);
    u64 batch = strtoull(argv[5], 0, 10);
    int per_sample = atoi(argv[6]);
    double temperature = strtod(argv[7], 0);
    FILE* in = fopen(argv[1], "rb");
    std::vector<real> w = sst_read<real>(in, rows * SST_N), s = sst_read<real>(in, rows * SST_N);
    std::vector<real> g = sst_read<real>(in, (per_sample ? rows : batch) * SST_N);
    std::vector<real> grad = sst_read<real>(in, rows * SST_N);
    std::vector<u64> bad(1, ~0ull);
    sst_launch(rows, THREADS, [&] {
        sst_kernel(w.data(), s.data(), g.data(), grad.data(), start, batch, per_sample,
                   temperature, bad.data());
    });
    FILE* out = fopen(argv[2], "wb");
    sst_write(out, grad); sst_write(out, bad);
    return fclose(out);
}
"#;

/// Threads per block in the emulation: the kernels loop with stride `blockDim.x` and reduce
/// over `blockDim.x / 32` warps, so two warps exercise every path of the device's
/// [`codegen::THREADS`] at an eighth of the emulation's cost (each barrier wakes every thread).
const EMULATED_THREADS: u32 = 64;

/// A generated kernel compiled for the host (`#include "emulation.hpp"` before it, a driver
/// after it) by the host's C++ compiler, without contraction as NVRTC runs it.
struct Emulated {
    exe: std::path::PathBuf,
    kernel: Kernel,
}

/// The host C++ compiler with the emulation's flags (a precompiled header needs the same).
fn cxx() -> Command {
    let mut c = Command::new("c++");
    c.args([
        "-std=c++20",
        "-O1",
        "-pthread",
        "-ffp-contract=off",
        "-fno-fast-math",
    ]);
    c.stderr(std::process::Stdio::piped());
    c
}

/// Writes `emulation.hpp` into `dir` and precompiles it (its standard headers are most of a
/// kernel's compile time).
fn precompile_emulation(dir: &TempDir) {
    let header = dir.write("emulation.hpp", include_str!("cuda_host/emulation.hpp"));
    let out = cxx()
        .args(["-x", "c++-header", "-o"])
        .arg(header.with_extension("hpp.gch"))
        .arg(&header)
        .output()
        .expect("the host's C++ compiler `c++` (g++ ≥ 11 or clang ≥ 14: <barrier>)");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Starts compiling `kernel` in `dir` (after [`precompile_emulation`]) as `name`.
fn emulate(dir: &TempDir, name: &str, kernel: Kernel) -> (Emulated, std::process::Child) {
    let main = match kernel.pass {
        Pass::Forward { .. } => FORWARD_MAIN,
        Pass::Backward { .. } => BACKWARD_MAIN,
    };
    let source = format!(
        "#include \"emulation.hpp\"\n#define THREADS {EMULATED_THREADS}\n#define STATS {}\n#define KEPT {}\n{}{main}",
        codegen::STATS,
        kernel.kept_width().max(1),
        codegen::source(&kernel)
    );
    let file = dir.write(&format!("{name}.cpp"), &source);
    let exe = file.with_extension("exe");
    let child = cxx()
        .args(["-Wno-unused-result", "-o"])
        .arg(&exe)
        .arg(&file)
        .spawn()
        .unwrap();
    (Emulated { exe, kernel }, child)
}

/// Values of `F` as the kernel's bytes, and back.
fn to_bytes<F: Real>(values: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        match F::NAME {
            "f32" => out.extend((v.f64() as f32).to_le_bytes()),
            _ => out.extend(v.f64().to_le_bytes()),
        }
    }
    out
}
fn from_bytes<F: Real>(bytes: &[u8]) -> Vec<F> {
    let size = std::mem::size_of::<F>();
    bytes
        .chunks(size)
        .map(|c| match size {
            4 => F::of(f32::from_le_bytes(c.try_into().unwrap()) as f64),
            _ => F::of(f64::from_le_bytes(c.try_into().unwrap())),
        })
        .collect()
}

/// What an emulated forward kernel wrote.
struct Emulation<F> {
    w: Vec<F>,
    z: Vec<F>,
    stats: Vec<f64>,
    bad: Option<u64>,
}

impl Emulated {
    /// Runs the driver on `input` with `args`; the output's values and the bad row.
    fn run<F: Real>(&self, dir: &TempDir, input: &[F], args: &[String]) -> (Vec<F>, Option<u64>) {
        let input_path = dir.0.join("input.bin");
        let output_path = dir.0.join("output.bin");
        std::fs::write(&input_path, to_bytes(input)).unwrap();
        // A kernel whose threads miss each other at a barrier hangs: 60 s is far beyond a run.
        let status = Command::new("timeout")
            .arg("60")
            .arg(&self.exe)
            .arg(&input_path)
            .arg(&output_path)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{:?}: {status}", self.kernel);
        let bytes = std::fs::read(&output_path).unwrap();
        let (values, bad) = bytes.split_at(bytes.len() - 8);
        let bad = u64::from_le_bytes(bad.try_into().unwrap());
        (from_bytes(values), (bad != u64::MAX).then_some(bad))
    }

    /// `w`, `z` and the bad row of rows `start..start + rows` for θ's `batch` rows, and each
    /// row's stats.
    fn forward<F: Real>(
        &self,
        dir: &TempDir,
        theta: &[F],
        (rows, start, batch): (usize, usize, usize),
        seed: u64,
        temperature: f64,
    ) -> Emulation<F> {
        let args = [rows, start, batch, seed as usize].map(|x| x.to_string());
        let mut args = args.to_vec();
        args.push(format!("{temperature:e}"));
        let (mut w, bad) = self.run(dir, theta, &args);
        let z = w.split_off(rows * self.kernel.n);
        let stats = std::fs::read(dir.0.join("output.bin.stats")).unwrap();
        let stats = from_bytes::<f64>(&stats);
        Emulation { w, z, stats, bad }
    }
}

/// Every kind of kernel the backend generates (precision × pass, the kinds the NVRTC test
/// counts), at a row length of the registry's instances and at 1999 (more elements than
/// threads, more Philox blocks than threads, a partial last group), run on the host by the
/// emulation and held to the reference backend through the layer API: the same `w` bits and
/// hard samples, soft outputs and gradients to rounding (sums in another order), on every row,
/// on a range that starts at the second sample, with one cotangent per batch row and one per
/// sample; without noise on θ with ties; and a row whose `w/T` overflows is the one reported.
#[test]
fn on_the_host_every_kind_of_generated_kernel_computes_what_the_reference_does() {
    let long = [
        "layer l: categorical(1999) { temperature: 0.7 }",
        "layer l: categorical(1999) { regularizer: euclidean; temperature: 0.7 }",
        "layer l: bernoulli(1999) { temperature: 0.7 }",
        "layer l: subset(1999, k = 700) { temperature: 0.7 }",
        "layer l: subset(1999, k = 3) { regularizer: entropy; temperature: 0.7 }",
        "layer l: subset(1999, k = 900) { regularizer: euclidean; temperature: 0.7 }",
        "layer l: bernoulli(1999) { regularizer: euclidean; temperature: 0.7 }",
        "layer l: matching(n = 30, m = 40) { temperature: 0.7 }",
        "layer l: arborescence(nodes = 40, root = 3) { temperature: 0.7 }",
        "layer l: spanning_tree(nodes = 40) { temperature: 0.7 }",
    ];
    let mut layers = layers();
    for spec in long {
        for spec in [spec.to_string(), spec.replacen("{ ", "{ noise: none; ", 1)] {
            let layer = sst::compile(&spec).unwrap().layer("l").clone();
            layers.push((spec, layer));
        }
    }
    let dir = TempDir::new();
    // The first layer of each kind at each of the two lengths, and its kernels.
    let mut seen = BTreeSet::new();
    let mut chosen: Vec<(String, sst::Layer, Kernel)> = Vec::new();
    for (spec, layer) in layers {
        for kernels in [
            cuda::kernels::<f32>(&layer.plan().program),
            cuda::kernels::<f64>(&layer.plan().program),
        ] {
            for kernel in kernels.into_iter().flatten() {
                if seen.insert(format!("{} {}", kind(&kernel), kernel.n > 1000)) {
                    chosen.push((spec.clone(), layer.clone(), kernel));
                }
            }
        }
    }
    // The race's 13 kinds per precision at the short length only (its transform is per element).
    assert_eq!(chosen.len(), 2 * (2 * 53 - 13), "{seen:#?}");
    precompile_emulation(&dir);
    // Compiled four at a time.
    let mut emulated = Vec::new();
    for (g, group) in chosen.chunks(4).enumerate() {
        let started: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(i, (_, _, k))| emulate(&dir, &format!("kernel{}", 4 * g + i), *k))
            .collect();
        for (e, child) in started {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{:?}: {}",
                e.kernel,
                text(&out.stderr)
            );
            emulated.push(e);
        }
    }
    let mut rng = Rng(23);
    for ((spec, layer, _), e) in chosen.iter().zip(&emulated) {
        match e.kernel.precision {
            Precision::F32 => host_agrees::<f32>(&dir, layer, spec, e, &mut rng, 1e-5),
            Precision::F64 => host_agrees::<f64>(&dir, layer, spec, e, &mut rng, 1e-13),
        }
    }
}

fn flat<F: Real>(a: &ArrayD<F>) -> Vec<F> {
    a.iter().copied().collect()
}

/// One emulated kernel against the reference backend: batch 3, 2 samples.
fn host_agrees<F: Real>(
    dir: &TempDir,
    layer: &sst::Layer,
    spec: &str,
    e: &Emulated,
    rng: &mut Rng,
    tol: f64,
) {
    let (n, batch, samples) = (e.kernel.n, 3, 2);
    let rows = batch * samples;
    let mut dims = vec![batch];
    dims.extend(layer.plan().support.shape());
    let theta = rng.array(&dims, -3.0, 3.0);
    // Without noise, θ on a grid of halves: ties in w (argmax and top-k take the lowest
    // indices).
    let theta = match e.kernel.pass {
        Pass::Forward {
            front: Front::None, ..
        } => theta.mapv(|x| F::of((2.0 * x).round() / 2.0)),
        _ => theta.mapv(F::of),
    };
    let mode = match e.kernel.pass {
        Pass::Forward {
            solve: Solve::Soft(_),
            ..
        }
        | Pass::Backward {
            recompute: false, ..
        } => Mode::Soft,
        _ => Mode::Hard,
    };
    let opts = Options::default()
        .seed(9)
        .mode(mode)
        .samples(samples)
        .backend(BackendChoice::Reference);
    let cpu = layer.try_forward(theta.view(), &opts).unwrap();
    let close_to = |a: &[F], b: &[F], what: &str, tol: f64| {
        let err = relative(a, b);
        assert!(err <= tol, "{spec} {:?}: {what} off by {err:e}", e.kernel);
    };
    let close = |a: &[F], b: &[F], what: &str| close_to(a, b, what, tol);
    let (w, z) = (flat(&cpu.w), flat(&cpu.z));
    match e.kernel.pass {
        Pass::Forward { solve, .. } => {
            let theta = flat(&theta);
            let out = e.forward(dir, &theta, (rows, 0, batch), 9, cpu.temperature);
            assert_eq!(out.w, w, "{spec} {:?}: w", e.kernel);
            // Sinkhorn leaves a row whose spread (with the padding's zeros) is beyond SPREAD to
            // the host's ε-scaling: the first such row is flagged and nothing else is compared.
            if let Solve::Soft(SoftKernel::Sinkhorn { rows: r, cols, .. }) = solve {
                let wide = w.chunks(n).position(|row| {
                    let x = row.iter().map(|v| v.f64() / cpu.temperature);
                    let pad = if r < cols { 0.0 } else { f64::NAN };
                    let hi = x.clone().fold(pad, f64::max);
                    let lo = x.fold(pad, f64::min);
                    hi - lo > sst::kernels::sinkhorn::SPREAD
                });
                if let Some(first) = wide {
                    assert_eq!(out.bad, Some(first as u64), "{spec} {:?}", e.kernel);
                    return;
                }
            }
            assert_eq!(out.bad, None, "{spec} {:?}", e.kernel);
            match solve {
                // Two Sinkhorn runs stopped at a row residual of `tol` agree to about that.
                Solve::Soft(SoftKernel::Sinkhorn { tol_bits, .. }) => {
                    close_to(&out.z, &z, "z", tol.max(100.0 * f64::from_bits(tol_bits)))
                }
                Solve::Soft(_) => close(&out.z, &z, "z"),
                _ => assert_eq!(out.z, z, "{spec} {:?}: hard z", e.kernel),
            }
            // A solver's stats are the reference's report: the same iterations (the same steps
            // from the same start) up to one, residuals within the tolerance. One more or fewer:
            // the default tol = 1e-12 is at the rounding floor of a sum of k terms near k (the
            // device sums in another order and evaluates h without the host's cache), so a step
            // that lands there stops on one side and not the other.
            if let Solve::Soft(SoftKernel::Threshold { tol_bits, .. }) = solve {
                let worst = |i: usize| out.stats.chunks(2).fold(0.0f64, |m, r| m.max(r[i]));
                let report = &cpu.report.values;
                assert!(
                    (worst(0) - report["tau_iterations"]).abs() <= 1.0,
                    "{spec}: {} vs {}",
                    worst(0),
                    report["tau_iterations"]
                );
                assert!(worst(1) <= f64::from_bits(tol_bits).max(1e-9), "{spec}");
            }
            if let Solve::Soft(SoftKernel::Sinkhorn { tol_bits, .. }) = solve {
                let worst = out.stats.chunks(2).fold(0.0f64, |m, r| m.max(r[1]));
                assert!(
                    worst <= f64::from_bits(tol_bits),
                    "{spec}: residual {worst:e}"
                );
            }
            // The rows of the second sample alone.
            let half = e.forward(dir, &theta, (batch, batch, batch), 9, cpu.temperature);
            assert_eq!(
                (&half.w[..], &half.z[..]),
                (&out.w[batch * n..], &out.z[batch * n..])
            );
            // An entry whose w/T overflows, in batch row 1: rows 1 and 4 are bad, 1 is named.
            if let Solve::Soft(_) = solve {
                let mut huge = theta.clone();
                // (T = 0.9: the other rows stay as easy as at T = 1, where Sinkhorn converges.)
                huge[n + n / 2] = F::max_value() * F::of(0.95);
                let bad = e.forward(dir, &huge, (rows, 0, batch), 9, 0.9).bad;
                assert_eq!(bad, Some(1), "{spec} {:?}", e.kernel);
            }
        }
        Pass::Backward { .. } => {
            let mut cdims = vec![samples];
            cdims.extend(&dims);
            for per_sample in [false, true] {
                let cot_dims = if per_sample { &cdims[..] } else { &dims[..] };
                let cot = rng.array(cot_dims, -1.0, 1.0).mapv(F::of);
                let want = flat(&layer.try_backward(&cpu, cot.view()).unwrap());
                let mut input = w.clone();
                input.extend(&z);
                input.extend(flat(&cot));
                // The gradient's memory holds NaN: an entry the kernel does not write shows.
                input.extend(vec![F::nan(); rows * n]);
                let args = [rows, 0, batch, usize::from(per_sample)].map(|x| x.to_string());
                let mut args = args.to_vec();
                args.push(format!("{:e}", cpu.temperature));
                let (grad, bad) = e.run::<F>(dir, &input, &args);
                assert_eq!(bad, None);
                close(
                    &grad,
                    &want,
                    if per_sample {
                        "gradient (per sample)"
                    } else {
                        "gradient"
                    },
                );
            }
        }
    }
}
