//! Any number of leading batch axes on `θ` (issue 12, item 7): `θ` `[B₁, B₂, …, …shape]` is
//! the batch of its `B₁·B₂·…` rows taken row-major, and the noise is keyed by that flat row
//! index, so a `[2, 3, …shape]` request gives, bit for bit, the numbers of the `[6, …shape]`
//! request (itself checked elsewhere against brute force and closed forms), only shaped
//! `[N?, 2, 3, …]`: `z`, `w`, `∂L/∂θ` and the report, for every support in
//! `sst::support::REGISTRY`, hard and soft, under straight-through, Gumbel-Rao and REINFORCE
//! where the support has them; through `sst eval` too. A wrong shape is a one-line error naming
//! `theta` (or `cotangent`, `losses`) with the shape it expected.

mod common;

use common::cli::{code, run, text, TempDir};
use common::{layer, Rng};
use ndarray::{ArrayD, IxDyn};
use serde_json::{json, Value};
use sst::support::{SupportRef, REGISTRY};
use sst::Report;
use sst::{Layer, Mode, Options, Real};

/// The batch axes under test and their product, the rows of the flat request.
const AXES: [usize; 2] = [2, 3];
const ROWS: usize = 6;
const SAMPLES: usize = 2;

/// `[lead…, rest…]`.
fn dims(lead: &[usize], rest: &[usize]) -> Vec<usize> {
    [lead, rest].concat()
}

/// The bit patterns of an array's entries in row-major order, and its shape.
fn bits(a: &ArrayD<f64>) -> (Vec<usize>, Vec<u64>) {
    (a.shape().to_vec(), a.iter().map(|x| x.to_bits()).collect())
}

/// `a` (standard layout) with its shape replaced by `shape`.
fn reshaped(a: &ArrayD<f64>, shape: &[usize]) -> ArrayD<f64> {
    a.to_shape(IxDyn(shape)).unwrap().to_owned()
}

/// A forward and backward pass in precision `F`: `z`, `w`, `∂L/∂θ` widened to f64 (exact for
/// an f32), and the report.
fn outputs<F: Real>(
    l: &Layer,
    theta: &ArrayD<f64>,
    cot: &ArrayD<f64>,
    opts: &Options,
) -> ([ArrayD<f64>; 3], Report) {
    let (theta, cot) = (theta.mapv(F::of), cot.mapv(F::of));
    let fwd = l.try_forward(theta.view(), opts).unwrap();
    let grad = l.try_backward(&fwd, cot.view()).unwrap();
    let widen = |a: &ArrayD<F>| a.mapv(|x| x.f64());
    ([widen(&fwd.z), widen(&fwd.w), widen(&grad)], fwd.report)
}

/// Asserts, in precision `F`, that the request on `split` (`θ` and cotangent `[2, 3, …]`) gives
/// the outputs of the request on `flat` (`[6, …]`) with the batch axis split in two: shapes
/// `[N?, 2, 3, …]` against `[N?, 6, …]` and every bit, and the same report (its `Debug` text
/// writes every f64 so that it reads back to the same bits).
fn assert_split_of<F: Real>(
    what: &str,
    l: &Layer,
    flat: [&ArrayD<f64>; 2],
    split: [&ArrayD<f64>; 2],
    opts: &Options,
) {
    let (flat_out, flat_report) = outputs::<F>(l, flat[0], flat[1], opts);
    let (split_out, split_report) = outputs::<F>(l, split[0], split[1], opts);
    let lead: &[usize] = if opts.samples > 1 {
        &[opts.samples]
    } else {
        &[]
    };
    for ((name, f), s) in ["z", "w", "grad"].iter().zip(&flat_out).zip(&split_out) {
        let row = &f.shape()[lead.len() + 1..];
        let want = dims(&dims(lead, &AXES), row);
        assert_eq!(s.shape(), want, "{what}: shape of {name}");
        let merged = reshaped(s, f.shape());
        assert!(bits(f) == bits(&merged), "{what}: {name} differs");
    }
    assert_eq!(
        format!("{flat_report:?}"),
        format!("{split_report:?}"),
        "{what}: reports differ"
    );
}

/// The layers of `support` to compare, with the modes each is run in: its default soft solver
/// under `straight_through` (hard and soft), `gumbel_rao` and `reinforce` (hard) where the
/// support has them.
fn specs(support: &SupportRef) -> Vec<(String, Vec<Mode>)> {
    let d = support.describe();
    let mut out = vec![(
        format!("layer l: {d} {{ estimator: straight_through; temperature: 0.7 }}"),
        vec![Mode::Hard, Mode::Soft],
    )];
    if support.conditional_gumbel().is_some() {
        out.push((
            format!("layer l: {d} {{ estimator: gumbel_rao(draws = 3) }}"),
            vec![Mode::Hard],
        ));
    }
    if support.score_function().is_some() {
        out.push((
            format!("layer l: {d} {{ estimator: reinforce(baseline = leave_one_out) }}"),
            vec![Mode::Hard],
        ));
    }
    out
}

