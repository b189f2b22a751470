//! REINFORCE and the GenGS Poisson counts, from outside. REINFORCE: unbiased against the exact
//! gradients (by formula) on batches whose rows have their own `θ`, in f64 and f32; the
//! leave-one-out and moving-average baselines pinned by value against their formulas, through
//! the layer and as public functions; the score functions against central differences of
//! `log q`. Counts: the truncated pmfs and the GenGS gradients. (Gumbel-Rao: tests/gumbel_rao.rs.)
//! Fixed seeds; statistical tolerances from the sample size (4 standard errors, with the
//! derivation beside each).

mod common;

// A SplitMix64 generator for the test's own noise and inputs (uniforms at the cell centres).
use common::CenteredRng as Rng;
use common::{
    assert_means_agree, expected_count, layer, moments, sigmoid, softmax, total_variance,
};
use ndarray::{array, ArrayD, IxDyn};
use sst::estimator::{baseline_weights, score_bernoulli, score_categorical, updated_ema};
use sst::plan::Baseline;
use sst::{Forward, Layer, Mode, Noise, Options, Real};

/// `∇_θ log q(z|θ)` of one row, by formula: categorical `z − softmax θ`, Bernoulli `z − σ(θ)`.
fn score_of(support: &str, theta: &[f64], z: &[f64]) -> Vec<f64> {
    let q: Vec<f64> = if support.starts_with("categorical") {
        softmax(theta)
    } else {
        theta.iter().map(|&t| sigmoid(t)).collect()
    };
    z.iter().zip(q).map(|(zi, qi)| zi - qi).collect()
}

/// The exact `∂E⟨c, z⟩/∂θ` of one row: categorical `p ⊙ (c − ⟨p, c⟩)` with `p = softmax θ`;
/// Bernoulli `c ⊙ σ(θ)(1 − σ(θ))`.
fn exact_gradient(support: &str, theta: &[f64], c: &[f64]) -> Vec<f64> {
    if support.starts_with("categorical") {
        let p = softmax(theta);
        let pc: f64 = p.iter().zip(c).map(|(a, b)| a * b).sum();
        p.iter().zip(c).map(|(pi, ci)| pi * (ci - pc)).collect()
    } else {
        theta
            .iter()
            .zip(c)
            .map(|(&t, ci)| ci * sigmoid(t) * (1.0 - sigmoid(t)))
            .collect()
    }
}

/// `rows` as a `[B, n]` array in precision `F`.
fn batch<F: Real>(rows: &[Vec<f64>]) -> ArrayD<F> {
    let v: Vec<F> = rows.iter().flatten().map(|&x| F::of(x)).collect();
    ArrayD::from_shape_vec(IxDyn(&[rows.len(), rows[0].len()]), v).unwrap()
}

/// `fwd.z` widened, as `[N][B][n]` (the forward pass must have a samples and a batch axis).
fn samples_of<F: Real>(fwd: &Forward<F>) -> Vec<Vec<Vec<f64>>> {
    let s = fwd.z.shape();
    let v: Vec<f64> = fwd.z.iter().map(|x| x.f64()).collect();
    v.chunks(s[1] * s[2])
        .map(|c| c.chunks(s[2]).map(<[f64]>::to_vec).collect())
        .collect()
}

/// One REINFORCE pass on a batch of `R` copies of each `θ` row (row `b` has `θ[b % k]` and the
/// cotangent `c[b % k]`), `S` samples per row: for each `θ`, the `R` per-row averages of the
/// `S` per-sample gradients. The rows are independent, so those averages are i.i.d. draws of an
/// estimator whose mean is the exact gradient, whatever the baseline does within a row.
fn reinforce_row_means<F: Real>(
    l: &Layer,
    theta: &[Vec<f64>],
    cot: &[Vec<f64>],
    copies: usize,
    samples: usize,
    seed: u64,
) -> Vec<Vec<Vec<f64>>> {
    let k = theta.len();
    let rows: Vec<usize> = (0..k * copies).map(|b| b % k).collect();
    let theta_rows: Vec<Vec<f64>> = rows.iter().map(|&r| theta[r].clone()).collect();
    let cot_rows: Vec<Vec<f64>> = rows.iter().map(|&r| cot[r].clone()).collect();
    let opts = Options::default()
        .seed(seed)
        .samples(samples)
        .mode(Mode::Hard);
    let fwd = l
        .try_forward(batch::<F>(&theta_rows).view(), &opts)
        .unwrap();
    let grad = l.try_backward(&fwd, batch::<F>(&cot_rows).view()).unwrap();
    let n = theta[0].len();
    let g: Vec<f64> = grad.iter().map(|x| x.f64()).collect();
    let mut means = vec![Vec::new(); k];
    for (b, &r) in rows.iter().enumerate() {
        let mean: Vec<f64> = (0..n)
            .map(|i| {
                (0..samples)
                    .map(|s| g[(s * rows.len() + b) * n + i])
                    .sum::<f64>()
                    / samples as f64
            })
            .collect();
        means[r].push(mean);
    }
    means
}

