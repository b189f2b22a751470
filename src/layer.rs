//! A compiled layer: forward (hard or soft samples) and backward (`∂L/∂θ` for a cotangent) on
//! ndarray arrays, with any number of leading batch axes and a samples axis.
//!
//! Shapes: `θ` is `[B₁, …, B_r, …shape]` with `r ≥ 0` batch axes (written `[B…, …shape]`); `z`
//! and `w` are `[N?, B…, …shape]` where the samples axis `N` appears only when more than one
//! sample is asked for; the cotangent is shaped like `z` without the samples axis, and `∂L/∂θ`
//! like `z`. The batch rows are numbered row-major over the batch axes (the flat row index),
//! and the noise is keyed by that number, so `[2, 3, …shape]` gives the numbers of
//! `[6, …shape]`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn};

use crate::backend::{
    kept_width, score_lens, select, Backend, Choice, ForwardOut, Report, Rows, Saved, Schedule,
    SolveError, Warning,
};
use crate::diagnostic::number;
use crate::estimator::{baseline_weights, score, updated_ema};
use crate::ir::{Estimator, ScoreMap};
use crate::kernels::{all_finite, copy_finite, dot};
use crate::noise::Perturbation;
use crate::plan::{Baseline, Mode, Plan};
use crate::real::Real;

/// A layer of a compiled spec.
#[derive(Clone)]
pub struct Layer {
    plan: Plan,
    /// Which layer this is, so that a [`Forward`] is only taken back by the layer that made it
    /// (clones share it).
    id: u64,
    /// The running baseline of `reinforce(baseline = ema)`, shared by clones of the layer.
    ema: Arc<Mutex<Option<f64>>>,
    /// The temperature schedule, compiled on first use (shared by clones).
    schedule: Schedule,
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
    /// How many threads the rows (`samples × batch`) are split over. `None`: automatic (one
    /// thread below 2¹⁶ numbers, otherwise one per available core). `Some(n)`: exactly
    /// `min(n, rows)` consecutive ranges of rows, each on its own thread, whatever the request's
    /// size and the machine's core count (`Some(1)`: the calling thread only). `Some(0)` and
    /// more than 1024 are request errors (field `threads`). The split changes no number: noise
    /// is keyed by (seed, sample, batch row, element) and reports merge in row order.
    pub threads: Option<usize>,
    /// Which backend runs the layer: [`Choice::Auto`] (the JIT where it applies), or either
    /// forced (forcing the JIT where it does not apply is a request error, field `backend`).
    pub backend: Choice,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: None,
            noise: Noise::Seed(0),
            temperature: None,
            step: 0.0,
            samples: 1,
            threads: None,
            backend: Choice::Auto,
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
    pub fn backend(self, backend: Choice) -> Self {
        Options { backend, ..self }
    }
    /// Forces the row split into `threads` ranges (see [`Options::threads`]).
    pub fn threads(self, threads: usize) -> Self {
        Options {
            threads: Some(threads),
            ..self
        }
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
    /// The output: hard `z` or soft `z_T`, `[N?, B…, …shape]`: the samples axis when more than
    /// one sample was asked for, then `θ`'s batch axes (any number, [`Layer::try_forward`]).
    pub z: ArrayD<F>,
    /// The perturbed scores that were used, shaped like `z` (counts: `[N?, B…, K + 1]`, the
    /// perturbed truncated log-pmf, with `K` the largest row's truncation; a row truncated at a
    /// smaller `K_b` holds `−∞` past `K_b`: outcomes it does not have).
    pub w: ArrayD<F>,
    /// The solvers' output in score coordinates, for supports that decode it into `z`.
    solution: Option<ArrayD<F>>,
    /// What the soft kernel kept for the backward pass ([`kept_width`] per flat row).
    kept: Vec<f64>,
    /// Each batch row's score length (supports with score maps), see `w`.
    score_lens: Option<Vec<usize>>,
    pub mode: Mode,
    /// The temperature used.
    pub temperature: f64,
    /// What the solvers reported (merged over samples and batch rows).
    pub report: Report,
    /// The perturbation actually applied (`none` when the request asked for no noise).
    pub noise: Perturbation,
    /// The shape of the cotangent a backward pass takes: `[B…, …shape]`.
    pub cotangent_shape: Vec<usize>,
    samples: usize,
    /// The request's thread count, reused by the backward pass.
    threads: Option<usize>,
    /// The request's backend choice, reused by the backward pass.
    backend: Choice,
    /// `θ` as given (flattened rows), where the backward pass or the score function reads it
    /// ([`crate::ir::Program::backward_reads_theta`]); else empty.
    theta: ArrayD<F>,
    /// The number of batch rows of `θ`.
    batch_rows: usize,
    seed: u64,
    /// The [`Layer`] that made it.
    layer_id: u64,
}

impl Layer {
    pub(crate) fn new(plan: Plan) -> Layer {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Layer {
            plan,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ema: Arc::default(),
            schedule: Schedule::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// What the checker decided for this layer.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// A request error of this layer on `field`.
    pub(crate) fn error(&self, field: &'static str, message: impl Into<String>) -> RequestError {
        RequestError {
            layer: self.plan.name.clone(),
            field,
            message: message.into(),
        }
    }

    /// A kernel's failure as a request error on the field it is about.
    fn solve_error(&self, e: SolveError) -> RequestError {
        self.error(e.field(), e.to_string())
    }

    /// The spec's temperature schedule at training step `step`, as requests on `backend`
    /// evaluate it: compiled by the JIT where it depends on the step (the first call compiles
    /// it, once per process and formula), the formula evaluated under [`Choice::Reference`];
    /// the same number either way.
    pub fn temperature_at(&self, step: f64, backend: Choice) -> f64 {
        self.schedule.at(&self.plan.temperature, step, backend)
    }

    /// The temperature of a request: the override, or the schedule at `step`; must be > 0.
    pub fn try_temperature(&self, opts: &Options) -> Result<f64, RequestError> {
        let t = match opts.temperature {
            Some(t) => t,
            None => self.temperature_at(opts.step, opts.backend),
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
                format!("must be a finite number > 0, found {}{source}", number(t)),
            ))
        }
    }

