use super::*;
use crate::kernels::argmax;

const KEY: NoiseKey = NoiseKey {
    seed: 0x5eed_1234_abcd_0042,
    sample: 0,
    batch: 0,
};

#[test]
fn philox_known_answers() {
    // Random123 kat_vectors, philox4x32 with 10 rounds.
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn open_interval_at_the_extreme_bits() {
    // The smallest and largest uniforms: exactly representable, strictly inside (0, 1).
    let (lo64, hi64) = (open_unit_52(0, 0), open_unit_52(u32::MAX, u32::MAX));
    assert_eq!(lo64, 2f64.powi(-53));
    assert_eq!(hi64, 1.0 - 2f64.powi(-53));
    assert!(hi64 < 1.0 && lo64 > 0.0);
    let (lo32, hi32) = (open_unit_23(0) as f32, open_unit_23(u32::MAX) as f32);
    assert_eq!(lo32, 2f32.powi(-24));
    assert_eq!(hi32, 1.0 - 2f32.powi(-24));
    assert_eq!(
        f64::from(hi32),
        open_unit_23(u32::MAX),
        "rounding to f32 must be exact"
    );
    for u in [lo64, hi64] {
        assert!(gumbel(u).is_finite() && logistic(u).is_finite() && exponential(u).is_finite());
        assert!(standard_normal(u, u).is_finite());
    }
    for u in [lo32, hi32] {
        assert!(gumbel(u).is_finite() && logistic(u).is_finite() && exponential(u).is_finite());
        assert!(standard_normal(u, u).is_finite());
    }
}

#[test]
fn uniforms_inside_for_extreme_counters() {
    let seeds = [0, 1, u64::MAX, 1 << 32, u32::MAX as u64];
    let elements = [0, 1, u32::MAX as u64, 1 << 32, u64::MAX - 1, u64::MAX];
    for &seed in &seeds {
        for &element in &elements {
            for (sample, batch) in [(0, 0), (u32::MAX, u32::MAX), (7, u32::MAX)] {
                let key = NoiseKey {
                    seed,
                    sample,
                    batch,
                };
                let a = uniforms::<f64>(key, element);
                let b = uniforms::<f32>(key, element);
                assert!(a
                    .iter()
                    .all(|&u| u > 0.0 && u < 1.0 && gumbel(u).is_finite()));
                assert!(b
                    .iter()
                    .all(|&u| u > 0.0 && u < 1.0 && gumbel(u).is_finite()));
            }
        }
    }
}

/// The layout of `block_and_slot`, from raw Philox calls: element `r` of a group of `4·U` is
/// slot `r div 4` of block `4q + r mod 4`, the second stream flags bit 31 of counter word 1, and
/// the map from elements to (block, slot) is one-to-one.
#[test]
fn uniforms_use_every_slot_of_every_block_once() {
    let key_words = [KEY.seed as u32, (KEY.seed >> 32) as u32];
    // f32 element 21 = group 1, r = 5: block 4 + 1 = 5, word 1.
    let words = philox4x32_10([5, 0, 0, 0], key_words);
    assert_eq!(uniform::<f32>(KEY, 21), open_unit_23(words[1]) as f32);
    let second = philox4x32_10([5, SECOND_STREAM, 0, 0], key_words);
    assert_eq!(uniforms::<f32>(KEY, 21)[1], open_unit_23(second[1]) as f32);
    // f64 element 13 = group 1, r = 5: block 5, words 2 and 3.
    assert_eq!(uniform::<f64>(KEY, 13), open_unit_52(words[2], words[3]));
    for per_block in [2u64, 4] {
        let n = 64 * per_block;
        let mut seen = std::collections::BTreeSet::new();
        for e in 0..n {
            let (block, slot) = match per_block {
                4 => block_and_slot::<f32>(e),
                _ => block_and_slot::<f64>(e),
            };
            assert!(block < 64 && (slot as u64) < per_block);
            assert!(seen.insert((block, slot)), "({block}, {slot}) twice");
        }
    }
    // A row filled block by block equals the uniforms one by one.
    let mut row32 = vec![0f32; 37];
    fill_uniforms(KEY, SECOND_STREAM, &mut row32);
    let mut row64 = vec![0f64; 37];
    fill_uniforms(KEY, 0, &mut row64);
    for e in 0..37 {
        assert_eq!(row32[e], uniforms::<f32>(KEY, e as u64)[1]);
        assert_eq!(row64[e], uniform::<f64>(KEY, e as u64));
    }
}

/// The precision test in `uniforms` picks the right path for each type: an f32 uniform is a
/// cell midpoint `(k + ½)·2⁻²³`, so `u·2²³ − ½ = k` is an integer, while an f64 uniform
/// `(k + ½)·2⁻⁵²` gives `u·2²³ − ½ = (2k + 1 − 2²⁹)·2⁻³⁰`, an odd multiple of 2⁻³⁰, never an
/// integer (both products and differences are exact in f64).
#[test]
fn f32_uniforms_have_23_bits_and_f64_uniforms_52() {
    let cell_offset = |u: f64| u * 2f64.powi(23) - 0.5;
    for sample in 0..4 {
        let key = NoiseKey { sample, ..KEY };
        for e in 0..4096u64 {
            for (single, double) in uniforms::<f32>(key, e)
                .into_iter()
                .zip(uniforms::<f64>(key, e))
            {
                let (narrow, wide) = (cell_offset(f64::from(single)), cell_offset(double));
                assert_eq!(
                    narrow.fract(),
                    0.0,
                    "f32 uniform {single} is no cell midpoint"
                );
                assert_ne!(wide.fract(), 0.0, "f64 uniform {double} has only 23 bits");
            }
        }
    }
}

#[test]
fn deterministic_and_keyed() {
    let a = uniforms::<f64>(KEY, 17);
    assert_eq!(a, uniforms::<f64>(KEY, 17));
    assert_ne!(a, uniforms::<f64>(KEY, 18));
    assert_ne!(a, uniforms::<f64>(NoiseKey { sample: 1, ..KEY }, 17));
    assert_ne!(a, uniforms::<f64>(NoiseKey { batch: 1, ..KEY }, 17));
    assert_ne!(
        a,
        uniforms::<f64>(
            NoiseKey {
                seed: KEY.seed + 1,
                ..KEY
            },
            17
        )
    );
    assert_ne!(
        a,
        uniforms::<f64>(
            NoiseKey {
                seed: KEY.seed ^ (1 << 40),
                ..KEY
            },
            17
        )
    );
    assert_ne!(
        uniforms::<f64>(KEY, 17),
        uniforms::<f64>(KEY, 17 + (1 << 32))
    );
    // An element's noise does not depend on the row length (or any split of the row).
    let theta = [0.3f64, -1.0, 2.0, 0.0, 5.0];
    let mut long = [0.0; 5];
    let mut short = [0.0; 3];
    Perturbation::Gumbel
        .perturb(Coordinates::Joint, &theta, KEY, &mut long)
        .unwrap();
    Perturbation::Gumbel
        .perturb(Coordinates::Joint, &theta[..3], KEY, &mut short)
        .unwrap();
    assert_eq!(&long[..3], &short);
}

/// Sample mean and variance of `f(u₁, u₂)` over elements `0..n`.
fn moments(n: u64, key: NoiseKey, f: impl Fn(f64, f64) -> f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..n)
        .map(|e| uniforms::<f64>(key, e))
        .map(|[a, b]| f(a, b))
        .collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var)
}