/// REINFORCE is unbiased on a batch whose rows have their own `θ` and cotangent, in f64 and
/// f32, for categorical(4) and bernoulli(3), with no baseline and with leave-one-out over
/// `S = 4` samples: the mean over `R` rows is within 4 standard errors of the exact gradient,
/// f32 agrees with f64 within 4 standard errors of the difference (independent seeds), and
/// leave-one-out has a smaller total variance than no baseline by more than 4 standard errors
/// of the difference (`total_variance`; the cotangents are offset so that the losses have a
/// large mean, which a baseline removes).
#[test]
fn reinforce_is_unbiased_on_batches_in_both_precisions_and_leave_one_out_lowers_variance() {
    let (copies, samples) = (10_000, 4);
    let cases = [
        (
            "categorical(4)",
            vec![
                vec![1.0, 0.5, -0.5, 0.0],
                vec![-1.0, 2.0, 0.0, 0.3],
                vec![0.0, 0.0, 0.0, 0.0],
            ],
            vec![
                vec![10.0, 11.0, 9.0, 10.5],
                vec![-4.0, -6.0, -5.0, -3.0],
                vec![8.0, 7.0, 9.0, 8.5],
            ],
        ),
        (
            "bernoulli(3)",
            vec![
                vec![0.8, -0.3, 1.5],
                vec![-2.0, 0.0, 0.4],
                vec![3.0, -1.0, 0.1],
            ],
            vec![
                vec![5.0, 6.0, 4.0],
                vec![-3.0, -2.0, -4.0],
                vec![6.0, 5.0, 7.0],
            ],
        ),
    ];
    let mut seed = 30;
    for (support, theta, cot) in &cases {
        // totals[baseline][row]: the total variance of the row means, per precision.
        let mut totals = Vec::new();
        for baseline in ["none", "leave_one_out"] {
            let l = layer(&format!(
                "layer l: {support} {{ estimator: reinforce(baseline = {baseline}) }}"
            ));
            seed += 2;
            let f64_means = reinforce_row_means::<f64>(&l, theta, cot, copies, samples, seed);
            let f32_means = reinforce_row_means::<f32>(&l, theta, cot, copies, samples, seed + 1);
            let mut row_totals = Vec::new();
            for r in 0..theta.len() {
                let exact = exact_gradient(support, &theta[r], &cot[r]);
                let zeros = vec![0.0; exact.len()];
                let (m64, v64) = moments(&f64_means[r]);
                let (m32, v32) = moments(&f32_means[r]);
                let what = format!("{support} reinforce({baseline}) row {r}");
                assert_means_agree(
                    &format!("f64 {what}"),
                    (&m64, &v64, copies),
                    (&exact, &zeros, 1),
                );
                assert_means_agree(
                    &format!("f32 {what}"),
                    (&m32, &v32, copies),
                    (&exact, &zeros, 1),
                );
                assert_means_agree(
                    &format!("f32 vs f64 {what}"),
                    (&m32, &v32, copies),
                    (&m64, &v64, copies),
                );
                row_totals.push([total_variance(&f64_means[r]), total_variance(&f32_means[r])]);
            }
            totals.push(row_totals);
        }
        for (r, (nones, loos)) in totals[0].iter().zip(&totals[1]).enumerate() {
            for (precision, (&(none, none_se), &(loo, loo_se))) in
                ["f64", "f32"].iter().zip(nones.iter().zip(loos))
            {
                let se = (none_se.powi(2) + loo_se.powi(2)).sqrt();
                assert!(
                    none - loo > 4.0 * se,
                    "{support} {precision} row {r}: LOO {loo} vs none {none} (4 SE = {})",
                    4.0 * se
                );
            }
        }
    }
}

/// `|got − expected| ≤ tol·(1 + |expected|)` entry by entry.
fn assert_close(what: &str, got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len(), "{what}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= tol * (1.0 + e.abs()),
            "{what}[{i}]: {g} vs {e}"
        );
    }
}

/// The losses `[N][B]` of a call, drawn from the test's generator.
fn random_losses(rng: &mut Rng, samples: usize, rows: usize) -> Vec<Vec<f64>> {
    (0..samples)
        .map(|_| (0..rows).map(|_| rng.uniform(-5.0, 15.0)).collect())
        .collect()
}