    /// Checks `θ`'s shape (`[B₁, …, B_r, …shape]`, `r ≥ 0` batch axes, each `B_i ≥ 1`); returns
    /// the batch axes `[B₁, …, B_r]` (empty when there are none). Its values are checked where
    /// the forward pass reads or copies them.
    fn check_theta<F: Real>(&self, theta: &ArrayViewD<F>) -> Result<Vec<usize>, RequestError> {
        let shape = self.plan.support.shape();
        let dims = theta.shape();
        let batch = &dims[..dims.len().saturating_sub(shape.len())];
        if !dims.ends_with(&shape) || batch.contains(&0) {
            return Err(self.error(
                "theta",
                format!(
                    "expected shape {shape:?} or [B, {0}] (any number of leading batch axes, \
                     [B₁, B₂, …, {0}], each ≥ 1), found {dims:?}",
                    dims_list(&shape)
                ),
            ));
        }
        Ok(batch.to_vec())
    }

    /// `θ` copied into `buffer` (row-major), checking in the same pass that its entries are
    /// finite.
    fn copy_theta<F: Real>(
        &self,
        theta: &ArrayViewD<F>,
        buffer: Vec<F>,
    ) -> Result<ArrayD<F>, RequestError> {
        let mut copy = to_overwrite(buffer, theta.len());
        let finite = match theta.as_slice() {
            Some(flat) => copy_finite(flat, &mut copy),
            None => {
                copy.iter_mut().zip(theta).for_each(|(c, &x)| *c = x);
                all_finite(&copy)
            }
        };
        match finite {
            true => Ok(ArrayD::from_shape_vec(theta.raw_dim(), copy).expect("sizes agree")),
            false => Err(self.not_finite("theta", theta)),
        }
    }

    fn check_finite<F: Real>(
        &self,
        field: &'static str,
        a: &ArrayViewD<F>,
    ) -> Result<(), RequestError> {
        // A flat scan first, without an early exit (which vectorizes); the multi-index is
        // only worked out for the message.
        let finite = match a.as_slice_memory_order() {
            Some(s) => all_finite(s),
            None => a.iter().all(|x| x.is_finite()),
        };
        match finite {
            true => Ok(()),
            false => Err(self.not_finite(field, a)),
        }
    }

    /// The request error of a forward pass that failed: `θ`'s own where one of its entries is
    /// not finite (the pass found it through `w`), else the pass's.
    fn theta_or<F: Real>(&self, theta: &ArrayViewD<F>, e: SolveError) -> RequestError {
        match self.check_finite("theta", theta) {
            Ok(()) => self.solve_error(e),
            Err(not_finite) => not_finite,
        }
    }

