//! Gumbel-Rao from outside. The conditional draws (`sst::estimator::conditional_gumbel_max`
//! and `conditional_logistic`) keep the observed hard sample, follow the law of rejection
//! sampling from unconditional noise drawn here, and are independent of the forward noise;
//! through the layer the gradient is the conditional expectation of the soft Jacobian given the
//! hard sample (in f64 and f32, on batches), and has straight-through's mean with less variance
//! for cotangents that depend on the sample. Fixed seeds; every tolerance is derived from the
//! sample sizes, with the derivation beside it.

mod common;

// A SplitMix64 generator for the test's own Gumbel noise (uniforms at the cell centres).
use common::CenteredRng as Rng;
use common::{assert_means_agree, layer, moments, sigmoid, softmax, total_variance};
use ndarray::{ArrayD, IxDyn};
use sst::estimator::{conditional_gumbel_max, conditional_logistic};
use sst::noise::NoiseKey;
use sst::{Forward, Layer, Mode, Options, Real};

fn key(seed: u64, sample: u32, batch: u32) -> NoiseKey {
    NoiseKey {
        seed,
        sample,
        batch,
    }
}

/// A standard Gumbel `−ln(−ln U)` from the test's own generator.
fn gumbel(rng: &mut Rng) -> f64 {
    -(-rng.unit().ln()).ln()
}

/// A standard logistic `ln U − ln(1 − U)` from the test's own generator.
fn logistic(rng: &mut Rng) -> f64 {
    let u = rng.unit();
    u.ln() - (1.0 - u).ln()
}