/// Every registered support: `[2, 3, …shape]` against `[6, …shape]`, one and two samples, in
/// both modes and both precisions.
#[test]
fn two_batch_axes_give_the_numbers_of_their_flat_batch() {
    let mut rng = Rng(0xBA7C4);
    for entry in REGISTRY {
        for seed in 0..2 {
            let support = (entry.random_instance)(seed);
            let shape = support.shape();
            let theta = rng.array(&dims(&[ROWS], &shape), -2.0, 2.0);
            let cot = rng.array(&dims(&[ROWS], &shape), -1.0, 1.0);
            let (theta2, cot2) = (
                reshaped(&theta, &dims(&AXES, &shape)),
                reshaped(&cot, &dims(&AXES, &shape)),
            );
            for (spec, modes) in specs(&support) {
                let l = layer(&spec);
                for mode in modes {
                    for samples in [1, SAMPLES] {
                        let opts = Options::default().seed(7).samples(samples).mode(mode);
                        let what = format!("{spec} | {mode:?}, {samples} samples");
                        let (flat, split) = ([&theta, &cot], [&theta2, &cot2]);
                        assert_split_of::<f64>(&format!("{what}, f64"), &l, flat, split, &opts);
                        assert_split_of::<f32>(&format!("{what}, f32"), &l, flat, split, &opts);
                    }
                }
            }
        }
    }
}

/// Three batch axes `[1, 2, 3]` and one `[6]` agree too, and a batch axis of length 1 keeps its
/// place in the output (`[1, 2, 3, n]`, not `[6, n]`).
#[test]
fn three_batch_axes_with_a_unit_axis_keep_their_shape() {
    let l = layer("layer l: subset(5, 2) { temperature: 0.5 }");
    let theta = Rng(31).array(&[ROWS, 5], -2.0, 2.0);
    let opts = Options::default().seed(3).samples(SAMPLES);
    let flat = l.try_forward(theta.view(), &opts).unwrap();
    let split = l
        .try_forward(reshaped(&theta, &[1, 2, 3, 5]).view(), &opts)
        .unwrap();
    assert_eq!(split.z.shape(), [SAMPLES, 1, 2, 3, 5]);
    assert_eq!(split.cotangent_shape, [1, 2, 3, 5]);
    assert!(bits(&flat.z) == bits(&reshaped(&split.z, &[SAMPLES, ROWS, 5])));
}

/// REINFORCE's losses are `[N, 2, 3]` for `θ` `[2, 3, n]`: the gradient is `[N, 2, 3, n]` and
/// equals, bit for bit, that of the flat `[N, 6]` losses on `[6, n]`; the flat losses on the
/// split forward pass are an error naming `losses` with the expected shape.
#[test]
fn reinforce_losses_carry_the_batch_axes() {
    let n = 4;
    let l = layer("layer l: categorical(4) { estimator: reinforce(baseline = leave_one_out) }");
    let mut rng = Rng(0x5C0E);
    let theta = rng.array(&[ROWS, n], -1.0, 1.0);
    let losses = rng.array(&[SAMPLES, ROWS], -1.0, 1.0);
    let opts = Options::default().seed(2).samples(SAMPLES);
    let flat_fwd = l.try_forward(theta.view(), &opts).unwrap();
    let split_fwd = l
        .try_forward(reshaped(&theta, &dims(&AXES, &[n])).view(), &opts)
        .unwrap();
    let flat = l.try_reinforce(&flat_fwd, losses.view()).unwrap();
    let split_losses = reshaped(&losses, &dims(&[SAMPLES], &AXES));
    let split = l.try_reinforce(&split_fwd, split_losses.view()).unwrap();
    assert_eq!(split.shape(), [SAMPLES, 2, 3, n]);
    assert!(bits(&flat) == bits(&reshaped(&split, &[SAMPLES, ROWS, n])));
    let err = l.try_reinforce(&split_fwd, losses.view()).unwrap_err();
    assert_eq!(err.field, "losses");
    assert!(err.message.contains("expected shape [2, 2, 3]"), "{err}");
}