    /// The error naming `a`'s first entry that is not finite (there is one).
    fn not_finite<F: Real>(&self, field: &'static str, a: &ArrayViewD<F>) -> RequestError {
        let (index, x) = a
            .indexed_iter()
            .find(|(_, x)| !x.is_finite())
            .expect("found above");
        self.error(
            field,
            format!("{x} at {:?}; every entry must be finite", index.slice()),
        )
    }

    /// Samples `z` (hard or soft) for `θ` shaped `[B₁, …, B_r, …shape]` (`r ≥ 0` batch axes):
    /// `z` and `w` are `[N?, B₁, …, B_r, …shape]`. Batch row `b` is the flat (row-major) index
    /// over the batch axes, and sample `s` of it draws the noise keyed by `(seed, s, b)`.
    pub fn try_forward<F: Real>(
        &self,
        theta: ArrayViewD<F>,
        opts: &Options,
    ) -> Result<Forward<F>, RequestError> {
        self.forward_into(theta, opts, Buffers::default())
    }

    /// [`Layer::try_forward`] writing into the memory of an earlier forward pass (`spare`, of
    /// any layer and shape), so that a training loop that hands back the last step's forward
    /// reuses its arrays instead of mapping fresh pages on every call. The numbers are those of
    /// `try_forward`.
    pub fn try_forward_reusing<F: Real>(
        &self,
        theta: ArrayViewD<F>,
        opts: &Options,
        spare: Forward<F>,
    ) -> Result<Forward<F>, RequestError> {
        let raw = |a: ArrayD<F>| a.into_raw_vec_and_offset().0;
        let buffers = Buffers {
            w: raw(spare.w),
            z: raw(spare.z),
            solution: spare.solution.map(raw).unwrap_or_default(),
            kept: spare.kept,
            theta: raw(spare.theta),
        };
        self.forward_into(theta, opts, buffers)
    }

