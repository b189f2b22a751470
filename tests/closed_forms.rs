//! Closed forms of the categorical and Bernoulli layers (DESIGN.md §2), checked against naive
//! formulas written here: softmax, sparsemax by trying every support, sigmoid, clip; their
//! explicit Jacobians; the noise formulas (Gumbel, logistic, Box–Muller, exponential race) on the
//! generator's uniforms; the `finite_diff` rule against `closed_form`; the `−w` factor of the
//! exponential race.
//!
//! Expected numbers never come from the code under test: only the uniforms of the counter-based
//! generator are taken from `sst::noise::uniforms` (their known answers are unit-tested there).

mod common;

use common::{layer, loss, softmax, Rng};
use ndarray::{ArrayD, IxDyn};
use sst::noise::{uniforms, NoiseKey};
use sst::{Forward, Mode, Noise, Options};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Support {
    Categorical,
    Bernoulli,
}

impl Support {
    fn keyword(self) -> &'static str {
        match self {
            Support::Categorical => "categorical",
            Support::Bernoulli => "bernoulli",
        }
    }
    fn regularizers(self) -> [&'static str; 2] {
        match self {
            Support::Categorical => ["entropy", "euclidean"],
            Support::Bernoulli => ["binary_entropy", "euclidean"],
        }
    }
}

/// Sparsemax by trying every support `S`: `τ = (Σ_S x − 1)/|S|` is the answer when
/// `x_i > τ` on `S` and `x_i ≤ τ` off `S`. Independent of the sort-based rule.
fn sparsemax(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    assert!(n <= 16);
    for mask in 1u32..(1 << n) {
        let inside = |i: usize| mask >> i & 1 == 1;
        let k = mask.count_ones() as f64;
        let tau = ((0..n).filter(|&i| inside(i)).map(|i| x[i]).sum::<f64>() - 1.0) / k;
        if (0..n).all(|i| (x[i] > tau) == inside(i)) {
            return x.iter().map(|&v| (v - tau).max(0.0)).collect();
        }
    }
    panic!("no support found for {x:?}")
}

fn sigmoid(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect()
}

fn clip(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| (v + 0.5).clamp(0.0, 1.0)).collect()
}

/// The soft solution `z(x)` for `x = w/T`.
fn soft(support: Support, reg: &str, x: &[f64]) -> Vec<f64> {
    match (support, reg) {
        (Support::Categorical, "entropy") => softmax(x),
        (Support::Categorical, "euclidean") => sparsemax(x),
        (Support::Bernoulli, "binary_entropy") => sigmoid(x),
        (Support::Bernoulli, "euclidean") => clip(x),
        _ => unreachable!(),
    }
}

/// The hard solution: one-hot of the first maximum, or `[w_i > 0]`.
fn hard(support: Support, w: &[f64]) -> Vec<f64> {
    match support {
        Support::Categorical => {
            let mut best = 0;
            for i in 1..w.len() {
                if w[i] > w[best] {
                    best = i;
                }
            }
            (0..w.len())
                .map(|i| f64::from(u8::from(i == best)))
                .collect()
        }
        Support::Bernoulli => w.iter().map(|&v| f64::from(u8::from(v > 0.0))).collect(),
    }
}

