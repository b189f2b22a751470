//! Support sets `Z` and the one table that lists them.
//!
//! A support is described once, in its own file, by three things:
//! - an [`Entry`] in [`REGISTRY`]: its keyword, its arguments and how to build it from them;
//! - [`Structure`]: what does not depend on the precision (shapes, the regularizers it can be
//!   relaxed with, brute-force enumeration for the tests);
//! - [`Solve<F>`]: the exact solver `argmax_{z∈Z} ⟨w, z⟩`, the soft solvers
//!   `argmax_{z∈conv Z} ⟨x, z⟩ − f(z)` (with `x = w/T`) and their native backward rules.
//!
//! The checker, the runtime and the generic tests know supports only through this table.

pub mod arborescence;
pub mod bernoulli;
pub mod categorical;
pub mod correlated_subset;
pub mod counts;
pub mod permutation;
pub mod spanning_tree;
pub mod subset;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::noise::{Coordinates, NoiseKey};
use crate::real::Real;

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
pub type SupportRef = Arc<dyn Support>;

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

/// A backward rule that a soft solver implements itself (the generic `finite_diff` is not one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// An analytic vector–Jacobian product.
    ClosedForm,
    /// The implicit-function theorem on the solver's optimality conditions.
    Implicit,
    /// Reverse mode through the solver's iterations as they ran.
    Unrolled,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::ClosedForm => "closed_form",
            Rule::Implicit => "implicit",
            Rule::Unrolled => "unrolled",
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

/// What a solver reports besides its output: numbers for the response's `diagnostics` (merged
/// over a batch by their maximum) and sentences for its `warnings`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub values: BTreeMap<&'static str, f64>,
    pub warnings: Vec<String>,
}

impl Report {
    /// Records `value` under `key`, keeping the largest seen.
    pub fn record_max(&mut self, key: &'static str, value: f64) {
        let slot = self.values.entry(key).or_insert(value);
        *slot = slot.max(value);
    }

    /// Adds a warning, replacing an earlier one of the same kind (the same words up to the
    /// first number), so that a batch gives one sentence per problem; the worst values are in
    /// [`Report::values`].
    pub fn warn(&mut self, sentence: String) {
        let kind =
            |s: &str| s[..s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len())].to_string();
        let new_kind = kind(&sentence);
        self.warnings.retain(|w| kind(w) != new_kind);
        self.warnings.push(sentence);
    }

    /// Merges another report into this one.
    pub fn merge(&mut self, other: Report) {
        for (k, v) in other.values {
            self.record_max(k, v);
        }
        for w in other.warnings {
            self.warn(w);
        }
    }
}

/// The precision-independent description of a support instance.
pub trait Structure: Send + Sync {
    /// The instance in spec syntax, e.g. `categorical(n = 10)`.
    fn describe(&self) -> String;
    /// The shape of `θ` and of `z` (without batch or samples axes).
    fn shape(&self) -> Vec<usize>;
    /// How `gumbel` and `neg_exponential` act on the coordinates: one joint argmax by default.
    fn coordinates(&self) -> Coordinates {
        Coordinates::Joint
    }
    /// The exact solver's name, e.g. `argmax`.
    fn hard_solver(&self) -> &'static str;
    /// The relaxations this support offers, its default regularizer first.
    fn soft_solvers(&self) -> &'static [SoftSolver];
    /// Every `z ∈ Z`, flattened; for brute-force tests on small instances.
    fn enumerate(&self) -> Vec<Vec<f64>>;
    /// `f(z)` for a regularizer this support offers (`None` where there is no closed form).
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        regularizer.value(z)
    }
    /// Turns a cotangent `c = ∂L/∂z` into the direction in `w` coordinates along which the
    /// finite-difference rule perturbs `w`: `Pᵀ Eᵀ c` when `z = E(μ(P w))` (for a spanning tree,
    /// `g_ij = c_ij + c_ji` above the diagonal and 0 elsewhere). The identity by default.
    fn fold_cotangent(&self, _c: &mut [f64]) {}
    /// Zeroes the entries of a gradient in `w` coordinates that the support ignores (below the
    /// diagonal, edges into the root). Nothing by default.
    fn restrict_gradient(&self, _grad: &mut [f64]) {}
    /// For supports whose noise and solvers act on scores derived from `θ` rather than on `θ`
    /// itself (counts: the truncated log-pmf over `{0..K}`): the length of each row's scores
    /// for this request's `θ` (all rows' entries, in order; one length per row, so that a row's
    /// result depends on that row alone), reporting choices such as `K`. `None`, the default:
    /// the scores are `θ` and the solution is `z` (and `θ` is not read).
    fn score_lens(
        &self,
        _theta: &mut dyn Iterator<Item = f64>,
        _report: &mut Report,
    ) -> Result<Option<Vec<usize>>, String> {
        Ok(None)
    }
    /// The most passes over a row the soft solver `soft` may make (its iteration cap), for the
    /// work budget of a request; 1 for solvers that finish in a fixed number of passes.
    fn iterations(&self, _soft: &SoftCall) -> usize {
        1
    }
    /// Whether [`Solve::conditional_gumbel`] is implemented (the `gumbel_rao` estimator).
    fn has_conditional_gumbel(&self) -> bool {
        false
    }
    /// Whether [`Solve::score`] is implemented (the `reinforce` estimator).
    fn has_score(&self) -> bool {
        false
    }
}

