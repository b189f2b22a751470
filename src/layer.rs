//! A compiled layer: forward (hard or soft samples) and backward (`∂L/∂θ` for a cotangent) on
//! ndarray arrays, with an optional leading batch axis and a samples axis.
//!
//! Shapes: `θ` is `[B?, …shape]`; `z` and `w` are `[N?, B?, …shape]` where the samples axis `N`
//! appears only when more than one sample is asked for; the cotangent is shaped like `z`
//! without the samples axis, and `∂L/∂θ` like `z`.

use std::fmt;

use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn};

use crate::grad::finite_diff;
use crate::noise::{NoiseKey, Perturbation};
use crate::plan::{Backward, Mode, Plan};
use crate::real::Real;
use crate::support::{Report, Solve};

/// A layer of a compiled spec.
#[derive(Clone)]
pub struct Layer {
    plan: Plan,
}

/// Where the noise of a forward pass comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noise {
    /// `w = θ`, whatever perturbation the spec declares.
    None,
    /// Counter-based noise keyed by `(seed, sample, batch row, element)`: the same seed gives
    /// the same sample on every platform, batch split and thread count.
    Seed(u64),
}

impl Noise {
    /// A fresh seed drawn from `rng`, for host programs that keep their own generator.
    pub fn from_rng(rng: &mut impl rand::Rng) -> Noise {
        Noise::Seed(rng.next_u64())
    }
}

/// How to run a forward pass. `Options::default()`: the estimator's mode, seed 0, the spec's
/// temperature at step 0, one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// `None`: soft for `relaxed`, hard otherwise.
    pub mode: Option<Mode>,
    pub noise: Noise,
    /// Overrides the spec's temperature.
    pub temperature: Option<f64>,
    /// The training step at which the temperature schedule is evaluated.
    pub step: f64,
    /// Number of independent samples `N ≥ 1`.
    pub samples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: None,
            noise: Noise::Seed(0),
            temperature: None,
            step: 0.0,
            samples: 1,
        }
    }
}

impl Options {
    pub fn mode(self, mode: Mode) -> Self {
        Options {
            mode: Some(mode),
            ..self
        }
    }
    pub fn seed(self, seed: u64) -> Self {
        Options {
            noise: Noise::Seed(seed),
            ..self
        }
    }
    pub fn noise(self, noise: Noise) -> Self {
        Options { noise, ..self }
    }
    pub fn temperature(self, temperature: f64) -> Self {
        Options {
            temperature: Some(temperature),
            ..self
        }
    }
    pub fn step(self, step: f64) -> Self {
        Options { step, ..self }
    }
    pub fn samples(self, samples: usize) -> Self {
        Options { samples, ..self }
    }
}

/// A bad request: the layer, the field, and what is wrong, on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    pub layer: String,
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layer `{}`: {}: {}",
            self.layer, self.field, self.message
        )
    }
}

impl std::error::Error for RequestError {}

/// The result of a forward pass, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct Forward<F> {
    /// The output: hard `z` or soft `z_T`, `[N?, B?, …shape]`.
    pub z: ArrayD<F>,
    /// The perturbed parameters that were used, shaped like `z`.
    pub w: ArrayD<F>,
    pub mode: Mode,
    /// The temperature used.
    pub temperature: f64,
    /// What the solvers reported (merged over samples and batch rows).
    pub report: Report,
    /// The perturbation actually applied (`none` when the request asked for no noise).
    pub noise: Perturbation,
    /// The shape of the cotangent a backward pass takes: `[B?, …shape]`.
    pub cotangent_shape: Vec<usize>,
    samples: usize,
}

