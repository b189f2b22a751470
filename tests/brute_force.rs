//! Exact and soft solvers of every support in `sst::support::REGISTRY` against brute force over
//! `support.enumerate()` (DESIGN.md §6): the hard solution is the best vertex; the soft solution
//! maximises `⟨x, z⟩ − f(z)` over `conv Z` (x = w/T) against random points of the hull, with `f`
//! written here from DESIGN.md §2 (or equals the brute-force marginals for `expfamily`), lies in
//! the hull, and tends to the hard solution as `T → 0`.
//!
//! Generic: no support is named here.

mod common;

// SplitMix64 with uniforms at the cell centres: the sequence these tests were written with.
use common::CenteredRng as Rng;
use common::{layer, scores_are_theta};
use ndarray::ArrayD;
use sst::support::{Regularizer, SoftSolver, SupportRef, REGISTRY};
use sst::{Mode, Noise, Options};

const INSTANCES: u64 = 40;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `w` with the entries the support ignores zeroed (`restrict_gradient`: the lower triangle of a
/// spanning tree's θ, edges into an arborescence's root), so that `⟨w, v⟩` is the support's
/// objective also where `z` repeats coordinates of `w` (a symmetric adjacency). The vertices
/// cannot tell which of two repeated coordinates carries the weight (permutation(2) repeats its
/// coordinates too, and both count), so this one fact is the support's word; tests/trees.rs checks
/// it against DESIGN.md §5 (`θ[i][j]` for `i < j`) with scores written there.
fn used(support: &SupportRef, w: &[f64]) -> Vec<f64> {
    let mut w = w.to_vec();
    support.restrict_gradient(&mut w);
    w
}

/// The best score `⟨w, v⟩` over the vertices, its index, and the second best score.
fn ranked(support: &SupportRef, vertices: &[Vec<f64>], w: &[f64]) -> (usize, f64, f64) {
    let w = used(support, w);
    let scores: Vec<f64> = vertices.iter().map(|v| dot(&w, v)).collect();
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    let second = scores
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &s)| s)
        .fold(f64::NEG_INFINITY, f64::max);
    (best, scores[best], second)
}

/// θ for `support` whose best vertex beats the second by at least `gap` (redrawn until so).
fn theta_with_gap(support: &SupportRef, rng: &mut Rng, gap: f64) -> ArrayD<f64> {
    let vertices = support.enumerate();
    loop {
        let theta = rng.array(&support.shape(), -2.0, 2.0);
        let (_, best, second) = ranked(support, &vertices, theta.as_slice().unwrap());
        if best - second >= gap {
            return theta;
        }
    }
}

/// A random point of `conv Z`: a convex combination of all vertices (exponential weights), or
/// of one to three of them (points on faces and edges, where the optimum often lies).
fn hull_point(vertices: &[Vec<f64>], rng: &mut Rng) -> Vec<f64> {
    let m = vertices[0].len();
    let mut weights = vec![0.0; vertices.len()];
    if rng.below(2) == 0 {
        for wt in weights.iter_mut() {
            *wt = -rng.unit().ln();
        }
    } else {
        for _ in 0..1 + rng.below(3) {
            weights[rng.below(vertices.len())] += -rng.unit().ln();
        }
    }
    let total: f64 = weights.iter().sum();
    let mut y = vec![0.0; m];
    for (v, wt) in vertices.iter().zip(&weights) {
        for (yi, vi) in y.iter_mut().zip(v) {
            *yi += wt / total * vi;
        }
    }
    y
}

/// `Σ_v v·exp⟨x, v⟩ / Σ_v exp⟨x, v⟩` over the vertices: the exponential family's mean, the soft
/// solution of the `expfamily` regularizer.
fn exp_family_marginals(support: &SupportRef, vertices: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    let used_x = used(support, x);
    let scores: Vec<f64> = vertices.iter().map(|v| dot(&used_x, v)).collect();
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut mean = vec![0.0; x.len()];
    for (v, wt) in vertices.iter().zip(&weights) {
        for (m, vi) in mean.iter_mut().zip(v) {
            *m += wt / total * vi;
        }
    }
    mean
}

