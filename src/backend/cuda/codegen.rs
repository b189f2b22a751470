//! CUDA C for the fused kernels ([`Kernel`]): one translation unit per kernel, compiled by
//! NVRTC when a layer first runs on the device.
//!
//! The source is a *prelude* — Philox4x32-10, the uniforms in the block/slot layout of
//! [`crate::noise`], sst's `ln`/`exp` ([`crate::math`], the same constants and the same IEEE
//! operations in the same order) and the noise transforms — followed by one `__global__`
//! function. The prelude is plain C as well as CUDA C, so the tests compile it with the host's C
//! compiler and check its noise against the Rust code bit for bit; NVRTC compiles it with
//! `--fmad=false` (no contraction: the only fused multiply–adds are the `fma` calls written,
//! as in [`crate::math`]), so the GPU computes the same bits.
//!
//! Launch: one block of [`THREADS`] threads per row of the range (`grid = rows`), block
//! reductions by warp shuffles. With noise, a thread owns whole Philox blocks (every word of a
//! block is used: 4 f32 or 2 f64 uniforms); without, it walks the row with stride
//! `blockDim.x`.

use std::fmt::Write;

use crate::backend::fused::{Front, Kernel, Pass, Precision, SoftKernel, Solve};
use crate::ir::Trees;
use crate::kernels::threshold::{Link, CACHED_SPREAD, MAX_ITERS};
use crate::math::{Exp, Ln, EXP_F32, EXP_F64, LN_F32, LN_F64};
use crate::noise::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, SECOND_STREAM};

/// Threads per block (one block per row): a whole number of warps, at most 1024, as the
/// reductions' full-warp shuffles and 32-entry scratch assume.
pub const THREADS: u32 = 256;
const _: () = assert!(THREADS.is_multiple_of(32) && THREADS <= 1024);

/// The name of the kernel's `__global__` function.
pub const ENTRY: &str = "sst_kernel";

/// The whole translation unit of `kernel`.
pub fn source(kernel: &Kernel) -> String {
    let mut s = format!("// sst fused kernel: {kernel:?}\n");
    s.push_str(&prelude());
    s.push_str(&reductions(kernel.precision));
    match kernel.pass {
        Pass::Forward { front, solve } => s.push_str(&forward(kernel, front, solve)),
        Pass::Backward { soft, recompute } => s.push_str(&backward(kernel, soft, recompute)),
    }
    s
}

/// The C-compatible part: types, bit casts, Philox, uniforms, `ln`, `exp`, the transforms.
pub fn prelude() -> String {
    let mut s = String::from(
        r#"#ifdef __CUDACC__
#define SST_FN __device__ __forceinline__
typedef unsigned int u32;
typedef unsigned long long u64;
SST_FN float f32_of(u32 b) { return __uint_as_float(b); }
SST_FN u32 bits_f32(float x) { return __float_as_uint(x); }
SST_FN double f64_of(u64 b) { return __longlong_as_double((long long)b); }
SST_FN u64 bits_f64(double x) { return (u64)__double_as_longlong(x); }
#else
#include <string.h>
#define SST_FN static inline
typedef unsigned int u32;
typedef unsigned long long u64;
SST_FN float f32_of(u32 b) { float x; memcpy(&x, &b, 4); return x; }
SST_FN u32 bits_f32(float x) { u32 b; memcpy(&b, &x, 4); return b; }
SST_FN double f64_of(u64 b) { double x; memcpy(&x, &b, 8); return x; }
SST_FN u64 bits_f64(double x) { u64 b; memcpy(&b, &x, 8); return b; }
#endif
"#,
    );
    let _ = write!(
        s,
        r#"
/* Philox4x32-10 (crate::noise::philox4x32_10): counter c, key (k0, k1). */
SST_FN void sst_philox(u32 c[4], u32 k0, u32 k1) {{
    for (int round = 0; round < 10; round++) {{
        if (round > 0) {{ k0 += {w0}u; k1 += {w1}u; }}
        u64 p0 = (u64){m0}u * c[0];
        u64 p1 = (u64){m1}u * c[2];
        u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0, n1 = (u32)p1;
        u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1, n3 = (u32)p0;
        c[0] = n0; c[1] = n1; c[2] = n2; c[3] = n3;
    }}
}}

/* The words of Philox block `block` of `stream` for (seed, sample, batch row):
   counter [block lo, block hi | stream, batch, sample], key [seed lo, seed hi]. */
SST_FN void sst_block_words(u32 out[4], u64 seed, u32 sample, u32 batch, u32 stream, u64 block) {{
    out[0] = (u32)block; out[1] = (u32)(block >> 32) | stream; out[2] = batch; out[3] = sample;
    sst_philox(out, (u32)seed, (u32)(seed >> 32));
}}

/* Uniforms in (0, 1): f32 (k + 1/2) 2^-23 from the top 23 bits of a word; f64 (k + 1/2) 2^-52
   from 52 bits of two words (crate::noise::slot_uniform). */
SST_FN float sst_uniform_f32(const u32 words[4], int slot) {{
    return (float)(((double)(words[slot] >> 9) + 0.5) * {two_m23});
}}
SST_FN double sst_uniform_f64(const u32 words[4], int slot) {{
    u64 k = ((u64)words[2 * slot] << 20) | (u64)(words[2 * slot + 1] >> 12);
    return ((double)k + 0.5) * {two_m52};
}}
#define SST_SECOND_STREAM {second}u

/* The element that slot `slot` of Philox block `block` feeds, with `per_block` uniforms per
   block: elements go in groups of 4·per_block over four blocks, element r of group q being slot
   r div 4 of block 4q + r mod 4 (crate::noise::block_and_slot, inverted). */
SST_FN int sst_element(int block, int slot, int per_block) {{
    return 4 * per_block * (block / 4) + block % 4 + 4 * slot;
}}
"#,
        w0 = PHILOX_W0,
        w1 = PHILOX_W1,
        m0 = PHILOX_M0,
        m1 = PHILOX_M1,
        two_m23 = f64_literal(1.0 / (1u64 << 23) as f64),
        two_m52 = f64_literal(1.0 / (1u64 << 52) as f64),
        second = SECOND_STREAM,
    );
    s.push_str(&ln_fn(
        "f32",
        "float",
        &LN_F32.widen(),
        23,
        127,
        0x007f_ffff,
    ));
    s.push_str(&ln_fn(
        "f64",
        "double",
        &LN_F64.widen(),
        52,
        1023,
        0x000f_ffff_ffff_ffff,
    ));
    s.push_str(&exp_fn("f32", "float", &EXP_F32.widen(), 127, 23));
    s.push_str(&exp_fn("f64", "double", &EXP_F64.widen(), 1023, 52));
    for (p, ty) in [("f32", "float"), ("f64", "double")] {
        let _ = write!(
            s,
            r#"
SST_FN {ty} sst_gumbel_{p}({ty} u) {{ return -sst_ln_{p}(-sst_ln_{p}(u)); }}
SST_FN {ty} sst_logistic_{p}({ty} u) {{ return sst_ln_{p}(u) - sst_ln_{p}(({ty})1 - u); }}
"#
        );
    }
    s
}

