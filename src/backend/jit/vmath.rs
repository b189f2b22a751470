//! Vector arithmetic in Cranelift IR: Philox4x32-10 on four blocks at once, the uniforms, and
//! sst's `ln`/`exp` ([`crate::math`], whose constants these functions read, in the same order
//! of operations, so the bits agree with the Rust code). Vectors are 128 bits: `f32x4` or
//! `f64x2`; a *unit* is four consecutive elements (one `f32x4`, two `f64x2`).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

pub use crate::backend::fused::Precision;
use crate::math::{EXP_F32, EXP_F64, LN_F32, LN_F64};
use crate::noise::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};

/// A precision's vector types (the JIT's side of [`Precision`]).
impl Precision {
    /// The float vector type (`f32x4`, `f64x2`).
    pub fn vector(self) -> Type {
        match self {
            Precision::F32 => types::F32X4,
            Precision::F64 => types::F64X2,
        }
    }
    /// The integer vector of the same lanes (`i32x4`, `i64x2`).
    pub fn int_vector(self) -> Type {
        match self {
            Precision::F32 => types::I32X4,
            Precision::F64 => types::I64X2,
        }
    }
    /// Vectors per unit of four elements.
    pub fn per_unit(self) -> usize {
        match self {
            Precision::F32 => 1,
            Precision::F64 => 2,
        }
    }
    /// Lanes per vector.
    pub fn lanes(self) -> usize {
        4 / self.per_unit()
    }
}

/// Reinterprets a vector's bits as another 128-bit type.
pub fn cast(b: &mut FunctionBuilder, ty: Type, v: Value) -> Value {
    if b.func.dfg.value_type(v) == ty {
        return v;
    }
    let flags = MemFlagsData::new().with_endianness(Endianness::Little);
    b.ins().bitcast(ty, flags, v)
}

/// A 128-bit constant of type `ty` from its little-endian bytes.
fn vconst(b: &mut FunctionBuilder, ty: Type, bytes: [u8; 16]) -> Value {
    let handle = b.func.dfg.constants.insert(ConstantData::from(&bytes[..]));
    b.ins().vconst(ty, handle)
}

/// Every lane of the float vector equal to `x` (rounded to the precision).
pub fn splat_f(b: &mut FunctionBuilder, p: Precision, x: f64) -> Value {
    let mut bytes = [0u8; 16];
    match p {
        Precision::F32 => {
            (0..4).for_each(|i| bytes[4 * i..4 * i + 4].copy_from_slice(&(x as f32).to_le_bytes()))
        }
        Precision::F64 => {
            (0..2).for_each(|i| bytes[8 * i..8 * i + 8].copy_from_slice(&x.to_le_bytes()))
        }
    }
    vconst(b, p.vector(), bytes)
}

/// Every lane of the integer vector equal to `x` (truncated to the lane width).
pub fn splat_i(b: &mut FunctionBuilder, p: Precision, x: u64) -> Value {
    match p {
        Precision::F32 => lanes_i32(b, [x as u32; 4]),
        Precision::F64 => lanes_i64(b, [x; 2]),
    }
}

/// An `i32x4` with the given lanes.
pub fn lanes_i32(b: &mut FunctionBuilder, lanes: [u32; 4]) -> Value {
    let mut bytes = [0u8; 16];
    for (i, l) in lanes.iter().enumerate() {
        bytes[4 * i..4 * i + 4].copy_from_slice(&l.to_le_bytes());
    }
    vconst(b, types::I32X4, bytes)
}

/// An `i64x2` with the given lanes.
pub fn lanes_i64(b: &mut FunctionBuilder, lanes: [u64; 2]) -> Value {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&lanes[0].to_le_bytes());
    bytes[8..].copy_from_slice(&lanes[1].to_le_bytes());
    vconst(b, types::I64X2, bytes)
}