fn losses_array(losses: &[Vec<f64>]) -> ArrayD<f64> {
    batch::<f64>(losses)
}

/// The expected REINFORCE gradient `[N][B][n]` of a call: `(f_sb − b_sb)·(z_sb − q(θ_b))`.
fn weighted_scores(
    support: &str,
    theta: &[Vec<f64>],
    z: &[Vec<Vec<f64>>],
    weights: &[Vec<f64>],
) -> Vec<f64> {
    let mut out = Vec::new();
    for (zs, ws) in z.iter().zip(weights) {
        for (b, (zb, w)) in zs.iter().zip(ws).enumerate() {
            out.extend(score_of(support, &theta[b], zb).iter().map(|sc| w * sc));
        }
    }
    out
}

/// The moving-average baseline through the layer, pinned by value over five calls of
/// `try_reinforce` on a batch of 2 rows × 3 samples: the first call uses `b = 0` and sets
/// `b = mean f` (over every sample and row); each later call uses the current `b` and then sets
/// `b ← 0.9·b + 0.1·mean f` — the sequence computed here from the formula. Each call's gradient
/// is `(f_sb − b)·(z_sb − softmax θ_b)`. A clone of the layer shares the running baseline (the
/// fifth call goes through a clone); a newly compiled layer starts again at `b = 0`.
#[test]
fn ema_baseline_follows_its_update_over_calls() {
    let spec = "layer l: categorical(3) { estimator: reinforce(baseline = ema) }";
    let l = layer(spec);
    let theta = vec![vec![0.2, -0.4, 1.0], vec![-1.0, 0.5, 0.0]];
    let fwd = l
        .try_forward(
            batch::<f64>(&theta).view(),
            &Options::default().seed(3).samples(3),
        )
        .unwrap();
    let z = samples_of(&fwd);
    let mut rng = Rng(8);
    let mut b: Option<f64> = None;
    let clone = l.clone();
    for call in 0..5 {
        let losses = random_losses(&mut rng, 3, 2);
        let used = b.unwrap_or(0.0);
        let weights: Vec<Vec<f64>> = losses
            .iter()
            .map(|row| row.iter().map(|f| f - used).collect())
            .collect();
        let expected = weighted_scores("categorical", &theta, &z, &weights);
        let which = if call == 4 { &clone } else { &l };
        let got = which
            .try_reinforce(&fwd, losses_array(&losses).view())
            .unwrap();
        assert_close(
            &format!("call {call} (b = {used})"),
            got.as_slice().unwrap(),
            &expected,
            1e-12,
        );
        let mean = losses.iter().flatten().sum::<f64>() / 6.0;
        b = Some(match b {
            None => mean,
            Some(b) => 0.9 * b + 0.1 * mean,
        });
    }
    // A new layer has no history: b = 0 (on its own forward pass, the same samples).
    let losses = random_losses(&mut rng, 3, 2);
    let expected = weighted_scores("categorical", &theta, &z, &losses);
    let new_layer = layer(spec);
    let new_fwd = new_layer
        .try_forward(
            batch::<f64>(&theta).view(),
            &Options::default().seed(3).samples(3),
        )
        .unwrap();
    assert_eq!(new_fwd.z, fwd.z);
    let fresh = new_layer.try_reinforce(&new_fwd, losses_array(&losses).view());
    assert_close(
        "fresh layer",
        fresh.unwrap().as_slice().unwrap(),
        &expected,
        1e-12,
    );
    let bad = array![1.0, 2.0].into_dyn();
    let err = l.try_reinforce(&fwd, bad.view()).unwrap_err();
    assert_eq!(err.field, "losses");
}