/// The constants of `ln`/`exp` as f64 (exact: every f32 is an f64), so that one generator
/// writes both precisions.
pub struct Constants {
    offset: u64,
    sqrt_half: u64,
    lg: Vec<f64>,
    ln2_hi: f64,
    ln2_lo: f64,
}

impl<F: Copy + Into<f64>> Ln<F> {
    fn widen(&self) -> Constants {
        Constants {
            offset: self.offset,
            sqrt_half: self.sqrt_half,
            lg: self.lg.iter().map(|&x| x.into()).collect(),
            ln2_hi: self.ln2_hi.into(),
            ln2_lo: self.ln2_lo.into(),
        }
    }
}

/// `exp`'s constants as f64 (see [`Constants`]).
pub struct ExpConstants {
    round: f64,
    log2e: f64,
    ln2_hi: f64,
    ln2_lo: f64,
    taylor: Vec<f64>,
    low: f64,
    high: f64,
}

impl<F: Copy + Into<f64>> Exp<F> {
    fn widen(&self) -> ExpConstants {
        ExpConstants {
            round: self.round.into(),
            log2e: self.log2e.into(),
            ln2_hi: self.ln2_hi.into(),
            ln2_lo: self.ln2_lo.into(),
            taylor: self.taylor.iter().map(|&x| x.into()).collect(),
            low: self.low.into(),
            high: self.high.into(),
        }
    }
}

/// A constant of precision `p` written by its bits, so that no decimal conversion stands between
/// the Rust constant and the device's.
fn literal(p: &str, x: f64) -> String {
    match p {
        "f32" => format!("f32_of(0x{:08x}u)", (x as f32).to_bits()),
        _ => f64_literal(x),
    }
}

fn f64_literal(x: f64) -> String {
    format!("f64_of(0x{:016x}ull)", x.to_bits())
}

/// `ln x` (crate::math::ln_f32 / ln_f64): fdlibm's reduction and minimax polynomial, operation
/// for operation.
fn ln_fn(p: &str, ty: &str, c: &Constants, shift: u32, bias: i32, mantissa: u64) -> String {
    let (bits_ty, int_ty, suffix) = match p {
        "f32" => ("u32", "int", "u"),
        _ => ("u64", "long long", "ull"),
    };
    let lg: Vec<String> = c.lg.iter().map(|&x| literal(p, x)).collect();
    // The fused steps of Horner's rule (`fmaf` / `fma`),
    // t1 = w·(Lg2 + w·(Lg4 + w·Lg6)), t2 = z·(Lg1 + w·(Lg3 + w·(Lg5 + w·Lg7))) in f64;
    // t1 = w·(Lg2 + w·Lg4), t2 = z·(Lg1 + w·Lg3) in f32.
    let fma = if p == "f32" { "fmaf" } else { "fma" };
    let horner = |c: &[String]| {
        let last = c.len() - 1;
        c[..last]
            .iter()
            .rev()
            .fold(c[last].clone(), |acc, ci| format!("{fma}(w, {acc}, {ci})"))
    };
    let (odd, even): (Vec<String>, Vec<String>) = (
        lg.iter().step_by(2).cloned().collect(),
        lg.iter().skip(1).step_by(2).cloned().collect(),
    );
    let (t1, t2) = (
        format!("w * {}", horner(&even)),
        format!("z * {}", horner(&odd)),
    );
    format!(
        r#"
/* ln x for positive normal x (crate::math). */
SST_FN {ty} sst_ln_{p}({ty} x) {{
    {bits_ty} bits = bits_{p}(x) + ({bits_ty})0x{offset:x}{suffix};
    {ty} k = ({ty})(({int_ty})(bits >> {shift}) - {bias});
    {ty} m = {p}_of((bits & ({bits_ty})0x{mantissa:x}{suffix}) + ({bits_ty})0x{sqrt_half:x}{suffix});
    {ty} f = m - ({ty})1;
    {ty} hfsq = ({ty})0.5 * f * f;
    {ty} s = f / (({ty})2 + f);
    {ty} z = s * s;
    {ty} w = z * z;
    {ty} t1 = {t1};
    {ty} t2 = {t2};
    {ty} r = t2 + t1;
    return {fma}(s, hfsq + r, {fma}(k, {lo}, -hfsq)) + f + k * {hi};
}}
"#,
        offset = c.offset,
        sqrt_half = c.sqrt_half,
        lo = literal(p, c.ln2_lo),
        hi = literal(p, c.ln2_hi),
    )
}

/// `exp x` (crate::math::exp_f32 / exp_f64): `2ᵏ·p(r)` with `k` rounded by the `1.5·2ᵖ` add and
/// the Taylor polynomial by Horner's rule in fused multiply–adds, operation for operation.
fn exp_fn(p: &str, ty: &str, c: &ExpConstants, bias: u32, shift: u32) -> String {
    let bits_ty = if p == "f32" { "u32" } else { "u64" };
    let fma = if p == "f32" { "fmaf" } else { "fma" };
    let mut horner = literal(p, c.taylor[c.taylor.len() - 1]);
    for &t in c.taylor[..c.taylor.len() - 1].iter().rev() {
        horner = format!("{fma}(r, {horner}, {})", literal(p, t));
    }
    format!(
        r#"
/* exp x (crate::math): 0 below {low}, clamped above {high}. */
SST_FN {ty} sst_exp_{p}({ty} x) {{
    {ty} xc = x > {high_l} ? {high_l} : x;
    xc = xc < {low_l} ? {low_l} : xc;
    {ty} shifted = xc * {log2e} + {round};
    {ty} k = shifted - {round};
    {ty} r = (xc - k * {ln2_hi}) - k * {ln2_lo};
    {ty} poly = {horner};
    {ty} q = ({ty})1 + {fma}(r * r, poly, r);
    {bits_ty} ki = bits_{p}(shifted) - bits_{p}({round});
    {ty} scale = {p}_of((ki + {bias}u) << {shift});
    return x < {low_l} ? ({ty})0 : q * scale;
}}
"#,
        low = c.low,
        high = c.high,
        low_l = literal(p, c.low),
        high_l = literal(p, c.high),
        log2e = literal(p, c.log2e),
        round = literal(p, c.round),
        ln2_hi = literal(p, c.ln2_hi),
        ln2_lo = literal(p, c.ln2_lo),
    )
}

/// The C type, suffix and accumulator of a precision.
fn names(p: Precision) -> (&'static str, &'static str) {
    match p {
        Precision::F32 => ("float", "f32"),
        Precision::F64 => ("double", "f64"),
    }
}

