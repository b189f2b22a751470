//! Backends run a [`Program`] on rows of `θ`; the layer (`src/layer.rs`) is the driver that
//! checks a request, chooses a backend, splits the rows over threads and merges the reports.
//!
//! A backend reads the kernel IR only. [`reference::Reference`] is the oracle: one `match` per
//! IR node calling the kernels of `src/kernels/`, one row at a time, with its working memory
//! allocated once per call.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fused;
#[cfg(feature = "jit")]
pub mod jit;
pub mod reference;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use crate::ir::{Program, ScoreMap, Truncation};
use crate::kernels::counts::MAX_OUTCOMES;
use crate::kernels::dp::dp_too_large;
use crate::noise::Perturbation;
use crate::plan::{Formula, Mode};
use crate::real::Real;

/// Which backend runs a layer (`Options::backend`, `--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// The JIT where it runs the program, the reference backend otherwise.
    #[default]
    Auto,
    /// The reference backend.
    Reference,
    /// The JIT; a request error where it cannot run the program.
    Jit,
    /// The CUDA backend (feature `cuda`); a request error where this build, the machine or
    /// the backend cannot run the program. Never chosen by `Auto`.
    Cuda,
}

impl Choice {
    /// The names of `--backend`, in the order of [`Choice::from_name`].
    pub const NAMES: &'static [&'static str] = &["auto", "reference", "jit", "cuda"];

    pub fn from_name(name: &str) -> Option<Choice> {
        match name {
            "auto" => Some(Choice::Auto),
            "reference" => Some(Choice::Reference),
            "jit" => Some(Choice::Jit),
            "cuda" => Some(Choice::Cuda),
            _ => None,
        }
    }
}

/// The backend that runs `program` in precision `F` under `choice`, or why the forced one
/// cannot.
pub fn select<F: Real>(
    program: &Program,
    choice: Choice,
) -> Result<&'static dyn Backend<F>, Unsupported> {
    match choice {
        Choice::Reference => Ok(&reference::Reference),
        Choice::Auto => Ok(jit_for::<F>(program).unwrap_or(&reference::Reference)),
        Choice::Jit => jit_for::<F>(program),
        Choice::Cuda => cuda_for::<F>(program),
    }
}

/// The CUDA backend if this build has it, the machine has a device and NVRTC, and the backend
/// runs `program`.
fn cuda_for<F: Real>(program: &Program) -> Result<&'static dyn Backend<F>, Unsupported> {
    #[cfg(feature = "cuda")]
    {
        cuda::describe().map_err(Unsupported)?;
        Backend::<F>::supports(&cuda::Cuda, program).map(|()| &cuda::Cuda as &dyn Backend<F>)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = program;
        Err(Unsupported(NO_CUDA.to_string()))
    }
}

/// The JIT if it runs `program` (and was built: feature `jit`).
fn jit_for<F: Real>(program: &Program) -> Result<&'static dyn Backend<F>, Unsupported> {
    #[cfg(feature = "jit")]
    {
        Backend::<F>::supports(&jit::Jit, program).map(|()| &jit::Jit as &dyn Backend<F>)
    }
    #[cfg(not(feature = "jit"))]
    {
        let _ = program;
        Err(Unsupported(
            "this build has no JIT (cargo feature `jit`)".to_string(),
        ))
    }
}

/// The CUDA device layers would run on (`"NVIDIA H200 (sm_90)"`), or why there is none: no
/// feature `cuda` in this build, no driver, no device, no NVRTC.
pub fn cuda_device() -> Result<String, String> {
    #[cfg(feature = "cuda")]
    {
        cuda::describe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(NO_CUDA.to_string())
    }
}

/// Why a build without the feature `cuda` has no CUDA backend.
#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str = "this build has no CUDA backend (cargo feature `cuda`)";

