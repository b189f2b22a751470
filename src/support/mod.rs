//! Support sets `Z` and the one table that lists them.
//!
//! A support is described once, in its own file, by two things:
//! - an [`Entry`] in [`REGISTRY`]: its keyword, its arguments and how to build it from them;
//! - [`Structure`]: its shapes, the regularizers it can be relaxed with, brute-force enumeration
//!   for the tests, and its lowering into the kernel IR ([`crate::ir`]): the exact kernel
//!   `argmax_{z∈Z} ⟨w, z⟩`, the soft kernel `argmax_{z∈conv Z} ⟨x, z⟩ − f(z)` (`x = w/T`)
//!   chosen by the plan, the score and decode maps and the estimator hooks.
//!
//! The checker and the generic tests know supports only through this table; backends know
//! only the IR.

pub mod arborescence;
pub mod bernoulli;
pub mod categorical;
pub mod correlated_subset;
pub mod counts;
pub mod matching;
pub mod permutation;
pub mod spanning_tree;
pub mod subset;

use std::sync::Arc;

use crate::ir::{Conditional, Decode, Hard, Rule, ScoreFunction, ScoreMap, Soft};
use crate::noise::Coordinates;

/// Every support the language knows, in the order `sst check` lists them.
pub const REGISTRY: &[Entry] = &[
    categorical::ENTRY,
    bernoulli::ENTRY,
    subset::ENTRY,
    correlated_subset::ENTRY,
    counts::POISSON,
    counts::BINOMIAL,
    counts::GEOMETRIC,
    counts::NEGATIVE_BINOMIAL,
    permutation::ENTRY,
    matching::ENTRY,
    spanning_tree::ENTRY,
    arborescence::ENTRY,
];

/// Looks a support keyword up in [`REGISTRY`].
pub fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// A registered support: its keyword, its arguments, and how to build it.
pub struct Entry {
    /// The keyword in specs, e.g. `categorical`.
    pub name: &'static str,
    /// One line for help texts and completion.
    pub summary: &'static str,
    /// An instance in spec syntax, for the demo and help texts, e.g. `categorical(5)`.
    pub example: &'static str,
    /// Its arguments in positional order.
    pub params: &'static [Param],
    /// Builds the support from arguments already checked against `params` (kinds and bounds);
    /// checks what involves several arguments (`k ≤ n`).
    pub build: fn(&[Value]) -> Result<SupportRef, ArgError>,
    /// A random instance small enough for [`Structure::enumerate`], for the generic tests.
    pub random_instance: fn(seed: u64) -> SupportRef,
    /// A moderate instance (n ≥ 6 where the support allows; some sizes vary with `seed`) whose
    /// soft solution depends on every entry of `θ` that the support reads, so that gradients are
    /// not identically zero: for the generic f64 gradient checks, which cost 2·len(θ) forward
    /// passes per check. Too large for [`Structure::enumerate`].
    pub gradient_instance: fn(seed: u64) -> SupportRef,
}

/// A shared support instance.
pub type SupportRef = Arc<dyn Structure>;

/// The largest integer argument unless a parameter sets a smaller one: sizes beyond it are no
/// request anyone can run, and products of two of them stay within `usize`.
pub const MAX_INT: i64 = i32::MAX as i64;

/// A declared argument of a support, perturbation, solver, backward rule or estimator.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    /// `None`: the argument is required.
    pub default: Option<Value>,
}

/// What values an argument accepts.
#[derive(Clone, Copy, Debug)]
pub enum ParamKind {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A finite real number `> 0`.
    Positive,
    /// One of these names, e.g. `baseline = leave_one_out`.
    Name(&'static [&'static str]),
    /// An integer `≥ min` or one of these names, e.g. `max = auto`.
    IntOrName {
        min: i64,
        names: &'static [&'static str],
    },
}

impl ParamKind {
    /// The names this kind accepts (empty for numbers only).
    pub fn names(self) -> &'static [&'static str] {
        match self {
            ParamKind::Name(names) | ParamKind::IntOrName { names, .. } => names,
            ParamKind::Int { .. } | ParamKind::Positive => &[],
        }
    }

    /// The largest integer this kind accepts.
    pub fn max(self) -> i64 {
        match self {
            ParamKind::Int { max, .. } => max,
            ParamKind::IntOrName { .. } | ParamKind::Positive | ParamKind::Name(_) => MAX_INT,
        }
    }

    /// What is expected, for messages: "an integer ≥ 1 or `auto`".
    pub fn expected(self) -> String {
        let names = || {
            let quoted: Vec<String> = self.names().iter().map(|n| format!("`{n}`")).collect();
            quoted.join(", ")
        };
        match self {
            ParamKind::Int { min, max: MAX_INT } => format!("an integer ≥ {min}"),
            ParamKind::Int { min, max } => format!("an integer from {min} to {max}"),
            ParamKind::Positive => "a number > 0".into(),
            ParamKind::Name(_) => format!("one of {}", names()),
            ParamKind::IntOrName { min, .. } => format!("an integer ≥ {min} or {}", names()),
        }
    }
}

/// A checked argument value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Real(f64),
    Name(&'static str),
}

impl Value {
    /// The integer of an `Int` argument (0 otherwise, which the checker never passes to an
    /// `Int` parameter).
    pub fn int(self) -> i64 {
        match self {
            Value::Int(i) => i,
            Value::Real(_) | Value::Name(_) => 0,
        }
    }

    /// The number of a numeric argument (NaN for a name).
    pub fn real(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Real(x) => x,
            Value::Name(_) => f64::NAN,
        }
    }

    /// The name of a `Name` argument.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Value::Name(n) => Some(n),
            Value::Int(_) | Value::Real(_) => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(x) => write!(f, "{x:?}"),
            Value::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Writes `name(a = 1, b = 2)` in spec syntax; just `name` when there are no parameters.