/// Shapes that are not `[B₁, …, …shape]` with every `B_i ≥ 1` are one-line errors naming
/// `theta` and the expected shape; a cotangent without the batch axes names `cotangent`.
#[test]
fn a_wrong_shape_names_theta_and_the_expected_shape() {
    let l = layer("layer l: permutation(3)");
    for bad in [
        vec![3],
        vec![3, 2],
        vec![2, 3, 2],
        vec![2, 2, 3],
        vec![0, 3, 3],
        vec![2, 0, 3, 3],
    ] {
        let theta = ArrayD::<f64>::zeros(IxDyn(&bad));
        let err = l
            .try_forward(theta.view(), &Options::default())
            .unwrap_err();
        assert_eq!(err.field, "theta", "{bad:?}: {err}");
        let message = err.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.contains("expected shape [3, 3] or [B, 3, 3]")
                && message.contains("[B₁, B₂, …, 3, 3]")
                && message.contains(&format!("found {bad:?}")),
            "{message}"
        );
    }
    let theta = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 3, 3]));
    let fwd = l.try_forward(theta.view(), &Options::default()).unwrap();
    let cot = ArrayD::<f64>::zeros(IxDyn(&[6, 3, 3]));
    let err = l.try_backward(&fwd, cot.view()).unwrap_err();
    assert_eq!(err.field, "cotangent");
    assert!(err.message.contains("expected shape [2, 3, 3, 3]"), "{err}");
}

/// `sst eval` on a count layer with `θ` `[2, 3, 1]`: `z`, `grad_theta` and the ragged `w`
/// (each row `K_b + 1` long) are the `[6, 1]` response's, nested by the batch axes.
#[test]
fn eval_nests_the_response_by_the_batch_axes() {
    let dir = TempDir::new();
    let path = dir.write(
        "counts.sst",
        "layer c: poisson(max = auto) { temperature: 0.5 }\n",
    );
    let path = path.to_str().unwrap();
    let eval = |request: Value| -> Value {
        let out = run(&["eval", path], &request.to_string());
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rates = [0.5f64, 1.0, 2.0, 4.0, 8.0, 16.0];
    let theta: Vec<Value> = rates.iter().map(|r| json!([r.ln()])).collect();
    let cot: Vec<Value> = (0..ROWS).map(|b| json!([b as f64 - 2.5])).collect();
    let request = |theta: Value, cot: Value| {
        json!({"theta": theta, "cotangent": cot, "samples": SAMPLES, "with_w": true,
               "noise": {"seed": 4}})
    };
    let flat = eval(request(json!(theta), json!(cot)));
    let nest = |rows: &[Value]| json!([rows[..3], rows[3..]]);
    let split = eval(request(nest(&theta), nest(&cot)));
    for field in ["z", "grad_theta", "w"] {
        for s in 0..SAMPLES {
            let rows = flat[field][s].as_array().unwrap();
            assert_eq!(split[field][s], nest(rows), "{field}, sample {s}");
        }
    }
    let w_lens: Vec<usize> = (0..ROWS)
        .map(|b| split["w"][0][b / 3][b % 3].as_array().unwrap().len())
        .collect();
    assert!(w_lens.windows(2).any(|p| p[0] != p[1]), "{w_lens:?}");
    assert_eq!(split["diagnostics"], flat["diagnostics"]);
}

/// With several samples the cotangent may be shaped like `z`, one per sample (what a tape
/// brings): sample `s`'s gradient is then the one the shared-cotangent call gives for that
/// sample's cotangent, for every support (Gumbel-Rao where the support has it), bit for bit; and
/// a cotangent of neither shape names both.
#[test]
fn a_cotangent_per_sample_gives_each_sample_its_own_gradient() {
    let mut rng = Rng(21);
    for entry in REGISTRY {
        let support = (entry.random_instance)(5);
        let estimator = match support.conditional_gumbel() {
            Some(_) => "gumbel_rao(draws = 2)",
            None => "straight_through",
        };
        let l = layer(&format!(
            "layer l: {} {{ estimator: {estimator} }}",
            support.describe()
        ));
        let theta = rng.array(&dims(&[ROWS], &support.shape()), -1.0, 1.0);
        let opts = Options::default().seed(4).samples(SAMPLES);
        let fwd = l.forward(theta.view(), &opts);
        let cot = rng.array(fwd.z.shape(), -1.0, 1.0);
        let per_sample = l.backward(&fwd, cot.view());
        for s in 0..SAMPLES {
            let shared = l.backward(&fwd, cot.index_axis(ndarray::Axis(0), s));
            assert_eq!(
                bits(&per_sample.index_axis(ndarray::Axis(0), s).to_owned()),
                bits(&shared.index_axis(ndarray::Axis(0), s).to_owned()),
                "{}",
                support.describe()
            );
        }
    }
    let l = layer("layer l: categorical(3)");
    let fwd = l.forward(
        rng.array(&[2, 3], -1.0, 1.0).view(),
        &Options::default().samples(2),
    );
    let err = l
        .try_backward(&fwd, rng.array(&[3, 2, 3], -1.0, 1.0).view())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cotangent") && err.contains("[2, 3]") && err.contains("[2, 2, 3]"),
        "{err}"
    );
}