/// `if mask { a } else { c }` lane by lane, `mask` from a comparison.
pub fn select(b: &mut FunctionBuilder, p: Precision, mask: Value, a: Value, c: Value) -> Value {
    let mask = cast(b, p.vector(), mask);
    b.ins().bitselect(mask, a, c)
}

/// `max(a, c)` of values that are not NaN, as `fcmp` + `bitselect` (Cranelift's `fmax`
/// expands to a long NaN-handling sequence).
pub fn max(b: &mut FunctionBuilder, p: Precision, a: Value, c: Value) -> Value {
    let gt = b.ins().fcmp(FloatCC::GreaterThan, a, c);
    select(b, p, gt, a, c)
}

/// The high and low words of `M·c` lane by lane (`c: i32x4`, `m` the multiplier splatted):
/// two widening multiplies (`pmuludq`) and two shuffles.
fn mul_hi_lo(b: &mut FunctionBuilder, m: Value, c: Value) -> (Value, Value) {
    let (cl, ml) = (b.ins().uwiden_low(c), b.ins().uwiden_low(m));
    let low_pair = b.ins().imul(cl, ml);
    let (ch, mh) = (b.ins().uwiden_high(c), b.ins().uwiden_high(m));
    let high_pair = b.ins().imul(ch, mh);
    // As i32x4: [lo0, hi0, lo1, hi1] and [lo2, hi2, lo3, hi3].
    let a = cast(b, types::I8X16, low_pair);
    let d = cast(b, types::I8X16, high_pair);
    let pick = |words: [u8; 4]| {
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            for j in 0..4 {
                bytes[4 * i + j] = 4 * w + j as u8;
            }
        }
        bytes
    };
    let lo_mask = b
        .func
        .dfg
        .immediates
        .push(ConstantData::from(&pick([0, 2, 4, 6])[..]));
    let hi_mask = b
        .func
        .dfg
        .immediates
        .push(ConstantData::from(&pick([1, 3, 5, 7])[..]));
    let lo = b.ins().shuffle(a, d, lo_mask);
    let hi = b.ins().shuffle(a, d, hi_mask);
    (cast(b, types::I32X4, hi), cast(b, types::I32X4, lo))
}

/// Philox4x32-10 ([`crate::noise::philox4x32_10`]) on four blocks at once: lane `j` of `counter[w]`
/// is word `w` of block `j`'s counter, `key` the two key words splatted. Returns the four
/// output words in the same layout.
pub fn philox4(b: &mut FunctionBuilder, counter: [Value; 4], key: [Value; 2]) -> [Value; 4] {
    let m0 = lanes_i32(b, [PHILOX_M0; 4]);
    let m1 = lanes_i32(b, [PHILOX_M1; 4]);
    let w0 = lanes_i32(b, [PHILOX_W0; 4]);
    let w1 = lanes_i32(b, [PHILOX_W1; 4]);
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = b.ins().iadd(k0, w0);
            k1 = b.ins().iadd(k1, w1);
        }
        let (hi0, lo0) = mul_hi_lo(b, m0, c0);
        let (hi1, lo1) = mul_hi_lo(b, m1, c2);
        let x0 = b.ins().bxor(hi1, c1);
        let x2 = b.ins().bxor(hi0, c3);
        (c0, c1, c2, c3) = (b.ins().bxor(x0, k0), lo1, b.ins().bxor(x2, k1), lo0);
    }
    [c0, c1, c2, c3]
}

