//! The Plan: what the checker decided for one layer, and why.

use serde_json::{json, Value as Json};

pub use crate::ir::{Backward, Baseline};
use crate::ir::{Conditional, Program, ScoreFunction};
use crate::support::{SoftCall, SupportRef};

/// What the layer returns forward and which gradient it passes back, as the spec chose it
/// (the program's [`crate::ir::Estimator`] adds the support's hook).
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
    /// The program's estimator: this one with the support's hook where it needs one (`None`
    /// when the support has no such hook: the checker refuses the estimator then).
    pub fn lower(
        self,
        conditional: Option<Conditional>,
        score: Option<ScoreFunction>,
    ) -> Option<crate::ir::Estimator> {
        use crate::ir::Estimator as Ir;
        Some(match self {
            Estimator::Relaxed => Ir::Relaxed,
            Estimator::StraightThrough => Ir::StraightThrough,
            Estimator::GumbelRao { draws } => Ir::GumbelRao {
                draws,
                conditional: conditional?,
            },
            Estimator::Reinforce { baseline } => Ir::Reinforce {
                baseline,
                score: score?,
            },
        })
    }

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
    Binary(Arith, Box<Formula>, Box<Formula>),
    Call(Function, Vec<Formula>),
}

/// The arithmetic operators of a formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
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
            // From ±∞, taking an argument only when it is smaller (larger) than the running
            // value: NaNs are passed over, and of equal values (0 and −0) the first is kept.
            Function::Min => args
                .iter()
                .fold(f64::INFINITY, |m, &x| if x < m { x } else { m }),
            Function::Max => args
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m }),
        }
    }
}

impl Formula {
    /// The value at training step `step`.
    pub fn eval(&self, step: f64) -> f64 {
        match self {
            Formula::Num(x) => *x,
            Formula::Step => step,
            Formula::Neg(a) => -a.eval(step),
            Formula::Binary(op, a, b) => {
                let (a, b) = (a.eval(step), b.eval(step));
                match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
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
    pub support: SupportRef,
    pub soft: SoftCall,
    pub estimator: Estimator,
    /// What the layer computes (noise, kernels, backward rule, estimator with its hook),
    /// lowered from the spec: what backends run.
    pub program: Program,
    pub temperature: Formula,
    /// The fields in the order `sst check` shows them: support, noise, regularizer,
    /// hard_solver, soft_solver, backward, estimator, temperature.
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The kernel IR program as JSON: every node with its settings.
    pub fn program_json(&self) -> Json {
        serde_json::to_value(self.program).expect("a program serializes")
    }

    /// The decision recorded for `field`.
    pub fn decision(&self, field: &str) -> &Decision {
        self.decisions
            .iter()
            .find(|d| d.field == field)
            .expect("the checker records every field")
    }

    /// The layer's object of `sst eval`'s responses; `temperature` replaces the expression by
    /// the number a request used. `sst check --json` adds the `"program"` ([`Plan::program_json`]).
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