/// The first index of the maximum.
fn first_argmax(x: &[f64]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

fn to<F: Real>(x: &[f64]) -> Vec<F> {
    x.iter().map(|&v| F::of(v)).collect()
}

fn widen<F: Real>(x: &[F]) -> Vec<f64> {
    x.iter().map(|v| v.f64()).collect()
}

/// Logit rows for the argmax and sign checks: moderate, ±30, ±1e4 (where `exp` overflows in
/// both precisions), exact ties, one element, and random rows of 2 to 7 entries.
fn logit_rows() -> Vec<Vec<f64>> {
    let mut rng = Rng(1);
    let mut rows = vec![
        vec![3.0, -2.0, 0.0, 1e4, -1e4],
        vec![30.0, -30.0, 0.0, 29.5],
        vec![1e4, 1e4 - 1.0, -1e4],
        vec![-1e4, -1e4, -1e4],
        vec![0.0, 0.0, 0.0, 0.0],
        vec![5.0],
    ];
    rows.extend((2..8).map(|n| (0..n).map(|_| rng.uniform(-5.0, 5.0)).collect()));
    rows
}

/// Every conditional draw given `argmax = d` has its maximum at `d`, for every `d` (the
/// improbable ones included), with finite entries.
///
/// Ties: the gap `w_d − w_j = ln(1 + E·e^{w_d − θ_j})` with `E ~ Exp(1)` and
/// `w_d − θ_j ≥ G ~ Gumbel(0)`, so `P(gap < δ) ≤ P(E·e^G < 2δ) = P(E/E′ < 2δ) ≤ 2δ` for the
/// ratio of two independent Exp(1). Rounding makes a tie only when the gap is below a few ulps
/// of `|w_d|`: `δ = 4·ε·max(1, |w_d|)`. The tie count is then at most Poisson(λ) with
/// `λ = Σ 8·ε·max(1, |w_d|)` over the comparisons, and must stay below `λ + 5√λ` (zero in f64,
/// where `λ ≪ 1`). A draw with `w_j > w_d` is never allowed.
fn check_conditional_gumbels_keep_the_argmax<F: Real>() {
    let eps = F::epsilon().f64();
    let (mut ties, mut lambda, mut compared) = (0usize, 0.0, 0usize);
    for (r, row) in logit_rows().iter().enumerate() {
        let theta = to::<F>(row);
        let n = theta.len();
        let mut w = vec![F::zero(); n];
        for d in 0..n {
            for sample in 0..40 {
                for draw in 0..25 {
                    conditional_gumbel_max(&theta, d, key(r as u64, sample, 0), draw, &mut w);
                    let w = widen(&w);
                    assert!(
                        w.iter().all(|x| x.is_finite()),
                        "{}: {row:?}: {w:?}",
                        F::NAME
                    );
                    for j in (0..n).filter(|&j| j != d) {
                        assert!(w[j] <= w[d], "{}: θ = {row:?}, d = {d}: w = {w:?}", F::NAME);
                        ties += usize::from(w[j] == w[d]);
                        lambda += 8.0 * eps * w[d].abs().max(1.0);
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 100_000, "{compared}");
    assert!(
        ties as f64 <= lambda + 5.0 * lambda.sqrt(),
        "{}: {ties} ties in {compared} comparisons, bound λ = {lambda}",
        F::NAME
    );
}

#[test]
fn conditional_gumbels_keep_the_observed_argmax() {
    check_conditional_gumbels_keep_the_argmax::<f64>();
    check_conditional_gumbels_keep_the_argmax::<f32>();
}

/// Every conditional logistic draw has the observed sign, `[w_i > 0] = z_i`, for both values of
/// `z_i` at every logit (the improbable side of ±1e4 included), with finite entries.
fn check_conditional_logistics_keep_the_signs<F: Real>() {
    let theta_f64 = [1e4, -1e4, 30.0, -30.0, 0.0, 1e-3, -2.5, 0.7, 80.0];
    let theta = to::<F>(&theta_f64);
    let n = theta.len();
    let patterns: Vec<Vec<f64>> = vec![
        vec![1.0; n],
        vec![0.0; n],
        (0..n).map(|i| (i % 2) as f64).collect(),
        (0..n).map(|i| ((i + 1) % 2) as f64).collect(),
    ];
    let mut w = vec![F::zero(); n];
    for (p, z) in patterns.iter().enumerate() {
        let z_f = to::<F>(z);
        for sample in 0..100 {
            for draw in 0..50 {
                conditional_logistic(&theta, &z_f, key(p as u64, sample, 1), draw, &mut w);
                for i in 0..n {
                    let wi = w[i].f64();
                    assert!(
                        wi.is_finite() && (wi > 0.0) == (z[i] > 0.0),
                        "{}: θ = {}, z = {}: w = {wi}",
                        F::NAME,
                        theta_f64[i],
                        z[i]
                    );
                }
            }
        }
    }
}

#[test]
fn conditional_logistics_keep_the_observed_signs() {
    check_conditional_logistics_keep_the_signs::<f64>();
    check_conditional_logistics_keep_the_signs::<f32>();
}

/// The two-sample Kolmogorov–Smirnov statistic `sup_x |F_a(x) − F_b(x)|`.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let sorted = |x: &[f64]| {
        let mut v = x.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (sorted(a), sorted(b));
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut sup) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        sup = sup.max((i as f64 / n - j as f64 / m).abs());
    }
    sup
}

/// The asymptotic critical value of the two-sample KS statistic at level α:
/// `c(α)·√((n + m)/(n·m))` with `c(α) = √(−ln(α/2)/2)` (Smirnov's limit law).
fn ks_critical(alpha: f64, n: usize, m: usize) -> f64 {
    let c = (-(alpha / 2.0).ln() / 2.0).sqrt();
    c * ((n + m) as f64 / (n * m) as f64).sqrt()
}

/// Asserts that two samples of vectors have the same law, as far as a two-sample KS test at
/// α = 1e-4 sees it, on every coordinate and on every pairwise difference `x_j − x_k` (which
/// catches a wrong dependence between coordinates that keeps the marginals).
fn assert_same_law(what: &str, a: &[Vec<f64>], b: &[Vec<f64>]) {
    let dim = a[0].len();
    let critical = ks_critical(1e-4, a.len(), b.len());
    let column = |rows: &[Vec<f64>], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
        rows.iter().map(|r| f(r)).collect()
    };
    for j in 0..dim {
        for k in j..dim {
            let f = |r: &[f64]| if j == k { r[j] } else { r[j] - r[k] };
            let d = ks_statistic(&column(a, &f), &column(b, &f));
            assert!(
                d <= critical,
                "{what}: coordinates ({j}, {k}): KS {d} > {critical}"
            );
        }
    }
}

/// `m` draws of `θ + G` with `argmax = d`, by rejection from the test's own Gumbel noise.
fn rejection_gumbels(theta: &[f64], d: usize, m: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut kept = Vec::with_capacity(m);
    while kept.len() < m {
        let w: Vec<f64> = theta.iter().map(|t| t + gumbel(rng)).collect();
        if first_argmax(&w) == d {
            kept.push(w);
        }
    }
    kept
}

/// `m` draws of `θ + L` (logistic) with `[w_i > 0] = z_i`, by rejection coordinate by
/// coordinate: the coordinates are independent, so this is rejection on the whole vector.
fn rejection_logistics(theta: &[f64], z: &[f64], m: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    (0..m)
        .map(|_| {
            theta
                .iter()
                .zip(z)
                .map(|(t, zi)| loop {
                    let w = t + logistic(rng);
                    if (w > 0.0) == (*zi > 0.0) {
                        break w;
                    }
                })
                .collect()
        })
        .collect()
}

/// `n` conditional draws from the library: a third over the draw index of one key, a third
/// over the sample index, a third over the batch index, so that a stream that ignored any of
/// the three would repeat values and fail the KS test.
fn library_draws<F: Real>(
    n: usize,
    seed: u64,
    mut draw_one: impl FnMut(NoiseKey, u32, &mut [F]),
    dim: usize,
) -> Vec<Vec<f64>> {
    let mut w = vec![F::zero(); dim];
    (0..n as u32)
        .map(|i| {
            let (k, draw) = match i % 3 {
                0 => (key(seed, 0, 0), i),
                1 => (key(seed, i, 0), 0),
                _ => (key(seed, 0, i), 0),
            };
            draw_one(k, draw, &mut w);
            widen(&w)
        })
        .collect()
}

/// The conditional Gumbels given `argmax = d` have the law of rejection sampling, for each `d`
/// of a categorical(3) (the improbable `d = 2`, `p ≈ 0.06`, included), in f64 and f32 (whose
/// uniforms are on a 2⁻²³ grid, far below the KS resolution 0.02 at these sizes).
#[test]
fn conditional_gumbels_have_the_law_of_rejection_sampling() {
    let theta = [1.0, 0.0, -1.5];
    let (n, m) = (15_000, 15_000);
    let mut rng = Rng(2);
    for d in 0..3 {
        let reference = rejection_gumbels(&theta, d, m, &mut rng);
        let f64_draws = library_draws::<f64>(
            n,
            10 + d as u64,
            |k, draw, w| conditional_gumbel_max(&theta[..], d, k, draw, w),
            3,
        );
        assert_same_law(&format!("f64 d = {d}"), &f64_draws, &reference);
        let theta32 = to::<f32>(&theta);
        let f32_draws = library_draws::<f32>(
            n,
            20 + d as u64,
            |k, draw, w| conditional_gumbel_max(&theta32, d, k, draw, w),
            3,
        );
        assert_same_law(&format!("f32 d = {d}"), &f32_draws, &reference);
    }
}

/// The conditional logistics given the signs `z` have the law of rejection sampling, for both
/// signs at each logit (`z_i = 0` at `θ = 3` has probability 0.05), in f64 and f32.
#[test]
fn conditional_logistics_have_the_law_of_rejection_sampling() {
    let theta = [1.2, -0.5, 0.0, 3.0];
    let (n, m) = (15_000, 15_000);
    let mut rng = Rng(3);
    for (p, z) in [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
        .iter()
        .enumerate()
    {
        let reference = rejection_logistics(&theta, z, m, &mut rng);
        let f64_draws = library_draws::<f64>(
            n,
            30 + p as u64,
            |k, draw, w| conditional_logistic(&theta[..], &z[..], k, draw, w),
            4,
        );
        assert_same_law(&format!("f64 z = {z:?}"), &f64_draws, &reference);
        let (theta32, z32) = (to::<f32>(&theta), to::<f32>(z));
        let f32_draws = library_draws::<f32>(
            n,
            40 + p as u64,
            |k, draw, w| conditional_logistic(&theta32, &z32, k, draw, w),
            4,
        );
        assert_same_law(&format!("f32 z = {z:?}"), &f32_draws, &reference);
    }
}

/// Column `i` of `rows`.
fn col(rows: &[Vec<f64>], i: usize) -> Vec<f64> {
    rows.iter().map(|r| r[i]).collect()
}

/// Pearson's correlation of two equally long samples.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Given the hard sample `D`, the layer's forward noise and the conditional draws 0 and 1 of
/// the same key (the ones the layer's backward uses) are independent: every correlation
/// between their coordinates, within each group of equal `D`, is within 4.5 standard errors of
/// zero (under independence `√n·r` is asymptotically standard normal). A conditional stream
/// that reused the forward's uniforms, or one draw's uniforms for another, correlates strongly.
#[test]
fn conditional_draws_are_independent_of_the_forward_noise() {
    let l = layer("layer l: categorical(3) { estimator: gumbel_rao(draws = 2) }");
    let theta = [0.5, 0.0, -0.5];
    let n = 30_000;
    let seed = 77;
    let fwd = l
        .try_forward(
            ndarray::arr1(&theta).into_dyn().view(),
            &Options::default().seed(seed).samples(n),
        )
        .unwrap();
    // Per D: the forward w, draw 0 and draw 1, one row each per sample.
    let mut groups: Vec<[Vec<Vec<f64>>; 3]> = vec![Default::default(); 3];
    for (s, (z, w)) in fwd.z.outer_iter().zip(fwd.w.outer_iter()).enumerate() {
        let d = z.iter().position(|&x| x == 1.0).unwrap();
        let mut draws = [vec![0.0; 3], vec![0.0; 3]];
        for (draw, out) in draws.iter_mut().enumerate() {
            conditional_gumbel_max(
                &theta[..],
                d,
                key(seed, s as u32, 0),
                draw as u32,
                &mut out[..],
            );
        }
        let [forward, first, second] = &mut groups[d];
        forward.push(w.iter().copied().collect());
        first.push(draws[0].clone());
        second.push(draws[1].clone());
    }
    for (d, [forward, first, second]) in groups.iter().enumerate() {
        let bound = 4.5 / (forward.len() as f64).sqrt();
        for (name, a, b) in [
            ("forward, draw 0", forward, first),
            ("forward, draw 1", forward, second),
            ("draw 0, draw 1", first, second),
        ] {
            for j in 0..3 {
                for k in 0..3 {
                    let r = correlation(&col(a, j), &col(b, k));
                    assert!(
                        r.abs() <= bound,
                        "D = {d}, {name}: corr(w{j}, w{k}) = {r} (bound {bound})"
                    );
                }
            }
        }
    }
}

/// The soft Jacobian–cotangent product of the entropy-regularised categorical at `w`:
/// `∂softmax(w/T)/∂w · c = (1/T)·s ⊙ (c − ⟨s, c⟩)` with `s = softmax(w/T)` (symmetric Jacobian).
fn softmax_jvp(w: &[f64], t: f64, c: &[f64]) -> Vec<f64> {
    let x: Vec<f64> = w.iter().map(|v| v / t).collect();
    let s = softmax(&x);
    let sc: f64 = s.iter().zip(c).map(|(a, b)| a * b).sum();
    s.iter().zip(c).map(|(si, ci)| si * (ci - sc) / t).collect()
}

/// The binary-entropy Bernoulli's Jacobian (diagonal) times `c`: `(1/T)·σ(w/T)(1 − σ(w/T))·c`.
fn sigmoid_jvp(w: &[f64], t: f64, c: &[f64]) -> Vec<f64> {
    w.iter()
        .zip(c)
        .map(|(wi, ci)| {
            let s = sigmoid(wi / t);
            s * (1.0 - s) * ci / t
        })
        .collect()
}

/// A sample's per-coordinate means and variances, as [`moments`] returns them.
type Moments = (Vec<f64>, Vec<f64>);

/// Numbers per sample, batch row and entry: `[N][B][n]`.
type PerSample = Vec<Vec<Vec<f64>>>;

/// A forward pass and its backward for the cotangent rows `cot` (`[B, n]`), in precision `F`;
/// returns `z` and the gradients, widened, as `[N][B][n]`.
fn hard_pass<F: Real>(
    l: &Layer,
    theta: &[Vec<f64>],
    cot: impl Fn(&Forward<F>) -> Vec<Vec<f64>>,
    samples: usize,
    seed: u64,
) -> (PerSample, PerSample) {
    let (b, n) = (theta.len(), theta[0].len());
    let flat = |rows: &[Vec<f64>]| {
        let v: Vec<F> = rows.iter().flatten().map(|&x| F::of(x)).collect();
        ArrayD::from_shape_vec(IxDyn(&[b, n]), v).unwrap()
    };
    let opts = Options::default()
        .seed(seed)
        .samples(samples)
        .mode(Mode::Hard);
    let fwd = l.try_forward(flat(theta).view(), &opts).unwrap();
    let grad = l.try_backward(&fwd, flat(&cot(&fwd)).view()).unwrap();
    let nested = |a: &ArrayD<F>| -> PerSample {
        let v = widen(a.as_slice().unwrap());
        v.chunks(b * n)
            .map(|s| s.chunks(n).map(<[f64]>::to_vec).collect())
            .collect()
    };
    (nested(&fwd.z), nested(&grad))
}

/// The Gumbel-Rao gradient of a categorical(3) batch, one row per `θ`, is the conditional
/// expectation of the soft Jacobian–cotangent product given the hard sample:
/// `E[grad | D] = E[J_T(θ + G)·c | argmax(θ + G) = D]`, computed here by rejection sampling
/// from the test's own Gumbel noise, for every row and every `D`, in f64 and f32 (against the
/// same f64 reference, and the two precisions against each other), within 4 standard errors.
/// Draws that ignored the conditioning would give the unconditional `E[J_T·c]` for every `D`:
/// the test asserts that this differs from each row's conditional expectations by more than
/// 10 standard errors for some `D`, so it would fail.
#[test]
fn gumbel_rao_gradient_is_the_conditional_expectation_of_the_soft_jacobian() {
    let t = 0.5;
    let l = layer("layer l: categorical(3) { estimator: gumbel_rao(draws = 2); temperature: 0.5 }");
    let theta = vec![
        vec![1.0, 0.0, -1.5],
        vec![-0.5, 2.0, 0.3],
        vec![0.0, 0.0, 0.0],
    ];
    let cot = vec![
        vec![1.0, -2.0, 3.0],
        vec![-1.0, 0.5, 2.0],
        vec![2.0, 0.0, -1.0],
    ];
    let (samples, m) = (30_000, 20_000);
    let mut rng = Rng(4);
    // Per row: the rejection references E[J c | D] for D = 0, 1, 2 as (mean, var, m).
    let reference: Vec<Vec<Moments>> = theta
        .iter()
        .zip(&cot)
        .map(|(th, c)| {
            (0..3)
                .map(|d| {
                    let jvps: Vec<Vec<f64>> = rejection_gumbels(th, d, m, &mut rng)
                        .iter()
                        .map(|w| softmax_jvp(w, t, c))
                        .collect();
                    moments(&jvps)
                })
                .collect()
        })
        .collect();
    let group_means = |precision: &str, seed: u64| {
        let (z, grad) = if precision == "f64" {
            hard_pass::<f64>(&l, &theta, |_| cot.clone(), samples, seed)
        } else {
            hard_pass::<f32>(&l, &theta, |_| cot.clone(), samples, seed)
        };
        // groups[b][D]: the gradients of the samples of row b whose hard sample is D.
        let mut groups = vec![vec![Vec::new(); 3]; theta.len()];
        for (zs, gs) in z.iter().zip(&grad) {
            for (b, (zb, gb)) in zs.iter().zip(gs).enumerate() {
                groups[b][first_argmax(zb)].push(gb.clone());
            }
        }
        groups
            .iter()
            .map(|row| row.iter().map(|g| (moments(g), g.len())).collect())
            .collect::<Vec<Vec<_>>>()
    };
    let f64_groups = group_means("f64", 5);
    let f32_groups = group_means("f32", 6);
    for b in 0..theta.len() {
        // The unconditional expectation, pooled from the references with the weights P(D).
        let p = softmax(&theta[b]);
        let unconditional: Vec<f64> = (0..3)
            .map(|j| (0..3).map(|d| p[d] * reference[b][d].0[j]).sum())
            .collect();
        let mut power = 0.0f64;
        for d in 0..3 {
            let (ref_mean, ref_var) = &reference[b][d];
            let r = (&ref_mean[..], &ref_var[..], m);
            let ((m64, v64), n64) = &f64_groups[b][d];
            let ((m32, v32), n32) = &f32_groups[b][d];
            let what = format!("row {b}, D = {d}");
            assert_means_agree(&format!("f64 {what}"), (m64, v64, *n64), r);
            assert_means_agree(&format!("f32 {what}"), (m32, v32, *n32), r);
            assert_means_agree(
                &format!("f32 vs f64 {what}"),
                (m32, v32, *n32),
                (m64, v64, *n64),
            );
            for j in 0..3 {
                let se = (v64[j] / *n64 as f64 + ref_var[j] / m as f64).sqrt();
                power = power.max((unconditional[j] - ref_mean[j]).abs() / se);
            }
        }
        assert!(
            power > 10.0,
            "row {b}: unconditioned draws would pass ({power} SE)"
        );
    }
}

/// The same for Bernoulli (binary entropy): coordinate by coordinate,
/// `E[grad_i | z_i] = E[(1/T)·σ′(w_i/T)·c_i | [w_i > 0] = z_i]`, by rejection sampling here, for
/// each row of a batch, each coordinate and each sign, in f64 and f32 (and the two precisions
/// against each other). Unconditioned draws would give `P(z_i = 1)·E[·|1] + P(z_i = 0)·E[·|0]`
/// at either sign: the test asserts that this is more than 10 standard errors away from some
/// conditional expectation of each row.
#[test]
fn gumbel_rao_bernoulli_gradient_is_the_conditional_expectation_of_the_soft_jacobian() {
    let t = 0.5;
    let l = layer("layer l: bernoulli(3) { estimator: gumbel_rao(draws = 2); temperature: 0.5 }");
    let theta = vec![vec![0.8, -0.3, 1.5], vec![-1.0, 0.0, 2.5]];
    let cot = vec![vec![1.0, -1.0, 2.0], vec![0.5, 3.0, -2.0]];
    let (samples, m) = (30_000, 20_000);
    let mut rng = Rng(5);
    // reference[b][i][z]: (mean, var) of the rejection draws' (1/T)·σ′(w/T)·c.
    let reference: Vec<Vec<Vec<Moments>>> = theta
        .iter()
        .zip(&cot)
        .map(|(th, c)| {
            (0..th.len())
                .map(|i| {
                    [0.0, 1.0]
                        .iter()
                        .map(|&zi| {
                            let jvps: Vec<Vec<f64>> =
                                rejection_logistics(&[th[i]], &[zi], m, &mut rng)
                                    .iter()
                                    .map(|w| sigmoid_jvp(w, t, &[c[i]]))
                                    .collect();
                            moments(&jvps)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    // groups[precision][b][i][z]: the layer's gradients of coordinate i of row b with z_i = z.
    let mut groups = Vec::new();
    for (precision, seed) in [("f64", 7), ("f32", 8)] {
        let (z, grad) = if precision == "f64" {
            hard_pass::<f64>(&l, &theta, |_| cot.clone(), samples, seed)
        } else {
            hard_pass::<f32>(&l, &theta, |_| cot.clone(), samples, seed)
        };
        let mut g = vec![vec![vec![Vec::new(); 2]; 3]; theta.len()];
        for (zs, gs) in z.iter().zip(&grad) {
            for b in 0..theta.len() {
                for i in 0..3 {
                    g[b][i][zs[b][i] as usize].push(vec![gs[b][i]]);
                }
            }
        }
        groups.push(g);
    }
    for (b, row) in theta.iter().enumerate() {
        let mut power = 0.0f64;
        for i in 0..3 {
            let p1 = sigmoid(row[i]);
            let unconditional = (1.0 - p1) * reference[b][i][0].0[0] + p1 * reference[b][i][1].0[0];
            for zi in 0..2 {
                let (rm, rv) = &reference[b][i][zi];
                let what = format!("row {b}, coordinate {i}, z = {zi}");
                let [(m64, v64, n64), (m32, v32, n32)] = [0, 1].map(|p| {
                    let rows = &groups[p][b][i][zi];
                    let (mean, var) = moments(rows);
                    (mean, var, rows.len())
                });
                assert_means_agree(&format!("f64 {what}"), (&m64, &v64, n64), (rm, rv, m));
                assert_means_agree(&format!("f32 {what}"), (&m32, &v32, n32), (rm, rv, m));
                assert_means_agree(
                    &format!("f32 vs f64 {what}"),
                    (&m32, &v32, n32),
                    (&m64, &v64, n64),
                );
                let se = (v64[0] / n64 as f64 + rv[0] / m as f64).sqrt();
                power = power.max((unconditional - rm[0]).abs() / se);
            }
        }
        assert!(
            power > 10.0,
            "row {b}: unconditioned draws would pass ({power} SE)"
        );
    }
}

/// Per-row gradients `[B][n]` of one sample per row of `B` copies of `θ`, with the cotangent of
/// row `b` chosen by its hard sample (`cot_of(z_b)`), as a downstream loss's gradient would be.
fn sample_dependent_grads(
    l: &Layer,
    theta: &[f64],
    rows: usize,
    cot_of: &dyn Fn(&[f64]) -> Vec<f64>,
    seed: u64,
) -> Vec<Vec<f64>> {
    let batch = vec![theta.to_vec(); rows];
    let cot = |fwd: &Forward<f64>| -> Vec<Vec<f64>> {
        fwd.z
            .outer_iter()
            .map(|z| cot_of(&z.iter().copied().collect::<Vec<f64>>()))
            .collect()
    };
    let (_, grad) = hard_pass::<f64>(l, &batch, cot, 1, seed);
    grad.into_iter().next().unwrap()
}

/// Asserts `V_small < V_large` with a margin of 4 standard errors of the difference of two
/// independent total variances, `V_large − V_small > 4·√(se_l² + se_s²)`.
fn assert_variance_below(what: &str, small: (f64, f64), large: (f64, f64)) {
    let se = (small.1.powi(2) + large.1.powi(2)).sqrt();
    assert!(
        large.0 - small.0 > 4.0 * se,
        "{what}: {} vs {} (4 SE = {})",
        small.0,
        large.0,
        4.0 * se
    );
}

/// Gumbel-Rao has straight-through's mean and, with K draws, less variance — for a cotangent
/// that depends on the hard sample (`c = C[D]`), under which draws that ignored the
/// conditioning would give `Σ_D P(D)·E[J]·C[D]` instead of `Σ_D P(D)·E[J | D]·C[D]`; the test
/// computes that wrong value here and asserts it is more than 10 SE from straight-through's.
/// K = 1 is straight-through in distribution (same `(D, J·C[D])` law): its total variance is
/// equal within 4 standard errors of the ratio (delta method: `se(V₁/V₂)/(V₁/V₂) =
/// √((se₁/V₁)² + (se₂/V₂)²)`); K = 10 and 100 average the Jacobian over more draws and lower
/// the variance, each by more than 4 standard errors of the difference.
#[test]
fn gumbel_rao_has_the_straight_through_mean_and_less_variance() {
    let theta = [1.0, 0.5, -0.5, 0.0];
    let t = 0.5;
    let table = [
        [1.0, -2.0, 0.5, 3.0],
        [-1.0, 2.0, 2.0, 0.0],
        [0.0, 1.0, -3.0, 1.0],
        [2.0, 0.0, 1.0, -2.0],
    ];
    let cot_of = |z: &[f64]| table[first_argmax(z)].to_vec();
    let rows = 40_000;
    let spec = |e: &str| {
        layer(&format!(
            "layer l: categorical(4) {{ estimator: {e}; temperature: {t} }}"
        ))
    };
    let st = sample_dependent_grads(&spec("straight_through"), &theta, rows, &cot_of, 11);
    let (st_mean, st_var) = moments(&st);
    // The value of draws that ignore D, by the test's own Monte Carlo: E[J] C[D] weighted by P(D).
    let mut rng = Rng(6);
    let p = softmax(&theta);
    let unconditioned: Vec<Vec<f64>> = (0..rows)
        .map(|_| {
            let w: Vec<f64> = theta.iter().map(|th| th + gumbel(&mut rng)).collect();
            let jvps: Vec<Vec<f64>> = table.iter().map(|c| softmax_jvp(&w, t, c)).collect();
            (0..4)
                .map(|j| (0..4).map(|d| p[d] * jvps[d][j]).sum())
                .collect()
        })
        .collect();
    let (u_mean, u_var) = moments(&unconditioned);
    let power = (0..4)
        .map(|j| {
            (u_mean[j] - st_mean[j]).abs()
                / (u_var[j] / rows as f64 + st_var[j] / rows as f64).sqrt()
        })
        .fold(0.0, f64::max);
    assert!(power > 10.0, "unconditioned draws would pass ({power} SE)");
    let st_total = total_variance(&st);
    let mut totals = Vec::new();
    for (k, seed) in [(1, 12), (10, 13), (100, 14)] {
        let n = if k == 100 { rows / 4 } else { rows };
        let gr = sample_dependent_grads(
            &spec(&format!("gumbel_rao(draws = {k})")),
            &theta,
            n,
            &cot_of,
            seed,
        );
        let (mean, var) = moments(&gr);
        assert_means_agree(
            &format!("GR K={k} vs ST"),
            (&mean, &var, n),
            (&st_mean, &st_var, rows),
        );
        totals.push(total_variance(&gr));
    }
    let ratio = totals[0].0 / st_total.0;
    let ratio_se =
        ratio * ((totals[0].1 / totals[0].0).powi(2) + (st_total.1 / st_total.0).powi(2)).sqrt();
    assert!(
        (ratio - 1.0).abs() <= 4.0 * ratio_se,
        "K=1 {:?} vs ST {st_total:?}: ratio {ratio} ± {ratio_se}",
        totals[0]
    );
    assert_variance_below("K=10 vs K=1", totals[1], totals[0]);
    assert_variance_below("K=100 vs K=10", totals[2], totals[1]);
}

/// The same for Bernoulli: Gumbel-Rao (K = 10) has straight-through's mean and less variance,
/// for a cotangent that depends on each coin (`c_i = a_i` if `z_i = 1`, else `b_i`).
#[test]
fn gumbel_rao_on_bernoulli_has_the_straight_through_mean_and_less_variance() {
    let theta = [0.8, -0.3, 1.5];
    let (on, off) = ([1.0, -1.0, 2.0], [-2.0, 1.5, 0.5]);
    let cot_of = |z: &[f64]| -> Vec<f64> {
        (0..3)
            .map(|i| if z[i] > 0.5 { on[i] } else { off[i] })
            .collect()
    };
    let rows = 40_000;
    let spec = |e: &str| {
        layer(&format!(
            "layer l: bernoulli(3) {{ estimator: {e}; temperature: 0.5 }}"
        ))
    };
    let st = sample_dependent_grads(&spec("straight_through"), &theta, rows, &cot_of, 21);
    let gr = sample_dependent_grads(&spec("gumbel_rao(draws = 10)"), &theta, rows, &cot_of, 22);
    let ((st_mean, st_var), (gr_mean, gr_var)) = (moments(&st), moments(&gr));
    assert_means_agree(
        "bernoulli GR vs ST",
        (&gr_mean, &gr_var, rows),
        (&st_mean, &st_var, rows),
    );
    assert_variance_below(
        "bernoulli GR vs ST",
        total_variance(&gr),
        total_variance(&st),
    );
}