/// Block-wide reductions (every thread gets the result): the maximum (in the kernel's real or in
/// double), the sum (in double), and the arg-maximum with ties to the lowest index. `scratch`
/// holds 32 entries of shared memory; every thread of the block must call them.
fn reductions(p: Precision) -> String {
    let (ty, _) = names(p);
    format!(
        r#"
#ifdef __CUDACC__
typedef {ty} real;
#define SST_INF __int_as_float(0x7f800000)
/* Shared memory of the block reductions, one entry per warp. */
__shared__ real sst_scratch_r[32];
__shared__ int sst_scratch_i[32];
__shared__ double sst_scratch_d[32];
__device__ double sst_block_sum(double v, double* scratch) {{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}}
/* The maximum in the type of `v` (the kernel's real, or double). */
template <class T> __device__ T sst_block_max(T v, T* scratch) {{
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : (T)-SST_INF;
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}}
/* (value, index) pairs: the larger value, or the lower index among equal values. */
__device__ void sst_better(real* v, int* i, real v2, int i2) {{
    if (v2 > *v || (v2 == *v && i2 < *i)) {{ *v = v2; *i = i2; }}
}}
__device__ int sst_block_argmax(real v, int i, real* scratch, int* scratch_i) {{
    for (int o = 16; o > 0; o >>= 1)
        sst_better(&v, &i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) {{ scratch[warp] = v; scratch_i[warp] = i; }}
    __syncthreads();
    v = lane < warps ? scratch[lane] : -SST_INF;
    i = lane < warps ? scratch_i[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1)
        sst_better(&v, &i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    return i;
}}
#endif
"#
    )
}

/// `w` of one element from `th = θ_e`, its uniform `u` and (the binary race) `u2`, the second
/// stream's, in the reference's operations ([`crate::noise::Perturbation::perturb`]).
fn transform(front: Front, p: &str) -> String {
    match front {
        Front::Gumbel => format!("th + sst_gumbel_{p}(u)"),
        Front::Logistic => format!("th + sst_logistic_{p}(u)"),
        // −exponential(u)·exp(−θ), the negations exact.
        Front::Race => format!("sst_ln_{p}(u) * sst_exp_{p}(-th)"),
        Front::RaceLogistic => {
            format!("th + sst_ln_{p}(-sst_ln_{p}(u)) - sst_ln_{p}(-sst_ln_{p}(u2))")
        }
        Front::None => unreachable!("no noise, no transform"),
        Front::Gaussian { .. } => unreachable!("{ON_THE_HOST}"),
    }
}

/// The first pass's check of `θ_e` where the noise needs one: the race's `|θ| < F::EXP_LIMIT`
/// (the reference refuses the request otherwise; the flagged row sends it there).
fn theta_check(front: Front, precision: Precision) -> String {
    match front {
        Front::Race => {
            let limit = match precision {
                Precision::F32 => <f32 as crate::real::Real>::EXP_LIMIT,
                Precision::F64 => <f64 as crate::real::Real>::EXP_LIMIT,
            };
            format!("bad |= !(fabs(th) < (real){limit:?});")
        }
        _ => String::new(),
    }
}

/// What the first pass does with one element `e` once `w` is known: `x = w/T` for soft kernels,
/// watched for overflow; the elementwise kernels write `z` at once.
fn first_pass(solve: Solve) -> &'static str {
    match solve {
        Solve::Positive => "z[e] = wv > (real)0 ? (real)1 : (real)0;",
        Solve::Argmax => "sst_better(&best, &best_at, wv, e);",
        Solve::TopK { .. } => "",
        Solve::Combinatorial(_)
        | Solve::Soft(SoftKernel::Esp { .. } | SoftKernel::ChainDp { .. }) => {
            unreachable!("{ON_THE_HOST}")
        }
        Solve::Soft(
            SoftKernel::Softmax
            | SoftKernel::Sparsemax
            | SoftKernel::Threshold { .. }
            | SoftKernel::CappedSimplex { .. }
            | SoftKernel::Sinkhorn { .. }
            | SoftKernel::MatrixTree { .. },
        ) => "real x = wv / t; bad |= !isfinite(x); z[e] = x; best = fmax(best, x);",
        Solve::Soft(SoftKernel::Sigmoid) => {
            "real x = wv / t; bad |= !isfinite(x); z[e] = sst_sigmoid(x);"
        }
        Solve::Soft(SoftKernel::Clip) => {
            "real x = wv / t; bad |= !isfinite(x); z[e] = sst_clip(x);"
        }
    }
}

/// The elementwise soft maps and the softmax's exponential, in the kernel's precision.
fn soft_maps(p: &str) -> String {
    format!(
        r#"
__device__ real sst_exp(real x) {{ return sst_exp_{p}(x); }}
/* sigmoid(x) = 1/(1 + e^-x), written so that no exponential overflows. */
__device__ real sst_sigmoid(real x) {{
    real e = sst_exp(-fabs(x));
    return x >= (real)0 ? (real)1 / ((real)1 + e) : e / ((real)1 + e);
}}
__device__ real sst_clip(real x) {{ return fmin(fmax(x + (real)0.5, (real)0), (real)1); }}
/* An output clamped into [0, 1], as the reference clamps every soft output. */
__device__ real sst_unit(real x) {{ return fmin(fmax(x, (real)0), (real)1); }}
"#
    )
}

/// The indicator of the `k` largest `w` of the row, ties to the lowest indices, as
/// [`crate::kernels::top_k::top_k`] defines it, without a sort: the key of the k-th largest
/// value is built bit by bit from the top (`key = prefix | bit` while at least `k` keys are `≥`
/// it: one block count per bit), then the index `I` below which the ties taken lie is bisected
/// (`k − #{key > prefix}` ties below `I`). Keys are the values' bits flipped into unsigned order
/// (−0 as +0).
fn top_k(k: usize, precision: Precision) -> String {
    let (key, bits) = match precision {
        Precision::F32 => ("u32", 32),
        Precision::F64 => ("u64", 64),
    };
    format!(
        r#"{key} prefix = 0;
    for (int bit = {top}; bit >= 0; bit--) {{
        {key} cand = prefix | (({key})1 << bit);
        double part = 0.0;
        for (int e = threadIdx.x; e < SST_N; e += blockDim.x) part += sst_key(w[e]) >= cand ? 1.0 : 0.0;
        if (sst_block_sum(part, sst_scratch_d) >= {k}.0) prefix = cand;
    }}
    double above = 0.0;
    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) above += sst_key(w[e]) > prefix ? 1.0 : 0.0;
    double need = {k}.0 - sst_block_sum(above, sst_scratch_d);
    int lo = 0, hi = SST_N;
    while (lo < hi) {{
        int mid = (lo + hi) / 2;
        double ties = 0.0;
        for (int e = threadIdx.x; e < mid; e += blockDim.x) ties += sst_key(w[e]) == prefix ? 1.0 : 0.0;
        if (sst_block_sum(ties, sst_scratch_d) >= need) hi = mid; else lo = mid + 1;
    }}
    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{
        {key} key = sst_key(w[e]);
        z[e] = key > prefix || (key == prefix && e < lo) ? (real)1 : (real)0;
    }}"#,
        top = bits - 1,
    )
}