/// The unit of uniforms in slot `slot` of four Philox blocks (`noise::slot_uniform`), as the
/// exact `(k + ½)·2⁻ᵖ = (1 + k·2⁻ᵖ) − 1 + 2⁻ᵖ⁻¹` built in the significand bits: f32 from the top
/// 23 bits of word `slot`, f64 from words `2·slot` (52 bits: high 32 ‖ top 20 of the next).
pub fn uniforms(
    b: &mut FunctionBuilder,
    p: Precision,
    words: [Value; 4],
    slot: usize,
) -> Vec<Value> {
    match p {
        Precision::F32 => {
            let k = b.ins().ushr_imm_u(words[slot], 9);
            let one = splat_i(b, p, 0x3f80_0000);
            let bits = b.ins().bor(k, one);
            let m = cast(b, types::F32X4, bits);
            let one_f = splat_f(b, p, 1.0);
            let half_cell = splat_f(b, p, 2f64.powi(-24));
            let f = b.ins().fsub(m, one_f);
            vec![b.ins().fadd(f, half_cell)]
        }
        Precision::F64 => {
            let (hi, lo) = (words[2 * slot], words[2 * slot + 1]);
            let halves = [
                (b.ins().uwiden_low(hi), b.ins().uwiden_low(lo)),
                (b.ins().uwiden_high(hi), b.ins().uwiden_high(lo)),
            ];
            halves
                .into_iter()
                .map(|(h, l)| {
                    let h = b.ins().ishl_imm_u(h, 20);
                    let l = b.ins().ushr_imm_u(l, 12);
                    let k = b.ins().bor(h, l);
                    let one = splat_i(b, p, 0x3ff0_0000_0000_0000);
                    let bits = b.ins().bor(k, one);
                    let m = cast(b, types::F64X2, bits);
                    let one_f = splat_f(b, p, 1.0);
                    let half_cell = splat_f(b, p, 2f64.powi(-53));
                    let f = b.ins().fsub(m, one_f);
                    b.ins().fadd(f, half_cell)
                })
                .collect()
        }
    }
}

/// `f(x)` for each vector. The math below works on several vectors at once, one operation
/// across all of them before the next, so that their independent dependency chains sit side by
/// side in the code and the processor overlaps them.
fn map(
    b: &mut FunctionBuilder,
    xs: &[Value],
    f: impl Fn(&mut FunctionBuilder, Value) -> Value,
) -> Vec<Value> {
    xs.iter().map(|&x| f(b, x)).collect()
}

/// `f(x, y)` pairwise.
fn zip(
    b: &mut FunctionBuilder,
    xs: &[Value],
    ys: &[Value],
    f: impl Fn(&mut FunctionBuilder, Value, Value) -> Value,
) -> Vec<Value> {
    xs.iter().zip(ys).map(|(&x, &y)| f(b, x, y)).collect()
}

fn fadd(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().fadd(x, y)
}
fn fsub(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().fsub(x, y)
}
fn fmul(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().fmul(x, y)
}

/// `y = c₀ + x·(c₁ + x·(…))` by Horner's rule, as the Rust code writes it.
fn horner(b: &mut FunctionBuilder, p: Precision, x: &[Value], coefficients: &[f64]) -> Vec<Value> {
    let last = coefficients.len() - 1;
    let top = splat_f(b, p, coefficients[last]);
    let mut y = vec![top; x.len()];
    for &c in coefficients[..last].iter().rev() {
        let t = zip(b, x, &y, fmul);
        let c = splat_f(b, p, c);
        y = map(b, &t, |b, t| b.ins().fadd(c, t));
    }
    y
}

