//! `permutation(n)` beyond the generic tests: the assignment against an independent Hungarian
//! algorithm written here and against LP duality at n = 1000, ties and ±1e6 weights; Sinkhorn
//! against an independent log-domain implementation, its marginals, its diagnostics and warning;
//! the three backward rules on larger converged instances; n = 1; bad arguments and shapes.

mod common;

use common::{compile_error, layer, Rng};
use ndarray::{Array2, ArrayD, IxDyn};
use sst::kernels::assignment::{max_weight_assignment, Assignment};
use sst::{Mode, Noise, Options};

/// The Hungarian algorithm in its textbook O(n³) form (Kuhn 1955, Munkres 1957; the
/// potentials-and-`way` formulation of e-maxx), on the costs `−w`: an independent reference.
fn hungarian_max(w: &[f64], n: usize) -> f64 {
    let cost = |i: usize, j: usize| -w[(i - 1) * n + (j - 1)];
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let (i0, mut delta, mut j1) = (p[j0], f64::INFINITY, 0);
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=n).map(|j| w[(p[j] - 1) * n + (j - 1)]).sum()
}

/// The best `Σ_i w_{i,σ(i)}` over all `n!` permutations.
fn brute_force_max(w: &[f64], n: usize) -> f64 {
    fn go(i: usize, n: usize, w: &[f64], used: &mut [bool], acc: f64, best: &mut f64) {
        if i == n {
            *best = best.max(acc);
            return;
        }
        for j in 0..n {
            if !used[j] {
                used[j] = true;
                go(i + 1, n, w, used, acc + w[i * n + j], best);
                used[j] = false;
            }
        }
    }
    let mut best = f64::NEG_INFINITY;
    go(0, n, w, &mut vec![false; n], 0.0, &mut best);
    best
}

/// Checks that `σ` is a permutation and returns the objective of the solver's assignment.
fn solve(w: &[f64], n: usize) -> f64 {
    objective(&max_weight_assignment(w, n), w, n)
}

/// Checks that the assignment's `σ` is a permutation and returns its objective.
fn objective(a: &Assignment, w: &[f64], n: usize) -> f64 {
    let mut seen = vec![false; n];
    for &j in &a.col_of_row {
        assert!(j < n && !seen[j], "not a permutation: {:?}", a.col_of_row);
        seen[j] = true;
    }
    a.objective(w)
}

#[test]
fn assignment_equals_brute_force_with_ties_and_large_weights() {
    let mut rng = Rng(1);
    for n in 1..=8 {
        for trial in 0..6 {
            let w = match trial % 3 {
                0 => rng.ints(n * n, 3),
                1 => rng
                    .ints(n * n, 2)
                    .iter()
                    .map(|x| (2.0 * x - 1.0) * 1e6)
                    .collect(),
                _ => rng.vec(n * n, -1e6, 1e6),
            };
            let best = brute_force_max(&w, n);
            assert_eq!(solve(&w, n), best, "n {n} trial {trial}: w = {w:?}");
        }
    }
}

#[test]
fn assignment_equals_an_independent_hungarian_up_to_n_200() {
    let mut rng = Rng(2);
    for n in [9, 17, 50, 120, 200] {
        for kind in 0..4 {
            let w = match kind {
                0 => rng.vec(n * n, -1.0, 1.0),
                1 => rng.ints(n * n, 4),
                2 => rng
                    .ints(n * n, 2)
                    .iter()
                    .map(|x| (2.0 * x - 1.0) * 1e6)
                    .collect(),
                _ => vec![5.0; n * n],
            };
            let (ours, reference) = (solve(&w, n), hungarian_max(&w, n));
            let tol = if kind == 0 { 1e-9 } else { 0.0 };
            assert!(
                (ours - reference).abs() <= tol,
                "n {n} kind {kind}: {ours} vs {reference}"
            );
        }
    }
}

/// At n = 1000 optimality is certified by LP duality: `u_i + v_j ≥ w_ij` for all pairs and
/// `Σ u + Σ v = Σ_i w_{i,σ(i)}`.
#[test]
fn assignment_is_certified_optimal_at_n_1000() {
    let mut rng = Rng(3);
    let n = 1000;
    for w in [rng.vec(n * n, -1e6, 1e6), rng.ints(n * n, 10)] {
        let a = max_weight_assignment(&w, n);
        let objective = objective(&a, &w, n);
        let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1.0);
        let slack = 1e-12 * scale;
        for i in 0..n {
            for j in 0..n {
                assert!(a.u[i] + a.v[j] >= w[i * n + j] - slack, "dual infeasible");
            }
        }
        let dual: f64 = a.u.iter().chain(&a.v).sum();
        assert!(
            (dual - objective).abs() <= 1e-9 * scale * n as f64,
            "duality gap {}",
            dual - objective
        );
    }
}

