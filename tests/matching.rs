//! `matching(n, m)` beyond the generic tests: Sinkhorn against an independent implementation on
//! the padded matrix, its closed form at `n = 1`, its objective against brute force, `m = n`
//! against `permutation(n)`, the marginals, the limit `T → 0` against brute force beyond the
//! generic tests' sizes, the backward rules against central differences, and the arguments.

mod common;

use common::{compile_error, layer, sigmoid, Rng};
use ndarray::{ArrayD, IxDyn};
use sst::{Mode, Noise, Options};

fn soft(t: f64) -> Options {
    Options::default()
        .noise(Noise::None)
        .mode(Mode::Soft)
        .temperature(t)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn lse(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
}

/// The first `n` rows of `P = exp(X̄ + α + β)` for the `m×m` matrix `X̄ = [x; 0]`, by plain
/// alternating log-domain normalisations from zero duals until the row sums are within `1e-14`:
/// an independent reference for the padded Sinkhorn.
fn reference_padded_sinkhorn(x: &[f64], n: usize, m: usize) -> Vec<f64> {
    let xbar = |i: usize, j: usize| if i < n { x[i * m + j] } else { 0.0 };
    let (mut a, mut b) = (vec![0.0; m], vec![0.0; m]);
    for _ in 0..200_000 {
        for (i, ai) in a.iter_mut().enumerate() {
            *ai = -lse((0..m).map(|j| xbar(i, j) + b[j]));
        }
        for (j, bj) in b.iter_mut().enumerate() {
            *bj = -lse((0..m).map(|i| xbar(i, j) + a[i]));
        }
        let row_err = (0..m)
            .map(|i| {
                ((0..m)
                    .map(|j| (xbar(i, j) + a[i] + b[j]).exp())
                    .sum::<f64>()
                    - 1.0)
                    .abs()
            })
            .fold(0.0, f64::max);
        if row_err < 1e-14 {
            break;
        }
    }
    (0..n * m)
        .map(|k| (x[k] + a[k / m] + b[k % m]).exp())
        .collect()
}

/// Every injective map rows → columns as an `n×m` 0/1 matrix, written here apart from the
/// library's `enumerate()`.
fn injections(n: usize, m: usize) -> Vec<Vec<f64>> {
    let mut out = vec![];
    let total = m.pow(n as u32);
    for code in 0..total {
        let cols: Vec<usize> = (0..n).map(|i| code / m.pow(i as u32) % m).collect();
        let distinct = (0..n).all(|i| (0..i).all(|k| cols[k] != cols[i]));
        if distinct {
            let mut z = vec![0.0; n * m];
            for (i, &j) in cols.iter().enumerate() {
                z[i * m + j] = 1.0;
            }
            out.push(z);
        }
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The entropy of the completed plan `[z; S]`, every padding row `s/(m − n)` with the column
/// slack `s_j = 1 − Σ_i z_ij`: `Σ z log z + Σ_j s_j log(s_j/(m − n))` (`0 log 0 = 0`).
fn padded_entropy(z: &[f64], n: usize, m: usize) -> f64 {
    let xlogx = |v: f64| if v > 0.0 { v * v.ln() } else { 0.0 };
    let slack = |j: usize| (1.0 - (0..n).map(|i| z[i * m + j]).sum::<f64>()).max(0.0);
    let pad = (m - n) as f64;
    z.iter().map(|&v| xlogx(v)).sum::<f64>()
        + (0..m).map(|j| pad * xlogx(slack(j) / pad)).sum::<f64>()
}

#[test]
fn soft_is_sinkhorn_on_the_padded_matrix() {
    let mut rng = Rng(1);
    for (n, m, t) in [
        (3, 5, 1.0),
        (2, 6, 0.5),
        (1, 4, 2.0),
        (4, 4, 1.0),
        (5, 9, 0.7),
    ] {
        let l = layer(&format!(
            "layer l: matching({n}, {m}) {{ solver: sinkhorn(iters = 100000, tol = 1e-13) }}"
        ));
        let theta = rng.array(&[n, m], -2.0, 2.0);
        let fwd = l.try_forward(theta.view(), &soft(t)).unwrap();
        assert!(fwd.report.warnings.is_empty(), "{:?}", fwd.report);
        let x: Vec<f64> = theta.iter().map(|v| v / t).collect();
        let err = max_abs_diff(
            fwd.z.as_slice().unwrap(),
            &reference_padded_sinkhorn(&x, n, m),
        );
        assert!(err < 1e-9, "matching({n}, {m}) T {t}: {err:e}");
    }
}

/// One row: the completed plan's column `j` is `(z_j, (1 − z_j)/(m − 1), …)`, so the fixed point
/// gives `z_j / (1 − z_j) ∝ exp(x_j)`: `z_j = sigmoid(x_j − τ)` with `Σ z = 1` (the
/// binary-entropy relaxation of a one-hot, not `softmax(x)`); `τ` found here by bisection.
#[test]
fn one_row_is_a_sigmoid_with_a_threshold() {
    let mut rng = Rng(2);
    for m in [2, 3, 7] {
        let l = layer(&format!(
            "layer l: matching(1, {m}) {{ solver: sinkhorn(tol = 1e-13) }}"
        ));
        for t in [0.5, 1.0, 3.0] {
            let theta = rng.array(&[1, m], -2.0, 2.0);
            let z = l.try_forward(theta.view(), &soft(t)).unwrap().z;
            let x: Vec<f64> = theta.iter().map(|v| v / t).collect();
            let total = |tau: f64| x.iter().map(|&xj| sigmoid(xj - tau)).sum::<f64>();
            let (mut lo, mut hi) = (-50.0, 50.0);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if total(mid) > 1.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let want: Vec<f64> = x.iter().map(|&xj| sigmoid(xj - lo)).collect();
            let err = max_abs_diff(z.as_slice().unwrap(), &want);
            assert!(err < 1e-10, "m {m} T {t}: z = {z}, closed form {want:?}");
            let softmax = common::softmax(&x);
            assert!(
                max_abs_diff(&softmax, &want) > 1e-3,
                "m {m} T {t}: the sigmoid form should differ from softmax here"
            );
        }
    }
    let l = layer("layer l: matching(1, 1)");
    let theta = ArrayD::from_elem(IxDyn(&[1, 1]), -3.0);
    for mode in [Mode::Soft, Mode::Hard] {
        let z = l
            .try_forward(theta.view(), &Options::default().mode(mode))
            .unwrap()
            .z;
        assert_eq!(z.as_slice().unwrap(), &[1.0]);
    }
}

/// The soft solution maximises `⟨x, z⟩ − f(z)` over the convex hull of the injections, with `f`
/// the completed plan's entropy [`padded_entropy`]: against random convex combinations of the
/// vertices and points between `z` and each vertex.
#[test]
fn soft_maximises_the_padded_entropy_against_brute_force() {
    let mut rng = Rng(3);
    for (n, m) in [(1, 3), (2, 3), (2, 4), (3, 4)] {
        let vertices = injections(n, m);
        let l = layer(&format!("layer l: matching({n}, {m})"));
        for t in [0.5, 1.0, 2.0] {
            let theta = rng.array(&[n, m], -2.0, 2.0);
            let z = l.try_forward(theta.view(), &soft(t)).unwrap().z;
            let z = z.as_slice().unwrap();
            let x: Vec<f64> = theta.iter().map(|v| v / t).collect();
            let objective = |y: &[f64]| dot(&x, y) - padded_entropy(y, n, m);
            let best = objective(z);
            for _ in 0..300 {
                let weights: Vec<f64> = vertices
                    .iter()
                    .map(|_| -(1.0 - rng.uniform(0.0, 1.0)).ln())
                    .collect();
                let total: f64 = weights.iter().sum();
                let y: Vec<f64> = (0..n * m)
                    .map(|k| {
                        vertices
                            .iter()
                            .zip(&weights)
                            .map(|(v, w)| v[k] * w / total)
                            .sum()
                    })
                    .collect();
                assert!(
                    best >= objective(&y) - 1e-9,
                    "matching({n}, {m}) T {t}: y = {y:?}"
                );
            }
            for v in &vertices {
                for eps in [1e-4, 1e-2, 0.5] {
                    let y: Vec<f64> = z.iter().zip(v).map(|(a, b)| a + eps * (b - a)).collect();
                    assert!(
                        best >= objective(&y) - 1e-9,
                        "matching({n}, {m}) T {t}: towards {v:?}"
                    );
                }
            }
        }
    }
}

/// `m = n`: the same problem as `permutation(n)`, with the same noise layout, so the same bits
/// for the same `θ` and seed: hard and soft samples and both rules' gradients.
#[test]
fn square_matching_is_the_permutation() {
    let mut rng = Rng(4);
    let n = 5;
    let theta = rng.array(&[3, n, n], -2.0, 2.0);
    let cot = rng.array(&[3, n, n], -1.0, 1.0);
    for rule in ["implicit", "unrolled"] {
        for (mode, t) in [(Mode::Hard, 1.0), (Mode::Soft, 0.3), (Mode::Soft, 2.0)] {
            let opts = Options::default()
                .seed(11)
                .samples(2)
                .mode(mode)
                .temperature(t);
            let run = |support: &str| {
                let l = layer(&format!("layer l: {support} {{ backward: {rule} }}"));
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                let grad = l.try_backward(&fwd, cot.view()).unwrap();
                (fwd.z, grad)
            };
            let (z_match, grad_match) = run(&format!("matching({n}, {n})"));
            let (z_perm, grad_perm) = run(&format!("permutation({n})"));
            assert_eq!(z_match, z_perm, "{rule} {mode:?} T {t}");
            assert_eq!(grad_match, grad_perm, "{rule} {mode:?} T {t}");
        }
    }
}

/// Soft samples: rows sum to 1 within `tol`, columns to at most 1, entries in `[0, 1]`; hard
/// samples: one 1 per row, at most one per column.
#[test]
fn rows_sum_to_one_and_columns_to_at_most_one() {
    let mut rng = Rng(5);
    let (n, m) = (5, 9);
    let theta = rng.array(&[4, n, m], -2.0, 2.0);
    for (mode, t) in [
        (Mode::Soft, 0.1),
        (Mode::Soft, 1.0),
        (Mode::Soft, 3.0),
        (Mode::Hard, 1.0),
    ] {
        let l = layer(&format!(
            "layer l: matching({n}, {m}) {{ solver: sinkhorn(tol = 1e-10) }}"
        ));
        let opts = Options::default()
            .seed(7)
            .samples(3)
            .mode(mode)
            .temperature(t);
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        assert!(fwd.report.warnings.is_empty(), "{:?}", fwd.report);
        for z in fwd.z.as_slice().unwrap().chunks_exact(n * m) {
            assert!(
                z.iter().all(|v| (0.0..=1.0).contains(v)),
                "{mode:?} T {t}: {z:?}"
            );
            for row in z.chunks_exact(m) {
                let s: f64 = row.iter().sum();
                assert!((s - 1.0).abs() <= 1e-10, "{mode:?} T {t}: row sum {s}");
            }
            for j in 0..m {
                let c: f64 = (0..n).map(|i| z[i * m + j]).sum();
                assert!(c <= 1.0 + 1e-12, "{mode:?} T {t}: column {j} sums to {c}");
            }
            if mode == Mode::Hard {
                assert!(z.iter().all(|&v| v == 0.0 || v == 1.0));
            }
        }
    }
}

/// `T → 0` without noise: the soft solution tends to the best injection, found here by brute
/// force (840 and 6720 of them), for θ whose best beats the second by at least 0.1.
#[test]
fn low_temperature_gives_the_hard_solution() {
    let mut rng = Rng(6);
    for (n, m) in [(4, 7), (5, 8)] {
        let vertices = injections(n, m);
        let l = layer(&format!("layer l: matching({n}, {m})"));
        let mut checked = 0;
        while checked < 3 {
            let theta = rng.array(&[n, m], -2.0, 2.0);
            let w = theta.as_slice().unwrap();
            let mut scores: Vec<(f64, usize)> = vertices
                .iter()
                .enumerate()
                .map(|(k, v)| (dot(w, v), k))
                .collect();
            scores.sort_by(|a, b| b.0.total_cmp(&a.0));
            if scores[0].0 - scores[1].0 < 0.1 {
                continue;
            }
            checked += 1;
            let best = &vertices[scores[0].1];
            let hard = l
                .try_forward(
                    theta.view(),
                    &Options::default().noise(Noise::None).mode(Mode::Hard),
                )
                .unwrap()
                .z;
            assert_eq!(
                hard.as_slice().unwrap(),
                best.as_slice(),
                "matching({n}, {m})"
            );
            for t in [1e-3, 1e-4] {
                let z = l.try_forward(theta.view(), &soft(t)).unwrap().z;
                let err = max_abs_diff(z.as_slice().unwrap(), best);
                assert!(err < 1e-3, "matching({n}, {m}) T {t}: off by {err}");
            }
        }
    }
}

/// Both rules against central differences of `⟨c, z_T(θ)⟩` at a size beyond the generic
/// gradient instance, with Gumbel noise (the same seed, the same noise on both sides).
#[test]
fn rules_agree_with_central_differences() {
    let mut rng = Rng(7);
    let (n, m) = (3, 7);
    let theta = rng.array(&[n, m], -1.5, 1.5);
    let cot = rng.array(&[n, m], -1.0, 1.0);
    let opts = Options::default().seed(3).mode(Mode::Soft).temperature(0.7);
    let spec = "layer l: matching(3, 7) { solver: sinkhorn(tol = 1e-13) }";
    let l = layer(spec);
    let h = 1e-5;
    let central: Vec<f64> = (0..n * m)
        .map(|k| {
            let mut plus = theta.clone();
            plus.as_slice_mut().unwrap()[k] += h;
            let mut minus = theta.clone();
            minus.as_slice_mut().unwrap()[k] -= h;
            (common::loss(&l, &plus, &cot, &opts) - common::loss(&l, &minus, &cot, &opts))
                / (2.0 * h)
        })
        .collect();
    for rule in ["implicit", "unrolled"] {
        let l = layer(&format!(
            "layer l: matching(3, 7) {{ solver: sinkhorn(tol = 1e-13); backward: {rule} }}"
        ));
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        let grad = l.try_backward(&fwd, cot.view()).unwrap();
        let err = max_abs_diff(grad.as_slice().unwrap(), &central);
        let scale = central.iter().fold(0.0, |a: f64, b| a.max(b.abs()));
        assert!(scale > 1e-2, "the gradient is resolved");
        assert!(err < 1e-7 * (1.0 + scale), "{rule}: off by {err:e}");
    }
}

#[test]
fn arguments_are_positional_or_named_and_m_below_n_is_refused() {
    for spec in [
        "matching(3, 5)",
        "matching(3, m = 5)",
        "matching(n = 3, m = 5)",
    ] {
        let l = layer(&format!("layer l: {spec}"));
        assert_eq!(l.plan().decision("support").value, "matching(n = 3, m = 5)");
        assert_eq!(l.plan().support.shape(), vec![3, 5]);
    }
    let err = compile_error("layer l: matching(5, 3)");
    assert!(err.contains("m must be at least n = 5, found 3"), "{err}");
    let err = compile_error("layer l: matching(3)");
    assert!(err.contains("m"), "{err}");
    let err = compile_error("layer l: matching(0, 3)");
    assert!(err.contains("≥ 1"), "{err}");
    let err = compile_error("layer l: matching(2, 3) { regularizer: euclidean }");
    assert!(err.contains("entropy"), "{err}");
}