pub fn call_syntax(name: &str, params: &[Param], values: &[Value]) -> String {
    if params.is_empty() {
        return name.to_string();
    }
    let args: Vec<String> = params
        .iter()
        .zip(values)
        .map(|(p, v)| format!("{} = {v}", p.name))
        .collect();
    format!("{name}({})", args.join(", "))
}

/// An argument that is wrong in combination with others, e.g. `k > n`.
#[derive(Debug)]
pub struct ArgError {
    /// Index of the offending argument in the entry's `params`.
    pub param: usize,
    pub message: String,
}

/// The regularizer `f` of a soft solver `z_T = argmax_{z∈conv Z} ⟨w, z⟩ − T·f(z)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regularizer {
    /// `f(z) = Σ z log z`.
    Entropy,
    /// `f(z) = Σ z log z + (1 − z) log(1 − z)`.
    BinaryEntropy,
    /// `f(z) = ½‖z‖²` (`½‖z − ½‖²` for Bernoulli).
    Euclidean,
    /// `f = A*`, the conjugate of the support's log-partition: the soft solution is `∇A(w/T)`.
    ExpFamily,
}

impl Regularizer {
    /// All regularizers the language knows.
    pub const ALL: &'static [Regularizer] = &[
        Regularizer::Entropy,
        Regularizer::BinaryEntropy,
        Regularizer::Euclidean,
        Regularizer::ExpFamily,
    ];

    /// The keyword in specs.
    pub fn name(self) -> &'static str {
        match self {
            Regularizer::Entropy => "entropy",
            Regularizer::BinaryEntropy => "binary_entropy",
            Regularizer::Euclidean => "euclidean",
            Regularizer::ExpFamily => "expfamily",
        }
    }

    /// `f(z)` in its standard form (`None` for `expfamily`, whose `A*` has no closed form);
    /// supports whose form differs override [`Structure::regularizer_value`].
    pub fn value(self, z: &[f64]) -> Option<f64> {
        let xlogx = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
        match self {
            Regularizer::Entropy => Some(z.iter().map(|&x| xlogx(x)).sum()),
            Regularizer::BinaryEntropy => Some(z.iter().map(|&x| xlogx(x) + xlogx(1.0 - x)).sum()),
            Regularizer::Euclidean => Some(0.5 * z.iter().map(|x| x * x).sum::<f64>()),
            Regularizer::ExpFamily => None,
        }
    }
}

/// One way a support can be relaxed: a regularizer, the solver that computes it, its arguments
/// and the backward rules it implements natively.
#[derive(Clone, Copy, Debug)]
pub struct SoftSolver {
    pub regularizer: Regularizer,
    /// The solver's name in spec syntax, e.g. `softmax`.
    pub name: &'static str,
    /// The solver's own arguments (iterations, tolerances); empty for closed forms.
    pub params: &'static [Param],
    /// Native backward rules, the default first.
    pub rules: &'static [Rule],
    /// Why the default rule is the default, shown by `sst check`.
    pub why_rule: &'static str,
}

/// The soft solver a plan chose, with its arguments resolved.
#[derive(Clone, Debug)]
pub struct SoftCall {
    pub solver: SoftSolver,
    pub args: Vec<Value>,
}

/// The description of a support instance: its shapes, the relaxations it offers, and how it
/// lowers into the kernel IR ([`crate::ir`]), the only thing backends see.
pub trait Structure: Send + Sync {
    /// The instance in spec syntax, e.g. `categorical(n = 10)`.
    fn describe(&self) -> String;
    /// The shape of `θ` and of `z` (without batch or samples axes).
    fn shape(&self) -> Vec<usize>;
    /// How `gumbel` and `neg_exponential` act on the coordinates: one joint argmax by default.
    fn coordinates(&self) -> Coordinates {
        Coordinates::Joint
    }
    /// The map from `θ` to the scores the noise and kernels act on: `θ` itself by default.
    fn scores(&self) -> ScoreMap {
        ScoreMap::Identity
    }
    /// The map from the kernels' solution to `z`: the identity by default.
    fn decode(&self) -> Decode {
        Decode::Identity
    }
    /// The exact kernel `argmax_{z∈Z} ⟨w, z⟩`.
    fn hard(&self) -> Hard;
    /// The soft kernel of one of [`Structure::soft_solvers`] with its arguments resolved.
    fn lower(&self, soft: &SoftCall) -> Soft;
    /// The relaxations this support offers, its default regularizer first.
    fn soft_solvers(&self) -> &'static [SoftSolver];
    /// Every `z ∈ Z`, flattened; for brute-force tests on small instances.
    fn enumerate(&self) -> Vec<Vec<f64>>;
    /// `f(z)` for a regularizer this support offers (`None` where there is no closed form).
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        regularizer.value(z)
    }
    /// Zeroes the entries of a gradient in `w` coordinates that the support ignores (below the
    /// diagonal, edges into the root). Nothing by default.
    fn restrict_gradient(&self, _grad: &mut [f64]) {}
    /// Gumbel-Rao's conditional noise for this support, where it has one (the checker offers
    /// `gumbel_rao` only then).
    fn conditional_gumbel(&self) -> Option<Conditional> {
        None
    }
    /// REINFORCE's score function for this support, where it has one (the checker offers
    /// `reinforce` only then).
    fn score_function(&self) -> Option<ScoreFunction> {
        None
    }
}

/// The integer argument `n` of the one-argument supports, `n ≥ 1`.
pub const SIZE_PARAM: Param = Param {
    name: "n",
    kind: ParamKind::Int {
        min: 1,
        max: MAX_INT,
    },
    default: None,
};