/// The explicit Jacobian `∂z/∂w` (row-major, `J[i][j] = ∂z_i/∂w_j`) at `w`, temperature `t`.
fn jacobian(support: Support, reg: &str, w: &[f64], t: f64) -> Vec<Vec<f64>> {
    let n = w.len();
    let x: Vec<f64> = w.iter().map(|v| v / t).collect();
    let z = soft(support, reg, &x);
    let mut j = vec![vec![0.0; n]; n];
    match (support, reg) {
        (Support::Categorical, "entropy") => {
            for a in 0..n {
                for b in 0..n {
                    let diag = if a == b { z[a] } else { 0.0 };
                    j[a][b] = (diag - z[a] * z[b]) / t;
                }
            }
        }
        (Support::Categorical, "euclidean") => {
            let s: Vec<f64> = z.iter().map(|&v| f64::from(u8::from(v > 0.0))).collect();
            let k: f64 = s.iter().sum();
            for a in 0..n {
                for b in 0..n {
                    let diag = if a == b { s[a] } else { 0.0 };
                    j[a][b] = (diag - s[a] * s[b] / k) / t;
                }
            }
        }
        (Support::Bernoulli, "binary_entropy") => {
            for a in 0..n {
                j[a][a] = z[a] * (1.0 - z[a]) / t;
            }
        }
        (Support::Bernoulli, "euclidean") => {
            for a in 0..n {
                let inside = x[a] + 0.5 > 0.0 && x[a] + 0.5 < 1.0;
                j[a][a] = f64::from(u8::from(inside)) / t;
            }
        }
        _ => unreachable!(),
    }
    j
}

/// `Jᵀ c`, explicitly.
fn vjp(j: &[Vec<f64>], c: &[f64]) -> Vec<f64> {
    (0..c.len())
        .map(|b| (0..c.len()).map(|a| j[a][b] * c[a]).sum())
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w} (|diff| {:e} > {tol:e})\n got  {got:?}\n want {want:?}",
            (g - w).abs()
        );
    }
}

/// The perturbations of the spec, with the noise formula each implies.
#[derive(Clone, Copy, Debug)]
enum Pert {
    Gumbel,
    Gaussian(f64),
    NegExponential,
}

impl Pert {
    fn spec(self) -> String {
        match self {
            Pert::Gumbel => "gumbel".into(),
            Pert::Gaussian(s) => format!("gaussian(sigma = {s})"),
            Pert::NegExponential => "neg_exponential".into(),
        }
    }

    /// `w_i` from the uniforms `(u₁, u₂)` of element `i` (DESIGN.md §2), written out here.
    fn w(self, support: Support, theta: f64, u1: f64, u2: f64) -> f64 {
        use std::f64::consts::PI;
        match (self, support) {
            (Pert::Gumbel, Support::Categorical) => theta - (-u1.ln()).ln(),
            (Pert::Gumbel, Support::Bernoulli) => theta + u1.ln() - (1.0 - u1).ln(),
            (Pert::Gaussian(s), _) => theta + s * (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos(),
            (Pert::NegExponential, Support::Categorical) => u1.ln() * (-theta).exp(),
            (Pert::NegExponential, Support::Bernoulli) => theta + (-u1.ln()).ln() - (-u2.ln()).ln(),
        }
    }

    /// `∂w_i/∂θ_i` at `w_i`.
    fn dw_dtheta(self, support: Support, w: f64) -> f64 {
        match (self, support) {
            (Pert::NegExponential, Support::Categorical) => -w,
            _ => 1.0,
        }
    }
}

/// One request layout: batch rows `B` (None: no batch axis) and samples `N`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    batch: Option<usize>,
    samples: usize,
}

const LAYOUTS: [Layout; 4] = [
    Layout {
        batch: None,
        samples: 1,
    },
    Layout {
        batch: Some(3),
        samples: 1,
    },
    Layout {
        batch: None,
        samples: 4,
    },
    Layout {
        batch: Some(2),
        samples: 3,
    },
];

/// The expected shape of `z` for a layout.
fn z_shape(layout: Layout, n: usize) -> Vec<usize> {
    let mut s = Vec::new();
    if layout.samples > 1 {
        s.push(layout.samples);
    }
    s.extend(layout.batch);
    s.push(n);
    s
}