/// A layer's temperature schedule as it is evaluated for requests: compiled by the JIT on first
/// use where it depends on the step (feature `jit`; once per process and formula, kept here for
/// the layer and its clones), [`Formula::eval`] otherwise and under `Choice::Reference`. The
/// same number either way (any NaN for a NaN).
#[derive(Clone, Default)]
pub(crate) struct Schedule {
    #[cfg(feature = "jit")]
    compiled: std::sync::Arc<std::sync::OnceLock<Option<jit::schedule::Schedule>>>,
}

impl Schedule {
    /// `formula` (the layer's schedule) at training step `step`.
    #[cfg_attr(not(feature = "jit"), allow(unused_variables))]
    pub fn at(&self, formula: &Formula, step: f64, choice: Choice) -> f64 {
        #[cfg(feature = "jit")]
        if choice != Choice::Reference && formula.uses_step() {
            let compiled = self
                .compiled
                .get_or_init(|| jit::compiled_schedule(formula).ok());
            if let Some(schedule) = compiled {
                return schedule.at(step);
            }
        }
        formula.eval(step)
    }
}

/// Seconds this process has spent compiling JIT kernels and schedules (0 without the `jit`
/// feature).
pub fn compile_seconds() -> f64 {
    #[cfg(feature = "jit")]
    {
        jit::compile_seconds()
    }
    #[cfg(not(feature = "jit"))]
    {
        0.0
    }
}

/// Why a backend cannot run a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// A backend: runs a [`Program`]'s forward pass and adds its backward pass into a caller's
/// buffer, for a range of rows. Both may be called from several threads at once, on disjoint
/// ranges.
pub trait Backend<F: Real>: Send + Sync {
    /// The backend's name (`reference`).
    fn name(&self) -> &'static str;
    /// Whether this backend runs every node of `program`.
    fn supports(&self, program: &Program) -> Result<(), Unsupported>;
    /// The forward pass of `rows.range`: writes `w`, `z` and (for programs with a score map)
    /// the solution over the scores into `out`, whose slices start at the range's first row.
    fn forward(&self, rows: &Rows<F>, out: ForwardOut<F>) -> Result<(), SolveError>;
    /// `grad ← ∂L/∂θ` for the rows of `rows.range` (one `θ`-shaped row each, starting at the
    /// range's first row), from what the forward pass saved and the cotangent: every entry is
    /// written (the layer hands over memory of an earlier call without zeroing it).
    fn backward_into(
        &self,
        rows: &Rows<F>,
        saved: Saved<F>,
        grad: &mut [F],
    ) -> Result<(), SolveError>;
}

/// The rows a backend call works on, and how the forward pass ran.
#[derive(Clone, Debug)]
pub struct Rows<'a, F> {
    pub program: &'a Program,
    /// Every batch row of `θ`, `program.row_len` entries each; empty in a backward pass of a
    /// program whose backward does not read it ([`Program::backward_reads_theta`]: the layer
    /// keeps no copy then).
    pub theta: &'a [F],
    /// The number of batch rows of `θ`.
    pub batch: usize,
    /// The flat row indices `sample × batch_rows + b` of this call.
    pub range: Range<usize>,
    pub mode: Mode,
    pub temperature: f64,
    /// The perturbation applied: the program's, or `None` when a request asks for no noise.
    pub noise: Perturbation,
    pub seed: u64,
    /// Each batch row's score length (programs with a score map; see [`score_lens`]).
    pub score_lens: Option<&'a [usize]>,
    /// The stored width of a score row: the longest row's length.
    pub stride: usize,
}

impl<F> Rows<'_, F> {
    /// The number of batch rows of `θ`.
    pub fn batch_rows(&self) -> usize {
        self.batch
    }

    /// The score length of batch row `b`.
    pub fn score_len(&self, b: usize) -> usize {
        self.score_lens.map_or(self.program.row_len, |lens| lens[b])
    }
}

/// Where a forward call writes, from the range's first row: `w` and `solution` with
/// `rows.stride` entries per row (`solution` empty for programs without a score map), `z` with
/// `row_len`, and what a soft kernel keeps for its backward pass (`kept`, [`kept_width`]
/// entries per row).
pub struct ForwardOut<'a, F> {
    pub w: &'a mut [F],
    pub z: &'a mut [F],
    pub solution: &'a mut [F],
    pub kept: &'a mut [f64],
    pub report: &'a mut Report,
}