/// Mean within 5·σ/√n and variance within 5·σ²·√((κ − 1)/n), κ the kurtosis μ₄/σ⁴.
fn assert_moments(name: &str, got: (f64, f64), mean: f64, var: f64, kurtosis: f64, n: u64) {
    let n = n as f64;
    let (tol_m, tol_v) = (
        5.0 * (var / n).sqrt(),
        5.0 * var * ((kurtosis - 1.0) / n).sqrt(),
    );
    assert!(
        (got.0 - mean).abs() < tol_m,
        "{name} mean {} vs {mean} ± {tol_m}",
        got.0
    );
    assert!(
        (got.1 - var).abs() < tol_v,
        "{name} variance {} vs {var} ± {tol_v}",
        got.1
    );
}

#[test]
fn distribution_moments() {
    use std::f64::consts::PI;
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    let n = 200_000;
    let k = |s| NoiseKey {
        seed: 11,
        sample: s,
        batch: 3,
    };
    // Gumbel: mean γ, variance π²/6, excess kurtosis 12/5.
    let g = moments(n, k(0), |u, _| gumbel(u));
    assert_moments("gumbel", g, EULER_GAMMA, PI * PI / 6.0, 5.4, n);
    // Logistic: mean 0, variance π²/3, excess kurtosis 6/5.
    let l = moments(n, k(1), |u, _| logistic(u));
    assert_moments("logistic", l, 0.0, PI * PI / 3.0, 4.2, n);
    // Normal: mean 0, variance 1, kurtosis 3.
    let z = moments(n, k(2), standard_normal);
    assert_moments("normal", z, 0.0, 1.0, 3.0, n);
    // Exponential: mean 1, variance 1, kurtosis 9.
    let e = moments(n, k(3), |u, _| exponential(u));
    assert_moments("exponential", e, 1.0, 1.0, 9.0, n);
    // The second uniform is as good as the first.
    let e2 = moments(n, k(4), |_, u| exponential(u));
    assert_moments("exponential(u2)", e2, 1.0, 1.0, 9.0, n);
    // f32 Gumbel too.
    let xs: Vec<f64> = (0..n)
        .map(|e| f64::from(gumbel(uniforms::<f32>(k(5), e)[0])))
        .collect();
    let m = xs.iter().sum::<f64>() / n as f64;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    assert_moments("gumbel f32", (m, v), EULER_GAMMA, PI * PI / 6.0, 5.4, n);
}

