//! Distributions of the hard samples and the layout of the counter-based noise (DESIGN.md §2),
//! with fixed seeds and tolerances from the central limit theorem: a frequency `p̂` over `N`
//! samples is compared with its exact value `p` within 4 standard errors `√(p(1−p)/N)`.
//!
//! - categorical: Gumbel-max and the exponential race both sample `softmax(θ)`;
//! - bernoulli: logistic noise (gumbel, neg_exponential) gives `P(z_i = 1) = sigmoid(θ_i)`,
//!   Gaussian noise gives `Φ(θ_i/σ)`;
//! - the noise key `(seed, sample, batch row, element)`: determinism, independence of rows,
//!   sample `s` of a call with `N` samples is sample `s` of any other call with the same seed.

mod common;

use common::{layer, sigmoid, softmax};
use ndarray::{Array1, ArrayD, Axis, IxDyn};
use sst::{Mode, Noise, Options};

const N: usize = 100_000;

fn arr(v: &[f64]) -> ArrayD<f64> {
    Array1::from(v.to_vec()).into_dyn()
}

/// The frequency of `z_i = 1` over the samples axis (axis 0) of a hard `[N, n]` output.
fn frequencies(z: &ArrayD<f64>) -> Vec<f64> {
    assert!(
        z.iter().all(|&v| v == 0.0 || v == 1.0),
        "hard z must be 0/1"
    );
    z.mean_axis(Axis(0)).unwrap().iter().copied().collect()
}

fn assert_frequencies(what: &str, got: &[f64], want: &[f64], n: usize) {
    for (i, (g, p)) in got.iter().zip(want).enumerate() {
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (g - p).abs() <= 4.0 * se,
            "{what}: element {i}: frequency {g} vs probability {p} (4 SE = {})",
            4.0 * se
        );
    }
}

/// The standard normal CDF `Φ(x) = ½(1 + erf(x/√2))`, erf by its Maclaurin series
/// `erf(y) = 2/√π Σ (−1)ⁿ y^{2n+1} / (n!(2n+1))`, summed until the terms vanish; accurate to
/// ~1e-13 for |y| ≤ 3 (the terms peak near e^{y²} ≈ 8e3 before they decay).
fn phi(x: f64) -> f64 {
    let y = x / std::f64::consts::SQRT_2;
    assert!(y.abs() <= 3.0, "series used outside its range");
    let (mut term, mut sum) = (y, y);
    for n in 1..200 {
        term *= -y * y / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-18 {
            break;
        }
    }
    0.5 * (1.0 + 2.0 / std::f64::consts::PI.sqrt() * sum)
}

#[test]
fn phi_known_values() {
    // Tabulated: Φ(0) = ½, Φ(1) = 0.8413447460685429, Φ(−1.96) = 0.024997895148220435,
    // Φ(2.5) = 0.9937903346742238.
    assert!((phi(0.0) - 0.5).abs() < 1e-15);
    assert!((phi(1.0) - 0.841_344_746_068_542_9).abs() < 1e-12);
    assert!((phi(-1.96) - 0.024_997_895_148_220_435).abs() < 1e-12);
    assert!((phi(2.5) - 0.993_790_334_674_223_8).abs() < 1e-12);
}

/// Gumbel-max and the exponential race: `P(z = e_k) = softmax(θ)_k`.
#[test]
fn categorical_frequencies_are_softmax() {
    let theta = [0.5, -1.0, 2.0, 0.0, 1.0, -0.5];
    let want = softmax(&theta);
    for (noise, seed) in [("gumbel", 11), ("neg_exponential", 12)] {
        let l = layer(&format!("layer l: categorical(6) {{ noise: {noise} }}"));
        let opts = Options::default().seed(seed).mode(Mode::Hard).samples(N);
        let fwd = l.try_forward(arr(&theta).view(), &opts).unwrap();
        assert_eq!(fwd.z.shape(), &[N, 6]);
        assert!(fwd.z.sum_axis(Axis(1)).iter().all(|&s| s == 1.0));
        assert_frequencies(noise, &frequencies(&fwd.z), &want, N);
    }
}

