//! Counts relaxed by Generalized Gumbel-Softmax (GenGS, Joo et al.): `poisson(max)`,
//! `binomial(trials)`, `geometric(max)`, `negative_binomial(r, max)`.
//!
//! `θ` is one unconstrained number per row (Poisson: the log-rate `log λ`; the others: the logit
//! of the success probability `p`). The count's pmf is truncated to `{0..K}` and renormalised,
//! `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)`; the noise perturbs `ℓ`, the solvers pick a category
//! (hard: `argmax`, soft: `softmax(w/T)`), and the count is the linear map `z = Σ_k k·s_k`.
//!
//! `K` is the `max` argument, or with `max = auto` the smallest `K` whose dropped tail mass
//! `P(X > K)` is below 1e-6, chosen for each row on its own (the largest is reported as
//! `truncation_k`), so that a row's sample never depends on the rows that share its batch.
//! Binomial counts need no truncation: `K = trials`.

use std::sync::Arc;

use super::categorical::small_size;
use super::{
    ArgError, Entry, Param, ParamKind, Regularizer, Rule, SoftCall, SoftSolver, Structure,
    SupportRef, Value, MAX_INT,
};
use crate::ir::{Decode, Hard, ScoreMap, Soft, Truncation};
use crate::kernels::counts::{CountLaw, MAX_OUTCOMES};

/// The dropped tail mass `max = auto` aims below.
const AUTO_TAIL: f64 = 1e-6;

const MAX_PARAM: Param = Param {
    name: "max",
    kind: ParamKind::IntOrName {
        min: 1,
        names: &["auto"],
    },
    default: Some(Value::Name("auto")),
};

/// `Some(K)` for an integer `max`, `None` for `auto`; at most [`MAX_OUTCOMES`] outcomes.
fn max_arg(v: Value, param: usize) -> Result<Option<usize>, ArgError> {
    match v.name() {
        Some(_) => Ok(None),
        None => Ok(Some(outcomes(v, param)?)),
    }
}

/// An integer argument that bounds the outcomes `{0..K}`: `K < MAX_OUTCOMES`.
fn outcomes(v: Value, param: usize) -> Result<usize, ArgError> {
    let k = v.int() as usize;
    if k >= MAX_OUTCOMES {
        return Err(ArgError {
            param,
            message: format!("at most {} outcomes are kept, found {k}", MAX_OUTCOMES - 1),
        });
    }
    Ok(k)
}

pub const POISSON: Entry = Entry {
    name: "poisson",
    summary: "a Poisson count, θ = log-rate, truncated to {0..max}",
    example: "poisson(max = 8)",
    params: &[MAX_PARAM],
    build: |a| Ok(count(CountLaw::Poisson, max_arg(a[0], 0)?)),
    random_instance: |seed| count(CountLaw::Poisson, Some(small_size(seed) + 1)),
    gradient_instance: |seed| count(CountLaw::Poisson, Some(moderate_max(seed))),
};

pub const BINOMIAL: Entry = Entry {
    name: "binomial",
    summary: "a binomial count of `trials` trials, θ = logit of p",
    example: "binomial(trials = 6)",
    params: &[Param {
        name: "trials",
        kind: ParamKind::Int {
            min: 1,
            max: MAX_INT,
        },
        default: None,
    }],
    build: |a| {
        Ok(count(
            CountLaw::Binomial {
                trials: outcomes(a[0], 0)?,
            },
            None,
        ))
    },
    random_instance: |seed| {
        count(
            CountLaw::Binomial {
                trials: small_size(seed),
            },
            None,
        )
    },
    gradient_instance: |seed| {
        count(
            CountLaw::Binomial {
                trials: moderate_max(seed),
            },
            None,
        )
    },
};

