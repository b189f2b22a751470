//! sst layers on dfdx tapes (feature `dfdx`): the gradient that reaches `θ` through
//! `sst::autodiff::dfdx::apply` is the layer's own backward, for every registered support and
//! every estimator it offers, in f32 and f64 (REINFORCE through the surrogate on the loss's
//! tape); a linear model's weights get it by dfdx's own chain rule.
#![cfg(feature = "dfdx")]

mod common;

use common::{estimator_specs, layer, Rng};
use dfdx::prelude::*;
use ndarray::ArrayD;
use sst::autodiff::dfdx::{apply, sample};
use sst::support::REGISTRY;
use sst::{Options, Real};

/// `∂⟨c, z⟩/∂θ` through dfdx for `θ` and `c` of `shape` in precision `$e` (REINFORCE: plus the
/// surrogate of the per-row losses `⟨c, z⟩`), and `z`.
macro_rules! through_dfdx {
    ($e:ty, $l:expr, $shape:expr, $theta:expr, $cot:expr, $opts:expr, $reinforce:expr) => {{
        let dev: Cpu = Default::default();
        let cast = |v: &[f64]| v.iter().map(|&x| x as $e).collect::<Vec<$e>>();
        let t = dev.tensor_from_vec(cast($theta), $shape);
        let c = dev.tensor_from_vec(cast($cot), $shape);
        let (z, surrogate) = sample($l, t.leaky_trace(), $opts).expect("forward");
        let z_values: Vec<f64> = z.as_vec().iter().map(|&x| x as f64).collect();
        let (loss, mut tape) = (z * c).sum::<Rank0, _>().split_tape();
        if $reinforce {
            let row = $l.plan().program.row_len;
            let cot = cast($cot);
            let losses: Vec<f64> = z_values
                .chunks(row)
                .zip(cot.chunks(row))
                .map(|(z, c)| z.iter().zip(c).map(|(a, &b)| a * b as f64).sum())
                .collect();
            surrogate.add_to(&mut tape, losses, 1.0);
        }
        let grads = loss.put_tape(tape).backward();
        let g: Vec<f64> = grads.get(&t).as_vec().iter().map(|&x| x as f64).collect();
        (g, z_values)
    }};
}

/// The layer's own forward and backward for the same request, in precision `E`.
fn reference<E: Real>(
    spec: &str,
    theta: &ArrayD<f64>,
    cot: &ArrayD<f64>,
    opts: &Options,
) -> (Vec<f64>, Vec<f64>) {
    let l = layer(spec);
    let t = theta.mapv(E::of);
    let fwd = l.forward(t.view(), opts);
    let g = l.backward(&fwd, cot.mapv(E::of).view());
    (
        g.iter().map(|x| x.f64()).collect(),
        fwd.z.iter().map(|x| x.f64()).collect(),
    )
}

/// [`through_dfdx`] for a rank-2 or rank-3 `θ`, in f32 or f64.
fn run(
    spec: &str,
    theta: &ArrayD<f64>,
    cot: &ArrayD<f64>,
    opts: &Options,
    f32_run: bool,
) -> (Vec<f64>, Vec<f64>) {
    let l = layer(spec);
    let reinforce = spec.contains("reinforce");
    let (t, c) = (theta.as_slice().unwrap(), cot.as_slice().unwrap());
    match (theta.shape(), f32_run) {
        (&[a, b], true) => through_dfdx!(f32, &l, (a, b), t, c, opts, reinforce),
        (&[a, b], false) => through_dfdx!(f64, &l, (a, b), t, c, opts, reinforce),
        (&[a, b, d], true) => through_dfdx!(f32, &l, (a, b, d), t, c, opts, reinforce),
        (&[a, b, d], false) => through_dfdx!(f64, &l, (a, b, d), t, c, opts, reinforce),
        (other, _) => panic!("unexpected rank {other:?}"),
    }
}

#[test]
fn gradients_through_dfdx_are_the_layers_backward() {
    let mut rng = Rng(1);
    let mut checked = 0;
    for entry in REGISTRY {
        let support = (entry.random_instance)(3);
        for spec in estimator_specs(&support, "reinforce") {
            let mut shape = vec![3];
            shape.extend(support.shape());
            let theta = rng.array(&shape, -1.5, 1.5);
            let cot = rng.array(&shape, -1.0, 1.0);
            let opts = Options::default().seed(11);
            for f32_run in [true, false] {
                let (got, z) = run(&spec, &theta, &cot, &opts, f32_run);
                let ((want, z_want), tol) = match f32_run {
                    true => (reference::<f32>(&spec, &theta, &cot, &opts), 1e-5),
                    false => (reference::<f64>(&spec, &theta, &cot, &opts), 1e-12),
                };
                assert_eq!(z, z_want, "{spec}");
                let scale = want.iter().fold(1.0, |m: f64, x| m.max(x.abs()));
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= tol * scale,
                        "{spec} f32 {f32_run}: {got:?} vs {want:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 2 * REGISTRY.len(), "{checked}");
}

/// `θ = W·x` by dfdx's matmul (the weights on the left, where dfdx keeps the tape), the layer,
/// `⟨c, z⟩`: `W`'s gradient is `∂L/∂θ·xᵀ` with the layer's own `∂L/∂θ`.
#[test]
fn the_chain_rule_reaches_the_weights_of_a_linear_model() {
    let mut rng = Rng(2);
    let l = layer("layer l: subset(6, 2) { temperature: 0.5 }");
    let w = rng.array(&[4, 3], -1.0, 1.0);
    let x = rng.array(&[3, 6], -1.0, 1.0);
    let cot = rng.array(&[4, 6], -1.0, 1.0);
    let opts = Options::default().seed(5);
    let dev: Cpu = Default::default();
    let wt = dev.tensor_from_vec(w.iter().copied().collect::<Vec<f64>>(), (4, 3));
    let xt = dev.tensor_from_vec(x.iter().copied().collect::<Vec<f64>>(), (3, 6));
    let ct = dev.tensor_from_vec(cot.iter().copied().collect::<Vec<f64>>(), (4, 6));
    let theta = wt.leaky_trace().matmul(xt);
    let z = apply(&l, theta, &opts).unwrap();
    let grads = (z * ct).sum::<Rank0, _>().backward();
    let got = grads.get(&wt).as_vec();

    let (w2, x2) = (
        w.into_dimensionality::<ndarray::Ix2>().unwrap(),
        x.into_dimensionality::<ndarray::Ix2>().unwrap(),
    );
    let theta = w2.dot(&x2).into_dyn();
    let fwd = l.forward(theta.view(), &opts);
    let g = l
        .backward(&fwd, cot.view())
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let want = g.dot(&x2.t());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-12, "{got:?} vs {want}");
    }
}

/// A request error (wrong shape, several samples) comes back as an error, not a panic.
#[test]
fn bad_requests_are_errors() {
    let l = layer("layer l: categorical(4)");
    let dev: Cpu = Default::default();
    let wrong = dev.tensor_from_vec(vec![0.0f32; 6], (2, 3));
    let err = apply(&l, wrong, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("theta") && err.contains("expected shape"),
        "{err}"
    );
    let ok = dev.tensor_from_vec(vec![0.0f32; 8], (2, 4));
    let err = apply(&l, ok, &Options::default().samples(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("samples"), "{err}");
}