impl Layer {
    pub(crate) fn new(plan: Plan) -> Layer {
        Layer { plan }
    }

    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// What the checker decided for this layer.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn error(&self, field: &'static str, message: impl Into<String>) -> RequestError {
        RequestError {
            layer: self.plan.name.clone(),
            field,
            message: message.into(),
        }
    }

    /// The temperature of a request: the override, or the schedule at `step`; must be > 0.
    pub fn try_temperature(&self, opts: &Options) -> Result<f64, RequestError> {
        let t = match opts.temperature {
            Some(t) => t,
            None => self.plan.temperature.eval(opts.step),
        };
        if t > 0.0 && t.is_finite() {
            Ok(t)
        } else {
            let source = match opts.temperature {
                Some(_) => String::new(),
                None => format!(" (the spec's schedule at step {})", opts.step),
            };
            Err(self.error(
                "temperature",
                format!("must be a finite number > 0, found {t}{source}"),
            ))
        }
    }

    /// Checks `θ`'s shape (`shape` or `[B, …shape]`) and values; returns the batch size, or
    /// `None` when there is no batch axis.
    fn check_theta<F: Real>(&self, theta: &ArrayViewD<F>) -> Result<Option<usize>, RequestError> {
        let shape = self.plan.support.shape();
        let dims = theta.shape();
        let batch = if dims == shape.as_slice() {
            None
        } else if dims.len() == shape.len() + 1 && dims[1..] == shape[..] {
            Some(dims[0])
        } else {
            return Err(self.error(
                "theta",
                format!(
                    "expected shape {shape:?} or [B, {}], found {dims:?}",
                    dims_list(&shape)
                ),
            ));
        };
        self.check_finite("theta", theta)?;
        Ok(batch)
    }

    fn check_finite<F: Real>(
        &self,
        field: &'static str,
        a: &ArrayViewD<F>,
    ) -> Result<(), RequestError> {
        match a.indexed_iter().find(|(_, x)| !x.is_finite()) {
            Some((index, x)) => Err(self.error(
                field,
                format!("{x} at {:?}; every entry must be finite", index.slice()),
            )),
            None => Ok(()),
        }
    }

    /// Samples `z` (hard or soft) for `θ`.
    pub fn try_forward<F: Real>(
        &self,
        theta: ArrayViewD<F>,
        opts: &Options,
    ) -> Result<Forward<F>, RequestError> {
        let batch = self.check_theta(&theta)?;
        if opts.samples == 0 {
            return Err(self.error("samples", "must be at least 1"));
        }
        let temperature = self.try_temperature(opts)?;
        let mode = opts.mode.unwrap_or(self.plan.estimator.default_mode());
        let (noise, seed) = match opts.noise {
            Noise::None => (Perturbation::None, 0),
            Noise::Seed(seed) => (self.plan.noise, seed),
        };
        let support = self.plan.support.as_ref();
        let solver = F::solver(support);
        let coords = support.coordinates();
        let theta = theta.as_standard_layout();
        let theta = theta.as_slice().expect("standard layout");
        let m = support.shape().iter().product::<usize>();
        let rows = batch.unwrap_or(1);
        let mut w = vec![F::zero(); opts.samples * rows * m];
        let mut z = vec![F::zero(); w.len()];
        let mut report = Report::default();
        let t = F::of(temperature);
        for s in 0..opts.samples {
            for b in 0..rows {
                let range = (s * rows + b) * m..(s * rows + b + 1) * m;
                let key = NoiseKey {
                    seed,
                    sample: s as u32,
                    batch: b as u32,
                };
                let theta_row = &theta[b * m..(b + 1) * m];
                let w_row = &mut w[range.clone()];
                noise
                    .perturb(coords, theta_row, key, w_row)
                    .map_err(|e| self.error("theta", e))?;
                if let Some(bad) = w_row.iter().find(|x| !x.is_finite()) {
                    return Err(self.error(
                        "theta",
                        format!("the perturbed parameters overflow {} ({bad}); use smaller theta or less noise", F::NAME),
                    ));
                }
                let z_row = &mut z[range];
                match mode {
                    Mode::Hard => solver.hard(w_row, z_row),
                    Mode::Soft => {
                        let x = self.scaled(w_row, t)?;
                        solver
                            .soft(&self.plan.soft, &x, z_row, &mut report)
                            .map_err(|e| self.error("theta", e))?;
                    }
                }
            }
        }
        let mut out_shape = Vec::new();
        if opts.samples > 1 {
            out_shape.push(opts.samples);
        }
        let mut cotangent_shape: Vec<usize> = batch.into_iter().collect();
        cotangent_shape.extend(support.shape());
        out_shape.extend(&cotangent_shape);
        let array = |v| ArrayD::from_shape_vec(IxDyn(&out_shape), v).expect("sizes agree");
        Ok(Forward {
            z: array(z),
            w: array(w),
            mode,
            temperature,
            report,
            noise,
            cotangent_shape,
            samples: opts.samples,
        })
    }

    /// [`Layer::try_forward`] for host programs that treat a bad request as a bug.
    pub fn forward<F: Real>(&self, theta: ArrayViewD<F>, opts: &Options) -> Forward<F> {
        self.try_forward(theta, opts)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `∂L/∂θ` for `L = ⟨cotangent, z⟩` under the layer's estimator and backward rule: through
    /// the soft solver at each sample's `w` (in hard mode this is straight-through), then
    /// through the perturbation. Shaped like `fwd.z` (one gradient per sample).
    pub fn try_backward<F: Real>(
        &self,
        fwd: &Forward<F>,
        cotangent: ArrayViewD<F>,
    ) -> Result<ArrayD<F>, RequestError> {
        if cotangent.shape() != fwd.cotangent_shape.as_slice() {
            return Err(self.error(
                "cotangent",
                format!(
                    "expected shape {:?} (like z, without the samples axis), found {:?}",
                    fwd.cotangent_shape,
                    cotangent.shape()
                ),
            ));
        }
        self.check_finite("cotangent", &cotangent)?;
        let support = self.plan.support.as_ref();
        let solver = F::solver(support);
        let coords = support.coordinates();
        let cotangent = cotangent.as_standard_layout();
        let cotangent = cotangent.as_slice().expect("standard layout");
        let w = fwd.w.as_slice().expect("built in standard layout");
        let z = fwd.z.as_slice().expect("built in standard layout");
        let m = support.shape().iter().product::<usize>();
        let rows = cotangent.len() / m.max(1);
        let mut grad = vec![F::zero(); w.len()];
        let mut grad_w = vec![F::zero(); m];
        for s in 0..fwd.samples {
            for b in 0..rows {
                let range = (s * rows + b) * m..(s * rows + b + 1) * m;
                let g = &cotangent[b * m..(b + 1) * m];
                grad_w.fill(F::zero());
                let soft_z = (fwd.mode == Mode::Soft).then(|| &z[range.clone()]);
                self.soft_backward(
                    solver,
                    &w[range.clone()],
                    soft_z,
                    fwd.temperature,
                    g,
                    &mut grad_w,
                )?;
                fwd.noise
                    .chain(coords, &w[range.clone()], &grad_w, &mut grad[range]);
            }
        }
        Ok(ArrayD::from_shape_vec(fwd.z.raw_dim(), grad).expect("sizes agree"))
    }

    /// [`Layer::try_backward`] for host programs that treat a bad request as a bug.
    pub fn backward<F: Real>(&self, fwd: &Forward<F>, cotangent: ArrayViewD<F>) -> ArrayD<F> {
        self.try_backward(fwd, cotangent)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `grad_w += (∂z_T/∂w)ᵀ g` at one row `w` by the plan's backward rule; `soft_z` is the
    /// soft solution at `w` when the forward pass already computed it.
    fn soft_backward<F: Real>(
        &self,
        solver: &dyn Solve<F>,
        w: &[F],
        soft_z: Option<&[F]>,
        temperature: f64,
        g: &[F],
        grad_w: &mut [F],
    ) -> Result<(), RequestError> {
        let soft = &self.plan.soft;
        match self.plan.backward {
            Backward::FiniteDiff { eps } => finite_diff(
                self.plan.support.as_ref(),
                soft,
                w,
                temperature,
                g,
                eps,
                grad_w,
            )
            .map_err(|e| self.error("theta", e)),
            Backward::Native(rule) => {
                let t = F::of(temperature);
                let x = self.scaled(w, t)?;
                let computed;
                let z = match soft_z {
                    Some(z) => z,
                    None => {
                        let mut z = vec![F::zero(); w.len()];
                        solver
                            .soft(soft, &x, &mut z, &mut Report::default())
                            .map_err(|e| self.error("theta", e))?;
                        computed = z;
                        &computed
                    }
                };
                let mut grad_x = vec![F::zero(); w.len()];
                solver
                    .soft_vjp(soft, rule, &x, z, g, &mut grad_x)
                    .map_err(|e| self.error("theta", e))?;
                for (gw, gx) in grad_w.iter_mut().zip(grad_x) {
                    *gw = *gw + gx / t;
                }
                Ok(())
            }
        }
    }
}

impl Layer {
    /// `x = w / T`, the soft solvers' input; an overflow is a temperature error.
    fn scaled<F: Real>(&self, w: &[F], t: F) -> Result<Vec<F>, RequestError> {
        let x: Vec<F> = w.iter().map(|&wi| wi / t).collect();
        match x.iter().position(|xi| !xi.is_finite()) {
            Some(i) => Err(self.error(
                "temperature",
                format!(
                    "w / T overflows {} (w = {}, T = {t}); use a larger temperature",
                    F::NAME,
                    w[i]
                ),
            )),
            None => Ok(x),
        }
    }
}

/// `3, 3` from `[3, 3]`.
fn dims_list(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