/// The device functions of one kind of kernel: for a threshold kernel its link as
/// `double sst_link(double t, double* slope)` (`h(t)`, and `h'(t)` into `slope` when it is not
/// null), the reference's formulas ([`crate::kernels::threshold::Link`]) with sst's `exp`; for
/// top-k `sst_key`, the unsigned key of a value ([`top_k`]). Empty for the other kernels.
fn kernel_helpers(kernel: &Kernel) -> String {
    let link = match kernel.pass {
        Pass::Forward {
            solve: Solve::TopK { .. },
            ..
        } => {
            return match kernel.precision {
                Precision::F32 => "__device__ u32 sst_key(float v) { u32 b = bits_f32(v + 0.0f); return (b & 0x80000000u) ? ~b : b | 0x80000000u; }\n",
                Precision::F64 => "__device__ u64 sst_key(double v) { u64 b = bits_f64(v + 0.0); return (b & 0x8000000000000000ull) ? ~b : b | 0x8000000000000000ull; }\n",
            }
            .to_string()
        }
        Pass::Forward {
            solve: Solve::Soft(SoftKernel::Threshold { link, .. }),
            ..
        }
        | Pass::Backward {
            soft: SoftKernel::Threshold { link, .. },
            ..
        } => link,
        _ => return String::new(),
    };
    let body = match link {
        Link::Sigmoid => "double e = sst_exp_f64(-fabs(t));\n    if (slope) *slope = e / ((1.0 + e) * (1.0 + e));\n    return t >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);",
        Link::CappedExp => "if (t >= 0.0) { if (slope) *slope = 0.0; return 1.0; }\n    double e = sst_exp_f64(t);\n    if (slope) *slope = e;\n    return e;",
    };
    format!("__device__ double sst_link(double t, double* slope) {{\n    {body}\n}}\n")
}

/// One pass over the row `x_e` = `x_of` (an expression in `e`) and two block maxima: leaves
/// `double m` (its maximum) and `least` (its minimum) in scope and flags a non-finite `x` in
/// `bad`.
fn row_extent(x_of: &str) -> String {
    format!(
        r#"real top = -SST_INF, low = SST_INF;
    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real x = {x_of}; bad |= !isfinite(x); top = fmax(top, x); low = fmin(low, x); }}
    double m = (double)sst_block_max(top, sst_scratch_r), least = -(double)sst_block_max(-low, sst_scratch_r);"#
    )
}

/// The threshold `τ` of `Σ h(x − m − τ) = k` for the row `x_e` = `x_of` (an expression in `e`),
/// `m = max x`, by the reference's safeguarded Halley–bisection
/// ([`crate::kernels::threshold::solve_threshold`]: the same bracket, start, steps and stopping
/// rules, every sum a block sum in double). Leaves `double m, tau, iterations, residual` (the
/// reference's report: sums evaluated, `|Σ h − k|` at the last) and `bool converged` in scope
/// and flags a non-finite `x` in `bad`. `k = 0` and `k = n` are the constant solutions.
fn threshold_solve(link: Link, k: usize, tol: f64, x_of: &str) -> String {
    // h'' from h and h' (crate::kernels::threshold::Link::curvature).
    let curvature = match link {
        Link::Sigmoid => "d * (1.0 - 2.0 * h)",
        Link::CappedExp => "d",
    };
    let (lo, hi) = (
        match link {
            Link::Sigmoid => "-spread + log((nf - kf) / nf)",
            Link::CappedExp => "-spread",
        },
        "log(nf / kf)",
    );
    format!(
        r#"{extent}
    double spread = m - least;
    double kf = {k}.0, nf = (double)SST_N;
    double tau = {k} == 0 ? SST_INF : -SST_INF, iterations = 0.0, residual = 0.0;
    bool converged = true;
    /* A finite x whose spread overflows is the host's to report. */
    if ({k} > 0 && {k} < SST_N) bad |= !isfinite(spread);
    if ({k} > 0 && {k} < SST_N && isfinite(spread)) {{
        double lo = {lo}, hi = {hi};
        double dx_old = hi - lo, dx = hi - lo;
        tau = lo + 0.5 * (hi - lo);
        if (spread <= {cached}) {{
            /* h(t) ≤ eᵗ: Σ h(x − m − τ) ≤ k at τ = ln(Σ e^(x − m) / k). */
            double part = 0.0;
            for (int e = threadIdx.x; e < SST_N; e += blockDim.x) part += sst_exp_f64((double)({x_of}) - m);
            hi = fmin(hi, log(sst_block_sum(part, sst_scratch_d) / kf));
            tau = hi;
        }}
        converged = false;
        for (int it = 0; it < {iters}; it++) {{
            double part_h = 0.0, part_d = 0.0, part_c = 0.0;
            for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ double d, h = sst_link(((double)({x_of}) - m) - tau, &d); part_h += h; part_d += d; part_c += {curvature}; }}
            double sum = sst_block_sum(part_h, sst_scratch_d), slope = sst_block_sum(part_d, sst_scratch_d), curve = sst_block_sum(part_c, sst_scratch_d);
            double r = sum - kf;
            iterations = it + 1;
            residual = fabs(r);
            if (residual <= {tol}) {{ converged = true; break; }}
            if (r > 0.0) lo = tau; else hi = tau;
            /* Halley's step on ln Σ h − ln k (Newton's where its denominator is not positive). */
            double f = log(sum / kf), a = slope / sum, b = curve / sum, den = 2.0 * a * a - f * (b - a * a);
            double step = den > 0.0 ? 2.0 * f * a / den : f / a, newton = tau + step;
            bool use_newton = slope > 0.0 && newton > lo && newton < hi && 2.0 * fabs(step) <= dx_old;
            dx_old = dx;
            double next;
            if (use_newton) {{ dx = fabs(step); next = newton; }} else {{ dx = 0.5 * (hi - lo); next = lo + dx; }}
            if (next == tau || next <= lo || next >= hi) {{ converged = true; break; }}
            tau = next;
        }}
    }}"#,
        extent = row_extent(x_of),
        cached = f64_literal(CACHED_SPREAD),
        iters = MAX_ITERS,
        tol = f64_literal(tol),
    )
}

/// What a Sinkhorn, matrix-tree or DP backward arm says if reached:
/// [`crate::backend::fused::backward_kernel`] gives none (their VJPs run on the host).
const NO_VJP: &str = "Sinkhorn, the matrix-tree and the DPs have no backward kernel";