/// sst's `ln x` ([`crate::math::ln_f64`], [`crate::math::ln_f32`]) of vectors of positive
/// normal numbers.
pub fn ln(b: &mut FunctionBuilder, p: Precision, x: &[Value]) -> Vec<Value> {
    let int = p.int_vector();
    let (offset, sqrt_half, mantissa, exponent_shift, bias, lg, ln2_hi, ln2_lo) = match p {
        Precision::F32 => (
            LN_F32.offset,
            LN_F32.sqrt_half,
            0x007f_ffffu64,
            23,
            127.0,
            LN_F32.lg.iter().map(|&c| f64::from(c)).collect::<Vec<_>>(),
            f64::from(LN_F32.ln2_hi),
            f64::from(LN_F32.ln2_lo),
        ),
        Precision::F64 => (
            LN_F64.offset,
            LN_F64.sqrt_half,
            0x000f_ffff_ffff_ffff,
            52,
            1023.0,
            LN_F64.lg.to_vec(),
            LN_F64.ln2_hi,
            LN_F64.ln2_lo,
        ),
    };
    let offset = splat_i(b, p, offset);
    let bits = map(b, x, |b, x| {
        let bits = cast(b, int, x);
        b.ins().iadd(bits, offset)
    });
    // k = biased exponent − bias, exactly, as a float: in f32 by conversion; in f64 the
    // exponent field placed in the significand of 2⁵², minus 2⁵² and the bias.
    let e = map(b, &bits, |b, v| b.ins().ushr_imm_u(v, exponent_shift));
    let k = match p {
        Precision::F32 => {
            let bias = splat_f(b, p, bias);
            map(b, &e, |b, e| {
                let e = b.ins().fcvt_from_sint(types::F32X4, e);
                b.ins().fsub(e, bias)
            })
        }
        Precision::F64 => {
            let magic = splat_i(b, p, 0x4330_0000_0000_0000);
            let shift = splat_f(b, p, 4_503_599_627_370_496.0 + bias);
            map(b, &e, |b, e| {
                let e = b.ins().bor(e, magic);
                let e = cast(b, types::F64X2, e);
                b.ins().fsub(e, shift)
            })
        }
    };
    let (mantissa, sqrt_half) = (splat_i(b, p, mantissa), splat_i(b, p, sqrt_half));
    let m = map(b, &bits, |b, v| b.ins().band(v, mantissa));
    let m = map(b, &m, |b, v| {
        let v = b.ins().iadd(v, sqrt_half);
        cast(b, p.vector(), v)
    });
    let (one, two, half) = (splat_f(b, p, 1.0), splat_f(b, p, 2.0), splat_f(b, p, 0.5));
    let f = map(b, &m, |b, m| b.ins().fsub(m, one));
    let hf = map(b, &f, |b, f| b.ins().fmul(half, f));
    let hfsq = zip(b, &hf, &f, fmul);
    let two_f = map(b, &f, |b, f| b.ins().fadd(two, f));
    let s = zip(b, &f, &two_f, |b, f, d| b.ins().fdiv(f, d));
    let z = zip(b, &s, &s, fmul);
    let w = zip(b, &z, &z, fmul);
    // t1 = w·(Lg2 + w·(Lg4 + w·Lg6)), t2 = z·(Lg1 + w·(Lg3 + …)): odd and even coefficients.
    let even: Vec<f64> = lg.iter().skip(1).step_by(2).copied().collect();
    let odd: Vec<f64> = lg.iter().step_by(2).copied().collect();
    let t1 = horner(b, p, &w, &even);
    let t1 = zip(b, &w, &t1, fmul);
    let t2 = horner(b, p, &w, &odd);
    let t2 = zip(b, &z, &t2, fmul);
    let r = zip(b, &t2, &t1, fadd);
    let hr = zip(b, &hfsq, &r, fadd);
    let y = zip(b, &s, &hr, fmul);
    let (lo, hi) = (splat_f(b, p, ln2_lo), splat_f(b, p, ln2_hi));
    let klo = map(b, &k, |b, k| b.ins().fmul(k, lo));
    let y = zip(b, &y, &klo, fadd);
    let y = zip(b, &y, &hfsq, fsub);
    let y = zip(b, &y, &f, fadd);
    let khi = map(b, &k, |b, k| b.ins().fmul(k, hi));
    zip(b, &y, &khi, fadd)
}