/// Frequencies of `argmax w` over `draws` samples, `w = perturb(θ)` with key sample = draw.
fn argmax_freq(p: Perturbation, theta: &[f64], draws: u32) -> Vec<f64> {
    let mut counts = vec![0u32; theta.len()];
    let mut w = vec![0.0; theta.len()];
    for d in 0..draws {
        let key = NoiseKey {
            seed: 99,
            sample: d,
            batch: 1,
        };
        p.perturb(Coordinates::Joint, theta, key, &mut w).unwrap();
        counts[argmax(&w)] += 1;
    }
    counts
        .iter()
        .map(|&c| f64::from(c) / f64::from(draws))
        .collect()
}

/// Frequencies of `w_i > 0` (Binary coordinates).
fn positive_freq(p: Perturbation, theta: &[f64], draws: u32) -> Vec<f64> {
    let mut counts = vec![0u32; theta.len()];
    let mut w = vec![0.0; theta.len()];
    for d in 0..draws {
        let key = NoiseKey {
            seed: 5,
            sample: d,
            batch: 0,
        };
        p.perturb(Coordinates::Binary, theta, key, &mut w).unwrap();
        for (c, &wi) in counts.iter_mut().zip(&w) {
            *c += u32::from(wi > 0.0);
        }
    }
    counts
        .iter()
        .map(|&c| f64::from(c) / f64::from(draws))
        .collect()
}

/// Each frequency within 5 standard errors `√(p(1 − p)/n)` of its probability.
fn assert_freq(name: &str, got: &[f64], want: &[f64], n: u32) {
    for (g, p) in got.iter().zip(want) {
        let tol = 5.0 * (p * (1.0 - p) / f64::from(n)).sqrt();
        assert!((g - p).abs() < tol, "{name}: {got:?} vs {want:?}");
    }
}