/// Checks that `z` lies in the coordinatewise hull of the vertices, and on their common
/// affine plane `Σ z = Σ v` when they share one, to `1e-12 + plane_slack` (the solver's own
/// tolerance, see [`plane_slack`]).
fn assert_in_hull(what: &str, vertices: &[Vec<f64>], z: &[f64], plane_slack: f64) {
    for (i, &zi) in z.iter().enumerate() {
        let lo = vertices.iter().map(|v| v[i]).fold(f64::INFINITY, f64::min);
        let hi = vertices
            .iter()
            .map(|v| v[i])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            zi >= lo - 1e-12 && zi <= hi + 1e-12,
            "{what}: z[{i}] = {zi} outside [{lo}, {hi}]; z = {z:?}"
        );
    }
    let sums: Vec<f64> = vertices.iter().map(|v| v.iter().sum()).collect();
    if sums.iter().all(|s| (s - sums[0]).abs() < 1e-12) {
        let s: f64 = z.iter().sum();
        assert!(
            (s - sums[0]).abs() < 1e-12 + plane_slack,
            "{what}: Σ z = {s}, every vertex has Σ = {}",
            sums[0]
        );
    }
}

/// How far an iterative solver may leave the plane `Σ z = Σ v` by its own stopping rule: its
/// default `tol` (a marginal residual per row) times the number of entries; 0 for closed forms.
/// Sinkhorn on `matching(n, m)` stops with columns exact and each of the `m` rows of the padded
/// plan within `tol`, so the real rows' total is off by up to `(m − n)·tol`.
fn plane_slack(solver: &SoftSolver, len: usize) -> f64 {
    let tol = solver.params.iter().find(|p| p.name == "tol");
    tol.and_then(|p| p.default)
        .map_or(0.0, |v| v.real() * len as f64)
}

/// `f(z)` of a regularizer with a closed form, written from DESIGN.md §2 (`None` for `expfamily`,
/// whose `f = A*` has none): `entropy` `Σ z log z`, `binary_entropy` `Σ z log z + (1 − z)
/// log(1 − z)` (with `0 log 0 = 0`), `euclidean` `½‖z − c‖²` with `c` the barycentre of `Z`.
///
/// DESIGN.md centres the Euclidean regularizer at 0 for categorical and subset and at ½ for
/// Bernoulli (so that `z = ½` at `w = 0`); both are the barycentre of `Z` as far as the optimum
/// goes: Bernoulli's `{0,1}ⁿ` has barycentre `½`, and on categorical and subset every point of
/// the hull has the same `Σ z = s`, so `½‖z − c𝟙‖² = ½‖z‖² − c·s + const` differs from `½‖z‖²`
/// by a constant there.
///
/// `entropy` on a rectangular `[n, m]` support, `n < m` (`matching`: rows sum to 1, columns to
/// at most 1) is the entropy of the plan completed to `m × m` by `m − n` equal rows holding the
/// column slack `s_j = 1 − Σ_i z_ij`: `Σ z log z + Σ_j s_j log(s_j/(m − n))` (DESIGN.md,
/// docs/language.md: the padded Sinkhorn's objective).
fn regularizer_value(
    reg: Regularizer,
    shape: &[usize],
    barycentre: &[f64],
    z: &[f64],
) -> Option<f64> {
    let xlogx = |v: f64| if v > 0.0 { v * v.ln() } else { 0.0 };
    match reg {
        Regularizer::Entropy => {
            let plain: f64 = z.iter().map(|&v| xlogx(v)).sum();
            let completion = match *shape {
                [n, m] if n < m => {
                    let pad = (m - n) as f64;
                    let slack = |j: usize| 1.0 - (0..n).map(|i| z[i * m + j]).sum::<f64>();
                    (0..m).map(|j| pad * xlogx(slack(j).max(0.0) / pad)).sum()
                }
                _ => 0.0,
            };
            Some(plain + completion)
        }
        Regularizer::BinaryEntropy => Some(z.iter().map(|&v| xlogx(v) + xlogx(1.0 - v)).sum()),
        Regularizer::Euclidean => Some(
            0.5 * z
                .iter()
                .zip(barycentre)
                .map(|(v, c)| (v - c).powi(2))
                .sum::<f64>(),
        ),
        Regularizer::ExpFamily => None,
    }
}

/// The mean of the vertices.
fn barycentre(vertices: &[Vec<f64>]) -> Vec<f64> {
    let mut c = vec![0.0; vertices[0].len()];
    for v in vertices {
        for (ci, vi) in c.iter_mut().zip(v) {
            *ci += vi / vertices.len() as f64;
        }
    }
    c
}

