//! sst layers inside candle graphs (feature `candle`): the gradient that reaches `θ` through
//! the op is the layer's own backward, for every registered support and every estimator it
//! offers, in f32 and f64; through a linear model the chain rule carries it to the weights; the
//! REINFORCE surrogate gives the score-function gradient; several samples sum their
//! gradients (with per-sample cotangents); bad inputs are errors, not panics.
#![cfg(feature = "candle")]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{estimator_specs, layer, Rng};
use ndarray::ArrayD;
use sst::autodiff::candle::{apply, sample};
use sst::support::REGISTRY;
use sst::{Layer, Options};

/// `θ` with a batch axis of 3 rows, the cotangent, both f64 in [−1.5, 1.5].
fn inputs(l: &Layer, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut shape = vec![3];
    shape.extend(l.plan().support.shape());
    (rng.array(&shape, -1.5, 1.5), rng.array(&shape, -1.0, 1.0))
}

fn tensor(a: &ArrayD<f64>, dtype: DType) -> Tensor {
    let t = Tensor::from_vec(a.iter().copied().collect(), a.shape(), &Device::Cpu).unwrap();
    t.to_dtype(dtype).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// For every support × estimator × precision: `z` from the graph equals the layer's forward,
/// and `∂⟨c, z⟩/∂θ` from `backward()` equals the layer's backward (for REINFORCE, the surrogate
/// of the losses `⟨c, z⟩` per row, which is what the layer's backward computes for them).
#[test]
fn gradients_through_candle_are_the_layers_backward() {
    let mut rng = Rng(1);
    let mut checked = 0;
    for entry in REGISTRY {
        let support = (entry.random_instance)(3);
        for spec in estimator_specs(&support, "reinforce(baseline = leave_one_out)") {
            for dtype in [DType::F32, DType::F64] {
                let l = layer(&spec);
                let (theta, cot) = inputs(&l, &mut rng);
                let opts = Options::default().seed(11);
                let var = Var::from_tensor(&tensor(&theta, dtype)).unwrap();
                let s = sample(&l, var.as_tensor(), &opts).unwrap();
                let c = tensor(&cot, dtype);
                let mut loss = (&s.z * &c).unwrap().sum_all().unwrap();
                let reinforce = spec.contains("reinforce");
                if reinforce {
                    let row_axes: Vec<usize> = (1..cot.ndim()).collect();
                    let per_row = (&s.z * &c).unwrap().sum(row_axes).unwrap();
                    loss = (loss + s.surrogate(&per_row).unwrap()).unwrap();
                }
                let grads = loss.backward().unwrap();
                let got = values(grads.get(var.as_tensor()).expect("θ has a gradient"));

                // The same request and cotangent through the layer itself (a fresh layer, so
                // that no state is shared), in the same precision.
                let reference = layer(&spec);
                let (z, want) = match dtype {
                    DType::F32 => {
                        let t = theta.mapv(|x| x as f32);
                        let fwd = reference.forward(t.view(), &opts);
                        let g = reference.backward(&fwd, cot.mapv(|x| x as f32).view());
                        (fwd.z.mapv(f64::from), g.mapv(f64::from))
                    }
                    _ => {
                        let fwd = reference.forward(theta.view(), &opts);
                        let g = reference.backward(&fwd, cot.view());
                        (fwd.z, g)
                    }
                };
                assert_eq!(
                    values(&s.z),
                    z.iter().copied().collect::<Vec<_>>(),
                    "{spec} {dtype:?}"
                );
                let want: Vec<f64> = want.iter().copied().collect();
                let scale = want.iter().fold(1.0, |m: f64, x| m.max(x.abs()));
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 } * scale;
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= tol,
                        "{spec} {dtype:?}: {got:?} vs {want:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 2 * REGISTRY.len(), "{checked} combinations");
}

/// `θ = x·W` in candle, then the layer, then `⟨c, z⟩`: the weights' gradient is `xᵀ·∂L/∂θ`
/// with `∂L/∂θ` the layer's backward (the chain rule through candle's own matmul).
#[test]
fn the_chain_rule_reaches_the_weights_of_a_linear_model() {
    let mut rng = Rng(2);
    let l = layer("layer l: subset(6, 2) { temperature: 0.5 }");
    let x = rng.array(&[4, 3], -1.0, 1.0);
    let w = rng.array(&[3, 6], -1.0, 1.0);
    let cot = rng.array(&[4, 6], -1.0, 1.0);
    let opts = Options::default().seed(5);
    let wv = Var::from_tensor(&tensor(&w, DType::F64)).unwrap();
    let theta = tensor(&x, DType::F64).matmul(wv.as_tensor()).unwrap();
    let z = apply(&l, &theta, &opts).unwrap();
    let loss = (&z * &tensor(&cot, DType::F64)).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let got = values(grads.get(wv.as_tensor()).unwrap());

    let theta = x.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    let theta = theta.dot(&w.clone().into_dimensionality::<ndarray::Ix2>().unwrap());
    let fwd = l.forward(theta.clone().into_dyn().view(), &opts);
    let g = l.backward(&fwd, cot.view());
    let g = g.into_dimensionality::<ndarray::Ix2>().unwrap();
    let x2 = x.into_dimensionality::<ndarray::Ix2>().unwrap();
    let want = x2.t().dot(&g);
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-12, "{got:?} vs {want}");
    }
}

/// Several samples: `z` gains a leading samples axis; the gradient reaching `θ` is the sum over
/// the samples of the layer's backward for each sample's own cotangent (checked one sample at a
/// time against a layer call with that sample's cotangent broadcast), and REINFORCE with
/// `leave_one_out` gets the other samples of its row as baseline.
#[test]
fn several_samples_sum_their_gradients() {
    let mut rng = Rng(4);
    for spec in [
        "layer l: subset(5, 2) { temperature: 0.6 }",
        "layer l: categorical(4) { estimator: reinforce(baseline = leave_one_out) }",
    ] {
        let l = layer(spec);
        let n = l.plan().support.shape()[0];
        let (samples, rows) = (3, 2);
        let theta = rng.array(&[rows, n], -1.0, 1.0);
        let cot = rng.array(&[samples, rows, n], -1.0, 1.0);
        let opts = Options::default().seed(9).samples(samples);
        let var = Var::from_tensor(&tensor(&theta, DType::F64)).unwrap();
        let s = sample(&l, var.as_tensor(), &opts).unwrap();
        assert_eq!(s.z.dims(), &[samples, rows, n]);
        let c = tensor(&cot, DType::F64);
        let mut loss = (&s.z * &c).unwrap().sum_all().unwrap();
        if spec.contains("reinforce") {
            let per_row = (&s.z * &c).unwrap().sum(2).unwrap();
            loss = (loss + s.surrogate(&per_row).unwrap()).unwrap();
        }
        let got = values(&grads_of(&loss, &var));

        let reference = layer(spec);
        let fwd = reference.forward(theta.view(), &opts);
        let per_sample = reference.backward(&fwd, cot.view());
        let want: Vec<f64> = per_sample
            .sum_axis(ndarray::Axis(0))
            .iter()
            .copied()
            .collect();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{spec}: {got:?} vs {want:?}");
        }
        if spec.contains("reinforce") {
            continue; // leave-one-out ties each sample's weight to the others' losses
        }
        // Each sample's gradient is that sample's own: a cotangent that is zero but for sample
        // 0 gives sample 0's block of the per-sample result and zeros elsewhere.
        let mut only_first = cot.clone();
        only_first.slice_mut(ndarray::s![1.., .., ..]).fill(0.0);
        let g = reference.backward(&fwd, only_first.view());
        assert!(g.slice(ndarray::s![1.., .., ..]).iter().all(|&x| x == 0.0));
        assert_eq!(
            g.slice(ndarray::s![0, .., ..]),
            per_sample.slice(ndarray::s![0, .., ..]),
            "{spec}"
        );
    }
}

