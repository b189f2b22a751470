//! `matching(n, m)` beyond the generic tests, through its solvers (`x = w/T` given here): Sinkhorn
//! against an independent implementation on the padded matrix, its closed form at `n = 1`, its
//! objective against brute force, `m = n` against `permutation(n)`, the marginals, the limit
//! `T → 0` against brute force beyond the generic tests' sizes, the backward rules against
//! central differences, and the arguments.

mod common;

use common::{sigmoid, Rng};
use sst::support::matching::ENTRY;
use sst::support::{Regularizer, Report, Rule, SoftCall, SupportRef, Value};

/// `matching(n, m)` built from its registry entry.
fn matching(n: usize, m: usize) -> SupportRef {
    (ENTRY.build)(&[Value::Int(n as i64), Value::Int(m as i64)]).expect("1 ≤ n ≤ m")
}

/// `sinkhorn(iters = 100000, tol)`, the support's only soft solver.
fn sinkhorn(support: &SupportRef, tol: f64) -> SoftCall {
    let solver = support.soft_solvers()[0];
    assert_eq!(
        (solver.regularizer, solver.name),
        (Regularizer::Entropy, "sinkhorn")
    );
    SoftCall {
        solver,
        args: vec![Value::Int(100_000), Value::Real(tol)],
    }
}

/// The soft solution at `x` (f64), checking that Sinkhorn reached `tol`.
fn soft(support: &SupportRef, x: &[f64], tol: f64) -> Vec<f64> {
    let mut z = vec![0.0; x.len()];
    let mut report = Report::default();
    let call = sinkhorn(support, tol);
    support
        .solve_f64()
        .soft(&call, x, &mut z, &mut report)
        .unwrap();
    assert!(report.warnings.is_empty(), "{report:?}");
    z
}

fn hard(support: &SupportRef, w: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; w.len()];
    support.solve_f64().hard(w, &mut z);
    z
}

/// `Jᵀ g` at `x` by `rule`.
fn vjp(support: &SupportRef, rule: Rule, x: &[f64], g: &[f64], tol: f64) -> Vec<f64> {
    let z = soft(support, x, tol);
    let mut grad = vec![0.0; x.len()];
    let call = sinkhorn(support, tol);
    support
        .solve_f64()
        .soft_vjp(&call, rule, x, &z, g, &mut grad)
        .unwrap();
    grad
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
    let entropy: f64 = z.iter().map(|&v| xlogx(v)).sum();
    if n == m {
        return entropy;
    }
    let slack = |j: usize| (1.0 - (0..n).map(|i| z[i * m + j]).sum::<f64>()).max(0.0);
    let pad = (m - n) as f64;
    entropy + (0..m).map(|j| pad * xlogx(slack(j) / pad)).sum::<f64>()
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
        let support = matching(n, m);
        let x = rng.vec(n * m, -2.0 / t, 2.0 / t);
        let err = max_abs_diff(
            &soft(&support, &x, 1e-13),
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
        let support = matching(1, m);
        for t in [0.5, 1.0, 3.0] {
            let x = rng.vec(m, -2.0 / t, 2.0 / t);
            let z = soft(&support, &x, 1e-13);
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
            let err = max_abs_diff(&z, &want);
            assert!(err < 1e-10, "m {m} T {t}: z = {z:?}, closed form {want:?}");
            assert!(
                max_abs_diff(&common::softmax(&x), &want) > 1e-3,
                "m {m} T {t}: the sigmoid form should differ from softmax here"
            );
        }
    }
    let support = matching(1, 1);
    assert_eq!(soft(&support, &[-3.0], 1e-9), [1.0]);
    assert_eq!(hard(&support, &[-3.0]), [1.0]);
}