/// Checks one forward/backward against the closed forms, row by row. `pert` is `None` for
/// `Noise::None`. Returns nothing; panics with the case on mismatch.
#[allow(clippy::too_many_arguments)]
fn check_case(
    support: Support,
    reg: &str,
    pert: Option<Pert>,
    seed: u64,
    mode: Mode,
    layout: Layout,
    t: f64,
    n: usize,
    rng: &mut Rng,
) {
    let estimator = match mode {
        Mode::Hard => "straight_through",
        Mode::Soft => "relaxed",
    };
    let spec = format!(
        "layer l: {}({n}) {{ noise: {}; regularizer: {reg}; estimator: {estimator}; temperature: {t} }}",
        support.keyword(),
        pert.unwrap_or(Pert::Gumbel).spec(),
    );
    let l = layer(&spec);
    let mut theta_shape: Vec<usize> = layout.batch.into_iter().collect();
    theta_shape.push(n);
    let theta = rng.array(&theta_shape, -2.0, 2.0);
    let cot = rng.array(&theta_shape, -1.0, 1.0);
    let noise = match pert {
        Some(_) => Noise::Seed(seed),
        None => Noise::None,
    };
    // The mode comes from the estimator; the temperature from the spec.
    let opts = Options::default().noise(noise).samples(layout.samples);
    let fwd: Forward<f64> = l.try_forward(theta.view(), &opts).unwrap();
    let case = format!("{spec} | {noise:?} {layout:?}");
    assert_eq!(fwd.mode, mode, "{case}");
    assert_eq!(fwd.temperature, t, "{case}");
    let shape = z_shape(layout, n);
    assert_eq!(fwd.z.shape(), shape.as_slice(), "{case}");
    assert_eq!(fwd.w.shape(), shape.as_slice(), "{case}");
    let grad = l.try_backward(&fwd, cot.view()).unwrap();
    assert_eq!(grad.shape(), shape.as_slice(), "{case}");

    let rows = layout.batch.unwrap_or(1);
    let theta = theta.as_slice().unwrap();
    let cot = cot.as_slice().unwrap();
    let (z, w, grad) = (
        fwd.z.as_slice().unwrap(),
        fwd.w.as_slice().unwrap(),
        grad.as_slice().unwrap(),
    );
    for s in 0..layout.samples {
        for b in 0..rows {
            let r = s * rows + b;
            let row = |a: &[f64]| a[r * n..(r + 1) * n].to_vec();
            let (w_r, z_r, g_r) = (row(w), row(z), row(grad));
            let theta_r = &theta[b * n..(b + 1) * n];
            let c_r = &cot[b * n..(b + 1) * n];
            let at = format!("{case} sample {s} row {b}");
            // w: θ itself exactly, or the noise formula on the generator's uniforms.
            match pert {
                None => assert_eq!(w_r, theta_r, "Noise::None must give w = θ exactly, {at}"),
                Some(p) => {
                    let key = NoiseKey {
                        seed,
                        sample: s as u32,
                        batch: b as u32,
                    };
                    let want_w: Vec<f64> = (0..n)
                        .map(|i| {
                            let [u1, u2] = uniforms::<f64>(key, i as u64);
                            p.w(support, theta_r[i], u1, u2)
                        })
                        .collect();
                    assert_close(&format!("w, {at}"), &w_r, &want_w, 1e-12);
                }
            }
            // z: hard or soft closed form at the returned w.
            let x: Vec<f64> = w_r.iter().map(|v| v / t).collect();
            let want_z = match mode {
                Mode::Hard => hard(support, &w_r),
                Mode::Soft => soft(support, reg, &x),
            };
            assert_close(&format!("z, {at}"), &z_r, &want_z, 1e-9);
            // grad: (∂w/∂θ)ᵀ Jᵀ c with the explicit Jacobian (soft one in both modes).
            let j = jacobian(support, reg, &w_r, t);
            let gw = vjp(&j, c_r);
            let want_g: Vec<f64> = (0..n)
                .map(|i| {
                    let factor = pert.map_or(1.0, |p| p.dw_dtheta(support, w_r[i]));
                    factor * gw[i]
                })
                .collect();
            assert_close(&format!("grad, {at}"), &g_r, &want_g, 1e-9);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every support × regularizer × noise × mode × layout × temperature × size, against the
/// closed forms: w (noise formula), z (softmax / sparsemax / sigmoid / clip or hard), grad.
fn closed_forms_for(support: Support) {
    let perts = [
        None,
        Some(Pert::Gumbel),
        Some(Pert::Gaussian(2.0)),
        Some(Pert::NegExponential),
    ];
    let mut rng = Rng(0xC105_ED00 + support as u64);
    let mut cases = 0;
    for reg in support.regularizers() {
        for (pi, pert) in perts.iter().enumerate() {
            for mode in [Mode::Hard, Mode::Soft] {
                for layout in LAYOUTS {
                    for t in [0.5, 1.0, 2.0] {
                        for n in [1, 3, 6] {
                            let seed = 1000 * pi as u64 + cases;
                            check_case(support, reg, *pert, seed, mode, layout, t, n, &mut rng);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 4 * 2 * 4 * 3 * 3);
}

#[test]
fn categorical_closed_forms() {
    closed_forms_for(Support::Categorical);
}

#[test]
fn bernoulli_closed_forms() {
    closed_forms_for(Support::Bernoulli);
}

/// The options' mode and temperature override the estimator and the spec.
#[test]
fn options_override_mode_and_temperature() {
    let l = layer("layer l: categorical(5) { regularizer: entropy; temperature: 3 }");
    let theta = ArrayD::from_shape_vec(IxDyn(&[5]), vec![0.1, -0.7, 1.3, 0.2, -1.9]).unwrap();
    for (mode, t) in [(Mode::Hard, 0.5), (Mode::Soft, 0.25), (Mode::Soft, 1.5)] {
        let opts = Options::default().seed(9).mode(mode).temperature(t);
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        assert_eq!((fwd.mode, fwd.temperature), (mode, t));
        let w = fwd.w.as_slice().unwrap();
        let x: Vec<f64> = w.iter().map(|v| v / t).collect();
        let want = match mode {
            Mode::Hard => hard(Support::Categorical, w),
            Mode::Soft => softmax(&x),
        };
        assert_close("z", fwd.z.as_slice().unwrap(), &want, 1e-12);
    }
    // A schedule in the spec is evaluated at the request's step: max(0.1, exp(−step/10)).
    let l = layer("layer l: categorical(5) { temperature: max(0.1, exp(-step / 10)) }");
    for step in [0.0, 5.0, 100.0] {
        let fwd = l
            .try_forward(theta.view(), &Options::default().step(step))
            .unwrap();
        let want_t = f64::max(0.1, (-step / 10.0).exp());
        assert!((fwd.temperature - want_t).abs() < 1e-15, "step {step}");
        let x: Vec<f64> = fwd.w.iter().map(|v| v / want_t).collect();
        assert_close("z", fwd.z.as_slice().unwrap(), &softmax(&x), 1e-12);
    }
}

/// True when the piecewise-linear solver changes its active set between `x − d` and `x + d`
/// (sparsemax support, or the interior of the clip).
fn near_kink(support: Support, reg: &str, x: &[f64], d: &[f64]) -> bool {
    if reg != "euclidean" {
        return false;
    }
    let pattern = |sign: f64| -> Vec<bool> {
        let xs: Vec<f64> = x.iter().zip(d).map(|(a, b)| a + sign * b).collect();
        match support {
            Support::Categorical => sparsemax(&xs).iter().map(|&v| v > 0.0).collect(),
            Support::Bernoulli => xs.iter().map(|&v| v + 0.5 > 0.0 && v + 0.5 < 1.0).collect(),
        }
    };
    pattern(-1.0) != pattern(0.0) || pattern(1.0) != pattern(0.0)
}

/// `backward: finite_diff` agrees with `backward: closed_form` to 1e-6 at T ∈ {0.5, 1, 2}.
/// Draws whose finite-difference step crosses a kink are skipped: at most 1 in 20 of each
/// support × regularizer (only the piecewise-linear Euclidean ones can skip).
#[test]
fn finite_diff_agrees_with_closed_form() {
    let mut rng = Rng(77);
    for support in [Support::Categorical, Support::Bernoulli] {
        for reg in support.regularizers() {
            let (mut checked, mut skipped) = (0, 0);
            for pert in ["gumbel", "neg_exponential", "gaussian(sigma = 2)"] {
                for t in [0.5, 1.0, 2.0] {
                    for mode in [Mode::Hard, Mode::Soft] {
                        for seed in 0..5u64 {
                            let n = 2 + (seed as usize % 5);
                            let spec = |rule: &str| {
                                format!(
                                    "layer l: {}({n}) {{ noise: {pert}; regularizer: {reg}; backward: {rule} }}",
                                    support.keyword()
                                )
                            };
                            let exact = layer(&spec("closed_form"));
                            let fd = layer(&spec("finite_diff"));
                            let fd_eps = layer(&spec("finite_diff(eps = 1e-5)"));
                            let theta = rng.array(&[2, n], -2.0, 2.0);
                            let cot = rng.array(&[2, n], -1.0, 1.0);
                            let opts = Options::default()
                                .seed(seed)
                                .mode(mode)
                                .temperature(t)
                                .samples(2);
                            let f1 = exact.try_forward(theta.view(), &opts).unwrap();
                            let f2 = fd.try_forward(theta.view(), &opts).unwrap();
                            assert_eq!(f1.w, f2.w);
                            assert_eq!(f1.z, f2.z);
                            // Skip draws where the FD step (h = 1e-5/‖c‖, doubled) crosses a kink.
                            let crosses = (0..4).any(|r| {
                                let (s, b) = (r / 2, r % 2);
                                let w: Vec<f64> = f1.w.slice(ndarray::s![s, b, ..]).to_vec();
                                let c: Vec<f64> = cot.slice(ndarray::s![b, ..]).to_vec();
                                let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
                                let x: Vec<f64> = w.iter().map(|v| v / t).collect();
                                let d: Vec<f64> =
                                    c.iter().map(|v| 2.0 * 1e-5 / norm * v / t).collect();
                                near_kink(support, reg, &x, &d)
                            });
                            if crosses {
                                skipped += 1;
                                continue;
                            }
                            let g1 = exact.try_backward(&f1, cot.view()).unwrap();
                            let g2 = fd.try_backward(&f2, cot.view()).unwrap();
                            let f3 = fd_eps.try_forward(theta.view(), &opts).unwrap();
                            let g3 = fd_eps.try_backward(&f3, cot.view()).unwrap();
                            assert_eq!(g2, g3, "finite_diff defaults to eps = 1e-5");
                            let what = format!("{} | T {t} {mode:?} seed {seed}", spec("…"));
                            assert_close(
                                &what,
                                g2.as_slice().unwrap(),
                                g1.as_slice().unwrap(),
                                1e-6,
                            );
                            checked += 1;
                        }
                    }
                }
            }
            assert!(
                skipped * 20 < checked,
                "{support:?} {reg}: {skipped} skipped, {checked} checked"
            );
        }
    }
}

/// With the same uniforms, `gaussian(sigma = 2)` gives exactly twice the noise of
/// `gaussian(sigma = 1)`: `w − θ = σ·√(−2 ln u₁)·cos(2π u₂)` is linear in σ, and doubling is
/// exact in binary floating point. At θ = 0 the equality is bit-exact; at θ ≠ 0 up to the
/// rounding of `θ + noise`. The sample spread of σ = 1 over many elements is 1.
#[test]
fn gaussian_sigma_scales_the_noise() {
    for support in ["categorical", "bernoulli"] {
        let spec =
            |sigma: f64| format!("layer l: {support}(2000) {{ noise: gaussian(sigma = {sigma}) }}");
        let (one, two) = (layer(&spec(1.0)), layer(&spec(2.0)));
        let zero = ArrayD::<f64>::zeros(IxDyn(&[2000]));
        let mut rng = Rng(5);
        let theta = rng.array(&[2000], -2.0, 2.0);
        for seed in [0, 1, 12345] {
            let opts = Options::default().seed(seed).mode(Mode::Soft);
            let w1 = one.try_forward(zero.view(), &opts).unwrap().w;
            let w2 = two.try_forward(zero.view(), &opts).unwrap().w;
            for (a, b) in w1.iter().zip(w2.iter()) {
                assert_eq!(
                    2.0 * a,
                    *b,
                    "{support} seed {seed}: σ = 2 must be exactly 2× σ = 1"
                );
            }
            // Spread: the sample standard deviation of σ = 1 is ≈ 1, within 5 SE, the SE of a
            // normal sample's sd being σ/√(2(N − 1)). (That of σ = 2 is then exactly twice it.)
            let m = w1.mean().unwrap();
            let sd = (w1.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 1999.0).sqrt();
            let se = (1.0 / (2.0 * 1999.0f64)).sqrt();
            assert!(
                (sd - 1.0).abs() < 5.0 * se,
                "{support} seed {seed}: sd {sd}"
            );
            let v1 = one.try_forward(theta.view(), &opts).unwrap().w;
            let v2 = two.try_forward(theta.view(), &opts).unwrap().w;
            for ((a, b), t) in v1.iter().zip(v2.iter()).zip(theta.iter()) {
                assert!(((b - t) - 2.0 * (a - t)).abs() < 1e-14, "{a} {b} {t}");
            }
        }
    }
}

/// The exponential race `w = −E·exp(−θ)` contributes `∂w_i/∂θ_i = −w_i`: the gradient of the
/// whole map θ ↦ ⟨c, z_soft⟩ at a fixed seed matches central differences of that map.
#[test]
fn neg_exponential_gradient_includes_minus_w() {
    let mut rng = Rng(31);
    let h = 1e-6;
    let mut checked = 0;
    for reg in ["entropy", "euclidean"] {
        for t in [0.5, 1.0, 2.0] {
            for seed in 0..10u64 {
                let n = 2 + seed as usize % 5;
                let l = layer(&format!(
                    "layer l: categorical({n}) {{ noise: neg_exponential; regularizer: {reg}; temperature: {t} }}"
                ));
                let theta = rng.array(&[2, n], -2.0, 2.0);
                let cot = rng.array(&[2, n], -1.0, 1.0);
                let opts = Options::default().seed(seed).mode(Mode::Soft);
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                let grad = l.try_backward(&fwd, cot.view()).unwrap();
                let mut fd = ArrayD::<f64>::zeros(theta.raw_dim());
                let mut fd2 = ArrayD::<f64>::zeros(theta.raw_dim());
                for (idx, _) in theta.indexed_iter() {
                    let at = |d: f64| {
                        let mut th = theta.clone();
                        th[&idx] += d;
                        loss(&l, &th, &cot, &opts)
                    };
                    fd[&idx] = (at(h) - at(-h)) / (2.0 * h);
                    fd2[&idx] = (at(2.0 * h) - at(-2.0 * h)) / (4.0 * h);
                }
                // Sparsemax is piecewise linear: skip draws where ±h and ±2h disagree (a kink).
                if fd.iter().zip(fd2.iter()).any(|(a, b)| (a - b).abs() > 1e-6) {
                    continue;
                }
                let what = format!("{reg} T {t} seed {seed}");
                assert_close(
                    &what,
                    grad.as_slice().unwrap(),
                    fd.as_slice().unwrap(),
                    1e-6,
                );
                // Without the −w factor the answer would be Jᵀc/T: make sure it differs.
                let w = fwd.w.as_slice().unwrap();
                let without: Vec<f64> = grad
                    .iter()
                    .zip(w)
                    .map(|(g, wi)| if *wi != 0.0 { g / -wi } else { 0.0 })
                    .collect();
                let differs = without
                    .iter()
                    .zip(fd.iter())
                    .any(|(a, b)| (a - b).abs() > 1e-3);
                assert!(
                    differs || grad.iter().all(|g| g.abs() < 1e-9),
                    "{what}: the −w factor is invisible"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 50, "only {checked} draws away from kinks");
}

/// f32 requests follow the same closed forms (to f32 precision).
#[test]
fn f32_matches_closed_forms() {
    let mut rng = Rng(404);
    for support in [Support::Categorical, Support::Bernoulli] {
        for reg in support.regularizers() {
            for mode in [Mode::Hard, Mode::Soft] {
                let l = layer(&format!(
                    "layer l: {}(6) {{ regularizer: {reg} }}",
                    support.keyword()
                ));
                let theta = rng.array(&[3, 6], -2.0, 2.0);
                let cot = rng.array(&[3, 6], -1.0, 1.0);
                let theta32 = theta.mapv(|v| v as f32);
                let cot32 = cot.mapv(|v| v as f32);
                let opts = Options::default().seed(8).mode(mode).temperature(0.7);
                let fwd = l.try_forward(theta32.view(), &opts).unwrap();
                let grad = l.try_backward(&fwd, cot32.view()).unwrap();
                for b in 0..3 {
                    let w: Vec<f64> = (0..6).map(|i| f64::from(fwd.w[[b, i]])).collect();
                    let x: Vec<f64> = w.iter().map(|v| v / 0.7).collect();
                    let want_z = match mode {
                        Mode::Hard => hard(support, &w),
                        Mode::Soft => soft(support, reg, &x),
                    };
                    let z: Vec<f64> = (0..6).map(|i| f64::from(fwd.z[[b, i]])).collect();
                    assert_close(&format!("{reg} z"), &z, &want_z, 1e-5);
                    let c: Vec<f64> = (0..6).map(|i| cot[[b, i]]).collect();
                    let want_g = vjp(&jacobian(support, reg, &w, 0.7), &c);
                    let g: Vec<f64> = (0..6).map(|i| f64::from(grad[[b, i]])).collect();
                    assert_close(&format!("{reg} grad"), &g, &want_g, 1e-5);
                }
            }
        }
    }
}

/// Ties in the argmax go to the lowest index (DESIGN.md §2); `w_i = 0` is `z_i = 0` for
/// Bernoulli (`z_i = [w_i > 0]`). Soft solutions of tied entries are equal.
#[test]
fn ties_go_to_the_lowest_index() {
    let hard = Options::default().noise(Noise::None).mode(Mode::Hard);
    let soft = Options::default().noise(Noise::None).mode(Mode::Soft);
    for reg in ["entropy", "euclidean"] {
        let l = layer(&format!("layer l: categorical(5) {{ regularizer: {reg} }}"));
        for (theta, want) in [
            ([0.0, 3.0, 3.0, 1.0, 3.0], 1),
            ([2.0; 5], 0),
            ([-1.0, -1.0, -4.0, -2.0, -1.0], 0),
            ([0.0, 0.0, 0.0, 0.0, 1e-300], 4),
        ] {
            let th = ndarray::arr1(&theta).into_dyn();
            let z = l.try_forward(th.view(), &hard).unwrap().z;
            let mut one_hot = vec![0.0; 5];
            one_hot[want] = 1.0;
            assert_eq!(
                z.as_slice().unwrap(),
                one_hot.as_slice(),
                "{reg} θ = {theta:?}"
            );
            let z = l.try_forward(th.view(), &soft).unwrap().z;
            for i in 0..5 {
                for j in 0..5 {
                    if theta[i] == theta[j] {
                        assert_eq!(z[i], z[j], "{reg} θ = {theta:?}");
                    }
                }
            }
        }
    }
    let l = layer("layer l: bernoulli(4) { }");
    let th = ndarray::arr1(&[0.0, -0.0, 1e-300, -1e-300]).into_dyn();
    let z = l.try_forward(th.view(), &hard).unwrap().z;
    assert_eq!(z.as_slice().unwrap(), &[0.0, 0.0, 1.0, 0.0]);
    let z = l.try_forward(th.view(), &soft).unwrap().z;
    assert_eq!(z.as_slice().unwrap(), &[0.5; 4]);
}
