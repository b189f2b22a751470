//! The Plan: what the checker decided for one layer, and why.

use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::noise::Perturbation;
use crate::support::{Rule, SoftCall, Support};

/// How `∂L/∂w` is computed through the soft solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backward {
    /// A rule the soft solver implements itself.
    Native(Rule),
    /// `dL/dw ≈ [z_T(w + h·g) − z_T(w − h·g)] / (2h)`, `h = eps/‖g‖` (valid since `∂z_T/∂w` is
    /// symmetric).
    FiniteDiff { eps: f64 },
}

/// What the layer returns forward and which gradient it passes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimator {
    /// Forward the soft `z_T`; backward through the soft solver.
    Relaxed,
    /// Forward the hard `z`; backward through the soft solver at the same `w`.
    StraightThrough,
    /// Forward the hard `D`; backward: the soft Jacobian averaged over `draws` Gumbel vectors
    /// drawn conditionally on `argmax(θ + G) = D` (Paulus, Maddison, Krause 2021).
    GumbelRao { draws: usize },
    /// Forward the hard `z`; backward: the score function `(f(z) − b)·∇_θ log q(z|θ)`.
    Reinforce { baseline: Baseline },
}

/// The baseline `b` of the score-function estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// `b = 0`.
    None,
    /// A moving average of past losses kept by the layer: `b ← 0.9·b + 0.1·mean(f)` after each
    /// call (the first call uses `b = 0`).
    Ema,
    /// The mean of the other samples' losses of the same call and batch row; the per-sample
    /// estimate is `S/(S−1)·(f_s − mean f)·∇log q(z_s)`, unbiased for `S ≥ 2`.
    LeaveOneOut,
}

impl Baseline {
    /// The names of `reinforce(baseline = …)`, in the order of [`Baseline::from_name`].
    pub const NAMES: &'static [&'static str] = &["none", "ema", "leave_one_out"];

    pub fn from_name(name: &str) -> Baseline {
        match name {
            "ema" => Baseline::Ema,
            "leave_one_out" => Baseline::LeaveOneOut,
            _ => Baseline::None,
        }
    }
}

/// Whether a forward pass returns the exact or the relaxed solution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Hard,
    Soft,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Hard => "hard",
            Mode::Soft => "soft",
        }
    }
}

impl Estimator {
    /// The forward mode this estimator implies when a request does not name one.
    pub fn default_mode(self) -> Mode {
        match self {
            Estimator::Relaxed => Mode::Soft,
            Estimator::StraightThrough
            | Estimator::GumbelRao { .. }
            | Estimator::Reinforce { .. } => Mode::Hard,
        }
    }

    /// Whether the estimator needs the spec's Gumbel noise (a request may not turn it off).
    pub fn needs_noise(self) -> bool {
        matches!(
            self,
            Estimator::GumbelRao { .. } | Estimator::Reinforce { .. }
        )
    }
}

/// A temperature schedule: an expression of the training step with the consts folded in.
#[derive(Clone, Debug, PartialEq)]
pub enum Formula {
    Num(f64),
    Step,
    Neg(Box<Formula>),
    Binary(crate::syntax::ast::BinOp, Box<Formula>, Box<Formula>),
    Call(Function, Vec<Formula>),
}

/// The functions an expression may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Exp,
    Log,
    Sqrt,
    Abs,
    Min,
    Max,
}

/// Every function the language knows: name, function, smallest number of arguments, largest.
pub const FUNCTIONS: &[(&str, Function, usize, usize)] = &[
    ("exp", Function::Exp, 1, 1),
    ("log", Function::Log, 1, 1),
    ("sqrt", Function::Sqrt, 1, 1),
    ("abs", Function::Abs, 1, 1),
    ("min", Function::Min, 2, usize::MAX),
    ("max", Function::Max, 2, usize::MAX),
];

impl Function {
    /// Applies the function to its evaluated arguments.
    pub fn apply(self, args: &[f64]) -> f64 {
        match self {
            Function::Exp => args[0].exp(),
            Function::Log => args[0].ln(),
            Function::Sqrt => args[0].sqrt(),
            Function::Abs => args[0].abs(),
            Function::Min => args.iter().copied().fold(f64::INFINITY, f64::min),
            Function::Max => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

impl Formula {
    /// The value at training step `step`.
    pub fn eval(&self, step: f64) -> f64 {
        use crate::syntax::ast::BinOp;
        match self {
            Formula::Num(x) => *x,
            Formula::Step => step,
            Formula::Neg(a) => -a.eval(step),
            Formula::Binary(op, a, b) => {
                let (a, b) = (a.eval(step), b.eval(step));
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                }
            }
            Formula::Call(f, args) => {
                let values: Vec<f64> = args.iter().map(|a| a.eval(step)).collect();
                f.apply(&values)
            }
        }
    }

    /// Whether the value depends on the training step.
    pub fn uses_step(&self) -> bool {
        match self {
            Formula::Num(_) => false,
            Formula::Step => true,
            Formula::Neg(a) => a.uses_step(),
            Formula::Binary(_, a, b) => a.uses_step() || b.uses_step(),
            Formula::Call(_, args) => args.iter().any(Formula::uses_step),
        }
    }
}

/// One field of the plan with its value in spec syntax and why it has that value.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub field: &'static str,
    pub value: String,
    pub why: String,
}

/// Everything the runtime needs to run one layer.
#[derive(Clone)]
pub struct Plan {
    pub name: String,
    /// The preset the layer was declared with, if any.
    pub preset: Option<String>,
    pub support: Arc<dyn Support>,
    pub noise: Perturbation,
    pub soft: SoftCall,
    pub backward: Backward,
    pub estimator: Estimator,
    pub temperature: Formula,
    /// The fields in the order `sst check` shows them: support, noise, regularizer,
    /// hard_solver, soft_solver, backward, estimator, temperature.
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The decision recorded for `field`.
    pub fn decision(&self, field: &str) -> &Decision {
        self.decisions
            .iter()
            .find(|d| d.field == field)
            .expect("the checker records every field")
    }

    /// The layer's object of `sst check --json`; `temperature` replaces the expression by the
    /// number a request used.
    pub fn to_json(&self, temperature: Option<f64>) -> Json {
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), json!(self.name));
        fields.insert("preset".into(), json!(self.preset));
        fields.insert("theta_shape".into(), json!(self.support.shape()));
        fields.insert("z_shape".into(), json!(self.support.shape()));
        let mut reasons = serde_json::Map::new();
        for d in &self.decisions {
            fields.insert(d.field.into(), json!(d.value));
            reasons.insert(d.field.into(), json!(d.why));
        }
        if let Some(t) = temperature {
            fields.insert("temperature".into(), json!(t));
        }
        fields.insert(
            "default_mode".into(),
            json!(self.estimator.default_mode().name()),
        );
        fields.insert("reasons".into(), Json::Object(reasons));
        Json::Object(fields)
    }
}