/// How many f64 per row a forward pass in `mode` keeps for the backward pass: the soft kernel's
/// [`Soft::kept_len`](crate::ir::Soft::kept_len) in soft mode, none in hard mode.
pub fn kept_width(program: &Program, mode: Mode) -> usize {
    match mode {
        Mode::Soft => program.soft.kept_len(),
        Mode::Hard => 0,
    }
}

/// What a backward call reads, for every row of the request (indexed by flat row): the
/// perturbed scores, the solution over the scores (or `z`), and the cotangent: one per batch
/// row, shared by the samples, or (`per_sample`) one per flat row.
#[derive(Clone, Copy)]
pub struct Saved<'a, F> {
    pub w: &'a [F],
    pub solution: &'a [F],
    /// What the forward pass's kernel kept, [`kept_width`] entries per flat row.
    pub kept: &'a [f64],
    pub cotangent: &'a [F],
    pub per_sample: bool,
}

impl<F> Saved<'_, F> {
    /// The cotangent row of flat row `i`, batch row `b`.
    pub fn cotangent_row(&self, i: usize, b: usize) -> usize {
        if self.per_sample {
            i
        } else {
            b
        }
    }
}

/// A kernel that cannot produce a usable answer for a row; each variant's sentence is built in
/// one place ([`fmt::Display`]), and [`SolveError::field`] says which request field it is about.
#[derive(Clone, Debug, PartialEq)]
pub enum SolveError {
    /// The perturbation refused `θ` (the noise module's sentence).
    Noise(String),
    /// `θ + noise` is not finite in the request's precision.
    PerturbedOverflow { value: f64, precision: &'static str },
    /// `w / T` is not finite in the request's precision.
    ScaledOverflow {
        w: f64,
        temperature: f64,
        precision: &'static str,
    },
    /// A k-subset dynamic program beyond its cell budget.
    DpTooLarge { what: &'static str, cells: usize },
    /// A gradient came out infinite or NaN.
    GradientNotFinite { kernel: &'static str },
    /// The GPU failed in the middle of a call (the driver's error).
    Device(String),
    /// `max = auto` needs more outcomes than a truncation may keep to drop less than `tail`.
    TruncationTooLong { theta: f64, tail: f64 },
    /// The log-pmf overflows at this truncation.
    PmfOverflow {
        law: &'static str,
        theta: f64,
        k: usize,
    },
}

impl SolveError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SolveError::ScaledOverflow { .. } | SolveError::GradientNotFinite { .. } => {
                "temperature"
            }
            SolveError::Device(_) => "backend",
            _ => "theta",
        }
    }
}

impl fmt::Display for SolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::diagnostic::number;
        match self {
            SolveError::Noise(sentence) => f.write_str(sentence),
            SolveError::Device(error) => write!(f, "the CUDA device failed: {error}"),
            SolveError::PerturbedOverflow { value, precision } => write!(
                f,
                "the perturbed parameters overflow {precision} ({value:e}); use smaller theta or \
                 less noise"
            ),
            SolveError::ScaledOverflow {
                w,
                temperature,
                precision,
            } => write!(
                f,
                "w / T overflows {precision} (w = {}, T = {}); use a larger temperature",
                number(*w),
                number(*temperature)
            ),
            SolveError::DpTooLarge { what, cells } => f.write_str(&dp_too_large(what, *cells)),
            SolveError::GradientNotFinite { kernel } => write!(
                f,
                "the {kernel} gradient is not finite; use a larger temperature"
            ),
            SolveError::TruncationTooLong { theta, tail } => write!(
                f,
                "theta = {theta} needs more than {MAX_OUTCOMES} outcomes to drop less than \
                 {tail:e} of the mass; set `max` or use a smaller theta"
            ),
            SolveError::PmfOverflow { law, theta, k } => write!(
                f,
                "theta = {theta:e} is out of range for {law} truncated at K = {k}: its log-pmf \
                 overflows"
            ),
        }
    }
}