    fn forward_into<F: Real>(
        &self,
        theta: ArrayViewD<F>,
        opts: &Options,
        mut buffers: Buffers<F>,
    ) -> Result<Forward<F>, RequestError> {
        let batch = self.check_theta(&theta)?;
        // Where the scores are `θ` itself, an entry of `θ` that is not finite makes `w` not
        // finite (or the noise refuses it), which every backend's forward pass reports: the
        // scan is left to that pass, one pass over `θ` fewer, and its error is turned into
        // `θ`'s own below ([`Layer::theta_or`]).
        let checked_by_the_pass = self.plan.program.scores == ScoreMap::Identity;
        // The forward pass reads `θ` in place where it is contiguous; a copy is kept for the
        // backward pass only where that reads it.
        let kept_theta = match (self.plan.program.backward_reads_theta(), theta.as_slice()) {
            (false, Some(flat)) if checked_by_the_pass || all_finite(flat) => None,
            (false, Some(_)) => return Err(self.not_finite("theta", &theta)),
            _ => Some(self.copy_theta(&theta, std::mem::take(&mut buffers.theta))?),
        };
        if opts.samples == 0 {
            return Err(self.error("samples", "must be at least 1"));
        }
        if let Some(n) = opts.threads {
            if n == 0 || n > MAX_THREADS {
                return Err(self.error(
                    "threads",
                    format!("must be between 1 and {MAX_THREADS} (or unset: automatic), found {n}"),
                ));
            }
        }
        let temperature = self.try_temperature(opts)?;
        let mode = opts.mode.unwrap_or(self.plan.estimator.default_mode());
        let (noise, seed) = match opts.noise {
            Noise::None if self.plan.estimator.needs_noise() => {
                return Err(self.error(
                    "noise",
                    "this layer's estimator resamples Gumbel noise; \"none\" is not allowed",
                ))
            }
            Noise::None => (Perturbation::None, 0),
            Noise::Seed(seed) => (self.plan.program.noise, seed),
        };
        let program = &self.plan.program;
        let backend = self.backend::<F>(opts.backend)?;
        let theta_view = &theta;
        let theta = match &kept_theta {
            Some(copy) => copy.as_slice().expect("standard layout"),
            None => theta.as_slice().expect("contiguous (above)"),
        };
        let mut report = Report::default();
        let lens =
            score_lens(program.scores, theta, &mut report).map_err(|e| self.solve_error(e))?;
        let m = program.row_len;
        // The stored width of a score row: the longest row's (shorter rows are padded).
        let l = lens
            .as_ref()
            .map_or(m, |lens| lens.iter().copied().max().unwrap_or(m));
        let mapped = lens.is_some();
        let rows = batch.iter().product::<usize>();
        let count = opts.samples.saturating_mul(rows);
        if count.saturating_mul(l.max(m)) > MAX_NUMBERS || opts.samples > u32::MAX as usize {
            return Err(self.error(
                "samples",
                format!("samples × batch × row length exceeds {MAX_NUMBERS} numbers"),
            ));
        }
        let kept_width = kept_width(program, mode);
        self.check_budget::<F>(opts.samples, count, theta.len(), l, mapped, kept_width)?;
        let call = |range: Range<usize>| Rows {
            program,
            theta,
            batch: rows,
            range,
            mode,
            temperature,
            noise,
            seed,
            score_lens: lens.as_deref(),
            stride: l,
        };
        let mut w = to_overwrite(buffers.w, count * l);
        let mut z = to_overwrite(buffers.z, count * m);
        let mut solution = zeroed(buffers.solution, if mapped { count * l } else { 0 });
        let s_width = if mapped { l } else { 0 };
        // Every kernel that keeps something writes its whole share (or marks it unused).
        let mut kept = to_overwrite(buffers.kept, count * kept_width);
        // One range of rows: its perturbed scores, its z, its solution in score coordinates
        // (supports with score maps only), what its kernel keeps, written in place; returns
        // what the kernels reported.
        let run_rows = |range: Range<usize>, ([w, z, solution], kept): Outputs<F>| {
            let mut report = Report::default();
            let out = ForwardOut {
                w: w.0,
                z: z.0,
                solution: solution.0,
                kept: kept.0,
                report: &mut report,
            };
            backend
                .forward(&call(range), out)
                .map_err(|e| self.theta_or(theta_view, e))?;
            Ok(report)
        };
        let outputs = (
            [
                (&mut w[..], l),
                (&mut z[..], m),
                (&mut solution[..], s_width),
            ],
            (&mut kept[..], kept_width),
        );
        for part_report in split_rows(count, l, opts.threads, outputs, run_rows)? {
            report.merge(part_report);
        }
        if let (
            Mode::Hard,
            1,
            Estimator::Reinforce {
                baseline: Baseline::LeaveOneOut,
                ..
            },
        ) = (mode, opts.samples, program.estimator)
        {
            report.warn(
                Warning::LeaveOneOutAlone,
                "reinforce(baseline = leave_one_out) needs several samples: with one there is no \
                 other sample to form the baseline, so the plain score function is used; ask for \
                 samples ≥ 2"
                    .to_string(),
            );
        }
        let mut rows_shape = Vec::new();
        if opts.samples > 1 {
            rows_shape.push(opts.samples);
        }
        rows_shape.extend(&batch);
        let shaped = |v, row: &[usize]| {
            let dims: Vec<usize> = rows_shape.iter().chain(row).copied().collect();
            ArrayD::from_shape_vec(IxDyn(&dims), v).expect("sizes agree")
        };
        let shape = self.plan.support.shape();
        let score_shape = match mapped {
            true => vec![l],
            false => shape.clone(),
        };
        let cotangent_shape = [batch, shape.clone()].concat();
        Ok(Forward {
            z: shaped(z, &shape),
            w: shaped(w, &score_shape),
            solution: mapped.then(|| shaped(solution, &score_shape)),
            kept,
            score_lens: lens,
            mode,
            temperature,
            report,
            noise,
            cotangent_shape,
            samples: opts.samples,
            threads: opts.threads,
            backend: opts.backend,
            theta: kept_theta.unwrap_or_else(|| {
                let mut spare = std::mem::take(&mut buffers.theta);
                spare.clear();
                ArrayD::from_shape_vec(IxDyn(&[0]), spare).expect("empty")
            }),
            batch_rows: rows,
            seed,
            layer_id: self.id,
        })
    }

