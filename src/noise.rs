//! Noise for the perturbations `w = r_θ(ε)` of DESIGN.md §2.
//!
//! Every random number comes from a counter-based generator, Philox4x32-10 (Salmon, Moraes, Dror
//! & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"; Random123), keyed by
//! `(seed, sample, batch row, element)`. One element's noise depends on nothing else, so the same
//! seed gives the same sample on every platform, for every batch split and thread count, and (with
//! the same integer arithmetic) on the GPU.
//!
//! Every word of a Philox block is used (four f32 or two f64 uniforms per block, laid out so that
//! a vector of four blocks gives four consecutive elements: [`block_and_slot`]), and the
//! transforms `−ln(−ln u)`, `ln u − ln(1 − u)`, … use sst's own `ln`/`exp` ([`crate::math`]), so
//! the reference backend and the JIT compute the same bits.

use crate::real::{concrete, Concrete, Real};

mod lanes;
pub use lanes::Transform;

/// Philox multipliers and Weyl key increments (Random123 `PHILOX_M4x32_*`, `PHILOX_W32_*`).
pub const PHILOX_M0: u32 = 0xD251_1F53;
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
pub const PHILOX_W0: u32 = 0x9E37_79B9;
pub const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32-10: ten rounds of
/// `(c0, c1, c2, c3) ← (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0))`,
/// with the key bumped by the Weyl constants `(k0, k1) += (W0, W1)` between rounds.
/// Bit-identical to Random123's `philox4x32(ctr, key)` with its default 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Which draw a noise value belongs to: one key per (seed, sample index, batch row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    pub seed: u64,
    pub sample: u32,
    pub batch: u32,
}

/// 2⁻⁵² and 2⁻²³, exact.
const TWO_POW_M52: f64 = 1.0 / (1u64 << 52) as f64;
const TWO_POW_M23: f64 = 1.0 / (1u64 << 23) as f64;

/// `(k + ½)·2⁻⁵²` with `k` the 52 bits `hi[31..0] ‖ lo[31..12]`: in `[2⁻⁵³, 1 − 2⁻⁵³]`, exact in f64.
fn open_unit_52(hi: u32, lo: u32) -> f64 {
    let k = (u64::from(hi) << 20) | u64::from(lo >> 12);
    (k as f64 + 0.5) * TWO_POW_M52
}

/// `(k + ½)·2⁻²³` with `k` the top 23 bits of `hi`: in `[2⁻²⁴, 1 − 2⁻²⁴]`, exact in f32.
fn open_unit_23(hi: u32) -> f64 {
    (f64::from(hi >> 9) + 0.5) * TWO_POW_M23
}

/// Bit 31 of counter word 1 marks an element's second uniform (word 1 holds bits 32..63 of the
/// block number, which stays below 2⁶²).
pub const SECOND_STREAM: u32 = 1 << 31;

/// How many uniforms one Philox block gives in `F`: four in f32 (23 bits from each word), two
/// in f64 (52 bits from each pair of words).
pub fn uniforms_per_block<F: Real>() -> u64 {
    if F::epsilon().f64() > f64::EPSILON {
        4
    } else {
        2
    }
}

/// The Philox block and slot of uniform number `element` in `F`. Elements go in groups of
/// `4·U` (`U` = [`uniforms_per_block`]) over four consecutive blocks: element `r` of group `q`
/// is slot `r div 4` of block `4q + r mod 4`. So four consecutive elements come from the same
/// slot of four consecutive blocks, which is how a vector of four Philox blocks computes them.
pub fn block_and_slot<F: Real>(element: u64) -> (u64, usize) {
    let group = 4 * uniforms_per_block::<F>();
    let (q, r) = (element / group, element % group);
    (4 * q + r % 4, (r / 4) as usize)
}

/// The Philox output of `block` of stream `stream` (0, or [`SECOND_STREAM`]) under `key`:
/// counter `[block lo, block hi | stream, batch, sample]`, key `[seed lo, seed hi]`.
pub fn block_words(key: NoiseKey, stream: u32, block: u64) -> [u32; 4] {
    philox4x32_10(
        [
            block as u32,
            (block >> 32) as u32 | stream,
            key.batch,
            key.sample,
        ],
        [key.seed as u32, (key.seed >> 32) as u32],
    )
}