/// The moving-average baseline through `try_backward` in f32, where the losses are the
/// per-sample `f_s = ⟨c, z_s⟩` of four calls with different cotangents (4 samples, no batch):
/// each gradient is `(f_s − b)·(z_s − σ(θ))` with `b` from the formula as above. Tolerance: the
/// f32 loss, weight and score each carry a few roundings of relative size `ε₃₂ = 1.2e-7` on
/// magnitudes up to `Σ|c| + |b| ≤ 40`: `64·ε₃₂` relative to `1 + |expected|` covers them.
#[test]
fn ema_baseline_through_the_backward_pass_in_f32() {
    let l = layer("layer l: bernoulli(3) { estimator: reinforce(baseline = ema) }");
    let theta = [0.3f64, -1.2, 2.0];
    let theta32 = ndarray::arr1(&theta.map(|t| t as f32)).into_dyn();
    let fwd = l
        .try_forward(theta32.view(), &Options::default().seed(9).samples(4))
        .unwrap();
    let z: Vec<Vec<f64>> = fwd
        .z
        .outer_iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let q: Vec<f64> = theta
        .iter()
        .map(|&t| sigmoid(f64::from(t as f32)))
        .collect();
    let mut rng = Rng(10);
    let mut b: Option<f64> = None;
    for call in 0..4 {
        let c: Vec<f64> = (0..3).map(|_| rng.uniform(-10.0, 10.0).round()).collect();
        let losses: Vec<f64> = z
            .iter()
            .map(|zs| zs.iter().zip(&c).map(|(a, b)| a * b).sum())
            .collect();
        let used = b.unwrap_or(0.0);
        let expected: Vec<f64> = z
            .iter()
            .zip(&losses)
            .flat_map(|(zs, f)| {
                zs.iter()
                    .zip(&q)
                    .map(move |(zi, qi)| (f - used) * (zi - qi))
            })
            .collect();
        let c32 = ndarray::arr1(&c.iter().map(|&x| x as f32).collect::<Vec<_>>()).into_dyn();
        let got: Vec<f64> = l
            .try_backward(&fwd, c32.view())
            .unwrap()
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        assert_close(
            &format!("call {call} (b = {used})"),
            &got,
            &expected,
            64.0 * f64::from(f32::EPSILON),
        );
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        b = Some(match b {
            None => mean,
            Some(b) => 0.9 * b + 0.1 * mean,
        });
    }
}

/// `b_s = mean_{j ≠ s} f_j` over the other samples of the same batch row, by a direct sum.
fn leave_one_out(losses: &[Vec<f64>], s: usize, b: usize) -> f64 {
    let others: Vec<f64> = (0..losses.len())
        .filter(|&j| j != s)
        .map(|j| losses[j][b])
        .collect();
    if others.is_empty() {
        0.0
    } else {
        others.iter().sum::<f64>() / others.len() as f64
    }
}

/// The leave-one-out baseline through the layer, pinned by value: with 5 and 2 samples on a
/// batch of 3 rows, each sample's weight is `f_sb − mean_{j≠s} f_jb` (the other samples of its
/// own row, summed here directly); with one sample there is no other sample and `b = 0`, with
/// and without a batch axis.
#[test]
fn leave_one_out_baseline_is_the_mean_of_the_other_samples_of_the_row() {
    let l = layer("layer l: categorical(3) { estimator: reinforce(baseline = leave_one_out) }");
    let theta = vec![
        vec![0.2, -0.4, 1.0],
        vec![-1.0, 0.5, 0.0],
        vec![2.0, 0.0, 0.0],
    ];
    let mut rng = Rng(11);
    for samples in [5, 2] {
        let fwd = l
            .try_forward(
                batch::<f64>(&theta).view(),
                &Options::default().seed(12).samples(samples),
            )
            .unwrap();
        let z = samples_of(&fwd);
        let losses = random_losses(&mut rng, samples, 3);
        let weights: Vec<Vec<f64>> = (0..samples)
            .map(|s| {
                (0..3)
                    .map(|b| losses[s][b] - leave_one_out(&losses, s, b))
                    .collect()
            })
            .collect();
        let expected = weighted_scores("categorical", &theta, &z, &weights);
        let got = l.try_reinforce(&fwd, losses_array(&losses).view()).unwrap();
        assert_close(
            &format!("{samples} samples"),
            got.as_slice().unwrap(),
            &expected,
            1e-12,
        );
    }
    // One sample: no samples axis, losses `[B]`; the weight is f itself.
    let fwd = l
        .try_forward(batch::<f64>(&theta).view(), &Options::default().seed(13))
        .unwrap();
    let losses = [4.0, -2.0, 7.5];
    let got = l
        .try_reinforce(&fwd, ndarray::arr1(&losses).into_dyn().view())
        .unwrap();
    for b in 0..3 {
        let zb: Vec<f64> = fwd.z.outer_iter().nth(b).unwrap().iter().copied().collect();
        let expected: Vec<f64> = score_of("categorical", &theta[b], &zb)
            .iter()
            .map(|sc| losses[b] * sc)
            .collect();
        let row: Vec<f64> = got.outer_iter().nth(b).unwrap().iter().copied().collect();
        assert_close(&format!("one sample, row {b}"), &row, &expected, 1e-12);
    }
    // One sample, no batch: a scalar loss.
    let fwd = l
        .try_forward(
            ndarray::arr1(&theta[0]).into_dyn().view(),
            &Options::default(),
        )
        .unwrap();
    let z: Vec<f64> = fwd.z.iter().copied().collect();
    let got = l
        .try_reinforce(&fwd, ArrayD::from_elem(IxDyn(&[]), 3.5).view())
        .unwrap();
    let expected: Vec<f64> = score_of("categorical", &theta[0], &z)
        .iter()
        .map(|sc| 3.5 * sc)
        .collect();
    assert_close(
        "one sample, no batch",
        got.as_slice().unwrap(),
        &expected,
        1e-12,
    );
}