impl std::error::Error for SolveError {}

/// The kinds of warning a forward pass can give; a report keeps one sentence per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A threshold solver stopped before its tolerance.
    BisectionNotConverged,
    /// Sinkhorn stopped before its tolerance.
    SinkhornNotConverged,
    /// A count truncation drops more than [`WARN_TAIL`] of the mass.
    TruncationDropsMass,
    /// `reinforce(baseline = leave_one_out)` with one sample has no baseline.
    LeaveOneOutAlone,
}

/// What the kernels report besides their output: numbers for the response's `diagnostics`
/// (merged over a batch by their maximum) and sentences for its `warnings`, one per kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub values: BTreeMap<&'static str, f64>,
    pub warnings: Vec<String>,
    /// The kind of each warning, in the order of `warnings`.
    kinds: Vec<Warning>,
}

impl Report {
    /// Records `value` under `key`, keeping the largest seen.
    pub fn record_max(&mut self, key: &'static str, value: f64) {
        let slot = self.values.entry(key).or_insert(value);
        *slot = slot.max(value);
    }

    /// Adds a warning of `kind`, replacing an earlier one of the same kind, so that a batch
    /// gives one sentence per problem (the worst values are in [`Report::values`]).
    pub fn warn(&mut self, kind: Warning, sentence: String) {
        if let Some(i) = self.kinds.iter().position(|&k| k == kind) {
            self.kinds.remove(i);
            self.warnings.remove(i);
        }
        self.kinds.push(kind);
        self.warnings.push(sentence);
    }

    /// Whether a warning of `kind` was given.
    pub fn has(&self, kind: Warning) -> bool {
        self.kinds.contains(&kind)
    }

    /// Merges another report into this one.
    pub fn merge(&mut self, other: Report) {
        for (k, v) in other.values {
            self.record_max(k, v);
        }
        for (kind, w) in other.kinds.into_iter().zip(other.warnings) {
            self.warn(kind, w);
        }
    }
}

/// A count truncation dropping more than this mass is reported as a warning.
pub const WARN_TAIL: f64 = 1e-3;

/// Each batch row's score length for programs with a score map (`None`: the scores are `θ`):
/// a count's `K + 1`, each row truncated on its own so that a row's result depends on that row
/// alone; reports the largest `K` as `truncation_k` and the largest dropped tail mass as
/// `dropped_mass`. `theta` holds one number per row for counts.
pub fn score_lens<F: Real>(
    map: ScoreMap,
    theta: &[F],
    report: &mut Report,
) -> Result<Option<Vec<usize>>, SolveError> {
    let ScoreMap::Counts { law, truncation } = map else {
        return Ok(None);
    };
    let mut lens = Vec::with_capacity(theta.len());
    let mut last_warning = None;
    for t in theta.iter().map(|t| t.f64()) {
        let k = match truncation {
            Truncation::Fixed(k) => k,
            Truncation::Auto { tail } => law
                .auto_max(t, tail)
                .ok_or(SolveError::TruncationTooLong { theta: t, tail })?,
        };
        if law.log_weights(t, k).any(|w| !w.is_finite()) {
            return Err(SolveError::PmfOverflow {
                law: law.name(),
                theta: t,
                k,
            });
        }
        report.record_max("truncation_k", k as f64);
        let dropped = 1.0 - law.kept_mass(t, k);
        report.record_max("dropped_mass", dropped);
        if dropped > WARN_TAIL {
            last_warning = Some((k, dropped, t));
        }
        lens.push(k + 1);
    }
    // One sentence for the request (the last row's that needs one; the worst value is
    // `dropped_mass`), written once rather than once per row.
    if let Some((k, dropped, t)) = last_warning {
        report.warn(
            Warning::TruncationDropsMass,
            format!(
                "the truncation at K = {k} drops {dropped:.3e} of the mass of {} at theta = {t}; \
                 raise `max`",
                law.name()
            ),
        );
    }
    Ok(Some(lens))
}