/// sst's `exp x` ([`crate::math::exp_f64`], [`crate::math::exp_f32`]) of vectors.
pub fn exp(b: &mut FunctionBuilder, p: Precision, x: &[Value]) -> Vec<Value> {
    let (round, log2e, ln2_hi, ln2_lo, taylor, low, high, bias, shift) = match p {
        Precision::F32 => (
            f64::from(EXP_F32.round),
            f64::from(EXP_F32.log2e),
            f64::from(EXP_F32.ln2_hi),
            f64::from(EXP_F32.ln2_lo),
            EXP_F32
                .taylor
                .iter()
                .map(|&c| f64::from(c))
                .collect::<Vec<_>>(),
            f64::from(EXP_F32.low),
            f64::from(EXP_F32.high),
            127,
            23,
        ),
        Precision::F64 => (
            EXP_F64.round,
            EXP_F64.log2e,
            EXP_F64.ln2_hi,
            EXP_F64.ln2_lo,
            EXP_F64.taylor.to_vec(),
            EXP_F64.low,
            EXP_F64.high,
            1023,
            52,
        ),
    };
    let (low, high) = (splat_f(b, p, low), splat_f(b, p, high));
    let xc = map(b, x, |b, x| {
        let above = b.ins().fcmp(FloatCC::GreaterThan, x, high);
        select(b, p, above, high, x)
    });
    let xc = map(b, &xc, |b, x| {
        let below = b.ins().fcmp(FloatCC::LessThan, x, low);
        select(b, p, below, low, x)
    });
    let (log2e, round) = (splat_f(b, p, log2e), splat_f(b, p, round));
    let y = map(b, &xc, |b, x| b.ins().fmul(x, log2e));
    let shifted = map(b, &y, |b, y| b.ins().fadd(y, round));
    let k = map(b, &shifted, |b, s| b.ins().fsub(s, round));
    let (hi, lo) = (splat_f(b, p, ln2_hi), splat_f(b, p, ln2_lo));
    let khi = map(b, &k, |b, k| b.ins().fmul(k, hi));
    let r = zip(b, &xc, &khi, fsub);
    let klo = map(b, &k, |b, k| b.ins().fmul(k, lo));
    let r = zip(b, &r, &klo, fsub);
    let poly = horner(b, p, &r, &taylor);
    let one = splat_f(b, p, 1.0);
    let one_r = map(b, &r, |b, r| b.ins().fadd(one, r));
    let rr = zip(b, &r, &r, fmul);
    let rrp = zip(b, &rr, &poly, fmul);
    let poly = zip(b, &one_r, &rrp, fadd);
    let int = p.int_vector();
    let round_bits = cast(b, int, round);
    let bias = splat_i(b, p, bias);
    let scale = map(b, &shifted, |b, s| {
        let ki = cast(b, int, s);
        let ki = b.ins().isub(ki, round_bits);
        let ki = b.ins().iadd(ki, bias);
        let scale = b.ins().ishl_imm_u(ki, shift);
        cast(b, p.vector(), scale)
    });
    let y = zip(b, &poly, &scale, fmul);
    let zero = splat_f(b, p, 0.0);
    zip(b, x, &y, |b, x, y| {
        let under = b.ins().fcmp(FloatCC::LessThan, x, low);
        select(b, p, under, zero, y)
    })
}

/// `−ln(−ln u)`: standard Gumbel noise.
pub fn gumbel(b: &mut FunctionBuilder, p: Precision, u: &[Value]) -> Vec<Value> {
    let l = ln(b, p, u);
    let e = map(b, &l, |b, l| b.ins().fneg(l));
    let l = ln(b, p, &e);
    map(b, &l, |b, l| b.ins().fneg(l))
}

/// `ln u − ln(1 − u)`: standard logistic noise.
pub fn logistic(b: &mut FunctionBuilder, p: Precision, u: &[Value]) -> Vec<Value> {
    let one = splat_f(b, p, 1.0);
    let v = map(b, u, |b, u| b.ins().fsub(one, u));
    let both: Vec<Value> = u.iter().chain(&v).copied().collect();
    let l = ln(b, p, &both);
    let (lu, lv) = l.split_at(u.len());
    zip(b, lu, lv, fsub)
}