/// The uniform in slot `slot` of a block's words, in the open interval (0, 1), never exactly 0
/// or 1 in `F`:
/// - f32: `u = (k + ½)·2⁻²³`, `k` the top 23 bits of word `slot`;
/// - f64: `u = (k + ½)·2⁻⁵²`, `k` = 52 bits from words `2·slot` (high) ‖ `2·slot + 1`.
pub fn slot_uniform<F: Real>(words: [u32; 4], slot: usize) -> F {
    if uniforms_per_block::<F>() == 4 {
        F::of(open_unit_23(words[slot]))
    } else {
        F::of(open_unit_52(words[2 * slot], words[2 * slot + 1]))
    }
}

/// Uniform number `element` of `stream` (0, or [`SECOND_STREAM`]) under `key`.
fn stream_uniform<F: Real>(key: NoiseKey, stream: u32, element: u64) -> F {
    let (block, slot) = block_and_slot::<F>(element);
    slot_uniform(block_words(key, stream, block), slot)
}

/// Uniform number `element` of `key` (first stream).
pub fn uniform<F: Real>(key: NoiseKey, element: u64) -> F {
    stream_uniform(key, 0, element)
}

/// An element's two uniforms `(u₁, u₂)`: number `element` of the first and of the second
/// stream ([`SECOND_STREAM`]).
pub fn uniforms<F: Real>(key: NoiseKey, element: u64) -> [F; 2] {
    [0, SECOND_STREAM].map(|stream| stream_uniform(key, stream, element))
}

/// `out[i]` = uniform `i` of `stream` under `key`, one Philox call per block (every slot of a
/// block used).
pub fn fill_uniforms<F: Real>(key: NoiseKey, stream: u32, out: &mut [F]) {
    let per_block = uniforms_per_block::<F>() as usize;
    for (q, group) in out.chunks_mut(4 * per_block).enumerate() {
        for j in 0..4.min(group.len()) {
            let words = block_words(key, stream, (4 * q + j) as u64);
            for (slot, u) in group.iter_mut().skip(j).step_by(4).enumerate() {
                *u = slot_uniform(words, slot);
            }
        }
    }
}

/// `out[i]` = `transform(uniform(key, i))` ([`gumbel`] or [`logistic`]) for a whole row, the
/// same bits as element by element, vectorized for this CPU (`lanes`).
pub fn fill_noise<F: Real>(key: NoiseKey, transform: Transform, out: &mut [F]) {
    match concrete(out) {
        Concrete::F32(out) => lanes::fill_f32(key, transform, out),
        Concrete::F64(out) => lanes::fill_f64(key, transform, out),
    }
}

/// Standard Gumbel by inversion: `G = −ln(−ln u)` (sst's own `ln`, [`crate::math`]).
pub fn gumbel<F: Real>(u: F) -> F {
    -(-u.sst_ln()).sst_ln()
}

/// Standard logistic by inversion (the difference of two Gumbels): `L = ln u − ln(1 − u)`.
pub fn logistic<F: Real>(u: F) -> F {
    u.sst_ln() - (F::one() - u).sst_ln()
}

/// Exponential with rate 1 by inversion: `E = −ln u`.
pub fn exponential<F: Real>(u: F) -> F {
    -u.sst_ln()
}

/// Standard normal by Box–Muller: `N = √(−2 ln u₁) · cos(2π u₂)`.
pub fn standard_normal<F: Real>(u1: F, u2: F) -> F {
    (F::of(-2.0) * u1.sst_ln()).sqrt() * (F::TAU() * u2).cos()
}

/// `out[i] = σ·standard_normal(u₁, u₂)` of element `i` under `key` (`u₂` from the second
/// stream): the Gaussian noise of a whole row, which both CPU backends add to `θ`.
pub fn fill_gaussian<F: Real>(key: NoiseKey, sigma: f64, out: &mut [F]) {
    fill_uniforms(key, 0, out);
    for (i, o) in out.iter_mut().enumerate() {
        let u2 = stream_uniform::<F>(key, SECOND_STREAM, i as u64);
        *o = F::of(sigma) * standard_normal(*o, u2);
    }
}

/// A perturbation `w = r_θ(ε)` (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// `w = θ + G`, G standard Gumbel (logistic noise on [`Coordinates::Binary`]).
    Gumbel,
    /// `w = θ + σ·N(0, 1)`.
    Gaussian { sigma: f64 },
    /// The exponential race `w = −E ⊙ exp(−θ)`, `E ~ Exp(1)` (`θ + ln E₀ − ln E₁` on
    /// [`Coordinates::Binary`]).
    NegExponential,
    /// `w = θ`.
    None,
}

/// How `gumbel` and `neg_exponential` act on a support's coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordinates {
    /// One joint argmax over the coordinates (one-hots, subsets, permutations, trees).
    Joint,
    /// Each coordinate an independent binary choice (Bernoulli): Gumbel means logistic noise.
    Binary,
}