/// The registered supports whose solvers act on `θ`'s own coordinates, so that `⟨w, z⟩` over
/// `enumerate()` is the objective. Supports with derived scores (the counts, whose solvers pick
/// one of K + 1 outcomes of a log-pmf) are checked against their pmf in tests/estimators.rs.
fn direct_supports() -> impl Iterator<Item = &'static sst::support::Entry> {
    REGISTRY
        .iter()
        .filter(|entry| scores_are_theta(&(entry.random_instance)(0)))
}

#[test]
fn hard_solution_is_the_best_vertex() {
    let mut rng = Rng(1);
    for entry in direct_supports() {
        for seed in 0..INSTANCES {
            let support = (entry.random_instance)(seed);
            let vertices = support.enumerate();
            assert!(!vertices.is_empty(), "{}: empty Z", support.describe());
            let l = layer(&format!("layer l: {} {{ }}", support.describe()));
            for _ in 0..5 {
                let theta = theta_with_gap(&support, &mut rng, 1e-6);
                let opts = Options::default().noise(Noise::None).mode(Mode::Hard);
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                let (best, _, _) = ranked(&support, &vertices, theta.as_slice().unwrap());
                assert_eq!(
                    fwd.z.as_slice().unwrap(),
                    vertices[best].as_slice(),
                    "{}: θ = {theta}",
                    support.describe()
                );
            }
        }
    }
}

/// With noise, the hard `z` is an element of `Z`, and the best vertex for the `w` used.
#[test]
fn hard_sample_with_noise_is_a_vertex() {
    let mut rng = Rng(2);
    for entry in direct_supports() {
        for seed in 0..INSTANCES {
            let support = (entry.random_instance)(seed);
            let vertices = support.enumerate();
            for noise in ["gumbel", "gaussian(sigma = 2)", "neg_exponential"] {
                let l = layer(&format!(
                    "layer l: {} {{ noise: {noise}; estimator: straight_through }}",
                    support.describe()
                ));
                let mut shape = vec![3];
                shape.extend(support.shape());
                let theta = rng.array(&shape, -2.0, 2.0);
                let opts = Options::default().seed(seed).samples(4);
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                assert_eq!(fwd.mode, Mode::Hard);
                let m = vertices[0].len();
                let z = fwd.z.as_slice().unwrap();
                let w = fwd.w.as_slice().unwrap();
                for r in 0..12 {
                    let zr = &z[r * m..(r + 1) * m];
                    let wr = &w[r * m..(r + 1) * m];
                    assert!(
                        vertices.iter().any(|v| v.as_slice() == zr),
                        "{} {noise}: z = {zr:?} is not in Z",
                        support.describe()
                    );
                    let (best, s1, s2) = ranked(&support, &vertices, wr);
                    if s1 - s2 > 1e-12 {
                        assert_eq!(zr, vertices[best].as_slice(), "{noise}: w = {wr:?}");
                    }
                }
            }
        }
    }
}

