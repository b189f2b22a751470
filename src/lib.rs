//! # sst — structured discrete latent layers
//!
//! A `.sst` spec declares layers: a support set `Z`, a perturbation of the parameters `θ`, a
//! regularizer, a temperature, an estimator and a backward rule. sst compiles it into layers
//! that sample `z` (hard `argmax_{z∈Z} ⟨w, z⟩` or soft `argmax_{z∈conv Z} ⟨w, z⟩ − T·f(z)`,
//! with `w = θ + noise`) and return `∂L/∂θ` for a cotangent — the stochastic softmax tricks of
//! Paulus et al. (2020).
//!
//! ```
//! use ndarray::array;
//! use sst::{Mode, Options};
//!
//! let spec = sst::compile(r#"
//!     const n = 4
//!     layer pick: categorical(n) {
//!         noise:       gumbel
//!         regularizer: entropy            # softmax of (θ + G) / T
//!         temperature: max(0.1, exp(-step / 1000))
//!         estimator:   straight_through   # hard forward, soft backward
//!     }
//!     layer coins: binary_concrete(3) { temperature: 0.5 }
//! "#).unwrap();
//! let pick = spec.layer("pick");
//! let theta = array![0.5f64, -1.0, 2.0, 0.0].into_dyn();
//! let fwd = pick.forward(theta.view(), &Options::default().seed(7));
//! assert_eq!(fwd.mode, Mode::Hard);
//! assert_eq!(fwd.z.sum(), 1.0);                        // a one-hot sample
//! let cotangent = array![1.0, 0.0, 0.0, 0.0].into_dyn();
//! let grad = pick.backward(&fwd, cotangent.view());    // ∂⟨c, z⟩/∂θ, straight-through
//! assert!((grad.sum()).abs() < 1e-12);                 // softmax gradients sum to zero
//! ```
//!
//! Every fallible call has a `try_` form returning a typed error ([`Error`],
//! [`RequestError`]); the plain form panics with the same message.

pub mod autodiff;
pub mod backend;
pub mod check;
pub mod diagnostic;
pub mod estimator;
pub mod grad;
pub mod ir;
pub mod kernels;
pub mod layer;
pub mod math;
pub mod noise;
pub mod plan;
pub mod real;
pub mod simd;
pub mod stdlib;
pub mod support;
pub mod syntax;

use std::fmt;
use std::path::Path;

pub use backend::{Choice as BackendChoice, Report, SolveError, Warning};
pub use diagnostic::Diagnostic;
pub use layer::{Forward, Layer, Noise, Options, RequestError};
pub use plan::{Estimator, Mode, Plan};
pub use real::Real;

/// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// A compiled spec: its layers, in declaration order.
#[derive(Clone)]
pub struct Module {
    layers: Vec<Layer>,
}

impl Module {
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The layer named `name`.
    pub fn try_layer(&self, name: &str) -> Result<&Layer, Error> {
        self.layers
            .iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_string(),
                available: self.layers.iter().map(|l| l.name().to_string()).collect(),
            })
    }

    /// [`Module::try_layer`], panicking on an unknown name.
    pub fn layer(&self, name: &str) -> &Layer {
        self.try_layer(name).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Errors of the host API.
#[derive(Debug)]
pub enum Error {
    /// The spec does not compile: every diagnostic, rendered against its source.
    Compile(CompileError),
    /// A spec file could not be read.
    Io { path: String, error: std::io::Error },
    /// No layer of that name.
    UnknownLayer {
        name: String,
        available: Vec<String>,
    },
    /// A bad forward or backward request.
    Request(RequestError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Compile(e) => write!(f, "{e}"),
            Error::Io { path, error } => write!(f, "cannot read {path}: {error}"),
            Error::UnknownLayer { name, available } => {
                write!(
                    f,
                    "no layer `{name}`; the spec declares: {}",
                    available.join(", ")
                )
            }
            Error::Request(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        Error::Request(e)
    }
}

/// The diagnostics of a spec that does not compile, with the source they point into.
#[derive(Debug, Clone)]
pub struct CompileError {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// How many diagnostics a compile error shows unless asked for more (`sst check --max-errors`).
pub const MAX_ERRORS: usize = 20;

impl CompileError {
    /// The first `max_errors` diagnostics rendered against the source (indexed once, so that
    /// rendering thousands costs each its own line, not the whole source), then "and N more
    /// errors" for the rest.
    pub fn render(&self, max_errors: usize) -> String {
        let mut out = String::new();
        let source = diagnostic::Indexed::new(&self.source);
        for d in self.diagnostics.iter().take(max_errors) {
            out.push_str(&d.render_in(&self.file, &source));
        }
        let more = self.diagnostics.len().saturating_sub(max_errors);
        if more > 0 {
            let s = if more == 1 { "" } else { "s" };
            out.push_str(&format!(
                "... and {more} more error{s} (show them with --max-errors {})\n",
                self.diagnostics.len()
            ));
        }
        out
    }
}

/// The first [`MAX_ERRORS`] diagnostics, see [`CompileError::render`].
impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(MAX_ERRORS))
    }
}

/// Compiles a spec held in a string (diagnostics name it `<spec>`).
pub fn compile(source: &str) -> Result<Module, Error> {
    compile_named("<spec>", source)
}

/// Compiles a spec, naming it `file` in diagnostics.
pub fn compile_named(file: &str, source: &str) -> Result<Module, Error> {
    let fail = |diagnostics| {
        Error::Compile(CompileError {
            file: file.to_string(),
            source: source.to_string(),
            diagnostics,
        })
    };
    let spec = syntax::parse(source).map_err(|d| fail(vec![d]))?;
    let plans = check::check(&spec).map_err(fail)?;
    Ok(Module {
        layers: plans.into_iter().map(Layer::new).collect(),
    })
}

/// Reads and compiles a spec file.
pub fn compile_file(path: impl AsRef<Path>) -> Result<Module, Error> {
    let path = path.as_ref();
    let source = std::fs::read_to_string(path).map_err(|error| Error::Io {
        path: path.display().to_string(),
        error,
    })?;
    compile_named(&path.display().to_string(), &source)
}
