//! Vector arithmetic in Cranelift IR: selects, maxima and sst's `exp` ([`crate::math`], whose
//! constants it reads, in the same order of operations as the Rust code). Vectors are 128 bits: `f32x4` or
//! `f64x2`; a *unit* is four consecutive elements (one `f32x4`, two `f64x2`).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

pub use crate::backend::fused::Precision;
use crate::math::{EXP_F32, EXP_F64};

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

fn fsub(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().fsub(x, y)
}
fn fmul(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().fmul(x, y)
}

/// `y = c₀ + x·(c₁ + x·(…))` by Horner's rule in fused multiply–adds, as the Rust code writes
/// it.
fn horner(b: &mut FunctionBuilder, p: Precision, x: &[Value], coefficients: &[f64]) -> Vec<Value> {
    let last = coefficients.len() - 1;
    let top = splat_f(b, p, coefficients[last]);
    let mut y = vec![top; x.len()];
    for &c in coefficients[..last].iter().rev() {
        let c = splat_f(b, p, c);
        y = zip(b, x, &y, |b, x, y| b.ins().fma(x, y, c));
    }
    y
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
    let rr = zip(b, &r, &r, fmul);
    let inner: Vec<Value> = (0..r.len())
        .map(|v| b.ins().fma(rr[v], poly[v], r[v]))
        .collect();
    let poly = map(b, &inner, |b, s| b.ins().fadd(one, s));
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
