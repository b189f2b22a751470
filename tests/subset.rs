//! `subset(n, k)` and `correlated_subset(n, k)` beyond the generic tests (which cover n ≤ 8):
//! agreement with independent computations written here for n ≤ 12 (brute-force marginals over
//! every k-subset, bisection on τ for the capped-simplex projection and the threshold solvers),
//! gradients at n = 12 (through the complement, k > n/2), validity of hard samples for every
//! seed, soft outputs in the capped simplex, the T → 0 limit at n = 100, extreme inputs
//! (±1e4, T = 1e-4, k = 1, k = n − 1, n = 10⁵, f64 and f32), presets, and clear errors.

mod common;

use common::{compile_error, layer, sigmoid, Rng};
use ndarray::{ArrayD, IxDyn};
use sst::{Mode, Noise, Options, Real};
use std::collections::BTreeMap;

const REGULARIZERS: [&str; 4] = ["binary_entropy", "entropy", "euclidean", "expfamily"];

fn arr<F: Real>(v: &[f64]) -> ArrayD<F> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.iter().map(|&x| F::of(x)).collect()).unwrap()
}

/// `z` at `w = θ` (no noise).
fn solve(l: &sst::Layer, theta: &[f64], t: f64, mode: Mode) -> Vec<f64> {
    let opts = Options::default()
        .noise(Noise::None)
        .mode(mode)
        .temperature(t);
    let fwd = l.try_forward(arr::<f64>(theta).view(), &opts).unwrap();
    fwd.z.iter().copied().collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The `k`-subsets of `0..n` as bit masks.
fn subsets(n: usize, k: usize) -> Vec<u64> {
    (0u64..1 << n)
        .filter(|b| b.count_ones() as usize == k)
        .collect()
}

/// The vector `(z_i)` of a subset, with `(z_i z_{i+1})` appended when `pairs`.
fn indicator(bits: u64, n: usize, pairs: bool) -> Vec<f64> {
    let bit = |i: usize| ((bits >> i) & 1) as f64;
    let mut v: Vec<f64> = (0..n).map(bit).collect();
    if pairs {
        v.extend((0..n - 1).map(|i| bit(i) * bit(i + 1)));
    }
    v
}

/// Brute force: `E_p[v]` for `p(v) ∝ exp⟨x, v⟩` over `vertices` (max-shifted).
fn brute_marginals(vertices: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    let scores: Vec<f64> = vertices
        .iter()
        .map(|v| v.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect();
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    (0..x.len())
        .map(|i| {
            vertices
                .iter()
                .zip(&weights)
                .map(|(v, w)| v[i] * w)
                .sum::<f64>()
                / total
        })
        .collect()
}

/// Independent threshold solution: plain bisection on `τ` for `Σ h(x_i − τ) = k` on
/// `[min x − 800, max x + 800]` until the bracket stops shrinking.
fn bisect(x: &[f64], k: usize, h: fn(f64) -> f64) -> Vec<f64> {
    let min = x.iter().copied().fold(f64::INFINITY, f64::min);
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut lo, mut hi) = (min - 800.0, max + 800.0);
    let mass = |t: f64| x.iter().map(|&v| h(v - t)).sum::<f64>();
    for _ in 0..500 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if mass(mid) > k as f64 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let tau = 0.5 * (lo + hi);
    x.iter().map(|&v| h(v - tau)).collect()
}

fn clip01(t: f64) -> f64 {
    t.clamp(0.0, 1.0)
}
fn capped_exp(t: f64) -> f64 {
    t.exp().min(1.0)
}

/// The `k` values tried for size `n`: 1, n/2, n − 1, n (distinct, ≥ 1).
fn ks(n: usize) -> Vec<usize> {
    let mut v = vec![1, n / 2, n.saturating_sub(1), n];
    v.retain(|&k| k >= 1);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn soft_solvers_match_independent_computations_up_to_n_12() {
    let mut rng = Rng(11);
    for n in 1..=12 {
        for k in ks(n) {
            let vertices: Vec<Vec<f64>> = subsets(n, k)
                .into_iter()
                .map(|b| indicator(b, n, false))
                .collect();
            for reg in REGULARIZERS {
                let l = layer(&format!(
                    "layer l: subset({n}, {k}) {{ regularizer: {reg}; noise: none }}"
                ));
                for t in [0.5, 1.0, 3.0] {
                    let theta = rng.vec(n, -3.0, 3.0);
                    let x: Vec<f64> = theta.iter().map(|w| w / t).collect();
                    let z = solve(&l, &theta, t, Mode::Soft);
                    let want = match reg {
                        "binary_entropy" => bisect(&x, k, sigmoid),
                        "entropy" => bisect(&x, k, capped_exp),
                        "euclidean" => bisect(&x, k, clip01),
                        _ => brute_marginals(&vertices, &x),
                    };
                    let err = max_abs_diff(&z, &want);
                    assert!(
                        err <= 1e-9,
                        "subset({n}, {k}) {reg} T {t}: off by {err:e}\n z = {z:?}\n want {want:?}"
                    );
                    let sum: f64 = z.iter().sum();
                    assert!(
                        (sum - k as f64).abs() <= 1e-12 * n as f64,
                        "{reg}: Σz = {sum}"
                    );
                }
            }
        }
    }
}

#[test]
fn correlated_subset_matches_brute_force_up_to_n_12() {
    let mut rng = Rng(12);
    for n in 1..=12 {
        for k in ks(n) {
            let vertices: Vec<Vec<f64>> = subsets(n, k)
                .into_iter()
                .map(|b| indicator(b, n, true))
                .collect();
            let l = layer(&format!(
                "layer l: correlated_subset({n}, {k}) {{ noise: none }}"
            ));
            for t in [0.5, 1.0, 3.0] {
                let theta = rng.vec(2 * n - 1, -3.0, 3.0);
                let x: Vec<f64> = theta.iter().map(|w| w / t).collect();
                let z = solve(&l, &theta, t, Mode::Soft);
                let want = brute_marginals(&vertices, &x);
                let err = max_abs_diff(&z, &want);
                assert!(
                    err <= 1e-9,
                    "correlated_subset({n}, {k}) T {t}: off by {err:e}\n z = {z:?}\n want {want:?}"
                );
                // Hard: the best vertex (θ drawn from a continuum: a unique best, almost surely).
                let hard = solve(&l, &theta, t, Mode::Hard);
                let score = |v: &Vec<f64>| v.iter().zip(&theta).map(|(a, b)| a * b).sum::<f64>();
                let best = vertices
                    .iter()
                    .max_by(|a, b| score(a).total_cmp(&score(b)))
                    .unwrap();
                assert_eq!(&hard, best, "correlated_subset({n}, {k}): θ = {theta:?}");
            }
        }
    }
}

/// `⟨c, z(θ)⟩` at noise none.
fn loss(l: &sst::Layer, theta: &[f64], cot: &[f64], t: f64) -> f64 {
    let z = solve(l, theta, t, Mode::Soft);
    z.iter().zip(cot).map(|(a, b)| a * b).sum()
}

#[test]
fn gradients_at_n_12_match_central_differences() {
    let mut rng = Rng(13);
    let h = 1e-6;
    // (checked, skipped at a kink) per support and regularizer.
    let mut counts: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    let mut specs = Vec::new();
    for k in [1, 5, 9, 11] {
        for reg in REGULARIZERS {
            specs.push(("subset", format!("subset(12, {k})"), reg, 12));
        }
        specs.push((
            "correlated_subset",
            format!("correlated_subset(12, {k})"),
            "expfamily",
            23,
        ));
    }
    for (family, support, reg, m) in specs {
        let (checked, kinks) = counts.entry((family, reg)).or_default();
        for rule in ["default", "finite_diff"] {
            let backward = match rule {
                "default" => String::new(),
                r => format!("backward: {r};"),
            };
            let l = layer(&format!(
                "layer l: {support} {{ regularizer: {reg}; noise: none; {backward} }}"
            ));
            let t = 0.7;
            let theta = rng.vec(m, -2.0, 2.0);
            let cot = rng.vec(m, -1.0, 1.0);
            let opts = Options::default()
                .noise(Noise::None)
                .mode(Mode::Soft)
                .temperature(t);
            let fwd = l.try_forward(arr::<f64>(&theta).view(), &opts).unwrap();
            let grad = l.try_backward(&fwd, arr::<f64>(&cot).view()).unwrap();
            for i in 0..m {
                let at = |d: f64| {
                    let mut th = theta.clone();
                    th[i] += d;
                    loss(&l, &th, &cot, t)
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                let fd2 = (at(2.0 * h) - at(-2.0 * h)) / (4.0 * h);
                if (fd - fd2).abs() > 1e-7 {
                    *kinks += 1; // a kink of the piecewise-linear projection
                    continue;
                }
                *checked += 1;
                assert!(
                    (grad[i] - fd).abs() <= 1e-6,
                    "{support} {reg} {rule}: ∂/∂θ_{i} = {} vs central {fd}",
                    grad[i]
                );
            }
        }
    }
    for ((family, reg), (checked, kinks)) in counts {
        assert!(
            kinks * 20 <= checked,
            "{family} {reg}: {kinks} kinks, {checked} checked"
        );
    }
}

/// Hard samples have exactly k ones, the top k of the `w` used (ties to the lowest index); the
/// correlated ones also carry the products of neighbours.
#[test]
fn hard_samples_are_valid_for_every_seed() {
    let n = 40;
    for k in [1, 7, 20, 39, 40] {
        for noise in ["gumbel", "gaussian(sigma = 2)", "neg_exponential"] {
            let l = layer(&format!(
                "layer l: subset({n}, {k}) {{ noise: {noise}; estimator: straight_through }}"
            ));
            // Integer-valued θ with repeats, so that ties occur under noise none.
            let theta: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64 - 2.0).collect();
            for seed in 0..25 {
                let opts = Options::default().seed(seed).samples(4);
                let fwd = l.try_forward(arr::<f64>(&theta).view(), &opts).unwrap();
                let z: Vec<f64> = fwd.z.iter().copied().collect();
                let w: Vec<f64> = fwd.w.iter().copied().collect();
                for (zr, wr) in z.chunks(n).zip(w.chunks(n)) {
                    assert_top_k(zr, wr, k);
                }
            }
            let none = Options::default().noise(Noise::None);
            let z: Vec<f64> = l
                .try_forward(arr::<f64>(&theta).view(), &none)
                .unwrap()
                .z
                .iter()
                .copied()
                .collect();
            assert_top_k(&z, &theta, k);
        }
        let l = layer(&format!(
            "layer l: correlated_subset({n}, {k}) {{ estimator: straight_through }}"
        ));
        let theta: Vec<f64> = (0..2 * n - 1).map(|i| ((i * 7) % 5) as f64 - 2.0).collect();
        for seed in 0..25 {
            let opts = Options::default().seed(seed).samples(4);
            let fwd = l.try_forward(arr::<f64>(&theta).view(), &opts).unwrap();
            let z: Vec<f64> = fwd.z.iter().copied().collect();
            for zr in z.chunks(2 * n - 1) {
                assert!(zr.iter().all(|&v| v == 0.0 || v == 1.0), "{zr:?}");
                assert_eq!(zr[..n].iter().sum::<f64>(), k as f64);
                for i in 0..n - 1 {
                    assert_eq!(zr[n + i], zr[i] * zr[i + 1]);
                }
            }
        }
    }
}

/// `z` is 0/1 with k ones, and `w_i > w_j` or (`w_i = w_j`, `i < j`) for every chosen `i` and
/// unchosen `j`.
fn assert_top_k(z: &[f64], w: &[f64], k: usize) {
    assert!(z.iter().all(|&v| v == 0.0 || v == 1.0), "{z:?}");
    assert_eq!(z.iter().filter(|&&v| v == 1.0).count(), k, "{z:?}");
    for i in (0..z.len()).filter(|&i| z[i] == 1.0) {
        for j in (0..z.len()).filter(|&j| z[j] == 0.0) {
            assert!(
                w[i] > w[j] || (w[i] == w[j] && i < j),
                "chose {i} (w = {}) over {j} (w = {})",
                w[i],
                w[j]
            );
        }
    }
}

/// Soft outputs lie in the capped simplex `{0 ≤ z ≤ 1, Σz = k}`; correlated pairwise marginals
/// within the Fréchet bounds `max(0, a + b − 1) ≤ P(both) ≤ min(a, b)`.
#[test]
fn soft_outputs_lie_in_the_capped_simplex() {
    let mut rng = Rng(14);
    let n = 200;
    for k in [1, 20, 100, 199] {
        for reg in REGULARIZERS {
            let l = layer(&format!(
                "layer l: subset({n}, {k}) {{ regularizer: {reg} }}"
            ));
            for (seed, t) in [(0, 0.1), (1, 1.0), (2, 10.0)] {
                let theta = rng.vec(n, -3.0, 3.0);
                let opts = Options::default().seed(seed).temperature(t);
                let z: Vec<f64> = l
                    .try_forward(arr::<f64>(&theta).view(), &opts)
                    .unwrap()
                    .z
                    .iter()
                    .copied()
                    .collect();
                assert!(z.iter().all(|v| (0.0..=1.0).contains(v)), "{reg}");
                // Log-space DPs round like their log-partition (~3e3 here): 1e-9 over 200 terms.
                let sum: f64 = z.iter().sum();
                assert!(
                    (sum - k as f64).abs() <= 1e-9,
                    "{reg} k {k} T {t}: Σz = {sum}"
                );
            }
        }
        let l = layer(&format!("layer l: correlated_subset({n}, {k}) {{ }}"));
        for (seed, t) in [(0, 0.1), (1, 1.0), (2, 10.0)] {
            let theta = rng.vec(2 * n - 1, -3.0, 3.0);
            let opts = Options::default().seed(seed).temperature(t);
            let z: Vec<f64> = l
                .try_forward(arr::<f64>(&theta).view(), &opts)
                .unwrap()
                .z
                .iter()
                .copied()
                .collect();
            assert!(z.iter().all(|v| (0.0..=1.0).contains(v)));
            let sum: f64 = z[..n].iter().sum();
            assert!(
                (sum - k as f64).abs() <= 1e-9,
                "correlated k {k}: Σz = {sum}"
            );
            for i in 0..n - 1 {
                let (a, b, both) = (z[i], z[i + 1], z[n + i]);
                assert!(both <= a.min(b) + 1e-12 && both >= a + b - 1.0 - 1e-12);
            }
        }
    }
}

/// `T → 0`: every soft solver tends to the hard solution, at n = 100 (θ spaced by ≥ 0.1).
#[test]
fn soft_tends_to_hard_as_temperature_vanishes_at_n_100() {
    let n = 100;
    // A permutation of 0, 0.1, …, 9.9: distinct, spaced by 0.1.
    let theta: Vec<f64> = (0..n).map(|i| ((i * 37) % n) as f64 * 0.1).collect();
    for k in [1, 10, 50, 99] {
        for reg in REGULARIZERS {
            let l = layer(&format!(
                "layer l: subset({n}, {k}) {{ regularizer: {reg}; noise: none }}"
            ));
            let hard = solve(&l, &theta, 1.0, Mode::Hard);
            for t in [1e-3, 1e-4] {
                let soft = solve(&l, &theta, t, Mode::Soft);
                let err = max_abs_diff(&soft, &hard);
                assert!(err < 1e-3, "{reg} k {k} T {t}: off by {err}");
            }
        }
        let l = layer(&format!(
            "layer l: correlated_subset({n}, {k}) {{ noise: none }}"
        ));
        // Distinct integer unary scores and pairwise scores in [0, 1e-3): the top k by unary
        // score wins by at least 1 − 0.1.
        let mut theta: Vec<f64> = (0..n).map(|i| ((i * 37) % n) as f64).collect();
        theta.extend((0..n - 1).map(|i| ((i * 13) % 10) as f64 * 1e-4));
        let hard = solve(&l, &theta, 1.0, Mode::Hard);
        let soft = solve(&l, &theta, 1e-4, Mode::Soft);
        assert!(max_abs_diff(&soft, &hard) < 1e-3, "correlated k {k}");
    }
}

/// Rows of extreme logits.
fn extreme_rows(len: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f64>)> {
    vec![
        ("all +1e4", vec![1e4; len]),
        ("all -1e4", vec![-1e4; len]),
        (
            "mix [1e4, -1e4, 0]",
            (0..len).map(|i| [1e4, -1e4, 0.0][i % 3]).collect(),
        ),
        ("random ±1e4", rng.vec(len, -1e4, 1e4)),
    ]
}

/// Finite, in [0, 1], `Σ_{i<n} z = k` (to `tol·k`), finite gradient; hard: exactly k ones.
fn run_extremes<F: Real>(sum_tol: f64) {
    let mut rng = Rng(15);
    for n in [5, 100_000] {
        for k in [1, n - 1] {
            let mut layers: Vec<(String, usize)> = REGULARIZERS
                .iter()
                .map(|reg| {
                    (
                        format!("layer l: subset({n}, {k}) {{ regularizer: {reg} }}"),
                        n,
                    )
                })
                .collect();
            layers.push((
                format!("layer l: correlated_subset({n}, {k}) {{ }}"),
                2 * n - 1,
            ));
            for (spec, len) in layers {
                let l = layer(&spec);
                for (name, row) in extreme_rows(len, &mut rng) {
                    let theta = arr::<F>(&row);
                    let cot = ArrayD::from_shape_fn(IxDyn(&[len]), |i| {
                        F::of([1.0, -0.5, 0.25, 2.0][i[0] % 4])
                    });
                    for t in [1e-4, 1.0] {
                        for mode in [Mode::Soft, Mode::Hard] {
                            let what = format!("{} {spec} {name} T {t} {mode:?}", F::NAME);
                            let opts = Options::default().seed(3).mode(mode).temperature(t);
                            let fwd = l
                                .try_forward(theta.view(), &opts)
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                            let z: Vec<f64> = fwd.z.iter().map(|v| v.f64()).collect();
                            assert!(
                                z.iter().all(|v| (0.0..=1.0).contains(v)),
                                "{what}: z outside [0, 1]"
                            );
                            let sum: f64 = z[..n].iter().sum();
                            let tol = if mode == Mode::Hard {
                                0.0
                            } else {
                                sum_tol * k as f64
                            };
                            assert!((sum - k as f64).abs() <= tol, "{what}: Σz = {sum}");
                            let grad = l
                                .try_backward(&fwd, cot.view())
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                            assert!(
                                grad.iter().all(|g| g.is_finite()),
                                "{what}: non-finite gradient"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn extreme_inputs_f64() {
    run_extremes::<f64>(1e-9);
}

#[test]
fn extreme_inputs_f32() {
    run_extremes::<f32>(1e-4);
}

/// f32 follows f64 to f32 accuracy on moderate inputs.
#[test]
fn f32_agrees_with_f64() {
    let mut rng = Rng(16);
    let n = 30;
    for reg in REGULARIZERS {
        let l = layer(&format!(
            "layer l: subset({n}, 7) {{ regularizer: {reg}; noise: none }}"
        ));
        let theta = rng.vec(n, -2.0, 2.0);
        let opts = Options::default().mode(Mode::Soft).temperature(0.5);
        let z64 = l.try_forward(arr::<f64>(&theta).view(), &opts).unwrap().z;
        let z32 = l.try_forward(arr::<f32>(&theta).view(), &opts).unwrap().z;
        let err = z64
            .iter()
            .zip(z32.iter())
            .map(|(a, b)| (a - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "{reg}: f32 off by {err}");
    }
}

#[test]
fn presets_set_their_regularizers() {
    for (preset, support, reg) in [
        ("euclid_topk", "subset(n = 10, k = 3)", "euclidean"),
        ("cat_ent_topk", "subset(n = 10, k = 3)", "entropy"),
        ("bin_ent_topk", "subset(n = 10, k = 3)", "binary_entropy"),
        ("ef_ent_topk", "subset(n = 10, k = 3)", "expfamily"),
        ("corr_topk", "correlated_subset(n = 10, k = 3)", "expfamily"),
    ] {
        let l = layer(&format!("layer l: {preset}(10, k = 3) {{ }}"));
        let plan = l.plan();
        assert_eq!(plan.support.describe(), support);
        assert_eq!(plan.soft.solver.regularizer.name(), reg, "{preset}");
        assert_eq!(plan.estimator.default_mode(), Mode::Soft, "{preset}");
        let theta = vec![0.5; plan.support.shape()[0]];
        let z = l
            .try_forward(arr::<f64>(&theta).view(), &Options::default().seed(1))
            .unwrap()
            .z;
        assert!(
            (z.iter().take(10).sum::<f64>() - 3.0).abs() < 1e-9,
            "{preset}"
        );
    }
}

#[test]
fn defaults_are_binary_entropy_and_bisection() {
    let l = layer("layer l: subset(10, 3) { }");
    let plan = l.plan();
    assert_eq!(plan.soft.solver.regularizer.name(), "binary_entropy");
    assert_eq!(plan.soft.solver.name, "bisection");
    assert_eq!(plan.soft.args, vec![sst::support::Value::Real(1e-12)]);
    let l = layer("layer l: correlated_subset(10, 3) { }");
    assert_eq!(l.plan().soft.solver.regularizer.name(), "expfamily");
}

#[test]
fn bad_arguments_and_shapes_are_clear_errors() {
    for support in ["subset", "correlated_subset"] {
        let e = compile_error(&format!("layer l: {support}(5, 7) {{ }}"));
        assert!(e.contains("k must be at most n = 5, found 7"), "{e}");
        let e = compile_error(&format!("layer l: {support}(n = 5, k = 0) {{ }}"));
        assert!(
            e.contains("argument `k` must be an integer ≥ 1, found 0"),
            "{e}"
        );
        let e = compile_error(&format!("layer l: {support}(5, -2) {{ }}"));
        assert!(e.contains("argument `k` must be an integer ≥ 1"), "{e}");
    }
    let e = compile_error("layer l: correlated_subset(100000, 50000) { }");
    assert!(e.contains("cells, more than the"), "{e}");
    // The exponential-family DP of a huge subset: a request error naming the layer and θ.
    let l = layer("layer l: subset(100000, 50000) { regularizer: expfamily }");
    let err = l
        .try_forward(
            ArrayD::<f64>::zeros(IxDyn(&[100_000])).view(),
            &Options::default(),
        )
        .expect_err("too many DP cells");
    assert_eq!(err.field, "theta");
    assert!(err.to_string().contains("dynamic program needs"), "{err}");
    // Wrong θ lengths.
    for (spec, len, want) in [
        ("layer l: subset(5, 2) { }", 4, "[5]"),
        ("layer l: correlated_subset(4, 2) { }", 4, "[7]"),
        ("layer l: correlated_subset(4, 2) { }", 8, "[7]"),
    ] {
        let err = layer(spec)
            .try_forward(
                ArrayD::<f64>::zeros(IxDyn(&[len])).view(),
                &Options::default(),
            )
            .expect_err("wrong shape");
        assert_eq!(err.field, "theta", "{spec}");
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
}