/// Logistic noise (`gumbel` and the race of two clocks): `P(z_i = 1) = sigmoid(θ_i)`.
#[test]
fn bernoulli_frequencies_are_sigmoid() {
    let theta = [0.8, -1.5, 0.0, 2.5];
    let want: Vec<f64> = theta.iter().map(|&t| sigmoid(t)).collect();
    for (noise, seed) in [("gumbel", 21), ("neg_exponential", 22)] {
        let l = layer(&format!("layer l: bernoulli(4) {{ noise: {noise} }}"));
        let opts = Options::default().seed(seed).mode(Mode::Hard).samples(N);
        let fwd = l.try_forward(arr(&theta).view(), &opts).unwrap();
        assert_frequencies(noise, &frequencies(&fwd.z), &want, N);
    }
}

/// Gaussian noise: `P(θ_i + σ N > 0) = Φ(θ_i/σ)`.
#[test]
fn bernoulli_gaussian_frequencies_are_phi() {
    let theta = [0.8, -1.5, 0.0, 2.5];
    for (sigma, seed) in [(1.0, 31), (2.0, 32), (0.8, 33)] {
        let l = layer(&format!(
            "layer l: bernoulli(4) {{ noise: gaussian(sigma = {sigma}) }}"
        ));
        let want: Vec<f64> = theta.iter().map(|&t| phi(t / sigma)).collect();
        let opts = Options::default().seed(seed).mode(Mode::Hard).samples(N);
        let fwd = l.try_forward(arr(&theta).view(), &opts).unwrap();
        assert_frequencies(&format!("σ = {sigma}"), &frequencies(&fwd.z), &want, N);
    }
}

/// Mean and variance of `w − θ` over many draws: Gumbel (γ, π²/6), logistic (0, π²/3),
/// normal (0, σ²); and `−w` of the race at θ = 0 is Exp(1) (1, 1). Mean within 4·σ/√n,
/// variance within 4·σ²·√((κ − 1)/n), κ the kurtosis.
#[test]
fn noise_moments_through_the_layer() {
    use std::f64::consts::PI;
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    let n = 20_000;
    let cases: [(&str, &str, f64, f64, f64, f64); 5] = [
        (
            "categorical",
            "gumbel",
            1.0,
            EULER_GAMMA,
            PI * PI / 6.0,
            5.4,
        ),
        ("bernoulli", "gumbel", 1.0, 0.0, PI * PI / 3.0, 4.2),
        ("bernoulli", "neg_exponential", 1.0, 0.0, PI * PI / 3.0, 4.2),
        ("categorical", "gaussian(sigma = 3)", 1.0, 0.0, 9.0, 3.0),
        ("categorical", "neg_exponential", -1.0, 1.0, 1.0, 9.0),
    ];
    for (seed, (support, noise, sign, mean, var, kurtosis)) in cases.into_iter().enumerate() {
        let l = layer(&format!("layer l: {support}(5) {{ noise: {noise} }}"));
        let theta = ArrayD::<f64>::zeros(IxDyn(&[5]));
        let opts = Options::default().seed(seed as u64).samples(n / 5);
        let w = l.try_forward(theta.view(), &opts).unwrap().w;
        let xs: Vec<f64> = w.iter().map(|v| sign * v).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let nf = n as f64;
        assert!(
            (m - mean).abs() < 4.0 * (var / nf).sqrt(),
            "{support} {noise}: mean {m} vs {mean}"
        );
        assert!(
            (v - var).abs() < 4.0 * var * ((kurtosis - 1.0) / nf).sqrt(),
            "{support} {noise}: variance {v} vs {var}"
        );
    }
}