/// The public baseline functions against their formulas, computed here: `none` keeps `f`;
/// `ema` subtracts the running value; leave-one-out subtracts the mean of the other losses
/// (summed directly, for 2, 3 and 6 losses; one loss keeps `f`, none gives nothing);
/// `updated_ema` is `mean f` on the first call and `0.9·b + 0.1·mean f` after.
#[test]
fn baseline_functions_follow_their_formulas() {
    let mut rng = Rng(14);
    for len in [1, 2, 3, 6] {
        let f: Vec<f64> = (0..len).map(|_| rng.uniform(-3.0, 9.0)).collect();
        let ema = rng.uniform(-2.0, 2.0);
        assert_eq!(baseline_weights(Baseline::None, &f, ema), f);
        let minus_ema: Vec<f64> = f.iter().map(|x| x - ema).collect();
        assert_close(
            "ema",
            &baseline_weights(Baseline::Ema, &f, ema),
            &minus_ema,
            1e-14,
        );
        let column: Vec<Vec<f64>> = f.iter().map(|&x| vec![x]).collect();
        let loo: Vec<f64> = (0..len)
            .map(|s| f[s] - leave_one_out(&column, s, 0))
            .collect();
        assert_close(
            &format!("leave-one-out, {len} losses"),
            &baseline_weights(Baseline::LeaveOneOut, &f, ema),
            &loo,
            1e-14,
        );
        let mean = f.iter().sum::<f64>() / len as f64;
        assert_close("first ema", &[updated_ema(None, &f)], &[mean], 1e-14);
        assert_close(
            "later ema",
            &[updated_ema(Some(ema), &f)],
            &[0.9 * ema + 0.1 * mean],
            1e-14,
        );
    }
    assert!(baseline_weights(Baseline::LeaveOneOut, &[], 1.0).is_empty());
}

/// The score functions are `∇_θ log q(z|θ)`: central differences (step 1e-5, error `O(h²)`
/// ≈ 1e-10 here) of `log q` written here — `θ_d − logsumexp θ` for a one-hot at `d`,
/// `Σ z_i log σ(θ_i) + (1 − z_i) log σ(−θ_i)` for coins — and they add into the given buffer.
#[test]
fn score_functions_are_the_gradients_of_log_q_and_add_into_grad() {
    let log_categorical = |t: &[f64], d: usize| {
        let m = t.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        t[d] - m - t.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let log_bernoulli = |t: &[f64], z: &[f64]| -> f64 {
        t.iter()
            .zip(z)
            .map(|(ti, zi)| {
                let p = sigmoid(*ti);
                zi * p.ln() + (1.0 - zi) * (1.0 - p).ln()
            })
            .sum()
    };
    let central = |f: &dyn Fn(&[f64]) -> f64, t: &[f64]| -> Vec<f64> {
        let h = 1e-5;
        (0..t.len())
            .map(|i| {
                let (mut up, mut down) = (t.to_vec(), t.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * h)
            })
            .collect()
    };
    let mut rng = Rng(15);
    for _ in 0..20 {
        let n = 2 + rng.below(5);
        let theta: Vec<f64> = (0..n).map(|_| rng.uniform(-3.0, 3.0)).collect();
        let start: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let d = rng.below(n);
        let one_hot: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == d))).collect();
        let mut grad = start.clone();
        score_categorical(&theta, &one_hot, &mut grad);
        let fd = central(&|t| log_categorical(t, d), &theta);
        let expected: Vec<f64> = start.iter().zip(&fd).map(|(a, b)| a + b).collect();
        assert_close("categorical score", &grad, &expected, 1e-8);
        let coins: Vec<f64> = (0..n).map(|_| rng.below(2) as f64).collect();
        let mut grad = start.clone();
        score_bernoulli(&theta, &coins, &mut grad);
        let fd = central(&|t| log_bernoulli(t, &coins), &theta);
        let expected: Vec<f64> = start.iter().zip(&fd).map(|(a, b)| a + b).collect();
        assert_close("bernoulli score", &grad, &expected, 1e-8);
    }
}

/// The Poisson pmf `λ^k e^{−λ}/k!` for `k = 0..=max`, by the product formula.
fn poisson_pmf(lambda: f64, max: usize) -> Vec<f64> {
    (0..=max)
        .map(|k| {
            let log_fact: f64 = (1..=k).map(|i| (i as f64).ln()).sum();
            (k as f64 * lambda.ln() - lambda - log_fact).exp()
        })
        .collect()
}

