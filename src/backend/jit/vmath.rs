//! Vector arithmetic in Cranelift IR: Philox4x32-10 on four blocks at once, the uniforms, and
//! sst's `ln`/`exp` ([`crate::math`], whose constants these functions read, in the same order
//! of operations, so the bits agree with the Rust code). Vectors are 128 bits: `f32x4` or
//! `f64x2`; a *unit* is four consecutive elements (one `f32x4`, two `f64x2`).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

use crate::math::{EXP_F32, EXP_F64, LN_F32, LN_F64};
use crate::noise::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};

/// The precision a kernel computes in, and its vector types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F64,
}

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
    /// Bytes per element.
    pub fn bytes(self) -> i64 {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
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
    /// Uniforms per Philox block (`noise::uniforms_per_block`).
    pub fn uniforms_per_block(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 2,
        }
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

/// `y = c₀ + x·(c₁ + x·(…))` by Horner's rule, as the Rust code writes it.
fn horner(b: &mut FunctionBuilder, p: Precision, x: Value, coefficients: &[f64]) -> Value {
    let last = coefficients.len() - 1;
    let mut y = splat_f(b, p, coefficients[last]);
    for &c in coefficients[..last].iter().rev() {
        let t = b.ins().fmul(x, y);
        let c = splat_f(b, p, c);
        y = b.ins().fadd(c, t);
    }
    y
}

/// sst's `ln x` ([`crate::math::ln_f64`], [`crate::math::ln_f32`]) of a vector of positive
/// normal numbers.
pub fn ln(b: &mut FunctionBuilder, p: Precision, x: Value) -> Value {
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
    let bits = cast(b, int, x);
    let offset = splat_i(b, p, offset);
    let bits = b.ins().iadd(bits, offset);
    // k = biased exponent − bias, exactly, as a float: the exponent field placed in the
    // significand of 2^(significand bits), minus that power and the bias.
    let e = b.ins().ushr_imm_u(bits, exponent_shift);
    let k = match p {
        Precision::F32 => {
            let e = b.ins().fcvt_from_sint(types::F32X4, e);
            let bias = splat_f(b, p, bias);
            b.ins().fsub(e, bias)
        }
        Precision::F64 => {
            let magic = splat_i(b, p, 0x4330_0000_0000_0000);
            let e = b.ins().bor(e, magic);
            let e = cast(b, types::F64X2, e);
            let shift = splat_f(b, p, 4_503_599_627_370_496.0 + bias);
            b.ins().fsub(e, shift)
        }
    };
    let mantissa = splat_i(b, p, mantissa);
    let m = b.ins().band(bits, mantissa);
    let sqrt_half = splat_i(b, p, sqrt_half);
    let m = b.ins().iadd(m, sqrt_half);
    let m = cast(b, p.vector(), m);
    let (one, two, half) = (splat_f(b, p, 1.0), splat_f(b, p, 2.0), splat_f(b, p, 0.5));
    let f = b.ins().fsub(m, one);
    let hf = b.ins().fmul(half, f);
    let hfsq = b.ins().fmul(hf, f);
    let two_f = b.ins().fadd(two, f);
    let s = b.ins().fdiv(f, two_f);
    let z = b.ins().fmul(s, s);
    let w = b.ins().fmul(z, z);
    // t1 = w·(Lg2 + w·(Lg4 + w·Lg6)), t2 = z·(Lg1 + w·(Lg3 + …)): odd and even coefficients.
    let even: Vec<f64> = lg.iter().skip(1).step_by(2).copied().collect();
    let odd: Vec<f64> = lg.iter().step_by(2).copied().collect();
    let t1 = horner(b, p, w, &even);
    let t1 = b.ins().fmul(w, t1);
    let t2 = horner(b, p, w, &odd);
    let t2 = b.ins().fmul(z, t2);
    let r = b.ins().fadd(t2, t1);
    let hr = b.ins().fadd(hfsq, r);
    let y = b.ins().fmul(s, hr);
    let lo = splat_f(b, p, ln2_lo);
    let klo = b.ins().fmul(k, lo);
    let y = b.ins().fadd(y, klo);
    let y = b.ins().fsub(y, hfsq);
    let y = b.ins().fadd(y, f);
    let hi = splat_f(b, p, ln2_hi);
    let khi = b.ins().fmul(k, hi);
    b.ins().fadd(y, khi)
}

/// sst's `exp x` ([`crate::math::exp_f64`], [`crate::math::exp_f32`]) of a vector.
pub fn exp(b: &mut FunctionBuilder, p: Precision, x: Value) -> Value {
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
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, high);
    let xc = select(b, p, above, high, x);
    let below = b.ins().fcmp(FloatCC::LessThan, xc, low);
    let xc = select(b, p, below, low, xc);
    let (log2e, round) = (splat_f(b, p, log2e), splat_f(b, p, round));
    let y = b.ins().fmul(xc, log2e);
    let shifted = b.ins().fadd(y, round);
    let k = b.ins().fsub(shifted, round);
    let (hi, lo) = (splat_f(b, p, ln2_hi), splat_f(b, p, ln2_lo));
    let khi = b.ins().fmul(k, hi);
    let r = b.ins().fsub(xc, khi);
    let klo = b.ins().fmul(k, lo);
    let r = b.ins().fsub(r, klo);
    let poly = horner(b, p, r, &taylor);
    let one = splat_f(b, p, 1.0);
    let one_r = b.ins().fadd(one, r);
    let rr = b.ins().fmul(r, r);
    let rrp = b.ins().fmul(rr, poly);
    let poly = b.ins().fadd(one_r, rrp);
    let int = p.int_vector();
    let ki = cast(b, int, shifted);
    let round_bits = cast(b, int, round);
    let ki = b.ins().isub(ki, round_bits);
    let bias = splat_i(b, p, bias);
    let ki = b.ins().iadd(ki, bias);
    let scale = b.ins().ishl_imm_u(ki, shift);
    let scale = cast(b, p.vector(), scale);
    let y = b.ins().fmul(poly, scale);
    let under = b.ins().fcmp(FloatCC::LessThan, x, low);
    let zero = splat_f(b, p, 0.0);
    select(b, p, under, zero, y)
}

/// `−ln(−ln u)`: standard Gumbel noise.
pub fn gumbel(b: &mut FunctionBuilder, p: Precision, u: Value) -> Value {
    let l = ln(b, p, u);
    let e = b.ins().fneg(l);
    let l = ln(b, p, e);
    b.ins().fneg(l)
}

/// `ln u − ln(1 − u)`: standard logistic noise.
pub fn logistic(b: &mut FunctionBuilder, p: Precision, u: Value) -> Value {
    let one = splat_f(b, p, 1.0);
    let v = b.ins().fsub(one, u);
    let lu = ln(b, p, u);
    let lv = ln(b, p, v);
    b.ins().fsub(lu, lv)
}