    /// [`Layer::try_forward`] for host programs that treat a bad request as a bug.
    pub fn forward<F: Real>(&self, theta: ArrayViewD<F>, opts: &Options) -> Forward<F> {
        self.try_forward(theta, opts)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `∂L/∂θ` for `L = ⟨cotangent, z⟩` under the layer's estimator and backward rule, one
    /// gradient per sample (shaped like `fwd.z`). The cotangent is shaped like `z` without the
    /// samples axis (the same for every sample) or, with several samples, like `z` (one per
    /// sample, as a tape brings them). Soft mode: through the soft solver at each
    /// sample's `w`, then through the perturbation. Hard mode: straight-through (the same),
    /// Gumbel-Rao (the soft gradient averaged over conditional Gumbels), or REINFORCE with the
    /// per-sample losses `f(z) = ⟨cotangent, z⟩`.
    pub fn try_backward<F: Real>(
        &self,
        fwd: &Forward<F>,
        cotangent: ArrayViewD<F>,
    ) -> Result<ArrayD<F>, RequestError> {
        self.backward_into(fwd, cotangent, Vec::new())
    }

    /// [`Layer::try_backward`] writing into the memory of an earlier gradient (`spare`, any
    /// shape), as [`Layer::try_forward_reusing`] does for the forward pass.
    pub fn try_backward_reusing<F: Real>(
        &self,
        fwd: &Forward<F>,
        cotangent: ArrayViewD<F>,
        spare: ArrayD<F>,
    ) -> Result<ArrayD<F>, RequestError> {
        self.backward_into(fwd, cotangent, spare.into_raw_vec_and_offset().0)
    }

    fn backward_into<F: Real>(
        &self,
        fwd: &Forward<F>,
        cotangent: ArrayViewD<F>,
        buffer: Vec<F>,
    ) -> Result<ArrayD<F>, RequestError> {
        self.check_made_here(fwd)?;
        // One cotangent for every sample, or (several samples) one per sample, shaped like z.
        let per_sample = fwd.samples > 1 && cotangent.shape() == fwd.z.shape();
        if !per_sample && cotangent.shape() != fwd.cotangent_shape.as_slice() {
            let or_per_sample = match fwd.samples > 1 {
                true => format!(" or {:?} (like z: one per sample)", fwd.z.shape()),
                false => String::new(),
            };
            return Err(self.error(
                "cotangent",
                format!(
                    "expected shape {:?} (like z, without the samples axis){or_per_sample}, found {:?}",
                    fwd.cotangent_shape,
                    cotangent.shape()
                ),
            ));
        }
        self.check_finite("cotangent", &cotangent)?;
        let cotangent = cotangent.as_standard_layout();
        let cotangent = cotangent.as_slice().expect("standard layout");
        let z = fwd.z.as_slice().expect("built in standard layout");
        let m = self.row_len();
        let rows = fwd.cotangent_shape.iter().product::<usize>() / m;
        // The cotangent row of flat row `i` (sample × rows + batch row).
        let cot_row = |i: usize| if per_sample { i } else { i % rows };
        if let (Mode::Hard, Estimator::Reinforce { .. }) = (fwd.mode, self.plan.program.estimator) {
            let losses: Vec<f64> = z
                .chunks(m)
                .enumerate()
                .map(|(i, zi)| dot(zi, &cotangent[cot_row(i) * m..(cot_row(i) + 1) * m]).f64())
                .collect();
            let shape = &fwd.z.shape()[..fwd.z.ndim() - self.plan.support.shape().len()];
            let losses = ArrayD::from_shape_vec(shape, losses).expect("one loss per row");
            return self.try_reinforce(fwd, losses.view());
        }
        let program = &self.plan.program;
        let backend = self.backend::<F>(fwd.backend)?;
        let w = fwd.w.as_slice().expect("built in standard layout");
        let solution = fwd.solution.as_ref().unwrap_or(&fwd.z);
        let solution = solution.as_slice().expect("built in standard layout");
        let theta = fwd.theta.as_slice().expect("built in standard layout");
        let l = w.len() / (fwd.samples * rows);
        let saved = Saved {
            w,
            solution,
            kept: &fwd.kept,
            cotangent,
            per_sample,
        };
        // One range of rows: their gradients, one row of `θ`'s shape each, written in place.
        let run_rows = |range: Range<usize>, (grad, _): (&mut [F], usize)| {
            let rows = Rows {
                program,
                theta,
                batch: fwd.batch_rows,
                range,
                mode: fwd.mode,
                temperature: fwd.temperature,
                noise: fwd.noise,
                seed: fwd.seed,
                score_lens: fwd.score_lens.as_deref(),
                stride: l,
            };
            backend
                .backward_into(&rows, saved, grad)
                .map_err(|e| self.solve_error(e))
        };
        // Every backend writes every entry of its rows (tests/reliability.rs hands back NaN).
        let mut grad = to_overwrite(buffer, fwd.samples * rows * m);
        split_rows(
            fwd.samples * rows,
            l,
            fwd.threads,
            (&mut grad[..], m),
            run_rows,
        )?;
        Ok(ArrayD::from_shape_vec(fwd.z.raw_dim(), grad).expect("sizes agree"))
    }

    /// The score-function (REINFORCE) gradient for the losses `f` of the samples of a hard
    /// forward pass, shaped `[N?, B…]` like `z` without the support's axes:
    /// `∂/∂θ = (f − b)·∇_θ log q(z|θ)` per sample, with the plan's baseline `b`
    /// ([`Baseline`]). `ema` updates the layer's running baseline after the call.
    pub fn try_reinforce<F: Real>(
        &self,
        fwd: &Forward<F>,
        losses: ArrayViewD<f64>,
    ) -> Result<ArrayD<F>, RequestError> {
        self.check_made_here(fwd)?;
        let Estimator::Reinforce {
            baseline,
            score: function,
        } = self.plan.program.estimator
        else {
            return Err(self.error("estimator", "losses are only taken by `reinforce`"));
        };
        if fwd.mode != Mode::Hard {
            return Err(self.error(
                "mode",
                "reinforce differentiates hard samples; use mode hard",
            ));
        }
        let rows_shape = &fwd.z.shape()[..fwd.z.ndim() - self.plan.support.shape().len()];
        if losses.shape() != rows_shape {
            return Err(self.error(
                "losses",
                format!(
                    "expected shape {rows_shape:?} (one loss per sample and batch row), found {:?}",
                    losses.shape()
                ),
            ));
        }
        self.check_finite("losses", &losses)?;
        let losses = losses.as_standard_layout();
        let losses = losses.as_slice().expect("standard layout");
        let m = self.row_len();
        let rows = losses.len() / fwd.samples;
        let mut ema = self.ema.lock().unwrap_or_else(|e| e.into_inner());
        let mut weights = vec![0.0; losses.len()];
        for b in 0..rows {
            let row: Vec<f64> = (0..fwd.samples).map(|s| losses[s * rows + b]).collect();
            let row_weights = baseline_weights(baseline, &row, ema.unwrap_or(0.0));
            for (s, wgt) in row_weights.into_iter().enumerate() {
                weights[s * rows + b] = wgt;
            }
        }
        *ema = Some(updated_ema(*ema, losses));
        let theta = fwd.theta.as_slice().expect("built in standard layout");
        let z = fwd.z.as_slice().expect("built in standard layout");
        let mut grad = vec![F::zero(); z.len()];
        let mut scores = vec![F::zero(); m];
        for (i, wgt) in weights.iter().enumerate() {
            let b = i % rows;
            scores.fill(F::zero());
            score(
                function,
                &theta[b * m..(b + 1) * m],
                &z[i * m..(i + 1) * m],
                &mut scores,
            );
            for (g, sc) in grad[i * m..(i + 1) * m].iter_mut().zip(&scores) {
                *g = F::of(*wgt) * *sc;
            }
        }
        Ok(ArrayD::from_shape_vec(fwd.z.raw_dim(), grad).expect("sizes agree"))
    }

    /// Refuses up front a request whose arrays (θ, `w`, `z`, the solution in score coordinates,
    /// and the gradient a backward pass would allocate) exceed [`MEMORY_BUDGET`] bytes, or whose
    /// work (numbers × solver iterations × Gumbel-Rao draws) exceeds [`WORK_BUDGET`]. `count` is
    /// samples × rows, `l` the score row length.
    fn check_budget<F>(
        &self,
        samples: usize,
        count: usize,
        theta_len: usize,
        l: usize,
        mapped: bool,
        kept_width: usize,
    ) -> Result<(), RequestError> {
        let field = if samples > 1 { "samples" } else { "theta" };
        let m = self.row_len();
        let per_row = 2 * m + l + if mapped { l } else { 0 };
        let bytes = (count as u128 * per_row as u128 + theta_len as u128)
            * std::mem::size_of::<F>() as u128
            + count as u128 * kept_width as u128 * 8;
        if bytes > MEMORY_BUDGET as u128 {
            return Err(self.error(
                field,
                format!(
                    "the request needs about {:.1} GiB for its outputs and gradient, more than the \
                     budget of {} GiB; split it into smaller requests",
                    bytes as f64 / (1u64 << 30) as f64,
                    MEMORY_BUDGET >> 30
                ),
            ));
        }
        let draws = match self.plan.program.estimator {
            Estimator::GumbelRao { draws, .. } => draws,
            _ => 1,
        };
        let iterations = self.plan.program.soft.iterations();
        let work = count as u128 * l as u128 * iterations as u128 * draws as u128;
        if work > WORK_BUDGET as u128 {
            return Err(self.error(
                field,
                format!(
                    "the request may take up to {:.2e} number-iterations (samples × rows × \
                     row length × solver iterations × draws), more than the budget of {:.0e}; \
                     split it into smaller requests",
                    work as f64, WORK_BUDGET as f64
                ),
            ));
        }
        Ok(())
    }

    /// The backend that runs this layer under `choice` ([`select`]).
    fn backend<F: Real>(&self, choice: Choice) -> Result<&'static dyn Backend<F>, RequestError> {
        select::<F>(&self.plan.program, choice).map_err(|why| {
            let name = if choice == Choice::Cuda {
                "cuda"
            } else {
                "jit"
            };
            self.error(
                "backend",
                format!("the {name} backend cannot run this layer: {}", why.0),
            )
        })
    }