#[test]
fn gengs_hard_poisson_samples_follow_the_truncated_pmf() {
    let lambda: f64 = 3.0;
    let l = layer("layer l: poisson(max = auto) { estimator: straight_through }");
    let theta = array![lambda.ln()].into_dyn();
    let n = 100_000;
    let fwd = l
        .try_forward(theta.view(), &Options::default().seed(41).samples(n))
        .unwrap();
    // `auto` picks the smallest K whose dropped tail is below 1e-6.
    let k = fwd.report.values["truncation_k"] as usize;
    let tail = |k: usize| 1.0 - poisson_pmf(lambda, k).iter().sum::<f64>();
    assert!(tail(k) < 1e-6 && tail(k - 1) >= 1e-6, "K = {k}");
    let pmf = poisson_pmf(lambda, k);
    let total: f64 = pmf.iter().sum();
    let q: Vec<f64> = pmf.iter().map(|p| p / total).collect();
    let mean: f64 = q.iter().enumerate().map(|(i, p)| i as f64 * p).sum();
    let var: f64 = q
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 - mean).powi(2) * p)
        .sum();
    let z: Vec<f64> = fwd.z.iter().copied().collect();
    let sample_mean = z.iter().sum::<f64>() / n as f64;
    assert!(
        (sample_mean - mean).abs() <= 4.0 * (var / n as f64).sqrt(),
        "{sample_mean} vs {mean}"
    );
    for (count, &qk) in q.iter().enumerate().take(8) {
        let freq = z.iter().filter(|&&x| x == count as f64).count() as f64 / n as f64;
        assert!(
            (freq - qk).abs() <= 4.0 * (qk * (1.0 - qk) / n as f64).sqrt(),
            "P({count}) {freq} vs {qk}"
        );
    }
}

/// The relaxed Poisson count `Σ k·softmax((ℓ(θ) + G)/T)_k` with `ℓ` the truncated log-pmf.
fn relaxed_count(theta: f64, max: usize, gumbels: &[f64], t: f64) -> f64 {
    let pmf = poisson_pmf(theta.exp(), max);
    let total: f64 = pmf.iter().sum();
    let x: Vec<f64> = pmf
        .iter()
        .zip(gumbels)
        .map(|(p, g)| ((p / total).ln() + g) / t)
        .collect();
    expected_count(&x)
}

#[test]
fn gengs_relaxed_gradient_matches_the_derivative_of_the_expected_relaxed_count() {
    let (max, t, theta0) = (12, 0.5, 2f64.ln());
    let l = layer(&format!(
        "layer l: poisson(max = {max}) {{ temperature: {t} }}"
    ));
    let n = 50_000;
    let rows = grads_soft(&l, theta0, n, 51);
    let (mean, var) = moments(&rows);
    // Independent: central differences of the Monte Carlo E[z_T(θ)] with common random numbers.
    let mut rng = Rng(7);
    let (m, h) = (200_000, 1e-5);
    let quotients: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            let g: Vec<f64> = (0..=max).map(|_| -(-rng.unit().ln()).ln()).collect();
            vec![
                (relaxed_count(theta0 + h, max, &g, t) - relaxed_count(theta0 - h, max, &g, t))
                    / (2.0 * h),
            ]
        })
        .collect();
    let (mc_mean, mc_var) = moments(&quotients);
    assert_means_agree("d E[z_T]/dθ", (&mean, &var, n), (&mc_mean, &mc_var, m));
}

/// Per-sample relaxed gradients of `z` for a one-entry θ.
fn grads_soft(l: &Layer, theta: f64, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let opts = Options::default().seed(seed).samples(n).mode(Mode::Soft);
    let fwd = l
        .try_forward(array![theta].into_dyn().view(), &opts)
        .unwrap();
    let g = l.try_backward(&fwd, array![1.0].into_dyn().view()).unwrap();
    g.iter().map(|x| vec![*x]).collect()
}