impl Perturbation {
    /// `w = r_θ(ε)` for one row θ (elements `0..n`), the noise of element `i` keyed by
    /// `(key, i)` and using only that element's two uniforms `(u₁, u₂)` ([`uniforms`]):
    ///
    /// | perturbation | `Joint` | `Binary` |
    /// | --- | --- | --- |
    /// | `Gumbel` | `θ + gumbel(u₁)` | `θ + logistic(u₁)` |
    /// | `Gaussian { σ }` | `θ + σ·standard_normal(u₁, u₂)` | same |
    /// | `NegExponential` | `−exponential(u₁)·exp(−θ)` | `θ + ln E₀ − ln E₁`, `E₀ = exponential(u₁)`, `E₁ = exponential(u₂)` |
    /// | `None` | `θ` | `θ` |
    ///
    /// Errors (a sentence, nothing written) only for `NegExponential` on `Joint` coordinates when
    /// some `|θ_i| < F::EXP_LIMIT` fails (700 in f64, 80 in f32; NaN fails too).
    /// Panics if `theta` and `w` differ in length.
    pub fn perturb<F: Real>(
        &self,
        coords: Coordinates,
        theta: &[F],
        key: NoiseKey,
        w: &mut [F],
    ) -> Result<(), String> {
        assert_eq!(
            theta.len(),
            w.len(),
            "perturb: theta and w differ in length"
        );
        if let (Perturbation::NegExponential, Coordinates::Joint) = (self, coords) {
            let limit = F::of(F::EXP_LIMIT);
            if let Some((i, t)) = theta
                .iter()
                .enumerate()
                .find(|(_, t)| t.is_nan() || t.abs() >= limit)
            {
                return Err(format!(
                    "neg_exponential noise needs |theta| < {} in {} (found {} at element {})",
                    F::EXP_LIMIT,
                    F::NAME,
                    t,
                    i
                ));
            }
        }
        if let Perturbation::None = self {
            w.copy_from_slice(theta);
            return Ok(());
        }
        // Additive noise: the noise of the whole row at once (Gumbel's vectorized, `lanes.rs`),
        // then `θ + noise`.
        if let Perturbation::Gumbel | Perturbation::Gaussian { .. } = *self {
            match (*self, coords) {
                (Perturbation::Gaussian { sigma }, _) => fill_gaussian(key, sigma, w),
                (_, Coordinates::Joint) => fill_noise(key, Transform::Gumbel, w),
                (_, Coordinates::Binary) => fill_noise(key, Transform::Logistic, w),
            }
            for (wi, &t) in w.iter_mut().zip(theta) {
                *wi = t + *wi;
            }
            return Ok(());
        }
        // The first uniforms straight into `w`, a block at a time, transformed in place; the
        // second stream element by element, only where the perturbation reads it.
        fill_uniforms(key, 0, w);
        for (i, (wi, &t)) in w.iter_mut().zip(theta).enumerate() {
            let u1 = *wi;
            let u2 = || stream_uniform::<F>(key, SECOND_STREAM, i as u64);
            *wi = match (*self, coords) {
                (Perturbation::Gumbel | Perturbation::None | Perturbation::Gaussian { .. }, _) => {
                    unreachable!("returned above")
                }
                (Perturbation::NegExponential, Coordinates::Joint) => {
                    -exponential(u1) * (-t).sst_exp()
                }
                (Perturbation::NegExponential, Coordinates::Binary) => {
                    t + exponential(u1).sst_ln() - exponential(u2()).sst_ln()
                }
            };
        }
        Ok(())
    }

    /// Pathwise chain rule through `w = r_θ(ε)` at fixed noise: `grad_theta += (∂w/∂θ)ᵀ grad_w`.
    /// `∂w/∂θ` is diagonal: the identity for every case except `NegExponential` on `Joint`
    /// coordinates, where `w_i = −E_i·exp(−θ_i)` gives `∂w_i/∂θ_i = −w_i`. Adds into `grad_theta`.
    pub fn chain<F: Real>(&self, coords: Coordinates, w: &[F], grad_w: &[F], grad_theta: &mut [F]) {
        assert!(
            w.len() == grad_w.len() && w.len() == grad_theta.len(),
            "chain: length mismatch"
        );
        let race = matches!(
            (self, coords),
            (Perturbation::NegExponential, Coordinates::Joint)
        );
        for ((gt, &wi), &gw) in grad_theta.iter_mut().zip(w).zip(grad_w) {
            *gt = *gt + if race { -wi * gw } else { gw };
        }
    }
}

#[cfg(test)]
mod tests;