    /// The backend [`Choice::Auto`] picks for this layer in `F`, and why not the JIT when it
    /// is the reference backend.
    pub fn backend_name<F: Real>(&self) -> (&'static str, Option<String>) {
        match select::<F>(&self.plan.program, Choice::Jit) {
            Ok(jit) => (jit.name(), None),
            Err(why) => ("reference", Some(why.0)),
        }
    }

    /// A forward pass is taken back only by the layer that made it (its shapes, noise and
    /// solutions belong to that layer's plan).
    fn check_made_here<F>(&self, fwd: &Forward<F>) -> Result<(), RequestError> {
        if fwd.layer_id == self.id {
            Ok(())
        } else {
            Err(self.error(
                "forward",
                "this forward pass was made by another layer; pass it back to that layer",
            ))
        }
    }

    /// The number of entries of one `θ` row.
    fn row_len(&self) -> usize {
        self.plan.program.row_len
    }

    /// [`Layer::try_backward`] for host programs that treat a bad request as a bug.
    pub fn backward<F: Real>(&self, fwd: &Forward<F>, cotangent: ArrayViewD<F>) -> ArrayD<F> {
        self.try_backward(fwd, cotangent)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The most numbers one forward pass may produce per output (`samples × batch × row`), so that
/// a request cannot exhaust memory.
const MAX_NUMBERS: usize = 1 << 28;

/// The most bytes the arrays of one request may take (θ, `w`, `z`, solutions and the gradient):
/// 4 GiB.
pub const MEMORY_BUDGET: usize = 1 << 32;

/// The most work one request may ask for, in number-iterations (samples × rows × row length ×
/// the soft solver's iteration cap × Gumbel-Rao draws): 10¹², minutes on one core.
pub const WORK_BUDGET: u64 = 1_000_000_000_000;

/// The most threads a request may ask for ([`Options::threads`]).
const MAX_THREADS: usize = 1024;

/// Requests with fewer numbers than this run on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Runs `work` on consecutive ranges of the rows `0..count` and returns the results in row
/// order, handing each range its rows of every output buffer (`(buffer, row width)`, disjoint
/// slices, written in place). `threads = None`: several threads (one per available core) only
/// when the request holds at least [`PARALLEL_MIN`] numbers (`row_len` per row), else one range
/// on the calling thread. `Some(n)`: exactly `min(n, count)` ranges of near-equal length, each
/// on its own thread (a single range runs on the calling thread). Noise is keyed by (seed,
/// sample, batch row, element), so the split changes no number.
fn split_rows<O: ByRows, T: Send>(
    count: usize,
    row_len: usize,
    threads: Option<usize>,
    outputs: O,
    work: impl Fn(Range<usize>, O) -> Result<T, RequestError> + Sync,
) -> Result<Vec<T>, RequestError> {
    let threads = match threads {
        Some(n) => n.min(count),
        None if count.saturating_mul(row_len) < PARALLEL_MIN => 1,
        None => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(count),
    };
    if threads <= 1 {
        return Ok(vec![work(0..count, outputs)?]);
    }
    // Range `i` is `[i·count/threads, (i+1)·count/threads)`: none empty since threads ≤ count.
    let bound = |i: usize| i * count / threads;
    let mut rest = Some(outputs);
    let parts: Vec<(Range<usize>, O)> = (0..threads)
        .map(|i| {
            let range = bound(i)..bound(i + 1);
            let (head, tail) = rest.take().expect("put back").split_rows(range.len());
            rest = Some(tail);
            (range, head)
        })
        .collect();
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = parts
            .into_iter()
            .map(|(range, chunks)| scope.spawn(move || work(range, chunks)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Row-major output buffers that [`split_rows`] cuts into ranges of rows.
trait ByRows: Send + Sized {
    /// The first `rows` rows, and the rest.
    fn split_rows(self, rows: usize) -> (Self, Self);
}

/// A buffer and its row width.
impl<T: Send> ByRows for (&mut [T], usize) {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let (buffer, width) = self;
        let (head, tail) = buffer.split_at_mut(rows * width);
        ((head, width), (tail, width))
    }
}

impl<A: ByRows, B: ByRows> ByRows for (A, B) {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let ((a, a_rest), (b, b_rest)) = (self.0.split_rows(rows), self.1.split_rows(rows));
        ((a, b), (a_rest, b_rest))
    }
}

impl<A: ByRows, const N: usize> ByRows for [A; N] {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let mut tails = Vec::with_capacity(N);
        let heads = self.map(|a| {
            let (head, tail) = a.split_rows(rows);
            tails.push(tail);
            head
        });
        (heads, tails.try_into().ok().expect("one tail per part"))
    }
}

/// `buffer` as `len` numbers that the backend overwrites: its old contents are kept where it is
/// long enough, zeros where it grows (no pass over memory that is written anyway). Every backend
/// writes every entry of a forward pass's `w` and `z` (tests/reliability.rs hands back spares
/// filled with NaN).
fn to_overwrite<F: Real>(mut buffer: Vec<F>, len: usize) -> Vec<F> {
    buffer.truncate(len);
    buffer.resize(len, F::zero());
    buffer
}

/// `buffer` emptied and refilled with `len` zeros (its memory kept when it is large enough).
fn zeroed<F: Real>(mut buffer: Vec<F>, len: usize) -> Vec<F> {
    buffer.clear();
    buffer.resize(len, F::zero());
    buffer
}

/// The memory a forward pass writes into: fresh, or an earlier forward's.
#[derive(Default)]
struct Buffers<F> {
    w: Vec<F>,
    z: Vec<F>,
    solution: Vec<F>,
    kept: Vec<f64>,
    theta: Vec<F>,
}

/// A forward pass's outputs for a range of rows: `w`, `z` and the solution, and what the kernel
/// keeps, each with its row width.
type Outputs<'a, F> = ([(&'a mut [F], usize); 3], (&'a mut [f64], usize));

/// `3, 3` from `[3, 3]`.
fn dims_list(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges `split_rows` runs and the threads it runs them on.
    fn ranges(count: usize, row_len: usize, threads: Option<usize>) -> Vec<(Range<usize>, bool)> {
        let caller = std::thread::current().id();
        let none: [(&mut [f64], usize); 0] = [];
        split_rows(count, row_len, threads, none, |r, []| {
            Ok((r, std::thread::current().id() != caller))
        })
        .unwrap()
    }

    /// `Some(n)` splits into exactly `min(n, count)` consecutive, near-equal ranges, each on a
    /// thread of its own, even for a tiny request on a one-core machine; `Some(1)` and small
    /// automatic requests stay on the calling thread.
    #[test]
    fn forced_split_runs_every_range_on_its_own_thread() {
        let got = ranges(18, 1, Some(4));
        let bounds: Vec<Range<usize>> = got.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(bounds, [0..4, 4..9, 9..13, 13..18]);
        assert!(got.iter().all(|&(_, spawned)| spawned));
        let one_each = ranges(3, 1, Some(64));
        assert_eq!(one_each.len(), 3);
        assert!(one_each.iter().all(|(r, spawned)| r.len() == 1 && *spawned));
        assert_eq!(ranges(18, 1, Some(1)), [(0..18, false)]);
        assert_eq!(ranges(18, 1, None), [(0..18, false)]);
    }
}