/// What an arm for a kernel this backend leaves to the host says if reached: `cuda::kernels`
/// and the forward pass hand it to the reference backend before any code is generated.
const ON_THE_HOST: &str = "the combinatorial solvers, the DPs and Gaussian noise run on the host";

/// The largest `n` of a generated matrix-tree kernel (its per-node arrays live in shared
/// memory).
pub const MAX_TREE_NODES: usize = 512;

/// The edge marginals of `trees` on `n` nodes ([`crate::kernels::matrix_tree`]) for the row's
/// `x = w/T` (in `z`). Arborescences rooted at `r`: the column-shifted weights
/// `a_ij = exp(x_ij − max_k x_kj)` on the edges (`i ≠ j`, `j ≠ r`), `L̂ᵀ` (`L̂_jj = Σ_i a_ij`,
/// `L̂_ij = −a_ij`, the root's row and column removed) built in the row's `kept` and inverted
/// there in place by Gauss–Jordan without pivoting (`L̂ᵀ` is row diagonally dominant, where
/// elimination needs none), leaving `Mᵀ = L̂⁻ᵀ` for the host's backward pass; then Koo et al.'s
/// `μ_ij = a_ij (M_jj − M_ji)`, `μ_rj = a_rj M_jj`. Undirected spanning trees: the same on the
/// symmetric logits of the upper triangle from the node of largest `log Σ_j exp(x_ij)` (the
/// host's `best_root`, the same bits: sst's `exp` and `ln` in index order), `z_ij = z_ji =
/// μ_ij + μ_ji`. Marginals that fail the identities the host checks (each in `[0, 1]`, each
/// non-root node's in-edges summing to 1, both to `MAX_IDENTITY_ERROR`) flag the row in `bad`:
/// the host then takes its LU, subtraction-free or log-space route.
fn matrix_tree(n: usize, trees: Trees) -> String {
    let m = n - 1;
    let (x, choose_root, output) = match trees {
        Trees::Rooted(root) => (
            format!("((double)z[(i) * {n} + (j)])"),
            format!("const int root = {root};"),
            format!("for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = sst_unit((real)SST_MU(e / {n}, e % {n}));"),
        ),
        Trees::Undirected => (
            format!("((i) < (j) ? (double)z[(i) * {n} + (j)] : (double)z[(j) * {n} + (i)])"),
            format!(
                r#"__shared__ double sst_degree[{n}];
    __shared__ int sst_root;
    for (int i = threadIdx.x; i < {n}; i += blockDim.x) {{
        double top = -SST_INF, sum = 0.0;
        for (int j = 0; j < {n}; j++) if (j != i) top = fmax(top, SST_X(i, j));
        for (int j = 0; j < {n}; j++) if (j != i) sum = sum + sst_exp_f64(SST_X(i, j) - top);
        sst_degree[i] = top + sst_ln_f64(sum);
    }}
    __syncthreads();
    if (threadIdx.x == 0) {{
        int best = 0;
        for (int i = 1; i < {n}; i++) if (sst_degree[i] > sst_degree[best]) best = i;
        sst_root = best;
    }}
    __syncthreads();
    const int root = sst_root;"#
            ),
            // One thread per pair {i, j}: it alone reads x_ij (the upper entry) and writes both.
            format!("for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{\n        int i = e / {n}, j = e % {n};\n        if (i == j) z[e] = (real)0;\n        else if (i < j) {{ real v = sst_unit((real)(SST_MU(i, j) + SST_MU(j, i))); z[e] = v; z[j * {n} + i] = v; }}\n    }}"),
        ),
    };
    format!(
        r#"/* x(i, j) as written by the first pass; node(r) the node of reduced index r. */
#define SST_X(i, j) {x}
    {choose_root}
#define SST_NODE(r) ((r) < root ? (r) : (r) + 1)
#define SST_REDUCED(i) ((i) - ((i) > root))
#define SST_EDGE(i, j) ((i) != (j) && (j) != root)
    __shared__ double sst_shift[{n}], sst_in[{n}], sst_factor[{m}];
    double* lt = kept_all + (u64)blockIdx.x * {m} * {m};
    for (int j = threadIdx.x; j < {n}; j += blockDim.x) {{
        double top = -SST_INF;
        for (int i = 0; i < {n}; i++) if (SST_EDGE(i, j)) top = fmax(top, SST_X(i, j));
        sst_shift[j] = j == root ? 0.0 : top;
    }}
    __syncthreads();
    for (int j = threadIdx.x; j < {n}; j += blockDim.x) {{
        double in = 0.0;
        for (int i = 0; i < {n}; i++) if (SST_EDGE(i, j)) in += sst_exp_f64(SST_X(i, j) - sst_shift[j]);
        sst_in[j] = in;
    }}
    __syncthreads();
    for (int e = threadIdx.x; e < {m} * {m}; e += blockDim.x) {{
        int r = e / {m}, c = e % {m}, j = SST_NODE(r), i = SST_NODE(c);
        /* lt[r][c] = L̂[c][r] */
        lt[e] = r == c ? sst_in[j] : -sst_exp_f64(SST_X(i, j) - sst_shift[j]);
    }}
    for (int k = 0; k < {m}; k++) {{
        __syncthreads();
        double pivot = lt[k * {m} + k];
        __syncthreads();
        for (int c = threadIdx.x; c < {m}; c += blockDim.x) lt[k * {m} + c] = (c == k ? 1.0 : lt[k * {m} + c]) / pivot;
        for (int r = threadIdx.x; r < {m}; r += blockDim.x) sst_factor[r] = r == k ? 0.0 : lt[r * {m} + k];
        __syncthreads();
        for (int e = threadIdx.x; e < {m} * {m}; e += blockDim.x) {{
            int r = e / {m}, c = e % {m};
            if (r != k) lt[e] = (c == k ? 0.0 : lt[e]) - sst_factor[r] * lt[k * {m} + c];
        }}
    }}
    __syncthreads();
#define SST_MU(i, j) (!SST_EDGE(i, j) ? 0.0 : sst_exp_f64(SST_X(i, j) - sst_shift[j]) * ((i) == root ? lt[SST_REDUCED(j) * ({m} + 1)] : lt[SST_REDUCED(j) * ({m} + 1)] - lt[SST_REDUCED(i) * {m} + SST_REDUCED(j)]))
    for (int j = threadIdx.x; j < {n}; j += blockDim.x) {{
        double sum = 0.0;
        for (int i = 0; i < {n}; i++) {{
            double mu = SST_MU(i, j);
            bad |= !(mu >= -{tol} && mu <= 1.0 + {tol});
            sum += mu;
        }}
        bad |= j != root && !(fabs(sum - 1.0) <= {tol});
    }}
    __syncthreads();
    {output}
#undef SST_MU
#undef SST_EDGE
#undef SST_REDUCED
#undef SST_NODE
#undef SST_X"#,
        tol = f64_literal(crate::kernels::matrix_tree::MAX_IDENTITY_ERROR),
    )
}