fn grads_of(loss: &Tensor, var: &Var) -> Tensor {
    loss.backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .clone()
}

/// The temperature schedule follows the step the caller passes: the same θ and seed at a later
/// step of `max(0.1, exp(−step/100))` give a sharper (larger maximum) softmax.
#[test]
fn the_schedule_follows_the_step() {
    let l = layer("layer l: categorical(5) { temperature: max(0.1, exp(-step / 100)) }");
    let theta = tensor(
        &ArrayD::from_shape_vec(vec![5], vec![0.3, -0.2, 0.5, 0.0, 0.1]).unwrap(),
        DType::F64,
    );
    let at = |step: f64| {
        let z = apply(&l, &theta, &Options::default().seed(1).step(step)).unwrap();
        values(&z).into_iter().fold(0.0, f64::max)
    };
    assert!(at(300.0) > at(0.0) + 0.05, "{} vs {}", at(300.0), at(0.0));
}

/// Wrong dtypes, shapes, several samples and strided tensors are errors naming the field.
#[test]
fn bad_inputs_are_errors_not_panics() {
    let l = layer("layer l: categorical(4)");
    let ints = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
    let err = apply(&l, &ints, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("theta") && err.contains("f32 or f64"), "{err}");
    let wrong = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let err = apply(&l, &wrong, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("theta") && err.contains("expected shape"),
        "{err}"
    );
    let ok = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let err = apply(&l, &ok, &Options::default().samples(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("samples"), "{err}");
    let strided = Tensor::zeros((4, 2), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    let err = apply(&l, &strided, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("contiguous"), "{err}");
}