/// An independent log-domain Sinkhorn: `P = exp(x + α + β)`, alternating exact row and column
/// normalisations from zero duals, until the row sums are within `1e-14`.
fn reference_sinkhorn(x: &Array2<f64>) -> Array2<f64> {
    let n = x.nrows();
    let lse = |v: Vec<f64>| {
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
    };
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..200_000 {
        for i in 0..n {
            a[i] = -lse((0..n).map(|j| x[[i, j]] + b[j]).collect());
        }
        for j in 0..n {
            b[j] = -lse((0..n).map(|i| x[[i, j]] + a[i]).collect());
        }
        let row_err = (0..n)
            .map(|i| ((0..n).map(|j| (x[[i, j]] + a[i] + b[j]).exp()).sum::<f64>() - 1.0).abs())
            .fold(0.0, f64::max);
        if row_err < 1e-14 {
            break;
        }
    }
    Array2::from_shape_fn((n, n), |(i, j)| (x[[i, j]] + a[i] + b[j]).exp())
}

fn soft(t: f64) -> Options {
    Options::default()
        .noise(Noise::None)
        .mode(Mode::Soft)
        .temperature(t)
}

#[test]
fn sinkhorn_agrees_with_an_independent_implementation() {
    let mut rng = Rng(4);
    let l = layer("layer l: permutation(7) { solver: sinkhorn(iters = 100000, tol = 1e-13) }");
    // Spreads of w/T below and above the ε-scaling threshold (32): the same fixed point. The
    // large spreads come from row and column offsets, which leave P unchanged, so that the
    // problem stays well conditioned (near a permutation, Sinkhorn cannot reach 1e-13).
    for (spread, offsets, t) in [
        (1.0, 0.0, 1.0),
        (3.0, 0.0, 0.5),
        (4.0, 0.0, 0.5),
        (2.0, 20.0, 1.0),
    ] {
        let rows = rng.vec(7, -offsets, offsets);
        let cols = rng.vec(7, -offsets, offsets);
        let theta = Array2::from_shape_fn((7, 7), |(i, j)| {
            rng.uniform(-spread, spread) + rows[i] + cols[j]
        });
        let fwd = l.try_forward(theta.view().into_dyn(), &soft(t)).unwrap();
        assert!(
            fwd.report.warnings.is_empty(),
            "spread {spread} offsets {offsets} T {t}: {:?}",
            fwd.report
        );
        let reference = reference_sinkhorn(&(&theta / t));
        let err = fwd
            .z
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-9,
            "spread {spread} offsets {offsets} T {t}: {err:e}"
        );
    }
}