/// The largest `cols` of a generated Sinkhorn kernel: its duals live in shared memory, 16 bytes a
/// column (32 KiB of the 48 KiB a block may declare).
pub const MAX_SINKHORN_COLS: usize = 2048;

/// Sinkhorn in log space on the `cols × cols` matrix `x` (the row's `rows × cols` entries of
/// `x = w/T`, then `cols − rows` rows of zeros), as [`crate::kernels::sinkhorn::padded_sinkhorn`]
/// defines it: from `β = 0`, iterations of `α_i = −LSE_j(x_ij + β_j)`,
/// `β_j = −LSE_i(x_ij + α_i)` (a thread per row, then per column; every log-sum-exp
/// max-shifted), until the row residual `max_i |Σ_j exp(x_ij + α_i + β_j) − 1|` is at most `tol`
/// or `iters` have run; `z = exp(x + α 1ᵀ + 1 βᵀ)` on the first `rows` rows. No ε-scaling or
/// Newton steps: a row whose spread is beyond [`crate::kernels::sinkhorn::SPREAD`] (where the
/// host scales ε), that was flagged already, or that has not converged is flagged in `bad` (the
/// host re-solves the range, whose report then says so). Stats: iterations and the last
/// residual.
fn sinkhorn(rows: usize, cols: usize, iters: usize, tol: f64) -> String {
    format!(
        r#"/* x(i, j): the scores, zero in the padding rows. */
#define SST_X(i, j) ((i) < {rows} ? (double)z[(i) * {cols} + (j)] : 0.0)
    __shared__ double sst_alpha[{cols}], sst_beta[{cols}];
    for (int j = threadIdx.x; j < {cols}; j += blockDim.x) sst_beta[j] = 0.0;
    /* Wider spreads (the host's ε-scaling) and rows already flagged go to the host at once. */
    {extent}
    double hi = m, lo = least;
    if ({rows} < {cols}) {{ hi = fmax(hi, 0.0); lo = fmin(lo, 0.0); }}
    bool flagged = sst_block_max(bad ? (real)1 : (real)0, sst_scratch_r) > (real)0;
    bool plain = hi - lo <= {spread} && !flagged;
    double residual = 0.0, iterations = 0.0;
    bool converged = false;
    for (int it = 0; it < (plain ? {iters} : 0); it++) {{
        __syncthreads();
        {rows_update}
        __syncthreads();
        {cols_update}
        __syncthreads();
        double worst = 0.0;
        for (int i = threadIdx.x; i < {cols}; i += blockDim.x) {{
            double sum = 0.0;
            for (int j = 0; j < {cols}; j++) sum += sst_exp_f64(SST_X(i, j) + sst_alpha[i] + sst_beta[j]);
            worst = fmax(worst, fabs(sum - 1.0));
        }}
        residual = sst_block_max(worst, sst_scratch_d);
        iterations = it + 1;
        if (residual <= {tol}) {{ converged = true; break; }}
    }}
    bad |= !converged;
    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{
        int i = e / {cols}, j = e % {cols};
        z[e] = sst_unit((real)sst_exp_f64(SST_X(i, j) + sst_alpha[i] + sst_beta[j]));
    }}
    if (threadIdx.x == 0) {{ stats[0] = iterations; stats[1] = residual; }}
#undef SST_X"#,
        tol = f64_literal(tol),
        spread = f64_literal(crate::kernels::sinkhorn::SPREAD),
        extent = row_extent("z[e]"),
        rows_update = half_iteration(cols, "sst_alpha", "sst_beta", "SST_X(a, b)"),
        cols_update = half_iteration(cols, "sst_beta", "sst_alpha", "SST_X(b, a)"),
    )
}

/// One Sinkhorn half-iteration on `cols × cols`: `target_a = −LSE_b(x_ab + other_b)` for every
/// `a`, a thread per `a` (`x_ab` = `x_of`, an expression in `a` and `b`), max-shifted.
fn half_iteration(cols: usize, target: &str, other: &str, x_of: &str) -> String {
    format!(
        r#"for (int a = threadIdx.x; a < {cols}; a += blockDim.x) {{
            double top = -SST_INF, sum = 0.0;
            for (int b = 0; b < {cols}; b++) top = fmax(top, {x_of} + {other}[b]);
            for (int b = 0; b < {cols}; b++) sum += sst_exp_f64({x_of} + {other}[b] - top);
            {target}[a] = -(top + log(sum));
        }}"#
    )
}

/// The VJP of a projection whose free coordinates are `L = {free(s)}` (`free` a C condition on
/// `s`) and whose constraint is `Σ_L s = const` ([`crate::kernels::centered_on_free_vjp`]):
/// `grad = (g − mean_L g) / T` on `L` and 0 elsewhere, with `s` = `s_of`.
fn centered_on_free(s_of: &str, free: &str) -> String {
    format!(
        "double part = 0.0, members = 0.0;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; if ({free}) {{ part += (double)g_row[e]; members += 1.0; }} }}\n    double size = sst_block_sum(members, sst_scratch_d);\n    real mean = (real)(sst_block_sum(part, sst_scratch_d) / size);\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; grad[e] = ({free}) ? (g_row[e] - mean) / t : (real)0; }}"
    )
}

/// The threshold `τ` of the capped-simplex projection `clip(x − m − τ, 0, 1)`, `Σ = k`, for the
/// row `x_e` = `x_of` with `m = max x` ([`crate::kernels::capped_simplex::capped_simplex`]
/// without a sort): `s(τ) = Σ clip(x − m − τ, 0, 1)` is nonincreasing with `s(min x − m − 1) = n`
/// and `s(0) = 0`, so bisection (a block sum a step) brackets the root between neighbouring
/// doubles `[lo, hi]`; on the piece at `hi`, with `U = {x − m − hi ≥ 1}` and
/// `L = {0 < x − m − hi < 1}`, `τ = hi + (Σ_L (x − m − hi) + |U| − k)/|L|` (`hi` when `L` is
/// empty). Leaves `double m, tau` in scope and flags a non-finite `x` in `bad`.
fn capped_simplex_solve(k: usize, x_of: &str) -> String {
    format!(
        r#"{extent}
    double lo = least - m - 1.0, hi = 0.0, kf = {k}.0;
    double tau = {k} == 0 ? SST_INF : -SST_INF;
    /* A row with a non-finite x (flagged in bad) is solved on the host: no bisection on NaN. */
    if ({k} > 0 && {k} < SST_N) bad |= !isfinite(lo);
    if ({k} > 0 && {k} < SST_N && isfinite(lo)) {{
        for (;;) {{
            double mid = lo + 0.5 * (hi - lo);
            if (mid <= lo || mid >= hi) break;
            double part = 0.0;
            for (int e = threadIdx.x; e < SST_N; e += blockDim.x) part += fmin(fmax(((double)({x_of}) - m) - mid, 0.0), 1.0);
            if (sst_block_sum(part, sst_scratch_d) >= kf) lo = mid; else hi = mid;
        }}
        double part_l = 0.0, part_u = 0.0, part_n = 0.0;
        for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{
            double d = ((double)({x_of}) - m) - hi;
            if (d >= 1.0) part_u += 1.0; else if (d > 0.0) {{ part_l += d; part_n += 1.0; }}
        }}
        double sl = sst_block_sum(part_l, sst_scratch_d), su = sst_block_sum(part_u, sst_scratch_d);
        double sn = sst_block_sum(part_n, sst_scratch_d);
        tau = sn > 0.0 ? hi + (sl + su - kf) / sn : hi;
    }}"#,
        extent = row_extent(x_of),
    )
}

