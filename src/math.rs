//! sst's own `ln` and `exp`: polynomials specified once, here, and evaluated with the same IEEE
//! operations in the same order wherever they run — this Rust code (scalar, and inlined into the
//! sixteen-lane loops of `noise/lanes.rs`), the JIT's vector `exp` (`src/backend/jit/vmath.rs`)
//! and the CUDA prelude (`src/backend/cuda/codegen.rs`), which read these constants — so that
//! the noise transforms `−ln(−ln u)` and `ln u − ln(1 − u)` give the same bits on every backend.
//!
//! - `ln x` for positive normal `x` (fdlibm's reduction): write `x = 2ᵏ·m` with
//!   `m ∈ [√½, √2)`, `f = m − 1`, `s = f/(2 + f)`; then `ln m = f − f²/2 + s·(f²/2 + R(s²))`
//!   with `R` the minimax polynomial of fdlibm (`Lg1…Lg7` in f64, `Lg1…Lg4` in f32), and
//!   `ln x = k·ln2_hi + (ln m + k·ln2_lo)`; the polynomial's steps and the last product are
//!   fused multiply–adds. Largest error measured against the standard library
//!   (`ln_matches_std`): at most 1 ulp in f64 and f32.
//! - `exp x = 2ᵏ·p(r)`, `k = round(x/ln 2)` by the `1.5·2ᵖ` add (no conversion instruction),
//!   `r = x − k·ln2_hi − k·ln2_lo`, `p` the Taylor polynomial of degree 13 (f64) or 7 (f32) on
//!   `|r| ≤ ln2/2` by Horner's rule in fused multiply–adds, `p = 1 + (r + r²·q)` with the inner
//!   sum fused too, `2ᵏ` built in the exponent bits. Inputs below `Exp::low` give 0 (so
//!   `exp(−∞) = 0`), above `Exp::high` are clamped there. Largest error measured against the
//!   standard library (`exp_matches_std`): at most 2 ulp in f64, 1 ulp in f32.
//!
//! Only `+ − × ÷`, fused multiply–adds where written (`mul_add`: one rounding, as IEEE 754
//! specifies it, so the same bits in hardware, in a C library's `fma` and on a GPU; the vector
//! code is compiled where the CPU has the instruction), comparisons and bit operations are
//! used, and nothing else is contracted, so any IEEE machine gives the same result.

/// The constants of `ln` in one precision.
pub struct Ln<F: 'static> {
    /// Added to the bits of `x` so that the exponent field counts from `√½` (`one − √½`'s bits).
    pub offset: u64,
    /// The bits of `√½`'s significand with the exponent of `½`.
    pub sqrt_half: u64,
    /// `Lg1, Lg2, …` of fdlibm.
    pub lg: &'static [F],
    pub ln2_hi: F,
    pub ln2_lo: F,
}

/// The constants of `exp` in one precision.
pub struct Exp<F: 'static> {
    /// `1.5·2^(significand bits)`: adding and subtracting it rounds to an integer.
    pub round: F,
    pub log2e: F,
    pub ln2_hi: F,
    pub ln2_lo: F,
    /// `1/k!` for `k = 2, 3, …` (the polynomial is `1 + r + r²·(c₂ + r·(c₃ + …))`).
    pub taylor: &'static [F],
    /// Below this, `exp` is 0.
    pub low: F,
    /// Above this, `exp` is clamped to `exp(HIGH)`.
    pub high: F,
}

pub const LN_F64: Ln<f64> = Ln {
    offset: 0x3ff0_0000_0000_0000 - 0x3fe6_a09e_0000_0000,
    sqrt_half: 0x3fe6_a09e_0000_0000,
    lg: &[
        6.666_666_666_666_735e-1,
        3.999_999_999_940_942e-1,
        2.857_142_874_366_239e-1,
        2.222_219_843_214_978_4e-1,
        1.818_357_216_161_805e-1,
        1.531_383_769_920_937_3e-1,
        1.479_819_860_511_658_6e-1,
    ],
    ln2_hi: 6.931_471_803_691_238e-1,
    ln2_lo: 1.908_214_929_270_587_7e-10,
};

pub const LN_F32: Ln<f32> = Ln {
    offset: 0x3f80_0000 - 0x3f35_04f3,
    sqrt_half: 0x3f35_04f3,
    lg: &[
        0.666_666_6,  // 0xaaaaaa.0p-24
        0.400_009_72, // 0xccce13.0p-25
        0.284_987_87, // 0x91e9ee.0p-25
        0.242_790_79, // 0xf89e26.0p-26
    ],
    ln2_hi: f32::from_bits(0x3f31_7180),
    ln2_lo: f32::from_bits(0x3717_f7d1),
};

pub const EXP_F64: Exp<f64> = Exp {
    round: 6_755_399_441_055_744.0, // 1.5·2⁵²
    log2e: std::f64::consts::LOG2_E,
    ln2_hi: 6.931_471_803_691_238e-1,
    ln2_lo: 1.908_214_929_270_587_7e-10,
    taylor: &[
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ],
    low: -708.0,
    high: 709.0,
};

pub const EXP_F32: Exp<f32> = Exp {
    round: 12_582_912.0, // 1.5·2²³
    log2e: std::f32::consts::LOG2_E,
    ln2_hi: f32::from_bits(0x3f31_7180),
    ln2_lo: f32::from_bits(0x3717_f7d1),
    taylor: &[
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ],
    low: -87.0,
    high: 88.0,
};