#[test]
fn sinkhorn_is_doubly_stochastic_to_the_requested_tolerance() {
    let mut rng = Rng(5);
    for tol in [1e-6, 1e-9, 1e-12] {
        let l = layer(&format!(
            "layer l: permutation(40) {{ solver: sinkhorn(iters = 20000, tol = {tol}) }}"
        ));
        let theta = ArrayD::from_shape_vec(IxDyn(&[4, 40, 40]), rng.vec(6400, -2.0, 2.0)).unwrap();
        let fwd = l
            .try_forward(theta.view(), &Options::default().seed(9).mode(Mode::Soft))
            .unwrap();
        assert!(fwd.report.warnings.is_empty(), "{:?}", fwd.report);
        assert!(fwd.report.values["sinkhorn_residual"] <= tol);
        for p in fwd.z.outer_iter() {
            let p = p.into_dimensionality::<ndarray::Ix2>().unwrap();
            for s in p.sum_axis(ndarray::Axis(1)) {
                assert!((s - 1.0).abs() <= tol * (1.0 + 1e-6), "row sum {s}");
            }
            for s in p.sum_axis(ndarray::Axis(0)) {
                assert!((s - 1.0).abs() <= 1e-12, "column sum {s}");
            }
            assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
    }
}

#[test]
fn twenty_iterations_warn_and_still_return() {
    let mut rng = Rng(6);
    let l = layer("layer l: permutation(30) { solver: sinkhorn(iters = 20); temperature: 0.1 }");
    let theta = ArrayD::from_shape_vec(IxDyn(&[8, 30, 30]), rng.vec(7200, -2.0, 2.0)).unwrap();
    let fwd = l
        .try_forward(theta.view(), &Options::default().seed(1).mode(Mode::Soft))
        .unwrap();
    assert_eq!(fwd.report.values["sinkhorn_iterations"], 20.0);
    let residual = fwd.report.values["sinkhorn_residual"];
    assert!(residual > 1e-9);
    assert_eq!(
        fwd.report.warnings,
        vec![
            "Sinkhorn did not converge in 20 iterations (tol 1e-9); the worst marginal residual \
             is diagnostics.sinkhorn_residual"
                .to_string()
        ],
        "one warning for the whole batch, naming where its worst residual is"
    );
    assert!(fwd.z.iter().all(|v| v.is_finite()));
    let cotangent = ArrayD::from_elem(IxDyn(&[8, 30, 30]), 0.5);
    let grad = l.try_backward(&fwd, cotangent.view()).unwrap();
    assert!(grad.iter().all(|v| v.is_finite()));
}

/// The three rules against each other and central differences at n = 8 (the generic test stops
/// at n = 5), on converged problems, with and without noise.
#[test]
fn rules_agree_with_central_differences_at_n_8() {
    let mut rng = Rng(7);
    let n = 8;
    for (noise, t) in [
        ("none", 1.0),
        ("gumbel", 0.7),
        ("gaussian(sigma = 0.5)", 2.0),
    ] {
        let theta = ArrayD::from_shape_vec(IxDyn(&[n, n]), rng.vec(n * n, -1.5, 1.5)).unwrap();
        let cot = ArrayD::from_shape_vec(IxDyn(&[n, n]), rng.vec(n * n, -1.0, 1.0)).unwrap();
        let opts = Options::default().seed(3).mode(Mode::Soft).temperature(t);
        let grads: Vec<ArrayD<f64>> = ["implicit", "unrolled", "finite_diff"]
            .iter()
            .map(|rule| {
                let l = layer(&format!(
                    "layer l: permutation({n}) {{ noise: {noise}; backward: {rule}; solver: sinkhorn(tol = 1e-12) }}"
                ));
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                assert!(fwd.report.warnings.is_empty());
                l.try_backward(&fwd, cot.view()).unwrap()
            })
            .collect();
        let l = layer(&format!(
            "layer l: permutation({n}) {{ noise: {noise}; solver: sinkhorn(tol = 1e-12) }}"
        ));
        let loss = |th: &ArrayD<f64>| -> f64 {
            let z = l.try_forward(th.view(), &opts).unwrap().z;
            z.iter().zip(cot.iter()).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        for (k, _) in theta.iter().enumerate() {
            let mut plus = theta.clone();
            plus.as_slice_mut().unwrap()[k] += h;
            let mut minus = theta.clone();
            minus.as_slice_mut().unwrap()[k] -= h;
            let central = (loss(&plus) - loss(&minus)) / (2.0 * h);
            for g in &grads {
                let got = g.as_slice().unwrap()[k];
                assert!((got - central).abs() < 1e-6, "{noise}: {got} vs {central}");
            }
        }
    }
}

#[test]
fn extreme_weights_give_finite_answers() {
    let mut rng = Rng(8);
    let n = 200;
    let theta = ArrayD::from_shape_vec(IxDyn(&[n, n]), rng.vec(n * n, -1.0, 1.0)).unwrap();
    let l = layer(&format!(
        "layer l: permutation({n}) {{ solver: sinkhorn(iters = 60) }}"
    ));
    for t in [1e-4, 1.0] {
        let fwd = l.try_forward((&theta * t * 1e4).view(), &soft(t)).unwrap();
        assert!(fwd.z.iter().all(|v| (0.0..=1.0 + 1e-12).contains(v)));
        let grad = l.try_backward(&fwd, theta.view()).unwrap();
        assert!(grad.iter().all(|v| v.is_finite()));
    }
    let big = &theta * 1e6;
    let hard = l
        .try_forward(big.view(), &soft(1.0).mode(Mode::Hard))
        .unwrap();
    let expected = hungarian_max(big.as_slice().unwrap(), n);
    let got: f64 = hard.z.iter().zip(big.iter()).map(|(z, w)| z * w).sum();
    assert!((got - expected).abs() <= 1e-6, "{got} vs {expected}");
}

/// f32 requests follow f64 on the same (f32) θ, forward and gradient, both backward rules.
#[test]
fn f32_layers_are_accurate() {
    let mut rng = Rng(9);
    let theta: Vec<f32> = rng.vec(144, -2.0, 2.0).iter().map(|&v| v as f32).collect();
    let theta = ArrayD::from_shape_vec(IxDyn(&[12, 12]), theta).unwrap();
    let cot = ArrayD::from_shape_vec(IxDyn(&[12, 12]), rng.vec(144, -1.0, 1.0)).unwrap();
    for rule in ["implicit", "unrolled"] {
        let l = layer(&format!("layer l: permutation(12) {{ backward: {rule} }}"));
        let fwd32 = l.try_forward(theta.view(), &soft(0.5)).unwrap();
        let fwd64 = l
            .try_forward(theta.mapv(f64::from).view(), &soft(0.5))
            .unwrap();
        assert!(fwd32.report.warnings.is_empty(), "{:?}", fwd32.report);
        let g32 = l
            .try_backward(&fwd32, cot.mapv(|c| c as f32).view())
            .unwrap();
        let g64 = l.try_backward(&fwd64, cot.view()).unwrap();
        let gap = |a: &ArrayD<f32>, b: &ArrayD<f64>| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - y).abs())
                .fold(0.0, f64::max)
        };
        // x = w/0.5 is exact in f32, and Sinkhorn and its backward run in f64 inside: only the
        // rounding of z, of the cotangent and of the gradient to f32 (half an ulp, ε₃₂/2 of
        // values ≤ 1), amplified by the backward's well-conditioned solve at T = 0.5, remains.
        // Measured: 3e-8 on z, 2e-8 on the gradient (|g| ≤ 0.4).
        let tol = 8.0 * f64::from(f32::EPSILON);
        assert!(
            gap(&fwd32.z, &fwd64.z) <= tol,
            "{rule}: z off by {:e}",
            gap(&fwd32.z, &fwd64.z)
        );
        assert!(
            gap(&g32, &g64) <= tol,
            "{rule}: gradient off by {:e}",
            gap(&g32, &g64)
        );
    }
}