/// Sparsemax's threshold without a sort (Michelot 1986), for the row `x_e` = `x_of` (an
/// expression in `e`) whose block maximum `m` is known: on `s = x − m`, the support is
/// `{s > τ}` with `τ = (Σ_{s > τ} s − 1) / |{s > τ}|`. Starting from `S₀ = {s > −1}` (a superset
/// of the support, since `τ ≥ −1`), each step takes `τ = (Σ_S s − 1)/|S|` and `S = {s > τ}`; the
/// sets shrink and the step that keeps `|S|` has found the support and `τ` — at most `n + 1`
/// steps, usually a few. Leaves `double tau` (the threshold of `s`) in scope.
fn sparsemax_threshold(x_of: &str) -> String {
    format!(
        "double tau = -1.0, count = -1.0;\n    for (int step = 0; step <= SST_N; step++) {{\n        double part = 0.0, members = 0.0;\n        for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ double s = (double)({x_of} - m); if (s > tau) {{ part += s; members += 1.0; }} }}\n        double sum = sst_block_sum(part, sst_scratch_d), size = sst_block_sum(members, sst_scratch_d);\n        if (size == count) break;\n        count = size;\n        tau = (sum - 1.0) / size;\n    }}"
    )
}

/// The forward kernel: for row `start + blockIdx.x` (batch row `row mod B`, sample `row div B`),
/// `w = θ + noise`, then the solve; a `w` or `w/T` that is not finite lowers `*bad_row` to the
/// row (the driver then re-runs the range on the reference backend for its sentence).
fn forward(kernel: &Kernel, front: Front, solve: Solve) -> String {
    let (_, p) = names(kernel.precision);
    let u = kernel.precision.uniforms_per_block();
    // The binary race reads a second uniform per element, from the second stream's block.
    let (second_words, second_block, second_uniform) = match front {
        Front::RaceLogistic => (
            ", words2[4]",
            "sst_block_words(words2, seed, sample, batch_row, SST_SECOND_STREAM, (u64)j);",
            format!("real u2 = sst_uniform_{p}(words2, slot);"),
        ),
        _ => ("", "", String::new()),
    };
    let elements = match front {
        Front::None => "for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {\n        real wv = theta_row[e];\n        w[e] = wv;\n        bad |= !isfinite(wv);\n        BODY\n    }".to_string(),
        _ => format!(
            "for (int j = threadIdx.x; j < SST_BLOCKS; j += blockDim.x) {{\n        u32 words[4]{second_words};\n        sst_block_words(words, seed, sample, batch_row, 0u, (u64)j);\n        {second_block}\n        for (int slot = 0; slot < {u}; slot++) {{\n            int e = sst_element(j, slot, {u});\n            if (e >= SST_N) continue;\n            real u = sst_uniform_{p}(words, slot);\n            {second_uniform}\n            real th = theta_row[e];\n            {check}\n            real wv = {noise};\n            w[e] = wv;\n            bad |= !isfinite(wv);\n            BODY\n        }}\n    }}",
            noise = transform(front, p),
            check = theta_check(front, kernel.precision),
        ),
    }
    .replace("BODY", first_pass(solve));
    let finish = match solve {
        Solve::Positive | Solve::Soft(SoftKernel::Sigmoid | SoftKernel::Clip) => String::new(),
        Solve::Argmax => "int at = sst_block_argmax(best, best_at, sst_scratch_r, sst_scratch_i);\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = e == at ? (real)1 : (real)0;".into(),
        Solve::Soft(SoftKernel::Softmax) => "real m = sst_block_max(best, sst_scratch_r);\n    double part = 0.0;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) { real ex = sst_exp(z[e] - m); z[e] = ex; part += (double)ex; }\n    real inv = (real)(1.0 / sst_block_sum(part, sst_scratch_d));\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = sst_unit(z[e] * inv);".into(),
        Solve::TopK { k } => top_k(k, kernel.precision),
        Solve::Soft(SoftKernel::Threshold { link, k, tol_bits }) => format!(
            "{}\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = (real)sst_link(((double)z[e] - m) - tau, 0);\n    bad |= !converged;\n    if (threadIdx.x == 0) {{ stats[0] = iterations; stats[1] = residual; }}",
            threshold_solve(link, k, f64::from_bits(tol_bits), "z[e]")
        ),
        Solve::Soft(SoftKernel::Sinkhorn {
            rows,
            cols,
            iters,
            tol_bits,
            ..
        }) => sinkhorn(rows, cols, iters, f64::from_bits(tol_bits)),
        Solve::Combinatorial(_) | Solve::Soft(SoftKernel::Esp { .. } | SoftKernel::ChainDp { .. }) => {
            unreachable!("{ON_THE_HOST}")
        }
        Solve::Soft(SoftKernel::MatrixTree { n, trees }) => matrix_tree(n, trees),
        Solve::Soft(SoftKernel::CappedSimplex { k }) => format!(
            "{}\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = (real)fmin(fmax(((double)z[e] - m) - tau, 0.0), 1.0);",
            capped_simplex_solve(k, "z[e]")
        ),
        Solve::Soft(SoftKernel::Sparsemax) => format!(
            "real m = sst_block_max(best, sst_scratch_r);\n    {}\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) z[e] = sst_unit((z[e] - m) - (real)tau);",
            sparsemax_threshold("z[e]")
        ),
    };
    let blocks = kernel.n.div_ceil(4 * u) * 4;
    format!(
        r#"{maps}
#define SST_N {n}
#define SST_BLOCKS {blocks}
extern "C" __global__ void {ENTRY}(const real* __restrict__ theta, real* __restrict__ w_all,
        real* __restrict__ z_all, u64 start, u64 batch, u64 seed, double temperature,
        u64* bad_row, double* __restrict__ stats_all, double* __restrict__ kept_all) {{
    u64 row = start + blockIdx.x;
    [[maybe_unused]] u32 sample = (u32)(row / batch);
    u32 batch_row = (u32)(row % batch);
    const real* theta_row = theta + (u64)batch_row * SST_N;
    real* w = w_all + (u64)blockIdx.x * SST_N;
    real* z = z_all + (u64)blockIdx.x * SST_N;
    [[maybe_unused]] double* stats = stats_all + (u64)blockIdx.x * {STATS};
    [[maybe_unused]] real t = (real)temperature;
    [[maybe_unused]] real best = -SST_INF;
    [[maybe_unused]] int best_at = 0x7fffffff;
    bool bad = false;
    {elements}
    __syncthreads();
    {finish}
    if (bad) atomicMin(bad_row, row);
}}
"#,
        maps = soft_maps(p) + &kernel_helpers(kernel),
        n = kernel.n,
    )
}