const THETA: [f64; 4] = [0.5, -1.0, 1.2, 0.0];

fn closed_softmax(t: &[f64]) -> Vec<f64> {
    let s: f64 = t.iter().map(|v| v.exp()).sum();
    t.iter().map(|v| v.exp() / s).collect()
}

fn closed_sigmoid(t: &[f64]) -> Vec<f64> {
    t.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
}

#[test]
fn gumbel_max_is_softmax() {
    let n = 100_000;
    let f = argmax_freq(Perturbation::Gumbel, &THETA, n);
    assert_freq("gumbel joint", &f, &closed_softmax(&THETA), n);
}

#[test]
fn exponential_race_is_softmax() {
    let n = 100_000;
    let f = argmax_freq(Perturbation::NegExponential, &THETA, n);
    assert_freq("neg_exponential joint", &f, &closed_softmax(&THETA), n);
}

#[test]
fn binary_gumbel_and_race_are_sigmoid() {
    let n = 100_000;
    let theta = [0.0, 1.5, -2.0, 0.3];
    let f = positive_freq(Perturbation::Gumbel, &theta, n);
    assert_freq("gumbel binary", &f, &closed_sigmoid(&theta), n);
    let f = positive_freq(Perturbation::NegExponential, &theta, n);
    assert_freq("neg_exponential binary", &f, &closed_sigmoid(&theta), n);
}

#[test]
fn gaussian_and_none() {
    // w − θ ~ N(0, σ²) on both kinds of coordinates: P(w > θ) = ½, E w = θ, var σ².
    let n = 100_000u32;
    let sigma = 2.0;
    for coords in [Coordinates::Joint, Coordinates::Binary] {
        let (mut s, mut s2) = (0.0, 0.0);
        let mut w = [0.0f64];
        for d in 0..n {
            let key = NoiseKey {
                seed: 3,
                sample: d,
                batch: 0,
            };
            Perturbation::Gaussian { sigma }
                .perturb(coords, &[1.0], key, &mut w)
                .unwrap();
            s += w[0] - 1.0;
            s2 += (w[0] - 1.0).powi(2);
        }
        let (m, v) = (s / f64::from(n), s2 / f64::from(n));
        assert_moments("gaussian", (m, v), 0.0, sigma * sigma, 3.0, u64::from(n));
    }
    let theta = [1.0f32, -3.0, 1e30];
    let mut w = [0.0f32; 3];
    Perturbation::None
        .perturb(Coordinates::Joint, &theta, KEY, &mut w)
        .unwrap();
    assert_eq!(w, theta);
}