/// The GenGS gradient's bias against the exact `d E[X]/dθ` vanishes with T: at T = 1 the
/// relaxation's mean gradient is more than 4 standard errors from the exact value (the test
/// can see a bias), at T = 0.3 and 0.1 it is within 4 standard errors (100 000 samples each;
/// an ordering of the three errors is not asserted: at T = 0.1 the per-sample variance grows
/// like 1/T and its standard error exceeds the bias at T = 1).
#[test]
fn gengs_gradient_tends_to_the_exact_derivative_as_t_vanishes() {
    // d E[X]/dθ for the truncated Poisson with θ = log λ is Var_q[X] (≈ λ when little mass is cut).
    let (max, lambda) = (20, 2.0f64);
    let pmf = poisson_pmf(lambda, max);
    let total: f64 = pmf.iter().sum();
    let mean: f64 = pmf
        .iter()
        .enumerate()
        .map(|(k, p)| k as f64 * p / total)
        .sum();
    let exact: f64 = pmf
        .iter()
        .enumerate()
        .map(|(k, p)| (k as f64 - mean).powi(2) * p / total)
        .sum();
    let mut errors = Vec::new();
    for (t, seed) in [(1.0, 61), (0.3, 62), (0.1, 63)] {
        let l = layer(&format!(
            "layer l: poisson(max = {max}) {{ temperature: {t} }}"
        ));
        let rows = grads_soft(&l, lambda.ln(), 100_000, seed);
        let (m, v) = moments(&rows);
        errors.push((
            (m[0] - exact).abs(),
            4.0 * (v[0] / rows.len() as f64).sqrt(),
        ));
    }
    assert!(
        errors[0].0 > errors[0].1,
        "at T = 1 the relaxation is visibly biased: {errors:?}"
    );
    for (t, (error, four_se)) in [0.3, 0.1].iter().zip(&errors[1..]) {
        assert!(
            error <= four_se,
            "at T = {t} the bias is below the resolution: {errors:?} vs {exact}"
        );
    }
}

/// `P(gap < δ)` under Gumbel-max on the logits `ℓ`, the gap being the largest `ℓ_k + G_k`
/// minus the second largest: for `δ > 0` the events "`k` leads every other by at least `δ`"
/// are disjoint, and each is Gumbel-max on `ℓ` with `ℓ_k` lowered by `δ` returning `k`, so
/// `P(gap ≥ δ) = Σ_k e^{ℓ_k − δ} / (e^{ℓ_k − δ} + Σ_{j≠k} e^{ℓ_j})`.
fn gap_below(logits: &[f64], delta: f64) -> f64 {
    let e: Vec<f64> = logits.iter().map(|l| l.exp()).collect();
    let total: f64 = e.iter().sum();
    let lead: f64 = e
        .iter()
        .map(|&ek| ek * (-delta).exp() / (ek * (-delta).exp() + total - ek))
        .sum();
    1.0 - lead
}

/// At T = 0.001 the relaxed Poisson counts are near integers and the rounded counts follow the
/// truncated pmf. With `K + 1` outcomes and the hard count `k*`,
/// `|z_T − k*| ≤ Σ_{j≠k*} |j − k*|·softmax_j ≤ K²·e^{−gap/T}`, so `|z_T − k*| < ε` whenever the
/// Gumbel-max gap exceeds `T·ln(K²/ε)`: the fraction of counts farther than 0.01 from an
/// integer is at most `P(gap < T·ln(100K²))` (computed exactly by [`gap_below`]) plus 4 of its
/// standard errors, and the rounded count differs from the hard one on at most a fraction
/// `p = P(gap < T·ln(2K²))` (+ 4 SE), which is added to the 4-SE tolerance of each frequency.
#[test]
fn gengs_relaxed_counts_tend_to_the_pmf_as_t_vanishes() {
    let (lambda, max, t): (f64, usize, f64) = (2.5, 15, 0.001);
    let l = layer("layer l: poisson(max = 15) { temperature: 0.001 }");
    let n = 50_000;
    let fwd = l
        .try_forward(
            array![lambda.ln()].into_dyn().view(),
            &Options::default().seed(71).samples(n),
        )
        .unwrap();
    let pmf = poisson_pmf(lambda, max);
    let total: f64 = pmf.iter().sum();
    let logits: Vec<f64> = pmf.iter().map(|p| (p / total).ln()).collect();
    let k2 = (max * max) as f64;
    let binomial_bound = |p: f64| p + 4.0 * (p * (1.0 - p) / n as f64).sqrt();
    let z: Vec<f64> = fwd.z.iter().copied().collect();
    let far = z.iter().filter(|x| (*x - x.round()).abs() >= 1e-2).count() as f64 / n as f64;
    let far_bound = binomial_bound(gap_below(&logits, t * (100.0 * k2).ln()));
    assert!(
        far <= far_bound,
        "{far} of the counts are not near an integer (bound {far_bound})"
    );
    let misrounded = binomial_bound(gap_below(&logits, t * (2.0 * k2).ln()));
    for (k, p) in pmf.iter().enumerate().take(6) {
        let qk = p / total;
        let freq = z.iter().filter(|x| x.round() == k as f64).count() as f64 / n as f64;
        let tolerance = 4.0 * (qk * (1.0 - qk) / n as f64).sqrt() + misrounded;
        assert!(
            (freq - qk).abs() <= tolerance,
            "P({k}) {freq} vs {qk} (tolerance {tolerance})"
        );
    }
}