pub const GEOMETRIC: Entry = Entry {
    name: "geometric",
    summary: "failures before the first success, θ = logit of p, truncated to {0..max}",
    example: "geometric(max = 8)",
    params: &[MAX_PARAM],
    build: |a| Ok(count(CountLaw::Geometric, max_arg(a[0], 0)?)),
    random_instance: |seed| count(CountLaw::Geometric, Some(small_size(seed) + 1)),
    gradient_instance: |seed| count(CountLaw::Geometric, Some(moderate_max(seed))),
};

pub const NEGATIVE_BINOMIAL: Entry = Entry {
    name: "negative_binomial",
    summary: "failures before the r-th success, θ = logit of p, truncated to {0..max}",
    example: "negative_binomial(r = 3, max = 10)",
    params: &[
        Param {
            name: "r",
            kind: ParamKind::Positive,
            default: None,
        },
        MAX_PARAM,
    ],
    build: |a| {
        let r = a[0].real();
        if r > 1e6 {
            return Err(ArgError {
                param: 0,
                message: format!("r must be at most 1e6, found {r}"),
            });
        }
        Ok(count(CountLaw::NegativeBinomial { r }, max_arg(a[1], 1)?))
    },
    random_instance: |seed| {
        let r = 0.5 + small_size(seed ^ 0x5eed) as f64 / 2.0;
        count(CountLaw::NegativeBinomial { r }, Some(small_size(seed) + 1))
    },
    gradient_instance: |seed| {
        let r = 0.5 + (seed % 6) as f64 / 2.0;
        count(CountLaw::NegativeBinomial { r }, Some(moderate_max(seed)))
    },
};

/// A truncation `K` in `6..=9` for the gradient instances.
fn moderate_max(seed: u64) -> usize {
    6 + (seed % 4) as usize
}

const SOLVERS: &[SoftSolver] = &[SoftSolver {
    regularizer: Regularizer::Entropy,
    name: "softmax",
    params: &[],
    rules: &[Rule::ClosedForm],
    why_rule: "GenGS is a softmax over the outcomes followed by a linear map: an exact VJP",
}];

fn count(family: CountLaw, max: Option<usize>) -> SupportRef {
    Arc::new(Count { family, max })
}

#[derive(Clone, Debug)]
pub struct Count {
    pub family: CountLaw,
    /// The truncation `K`; `None` for `max = auto`.
    pub max: Option<usize>,
}

impl Count {
    /// `K` fixed by the law (binomial trials) or the spec, or chosen per row (`auto`).
    fn truncation(&self) -> Truncation {
        match (self.family, self.max) {
            (CountLaw::Binomial { trials }, _) => Truncation::Fixed(trials),
            (_, Some(max)) => Truncation::Fixed(max),
            (_, None) => Truncation::Auto { tail: AUTO_TAIL },
        }
    }
}

impl Structure for Count {
    fn describe(&self) -> String {
        let max = self.max.map_or("auto".to_string(), |m| m.to_string());
        match self.family {
            CountLaw::Binomial { trials } => format!("binomial(trials = {trials})"),
            CountLaw::NegativeBinomial { r } => {
                format!("negative_binomial(r = {r:?}, max = {max})")
            }
            _ => format!("{}(max = {max})", self.family.name()),
        }
    }
    fn shape(&self) -> Vec<usize> {
        vec![1]
    }
    fn scores(&self) -> ScoreMap {
        ScoreMap::Counts {
            law: self.family,
            truncation: self.truncation(),
        }
    }
    fn decode(&self) -> Decode {
        Decode::CountMean
    }
    fn hard(&self) -> Hard {
        Hard::Argmax
    }
    fn lower(&self, _: &SoftCall) -> Soft {
        Soft::Softmax
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// The counts `0..=K`; only for an explicit truncation (`auto` chooses `K` per request).
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let max = match self.truncation() {
            Truncation::Fixed(k) => k,
            Truncation::Auto { tail } => self.family.auto_max(0.0, tail).unwrap_or(0),
        };
        (0..=max).map(|k| vec![k as f64]).collect()
    }
    fn regularizer_value(&self, _: Regularizer, _: &[f64]) -> Option<f64> {
        None
    }
}
