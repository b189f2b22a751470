//! The names the checker knows besides supports: fields, perturbations, estimators and
//! backward rules, each with its arguments. Supports and their regularizers live in
//! [`crate::support::REGISTRY`].

use crate::ir::Rule;
use crate::noise::Perturbation;
use crate::plan::{Backward, Baseline, Estimator};
use crate::support::{Param, ParamKind, Value};

/// The most conditional draws `gumbel_rao(draws)` may ask for: each costs one soft backward per
/// sample and row.
pub const MAX_DRAWS: i64 = 10_000;

/// A named choice with arguments, e.g. `gaussian(sigma = 1)`.
pub struct Choice<T: 'static> {
    pub name: &'static str,
    pub params: &'static [Param],
    pub make: fn(&[Value]) -> T,
    /// What it means, for `sst check` and help texts.
    pub summary: &'static str,
}

/// Looks `name` up in a table of choices.
pub fn find<T>(table: &'static [Choice<T>], name: &str) -> Option<&'static Choice<T>> {
    table.iter().find(|c| c.name == name)
}

/// The names of a table, for "expected one of" lists and hints.
pub fn names<T>(table: &'static [Choice<T>]) -> Vec<&'static str> {
    table.iter().map(|c| c.name).collect()
}

/// The fields a layer body may set.
pub const FIELDS: &[&str] = &[
    "noise",
    "regularizer",
    "temperature",
    "solver",
    "backward",
    "estimator",
];

const POSITIVE: ParamKind = ParamKind::Positive;

pub const PERTURBATIONS: &[Choice<Perturbation>] = &[
    Choice {
        name: "gumbel",
        params: &[],
        make: |_| Perturbation::Gumbel,
        summary: "w = θ + Gumbel noise (logistic noise on binary coordinates)",
    },
    Choice {
        name: "gaussian",
        params: &[Param {
            name: "sigma",
            kind: POSITIVE,
            default: Some(Value::Real(1.0)),
        }],
        make: |v| Perturbation::Gaussian { sigma: v[0].real() },
        summary: "w = θ + σ·N(0, 1)",
    },
    Choice {
        name: "neg_exponential",
        params: &[],
        make: |_| Perturbation::NegExponential,
        summary: "w = −E ⊙ exp(−θ), E ~ Exp(1): the exponential race",
    },
    Choice {
        name: "none",
        params: &[],
        make: |_| Perturbation::None,
        summary: "w = θ (deterministic)",
    },
];

pub const ESTIMATORS: &[Choice<Estimator>] = &[
    Choice {
        name: "relaxed",
        params: &[],
        make: |_| Estimator::Relaxed,
        summary: "forward the soft z_T, backward through the soft solver",
    },
    Choice {
        name: "straight_through",
        params: &[],
        make: |_| Estimator::StraightThrough,
        summary: "forward the hard z, backward through the soft solver at the same w",
    },
    Choice {
        name: "gumbel_rao",
        params: &[Param {
            name: "draws",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_DRAWS,
            },
            default: Some(Value::Int(10)),
        }],
        make: |v| Estimator::GumbelRao {
            draws: v[0].int() as usize,
        },
        summary: "forward the hard z, backward the soft Jacobian averaged over conditional Gumbels",
    },
    Choice {
        name: "reinforce",
        params: &[Param {
            name: "baseline",
            kind: ParamKind::Name(Baseline::NAMES),
            default: Some(Value::Name("none")),
        }],
        make: |v| Estimator::Reinforce {
            baseline: Baseline::from_name(v[0].name().unwrap_or("none")),
        },
        summary: "forward the hard z, backward the score function (f(z) − b)·∇log q(z|θ)",
    },
];

pub const BACKWARDS: &[Choice<Backward>] = &[
    Choice {
        name: "closed_form",
        params: &[],
        make: |_| Backward::Native(Rule::ClosedForm),
        summary: "an analytic vector–Jacobian product",
    },
    Choice {
        name: "implicit",
        params: &[],
        make: |_| Backward::Native(Rule::Implicit),
        summary: "the implicit-function theorem at the solver's optimum",
    },
    Choice {
        name: "unrolled",
        params: &[],
        make: |_| Backward::Native(Rule::Unrolled),
        summary: "reverse mode through the solver's iterations",
    },
    Choice {
        name: "finite_diff",
        params: &[Param {
            name: "eps",
            kind: POSITIVE,
            default: Some(Value::Real(1e-5)),
        }],
        make: |v| Backward::FiniteDiff { eps: v[0].real() },
        summary: "central differences along the cotangent (any soft solver)",
    },
];