#[test]
fn a_truncation_that_drops_too_much_mass_is_reported() {
    let l = layer("layer l: poisson(max = 3)");
    let fwd = l
        .try_forward(array![5f64.ln()].into_dyn().view(), &Options::default())
        .unwrap();
    let dropped = 1.0 - poisson_pmf(5.0, 3).iter().sum::<f64>();
    assert!((fwd.report.values["dropped_mass"] - dropped).abs() < 1e-12);
    assert!(
        fwd.report
            .warnings
            .iter()
            .any(|w| w.contains("K = 3") && w.contains("max")),
        "{:?}",
        fwd.report.warnings
    );
    let fine = l
        .try_forward(array![-3.0].into_dyn().view(), &Options::default())
        .unwrap();
    assert!(fine.report.warnings.is_empty());
}

#[test]
fn count_pmfs_match_their_closed_forms() {
    // With noise none and T → 0 the hard count is the mode; with noise none the scores w are the
    // truncated log-pmf: compare each family with its closed form.
    let p = sigmoid(0.4);
    let choose = |n: f64, k: f64| -> f64 {
        let lg = |x: f64| (1..=(x as usize)).map(|i| (i as f64).ln()).sum::<f64>();
        (lg(n) - lg(k) - lg(n - k)).exp()
    };
    let cases: Vec<(&str, Vec<f64>)> = vec![
        (
            "binomial(trials = 5)",
            (0..=5)
                .map(|k| choose(5.0, k as f64) * p.powi(k) * (1.0 - p).powi(5 - k))
                .collect(),
        ),
        (
            "geometric(max = 6)",
            (0..=6).map(|k| (1.0 - p).powi(k) * p).collect(),
        ),
        (
            "negative_binomial(r = 3, max = 6)",
            (0..=6)
                .map(|k| choose(k as f64 + 2.0, k as f64) * (1.0 - p).powi(k) * p.powi(3))
                .collect(),
        ),
        ("poisson(max = 6)", poisson_pmf(0.4f64.exp(), 6)),
    ];
    for (support, pmf) in cases {
        let l = layer(&format!("layer l: {support}"));
        let fwd = l
            .try_forward(
                array![0.4].into_dyn().view(),
                &Options::default().noise(Noise::None),
            )
            .unwrap();
        let total: f64 = pmf.iter().sum();
        assert_eq!(fwd.w.len(), pmf.len(), "{support}");
        for (w, p) in fwd.w.iter().zip(&pmf) {
            assert!(
                (w - (p / total).ln()).abs() < 1e-10,
                "{support}: {w} vs {}",
                (p / total).ln()
            );
        }
    }
}

#[test]
fn estimators_and_count_arguments_are_checked_at_compile_time() {
    let cases = [
        (
            "layer l: poisson(max = auto) { estimator: gumbel_rao }",
            "not available for poisson",
        ),
        (
            "layer l: poisson { estimator: reinforce }",
            "not available for poisson",
        ),
        (
            "layer l: categorical(3) { noise: gaussian; estimator: gumbel_rao }",
            "needs `noise: gumbel`",
        ),
        (
            "layer l: bernoulli(3) { noise: neg_exponential; estimator: reinforce }",
            "needs `noise: gumbel`",
        ),
        (
            "layer l: categorical(3) { estimator: reinforce(baseline = loo) }",
            "cannot be `loo`",
        ),
        ("layer l: binomial(trials = 0)", "integer ≥ 1"),
        ("layer l: negative_binomial(r = 0)", "number > 0"),
        ("layer l: poisson(max = 0)", "integer ≥ 1 or `auto`"),
        (
            "layer l: geometric(max = automatic)",
            "cannot be `automatic`",
        ),
        (
            "layer l: categorical(3) { estimator: gumbel_rao(draws = 0) }",
            "integer from 1 to 10000",
        ),
    ];
    for (spec, expected) in cases {
        match sst::compile(spec) {
            Err(sst::Error::Compile(e)) => {
                assert!(
                    e.diagnostics.iter().any(|d| d.message.contains(expected)),
                    "{spec}: {e}"
                )
            }
            other => panic!(
                "{spec}: expected a compile error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    let l = layer("layer l: categorical(3) { estimator: gumbel_rao }");
    let err = l
        .try_forward(
            array![0.0, 1.0, 2.0].into_dyn().view(),
            &Options::default().noise(Noise::None),
        )
        .unwrap_err();
    assert_eq!(err.field, "noise");
}