/// Numbers per row in the forward kernel's `stats` (a solver's iterations and residual, which
/// the host merges into the report as the reference backend's keys).
pub const STATS: usize = 2;

/// The backward kernel: `grad = J_sᵀ g / T` for row `start + blockIdx.x`, with `s` the saved
/// solution or (`recompute`, straight-through) `soft(w/T)` re-solved from the saved `w`, and
/// `g` the cotangent row (the range's row when `per_sample`, else the batch row).
fn backward(kernel: &Kernel, soft: SoftKernel, recompute: bool) -> String {
    let (_, p) = names(kernel.precision);
    // `S(e)`: the solution at element e.
    let (prepare, s_of) = match (soft, recompute) {
        (_, false) => (String::new(), "s_row[e]".to_string()),
        (SoftKernel::Softmax, true) => (
            "real best = -SST_INF;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) { real x = w_row[e] / t; bad |= !isfinite(x); best = fmax(best, x); }\n    real m = sst_block_max(best, sst_scratch_r);\n    double part = 0.0;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) part += (double)sst_exp(w_row[e] / t - m);\n    real inv = (real)(1.0 / sst_block_sum(part, sst_scratch_d));".to_string(),
            "(sst_exp(w_row[e] / t - m) * inv)".to_string(),
        ),
        (SoftKernel::Sigmoid, true) => (
            "for (int e = threadIdx.x; e < SST_N; e += blockDim.x) bad |= !isfinite(w_row[e] / t);".to_string(),
            "sst_sigmoid(w_row[e] / t)".to_string(),
        ),
        (SoftKernel::Clip, true) => (
            "for (int e = threadIdx.x; e < SST_N; e += blockDim.x) bad |= !isfinite(w_row[e] / t);".to_string(),
            "sst_clip(w_row[e] / t)".to_string(),
        ),
        (SoftKernel::Threshold { link, k, tol_bits }, true) => (
            threshold_solve(link, k, f64::from_bits(tol_bits), "(w_row[e] / t)"),
            "(real)sst_link(((double)(w_row[e] / t) - m) - tau, 0)".to_string(),
        ),
        (SoftKernel::CappedSimplex { k }, true) => (
            capped_simplex_solve(k, "(w_row[e] / t)"),
            "(real)fmin(fmax(((double)(w_row[e] / t) - m) - tau, 0.0), 1.0)".to_string(),
        ),
        (
            SoftKernel::Sinkhorn { .. }
            | SoftKernel::MatrixTree { .. }
            | SoftKernel::Esp { .. }
            | SoftKernel::ChainDp { .. },
            true,
        ) => unreachable!("{NO_VJP}"),
        (SoftKernel::Sparsemax, true) => (
            format!(
                "real best = -SST_INF;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real x = w_row[e] / t; bad |= !isfinite(x); best = fmax(best, x); }}\n    real m = sst_block_max(best, sst_scratch_r);\n    {}",
                sparsemax_threshold("w_row[e] / t")
            ),
            "fmax((w_row[e] / t - m) - (real)tau, (real)0)".to_string(),
        ),
    };
    let vjp = match soft {
        SoftKernel::Softmax => format!(
            "double part_dot = 0.0;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) part_dot += (double)g_row[e] * (double)({s_of});\n    real dot = (real)sst_block_sum(part_dot, sst_scratch_d);\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) grad[e] = ({s_of}) * (g_row[e] - dot) / t;"
        ),
        SoftKernel::Sigmoid => format!(
            "for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; grad[e] = g_row[e] * s * ((real)1 - s) / t; }}"
        ),
        SoftKernel::Clip => format!(
            "for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; grad[e] = s > (real)0 && s < (real)1 ? g_row[e] / t : (real)0; }}"
        ),
        SoftKernel::Threshold { link, .. } => {
            let d = match link {
                Link::Sigmoid => "(double)s * (1.0 - (double)s)",
                Link::CappedExp => "((double)s < 1.0 ? (double)s : 0.0)",
            };
            format!(
                "double part_d = 0.0, part_dg = 0.0;\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; double d = {d}; part_d += d; part_dg += d * (double)g_row[e]; }}\n    double sd = sst_block_sum(part_d, sst_scratch_d), sdg = sst_block_sum(part_dg, sst_scratch_d);\n    for (int e = threadIdx.x; e < SST_N; e += blockDim.x) {{ real s = {s_of}; double d = {d}; grad[e] = sd > 0.0 ? (real)(d * ((double)g_row[e] - sdg / sd)) / t : (real)0; }}"
            )
        }
        SoftKernel::Sinkhorn { .. }
        | SoftKernel::MatrixTree { .. }
        | SoftKernel::Esp { .. }
        | SoftKernel::ChainDp { .. } => unreachable!("{NO_VJP}"),
        SoftKernel::Sparsemax => centered_on_free(&s_of, "s > (real)0"),
        SoftKernel::CappedSimplex { .. } => centered_on_free(&s_of, "s > (real)0 && s < (real)1"),
    };
    format!(
        r#"{maps}
#define SST_N {n}
extern "C" __global__ void {ENTRY}(const real* __restrict__ w_all, const real* __restrict__ solution,
        const real* __restrict__ cotangent, real* __restrict__ grad_all, u64 start, u64 batch,
        int per_sample, double temperature, u64* bad_row) {{
    u64 row = start + blockIdx.x;
    u64 g_index = per_sample ? (u64)blockIdx.x : row % batch;
    [[maybe_unused]] const real* w_row = w_all + (u64)blockIdx.x * SST_N;
    [[maybe_unused]] const real* s_row = solution + (u64)blockIdx.x * SST_N;
    const real* g_row = cotangent + g_index * SST_N;
    real* grad = grad_all + (u64)blockIdx.x * SST_N;
    real t = (real)temperature;
    [[maybe_unused]] bool bad = false;
    {prepare}
    {vjp}
    if (bad) atomicMin(bad_row, row);
}}
"#,
        maps = soft_maps(p) + &kernel_helpers(kernel),
        n = kernel.n,
    )
}