/// The same seed gives identical outputs; another seed different ones.
#[test]
fn same_seed_same_sample() {
    for spec in [
        "layer l: categorical(6) { }",
        "layer l: categorical(6) { noise: neg_exponential; regularizer: euclidean }",
        "layer l: bernoulli(6) { noise: gaussian(sigma = 2) }",
        "layer l: bernoulli(6) { regularizer: euclidean }",
    ] {
        let l = layer(spec);
        let theta = arr(&[0.5, -1.0, 2.0, 0.0, 1.0, -0.5]);
        for mode in [Mode::Hard, Mode::Soft] {
            let run = |seed| {
                let opts = Options::default().seed(seed).mode(mode).samples(50);
                l.try_forward(theta.view(), &opts).unwrap()
            };
            let (a, b, c) = (run(7), run(7), run(8));
            assert_eq!(a.z, b.z, "{spec} {mode:?}");
            assert_eq!(a.w, b.w, "{spec} {mode:?}");
            assert_ne!(
                a.w, c.w,
                "{spec} {mode:?}: seeds 7 and 8 gave the same noise"
            );
            assert_ne!(a.z, c.z, "{spec} {mode:?}: seeds 7 and 8 gave the same z");
        }
        // `Noise::None`: every sample is θ itself.
        let opts = Options::default().noise(Noise::None).samples(3);
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        for s in 0..3 {
            assert_eq!(fwd.w.index_axis(Axis(0), s), theta.view());
        }
    }
}

/// The noise of `(seed, sample s, row b, element i)` does not depend on how many samples, rows
/// or elements the call has: sample 0 of `samples = N` is the `samples = 1` call, a prefix of
/// samples is the call with fewer samples, row 0 of a batch is the unbatched call, and the
/// first elements of a longer row are those of a shorter one. Two identical rows of one batch
/// get different noise.
#[test]
fn noise_key_layout() {
    for support in ["categorical", "bernoulli"] {
        let l = layer(&format!("layer l: {support}(4) {{ }}"));
        let theta = arr(&[0.3, -0.2, 1.1, 0.0]);
        let opts = Options::default().seed(99).mode(Mode::Soft);
        let one = l.try_forward(theta.view(), &opts).unwrap();
        let many = l.try_forward(theta.view(), &opts.samples(8)).unwrap();
        let few = l.try_forward(theta.view(), &opts.samples(3)).unwrap();
        assert_eq!(many.w.index_axis(Axis(0), 0), one.w.view(), "{support}");
        assert_eq!(many.z.index_axis(Axis(0), 0), one.z.view(), "{support}");
        for s in 0..3 {
            assert_eq!(many.w.index_axis(Axis(0), s), few.w.index_axis(Axis(0), s));
        }
        for s in 1..8 {
            assert_ne!(many.w.index_axis(Axis(0), s), one.w.view(), "sample {s}");
        }
        // A batch of two identical rows: row 0 is the unbatched call, row 1 has its own noise.
        let batch = ndarray::stack![Axis(0), theta, theta].into_dyn();
        let fwd = l.try_forward(batch.view(), &opts).unwrap();
        assert_eq!(fwd.w.index_axis(Axis(0), 0), one.w.view(), "{support}");
        assert_ne!(fwd.w.index_axis(Axis(0), 1), one.w.view(), "{support}");
        // With samples too: [N, B, n], sample s row 0 is sample s of the unbatched call.
        let fwd = l.try_forward(batch.view(), &opts.samples(8)).unwrap();
        assert_eq!(fwd.w.shape(), &[8, 2, 4]);
        for s in 0..8 {
            assert_eq!(
                fwd.w.index_axis(Axis(0), s).index_axis(Axis(0), 0),
                many.w.index_axis(Axis(0), s)
            );
        }
        // A longer row: its first four elements carry the same noise (w − θ).
        let long = layer(&format!("layer l: {support}(7) {{ }}"));
        let theta7 = arr(&[0.3, -0.2, 1.1, 0.0, 5.0, -5.0, 2.0]);
        let w7 = long.try_forward(theta7.view(), &opts).unwrap().w;
        for i in 0..4 {
            assert_eq!(w7[i], one.w[i], "{support} element {i}");
        }
    }
}

/// Many identical rows in one batch are independent draws: their hard frequencies follow
/// softmax(θ) just like the samples axis does.
#[test]
fn batch_rows_are_independent_draws() {
    let theta = [0.5, -1.0, 2.0, 0.0, 1.0, -0.5];
    let rows = 50_000;
    let batch = ArrayD::from_shape_fn(IxDyn(&[rows, 6]), |i| theta[i[1]]);
    let l = layer("layer l: categorical(6) { estimator: straight_through }");
    let fwd = l
        .try_forward(batch.view(), &Options::default().seed(5))
        .unwrap();
    assert_frequencies("batch", &frequencies(&fwd.z), &softmax(&theta), rows);
}
