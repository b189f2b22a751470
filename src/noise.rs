//! Noise for the perturbations `w = r_θ(ε)` of DESIGN.md §2.
//!
//! Every random number comes from a counter-based generator, Philox4x32-10 (Salmon, Moraes, Dror
//! & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"; Random123), keyed by
//! `(seed, sample, batch row, element)`. One element's noise depends on nothing else, so the same
//! seed gives the same sample on every platform, for every batch split and thread count, and (with
//! the same integer arithmetic) on the GPU.

use crate::real::Real;

/// Philox multipliers and Weyl key increments (Random123 `PHILOX_M4x32_*`, `PHILOX_W32_*`).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

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

/// Two uniforms in the open interval (0, 1), never exactly 0 or 1 in `F`, from one Philox call
/// with counter `[element lo, element hi, batch, sample]` and key `[seed lo, seed hi]`:
/// - f64: `u = (k + ½)·2⁻⁵²`, `k` = 52 bits from words 0‖1 (first) and 2‖3 (second), high bits
///   from words 0 / 2;
/// - f32: `u = (k + ½)·2⁻²³`, `k` = the top 23 bits of word 0 (first) and word 2 (second); this is
///   the midpoint of the 2⁻²³-cell holding the f64 uniform, so the two differ by at most 2⁻²⁴.
pub fn uniforms<F: Real>(key: NoiseKey, element: u64) -> [F; 2] {
    let w = philox4x32_10(
        [
            element as u32,
            (element >> 32) as u32,
            key.batch,
            key.sample,
        ],
        [key.seed as u32, (key.seed >> 32) as u32],
    );
    if F::epsilon().f64() > f64::EPSILON {
        // A 24-bit significand (f32): 23 random bits.
        [F::of(open_unit_23(w[0])), F::of(open_unit_23(w[2]))]
    } else {
        [
            F::of(open_unit_52(w[0], w[1])),
            F::of(open_unit_52(w[2], w[3])),
        ]
    }
}

/// Standard Gumbel by inversion: `G = −ln(−ln u)`.
pub fn gumbel<F: Real>(u: F) -> F {
    -(-u.ln()).ln()
}

/// Standard logistic by inversion (the difference of two Gumbels): `L = ln u − ln(1 − u)`.
pub fn logistic<F: Real>(u: F) -> F {
    u.ln() - (F::one() - u).ln()
}

/// Exponential with rate 1 by inversion: `E = −ln u`.
pub fn exponential<F: Real>(u: F) -> F {
    -u.ln()
}

/// Standard normal by Box–Muller: `N = √(−2 ln u₁) · cos(2π u₂)`.
pub fn standard_normal<F: Real>(u1: F, u2: F) -> F {
    (F::of(-2.0) * u1.ln()).sqrt() * (F::TAU() * u2).cos()
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
    /// `(key, i)` and using only that element's two uniforms `(u₁, u₂)`:
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
        for (i, (wi, &t)) in w.iter_mut().zip(theta).enumerate() {
            let [u1, u2] = uniforms::<F>(key, i as u64);
            *wi = match (*self, coords) {
                (Perturbation::Gumbel, Coordinates::Joint) => t + gumbel(u1),
                (Perturbation::Gumbel, Coordinates::Binary) => t + logistic(u1),
                (Perturbation::Gaussian { sigma }, _) => t + F::of(sigma) * standard_normal(u1, u2),
                (Perturbation::NegExponential, Coordinates::Joint) => -exponential(u1) * (-t).exp(),
                (Perturbation::NegExponential, Coordinates::Binary) => {
                    t + exponential(u1).ln() - exponential(u2).ln()
                }
                (Perturbation::None, _) => t,
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