#[test]
fn one_item_is_the_identity() {
    let l = layer("layer l: permutation(1) { noise: gumbel }");
    let theta = ArrayD::from_shape_vec(IxDyn(&[3, 1, 1]), vec![0.0f64, -5.0, 7.0]).unwrap();
    for mode in [Mode::Hard, Mode::Soft] {
        let fwd = l
            .try_forward(theta.view(), &Options::default().mode(mode))
            .unwrap();
        assert!(fwd.z.iter().all(|&z| (z - 1.0).abs() < 1e-15), "{}", fwd.z);
        let grad = l.try_backward(&fwd, theta.view()).unwrap();
        assert!(grad.iter().all(|&g| g.abs() < 1e-12), "{grad}");
    }
}

#[test]
fn bad_arguments_and_shapes_are_clear_errors() {
    let err = compile_error("layer l: permutation(0)");
    assert!(err.contains("must be an integer ≥ 1, found 0"), "{err}");
    let err = compile_error("layer l: permutation(3) { solver: sinkhorn(iters = 0) }");
    assert!(err.contains("iters"), "{err}");
    let err = compile_error("layer l: permutation(3) { solver: sinkhorn(tol = -1) }");
    assert!(err.contains("tol"), "{err}");
    let err = compile_error("layer l: permutation(3) { regularizer: euclidean }");
    assert!(err.contains("has no solver for permutation"), "{err}");
    let l = layer("layer l: permutation(3)");
    let theta = ArrayD::<f64>::zeros(IxDyn(&[3, 2]));
    let err = l
        .try_forward(theta.view(), &Options::default())
        .unwrap_err();
    assert_eq!(err.field, "theta");
    assert!(
        err.message.contains("expected shape [3, 3] or [B, 3, 3]"),
        "{err}"
    );
    let mut theta = ArrayD::<f64>::zeros(IxDyn(&[3, 3]));
    theta[[1, 2]] = f64::NAN;
    assert_eq!(
        l.try_forward(theta.view(), &Options::default())
            .unwrap_err()
            .field,
        "theta"
    );
}

#[test]
fn gumbel_sinkhorn_preset_is_straight_through() {
    let l = layer("layer l: gumbel_sinkhorn(5) { temperature: 0.5 }");
    let mut rng = Rng(10);
    let theta = ArrayD::from_shape_vec(IxDyn(&[5, 5]), rng.vec(25, -1.0, 1.0)).unwrap();
    let fwd = l
        .try_forward(theta.view(), &Options::default().seed(4))
        .unwrap();
    assert_eq!(fwd.mode, Mode::Hard);
    // The hard output is the exact assignment on the same perturbed w.
    let w = fwd.w.as_slice().unwrap();
    let got: f64 = fwd.z.iter().zip(w).map(|(z, w)| z * w).sum();
    assert_eq!(got, brute_force_max(w, 5));
}