/// The solvers of a support in one precision. Slices are flattened `θ`-shaped rows.
pub trait Solve<F: Real>: Estimate<F> + Scores<F> + Send + Sync {
    /// `z = argmax_{z∈Z} ⟨w, z⟩`, ties to the lowest index.
    fn hard(&self, w: &[F], z: &mut [F]);
    /// `z = argmax_{z∈conv Z} ⟨x, z⟩ − f(z)` with `x = w/T`; fails only where the problem is
    /// numerically out of reach (the message says why).
    fn soft(
        &self,
        soft: &SoftCall,
        x: &[F],
        z: &mut [F],
        report: &mut Report,
    ) -> Result<(), String>;
    /// `grad_x += J(x)ᵀ g`, `J = ∂z/∂x` at the soft solution `z = soft(x)`, by a native rule;
    /// fails only where the problem is numerically out of reach (the message says why).
    fn soft_vjp(
        &self,
        soft: &SoftCall,
        rule: Rule,
        x: &[F],
        z: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String>;
}

/// The estimator hooks of a support in one precision; the checker only lets a plan use them
/// where [`Structure::has_conditional_gumbel`] / [`Structure::has_score`] say so.
pub trait Estimate<F: Real> {
    /// Gumbel-Rao: `w = θ + G` with the support's Gumbel noise drawn conditionally on the hard
    /// sample `z` (so that `z` is the hard solution at `w`); draw `draw` of the row keyed `key`.
    fn conditional_gumbel(&self, _theta: &[F], _z: &[F], _key: NoiseKey, _draw: u32, _w: &mut [F]) {
        unreachable!("the checker allows gumbel_rao only where has_conditional_gumbel()")
    }
    /// REINFORCE: `grad += ∇_θ log q(z|θ)` under Gumbel noise.
    fn score(&self, _theta: &[F], _z: &[F], _grad: &mut [F]) {
        unreachable!("the checker allows reinforce only where has_score()")
    }
}

/// The maps between `θ`, the solvers' scores and `z` (see [`Structure::score_lens`]):
/// `θ → ℓ(θ)`, noise and solvers on `ℓ`, solution `s ↦ z = E s` (linear). The identity by
/// default.
pub trait Scores<F: Real> {
    /// `ℓ(θ)` for one row.
    fn scores(&self, theta: &[F], scores: &mut [F]) {
        scores.copy_from_slice(theta);
    }
    /// `grad_theta += (∂ℓ/∂θ)ᵀ grad_scores`.
    fn scores_vjp(&self, _theta: &[F], grad_scores: &[F], grad_theta: &mut [F]) {
        for (gt, &gs) in grad_theta.iter_mut().zip(grad_scores) {
            *gt = *gt + gs;
        }
    }
    /// `z = E s`.
    fn decode(&self, solution: &[F], z: &mut [F]) {
        z.copy_from_slice(solution);
    }
    /// `g = Eᵀ c`, the cotangent in score coordinates.
    fn decode_vjp(&self, cotangent: &[F], g: &mut [F]) {
        g.copy_from_slice(cotangent);
    }
}

/// A support instance usable in both precisions.
pub trait Support: Structure {
    fn solve_f64(&self) -> &dyn Solve<f64>;
    fn solve_f32(&self) -> &dyn Solve<f32>;
}

impl<T: Structure + Solve<f64> + Solve<f32>> Support for T {
    fn solve_f64(&self) -> &dyn Solve<f64> {
        self
    }
    fn solve_f32(&self) -> &dyn Solve<f32> {
        self
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