/// `ln x` in f64 (module documentation); `x` positive and normal.
#[inline(always)]
pub fn ln_f64(x: f64) -> f64 {
    let c = &LN_F64;
    let bits = x.to_bits().wrapping_add(c.offset);
    let k = ((bits >> 52) as i64 - 1023) as f64;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff).wrapping_add(c.sqrt_half));
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * w.mul_add(w.mul_add(c.lg[5], c.lg[3]), c.lg[1]);
    let t2 = z * w.mul_add(w.mul_add(w.mul_add(c.lg[6], c.lg[4]), c.lg[2]), c.lg[0]);
    let r = t2 + t1;
    s.mul_add(hfsq + r, k.mul_add(c.ln2_lo, -hfsq)) + f + k * c.ln2_hi
}

/// `ln x` in f32 (module documentation); `x` positive and normal.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let c = &LN_F32;
    let bits = x.to_bits().wrapping_add(c.offset as u32);
    let k = ((bits >> 23) as i32 - 127) as f32;
    let m = f32::from_bits((bits & 0x007f_ffff).wrapping_add(c.sqrt_half as u32));
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * w.mul_add(c.lg[3], c.lg[1]);
    let t2 = z * w.mul_add(c.lg[2], c.lg[0]);
    let r = t2 + t1;
    s.mul_add(hfsq + r, k.mul_add(c.ln2_lo, -hfsq)) + f + k * c.ln2_hi
}

/// The Taylor polynomial `1 + (r + r²·(c₂ + r·(c₃ + …)))` by Horner's rule, each step and the
/// inner sum one fused multiply–add.
macro_rules! taylor {
    ($c:expr, $r:expr, $one:expr) => {{
        let mut p = $c.taylor[$c.taylor.len() - 1];
        for &t in $c.taylor[..$c.taylor.len() - 1].iter().rev() {
            p = $r.mul_add(p, t);
        }
        $one + ($r * $r).mul_add(p, $r)
    }};
}

/// `exp x` in one precision (module documentation): `$f` the float, `$c` its constants, the
/// exponent bias and the significand width placing `k + bias` in the exponent field.
macro_rules! exp_in {
    ($name:ident, $f:ty, $c:expr, $bias:expr, $shift:expr) => {
        /// `exp x` (module documentation).
        #[inline(always)]
        pub fn $name(x: $f) -> $f {
            let c = &$c;
            let xc = if x > c.high { c.high } else { x };
            let xc = if xc < c.low { c.low } else { xc };
            let shifted = xc * c.log2e + c.round;
            let k = shifted - c.round;
            let r = (xc - k * c.ln2_hi) - k * c.ln2_lo;
            let p = taylor!(c, r, 1.0);
            let ki = shifted.to_bits().wrapping_sub(c.round.to_bits());
            let scale = <$f>::from_bits(ki.wrapping_add($bias) << $shift);
            if x < c.low {
                0.0
            } else {
                p * scale
            }
        }
    };
}

exp_in!(exp_f64, f64, EXP_F64, 1023, 52);
exp_in!(exp_f32, f32, EXP_F32, 127, 23);

#[inline(always)]
fn exp_slice_f64_body(xs: &mut [f64]) {
    for x in xs.iter_mut() {
        *x = exp_f64(*x);
    }
}

crate::simd::multiversion! {
    /// `x ← exp x` ([`exp_f64`]) for every element, vectorized for this CPU (the same bits).
    pub fn exp_slice_f64 / exp_slice_f64_on(xs: &mut [f64]) = exp_slice_f64_body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units in the last place between two finite positive numbers.
    fn ulps64(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }
    fn ulps32(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32 - b.to_bits() as i32).unsigned_abs()
    }

    /// Log-spaced points over `[lo, hi]` and their neighbours, a few hundred thousand in all.
    fn points(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        let (a, b) = (lo.ln(), hi.ln());
        (0..=n).map(move |i| (a + (b - a) * i as f64 / n as f64).exp())
    }

    #[test]
    fn ln_matches_std() {
        // The noise's range: u ∈ [2⁻⁵³, 1), −ln u ∈ (1e-16, 37], 1 − u; and wide magnitudes.
        let mut worst = (0, 0);
        for x in points(1e-300, 1e300, 400_000).chain([1.0, 2.0, 0.5, 1.0 - 1e-16]) {
            worst.0 = worst.0.max(ulps64(ln_f64(x), x.ln()));
            let xf = x as f32;
            if xf.is_normal() {
                worst.1 = worst.1.max(ulps32(ln_f32(xf), xf.ln()));
            }
        }
        assert!(worst.0 <= 1 && worst.1 <= 1, "ln: {worst:?} ulps");
        assert_eq!((ln_f64(1.0), ln_f32(1.0)), (0.0, 0.0));
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = (0, 0);
        for i in 0..=400_000 {
            let x = -708.0 + 1417.0 * i as f64 / 400_000.0;
            worst.0 = worst.0.max(ulps64(exp_f64(x), x.exp()));
            let xf = (-87.0 + 175.0 * i as f64 / 400_000.0) as f32;
            worst.1 = worst.1.max(ulps32(exp_f32(xf), xf.exp()));
        }
        assert!(worst.0 <= 2 && worst.1 <= 1, "exp: {worst:?} ulps");
        assert_eq!((exp_f64(0.0), exp_f32(0.0)), (1.0, 1.0));
        assert_eq!(
            (exp_f64(f64::NEG_INFINITY), exp_f32(f32::NEG_INFINITY)),
            (0.0, 0.0)
        );
        assert_eq!((exp_f64(-1e4), exp_f32(-1e4)), (0.0, 0.0));
    }
}