/// The soft solution maximises `⟨x, z⟩ − f(z)` over the convex hull of the injections, with `f`
/// the completed plan's entropy [`padded_entropy`] (which the support also reports as its
/// regularizer's value): against random convex combinations of the vertices and points between
/// `z` and each vertex.
#[test]
fn soft_maximises_the_padded_entropy_against_brute_force() {
    let mut rng = Rng(3);
    for (n, m) in [(1, 3), (2, 3), (2, 4), (3, 4), (3, 3)] {
        let support = matching(n, m);
        let vertices = injections(n, m);
        let mut listed = support.enumerate();
        listed.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut want = vertices.clone();
        want.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(listed, want, "matching({n}, {m}): every injection once");
        for t in [0.5, 1.0, 2.0] {
            let x = rng.vec(n * m, -2.0 / t, 2.0 / t);
            let z = soft(&support, &x, 1e-12);
            let reported = support.regularizer_value(Regularizer::Entropy, &z).unwrap();
            let want = padded_entropy(&z, n, m);
            assert!((reported - want).abs() < 1e-12, "{reported} vs {want}");
            let objective = |y: &[f64]| dot(&x, y) - padded_entropy(y, n, m);
            let best = objective(&z);
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

/// `m = n`: the problem of `permutation(n)`, the same bits: hard and soft solutions and both
/// rules' gradients, in both precisions.
#[test]
fn square_matching_is_the_permutation() {
    let mut rng = Rng(4);
    let n = 5;
    let support = matching(n, n);
    let permutation =
        (sst::support::entry("permutation").unwrap().build)(&[Value::Int(5)]).unwrap();
    for t in [0.05, 0.3, 2.0] {
        let x = rng.vec(n * n, -2.0 / t, 2.0 / t);
        let g = rng.vec(n * n, -1.0, 1.0);
        assert_eq!(hard(&support, &x), hard(&permutation, &x), "T {t}");
        assert_eq!(
            soft(&support, &x, 1e-9),
            soft(&permutation, &x, 1e-9),
            "T {t}"
        );
        for rule in [Rule::Implicit, Rule::Unrolled] {
            assert_eq!(
                vjp(&support, rule, &x, &g, 1e-9),
                vjp(&permutation, rule, &x, &g, 1e-9),
                "T {t} {rule:?}"
            );
        }
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let call = sinkhorn(&support, 1e-9);
        let soft32 = |s: &SupportRef| {
            let mut z = vec![0.0f32; n * n];
            s.solve_f32()
                .soft(&call, &x32, &mut z, &mut Report::default())
                .unwrap();
            z
        };
        assert_eq!(soft32(&support), soft32(&permutation), "f32 T {t}");
    }
}

/// Soft solutions: rows sum to 1 within `tol`, columns to at most 1, entries in `[0, 1]`; hard
/// solutions: one 1 per row, at most one per column.
#[test]
fn rows_sum_to_one_and_columns_to_at_most_one() {
    let mut rng = Rng(5);
    let (n, m) = (5, 9);
    let support = matching(n, m);
    for t in [0.01, 0.1, 1.0, 3.0] {
        for _ in 0..4 {
            let x = rng.vec(n * m, -2.0 / t, 2.0 / t);
            for (z, what) in [
                (soft(&support, &x, 1e-10), "soft"),
                (hard(&support, &x), "hard"),
            ] {
                assert!(
                    z.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{what} T {t}: {z:?}"
                );
                for row in z.chunks_exact(m) {
                    let s: f64 = row.iter().sum();
                    assert!((s - 1.0).abs() <= 1e-10, "{what} T {t}: row sum {s}");
                }
                for j in 0..m {
                    let c: f64 = (0..n).map(|i| z[i * m + j]).sum();
                    assert!(c <= 1.0 + 1e-12, "{what} T {t}: column {j} sums to {c}");
                }
                if what == "hard" {
                    assert!(z.iter().all(|&v| v == 0.0 || v == 1.0));
                }
            }
        }
    }
}

/// `T → 0`: the hard solution is the best injection, found here by brute force (840 and 6720 of
/// them), and the soft solution tends to it, for `w` whose best beats the second by at least 0.1.
#[test]
fn low_temperature_gives_the_hard_solution() {
    let mut rng = Rng(6);
    for (n, m) in [(4, 7), (5, 8)] {
        let support = matching(n, m);
        let vertices = injections(n, m);
        let mut checked = 0;
        while checked < 3 {
            let w = rng.vec(n * m, -2.0, 2.0);
            let mut scores: Vec<(f64, usize)> = vertices
                .iter()
                .enumerate()
                .map(|(k, v)| (dot(&w, v), k))
                .collect();
            scores.sort_by(|a, b| b.0.total_cmp(&a.0));
            if scores[0].0 - scores[1].0 < 0.1 {
                continue;
            }
            checked += 1;
            let best = &vertices[scores[0].1];
            assert_eq!(&hard(&support, &w), best, "matching({n}, {m})");
            for t in [1e-3, 1e-4] {
                let x: Vec<f64> = w.iter().map(|v| v / t).collect();
                let err = max_abs_diff(&soft(&support, &x, 1e-9), best);
                assert!(err < 1e-3, "matching({n}, {m}) T {t}: off by {err}");
            }
        }
    }
}

/// Both rules against central differences of `⟨g, z(x)⟩` at a size beyond the generic gradient
/// instance.
#[test]
fn rules_agree_with_central_differences() {
    let mut rng = Rng(7);
    for (n, m) in [(3, 7), (1, 4), (6, 6)] {
        let support = matching(n, m);
        let x = rng.vec(n * m, -2.0, 2.0);
        let g = rng.vec(n * m, -1.0, 1.0);
        let h = 1e-5;
        let loss = |x: &[f64]| dot(&g, &soft(&support, x, 1e-14));
        let central: Vec<f64> = (0..n * m)
            .map(|k| {
                let (mut plus, mut minus) = (x.clone(), x.clone());
                plus[k] += h;
                minus[k] -= h;
                (loss(&plus) - loss(&minus)) / (2.0 * h)
            })
            .collect();
        let scale = central.iter().fold(0.0, |a: f64, b| a.max(b.abs()));
        assert!(scale > 1e-2, "matching({n}, {m}): the gradient is resolved");
        for rule in [Rule::Implicit, Rule::Unrolled] {
            let err = max_abs_diff(&vjp(&support, rule, &x, &g, 1e-14), &central);
            assert!(
                err < 1e-7 * (1.0 + scale),
                "matching({n}, {m}) {rule:?}: off by {err:e}"
            );
        }
    }
}

#[test]
fn arguments_and_description() {
    let names: Vec<&str> = ENTRY.params.iter().map(|p| p.name).collect();
    assert_eq!(names, ["n", "m"]);
    assert!(
        ENTRY.params.iter().all(|p| p.default.is_none()),
        "both required"
    );
    let support = matching(3, 5);
    assert_eq!(support.describe(), "matching(n = 3, m = 5)");
    assert_eq!(support.shape(), [3, 5]);
    let err = (ENTRY.build)(&[Value::Int(5), Value::Int(3)])
        .err()
        .expect("m < n is refused");
    assert_eq!(err.param, 1);
    assert_eq!(err.message, "m must be at least n = 5, found 3");
}