#[test]
fn chain_matches_finite_differences() {
    let cases = [
        Perturbation::Gumbel,
        Perturbation::Gaussian { sigma: 0.7 },
        Perturbation::NegExponential,
        Perturbation::None,
    ];
    let theta = [0.3, -1.2, 2.5, 0.0, -0.4];
    let grad_w = [0.5, -1.0, 0.25, 2.0, -0.75];
    let h = 1e-6;
    for p in cases {
        for coords in [Coordinates::Joint, Coordinates::Binary] {
            let loss = |t: &[f64]| {
                let mut w = vec![0.0; t.len()];
                p.perturb(coords, t, KEY, &mut w).unwrap();
                w.iter().zip(&grad_w).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut w = vec![0.0; theta.len()];
            p.perturb(coords, &theta, KEY, &mut w).unwrap();
            let mut grad = vec![1.0; theta.len()];
            p.chain(coords, &w, &grad_w, &mut grad);
            for i in 0..theta.len() {
                let (mut tp, mut tm) = (theta, theta);
                tp[i] += h;
                tm[i] -= h;
                let fd = (loss(&tp) - loss(&tm)) / (2.0 * h);
                let tol = 1e-7 * (1.0 + fd.abs());
                assert!((grad[i] - 1.0 - fd).abs() < tol, "{p:?} {coords:?} {i}");
            }
        }
    }
}

#[test]
fn neg_exponential_limits() {
    let p = Perturbation::NegExponential;
    let mut w = [0.0f64; 5];
    let err = p.perturb(Coordinates::Joint, &[0.0, 1.0, -2.0, 3.0, 1e3], KEY, &mut w);
    let msg = err.unwrap_err();
    assert!(
        msg.contains("700") && msg.contains("f64") && msg.contains("element 4"),
        "{msg}"
    );
    assert_eq!(w, [0.0; 5], "nothing written on error");
    assert!(p
        .perturb(Coordinates::Joint, &[-1e3f64], KEY, &mut [0.0])
        .is_err());
    assert!(p
        .perturb(Coordinates::Joint, &[f64::NAN], KEY, &mut [0.0])
        .is_err());
    let msg = p
        .perturb(Coordinates::Joint, &[0.0f32, 90.0], KEY, &mut [0.0; 2])
        .unwrap_err();
    assert!(
        msg.contains("80") && msg.contains("f32") && msg.contains("element 1"),
        "{msg}"
    );
    // Inside the limits the race stays finite and negative.
    let mut w = [0.0f64; 2];
    p.perturb(Coordinates::Joint, &[-699.0, 699.0], KEY, &mut w)
        .unwrap();
    assert!(w.iter().all(|v| v.is_finite() && *v < 0.0), "{w:?}");
    let mut wf = [0.0f32; 2];
    p.perturb(Coordinates::Joint, &[-79.0f32, 79.0], KEY, &mut wf)
        .unwrap();
    assert!(wf.iter().all(|v| v.is_finite() && *v < 0.0), "{wf:?}");
    // The binary race is θ plus logistic noise: no limit.
    let mut w = [0.0f64];
    p.perturb(Coordinates::Binary, &[1e3], KEY, &mut w).unwrap();
    assert!(w[0].is_finite());
}

/// The whole-row noise of `lanes.rs` (every variant this CPU runs: baseline, AVX2, AVX-512) is
/// `transform(uniform(key, i))` element by element, bit for bit, for rows that end inside a
/// chunk or on its edge, several keys, both transforms and both precisions.
#[test]
fn row_noise_is_the_element_by_element_noise_in_every_variant() {
    let variants = crate::simd::Variant::all_available();
    let keys = [
        KEY,
        NoiseKey {
            seed: 0,
            sample: 3,
            batch: 7,
        },
        NoiseKey {
            seed: u64::MAX,
            sample: u32::MAX,
            batch: 12,
        },
    ];
    let transforms = [
        (Transform::Gumbel, "gumbel"),
        (Transform::Logistic, "logistic"),
    ];
    for len in [0, 1, 5, 31, 32, 33, 63, 64, 65, 1000, 4097] {
        for key in keys {
            for (t, name) in transforms {
                let one = |u: f64| match t {
                    Transform::Gumbel => gumbel(u),
                    Transform::Logistic => logistic(u),
                };
                for &variant in &variants {
                    let mut row = vec![0f32; len];
                    lanes::fill_f32_on(variant, key, t, &mut row);
                    for (i, &g) in row.iter().enumerate() {
                        let u: f32 = uniform(key, i as u64);
                        let want = match t {
                            Transform::Gumbel => gumbel(u),
                            Transform::Logistic => logistic(u),
                        };
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "f32 {variant:?} {name} {key:?} {i}/{len}"
                        );
                    }
                }
                for &variant in &variants {
                    let mut row = vec![0f64; len];
                    lanes::fill_f64_on(variant, key, t, &mut row);
                    for (i, &g) in row.iter().enumerate() {
                        let want = one(uniform(key, i as u64));
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "f64 {variant:?} {name} {key:?} {i}/{len}"
                        );
                    }
                }
            }
        }
    }
    eprintln!("variants checked: {variants:?}");
}