/// The soft solution maximises `⟨x, z⟩ − f(z)` over `conv Z`, `f` from [`regularizer_value`]:
/// against 200 random hull points, and along the segment towards every vertex (for `expfamily`,
/// whose `f = A*` has no closed form: it equals the brute-force marginals); and it lies in the
/// hull.
#[test]
fn soft_solution_is_optimal_and_in_the_hull() {
    let mut rng = Rng(3);
    for entry in direct_supports() {
        let mut objective_checks = 0;
        for seed in 0..INSTANCES {
            let support = (entry.random_instance)(seed);
            let vertices = support.enumerate();
            let centre = barycentre(&vertices);
            let shape = support.shape();
            for solver in support.soft_solvers() {
                let reg = solver.regularizer;
                let l = layer(&format!(
                    "layer l: {} {{ regularizer: {} }}",
                    support.describe(),
                    reg.name()
                ));
                for (t, noise) in [
                    (1.0, Noise::None),
                    (0.5, Noise::Seed(seed)),
                    (2.0, Noise::Seed(seed + 100)),
                ] {
                    let theta = rng.array(&support.shape(), -2.0, 2.0);
                    let opts = Options::default()
                        .noise(noise)
                        .mode(Mode::Soft)
                        .temperature(t);
                    let fwd = l.try_forward(theta.view(), &opts).unwrap();
                    let z = fwd.z.as_slice().unwrap().to_vec();
                    let x: Vec<f64> = fwd.w.iter().map(|w| w / t).collect();
                    let what = format!("{} {} T {t}", support.describe(), reg.name());
                    assert_in_hull(&what, &vertices, &z, plane_slack(solver, z.len()));
                    let Some(fz) = regularizer_value(reg, &shape, &centre, &z) else {
                        // f = A* has no closed form: z must be the marginals E_{p ∝ exp⟨x, v⟩}[v].
                        let want = exp_family_marginals(&support, &vertices, &x);
                        let err = want
                            .iter()
                            .zip(&z)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f64::max);
                        assert!(err < 1e-9, "{what}: z = {z:?}, brute force {want:?}");
                        objective_checks += 1;
                        continue;
                    };
                    let objective = |y: &[f64]| {
                        dot(&x, y)
                            - regularizer_value(reg, &shape, &centre, y).expect("closed form")
                    };
                    // Finite: z is in the hull (checked above), a box where every f is finite.
                    let best = dot(&x, &z) - fz;
                    let mut candidates: Vec<Vec<f64>> =
                        (0..200).map(|_| hull_point(&vertices, &mut rng)).collect();
                    for v in &vertices {
                        for eps in [1e-4, 1e-2, 0.3, 1.0] {
                            candidates
                                .push(z.iter().zip(v).map(|(a, b)| a + eps * (b - a)).collect());
                        }
                    }
                    for y in &candidates {
                        let other = objective(y);
                        assert!(
                            best >= other - 1e-9,
                            "{what}: z = {z:?} scores {best}, y = {y:?} scores {other} (x = {x:?})"
                        );
                        objective_checks += 1;
                    }
                }
            }
        }
        assert!(
            objective_checks > 0,
            "{}: no soft solver checked",
            entry.name
        );
    }
}

/// `T → 0`: the soft solution tends to the best vertex when it wins by ≥ 0.1, without noise and
/// at the perturbed `w` (the noisy draws with a clear gap are counted: at least half; 85–99 % here).
#[test]
fn soft_tends_to_hard_as_temperature_vanishes() {
    let mut rng = Rng(4);
    for entry in direct_supports() {
        let (mut noisy, mut noisy_checked) = (0, 0);
        for seed in 0..INSTANCES {
            let support = (entry.random_instance)(seed);
            let vertices = support.enumerate();
            for solver in support.soft_solvers() {
                let l = layer(&format!(
                    "layer l: {} {{ regularizer: {} }}",
                    support.describe(),
                    solver.regularizer.name()
                ));
                let theta = theta_with_gap(&support, &mut rng, 0.1);
                let (best, _, _) = ranked(&support, &vertices, theta.as_slice().unwrap());
                for t in [1e-3, 1e-4] {
                    let opts = Options::default()
                        .noise(Noise::None)
                        .mode(Mode::Soft)
                        .temperature(t);
                    let z = l.try_forward(theta.view(), &opts).unwrap().z;
                    let diff = z
                        .iter()
                        .zip(&vertices[best])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        diff < 1e-3,
                        "{} {} T {t}: z = {z} vs hard {:?}",
                        support.describe(),
                        solver.regularizer.name(),
                        vertices[best]
                    );
                }
                // With noise: the same limit at the perturbed w, when its gap is clear.
                let opts = Options::default()
                    .seed(seed)
                    .mode(Mode::Soft)
                    .temperature(1e-4);
                let fwd = l.try_forward(theta.view(), &opts).unwrap();
                let w = fwd.w.as_slice().unwrap();
                let (best, s1, s2) = ranked(&support, &vertices, w);
                noisy += 1;
                if s1 - s2 >= 0.1 {
                    noisy_checked += 1;
                    let diff = fwd
                        .z
                        .iter()
                        .zip(&vertices[best])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        diff < 1e-3,
                        "{}: noisy limit off by {diff}",
                        support.describe()
                    );
                }
            }
        }
        assert!(
            2 * noisy_checked >= noisy,
            "{}: only {noisy_checked} of {noisy} noisy draws have a clear best vertex",
            entry.name
        );
    }
}
