//! `bernoulli(n)`: `n` independent binary choices, `Z = {0, 1}ⁿ`.
//!
//! - hard: `z_i = [w_i > 0]`;
//! - `binary_entropy` (`f = Σ z log z + (1 − z) log(1 − z)`): `z = sigmoid(x)`, the binary
//!   Concrete relaxation (Maddison et al. 2017);
//! - `euclidean` (`f = ½‖z − ½‖²`): `z = clip(x + ½, 0, 1)`, so that `z = ½` at `x = 0`.
//!
//! Every coordinate is its own binary choice, so `gumbel` noise here is logistic noise.

use std::sync::Arc;

use super::categorical::small_size;
use super::{Entry, Regularizer, Rule, SoftCall, SoftSolver, Structure, SIZE_PARAM};
use crate::ir::{Conditional, Hard, ScoreFunction, Soft};
use crate::noise::Coordinates;

pub const ENTRY: Entry = Entry {
    name: "bernoulli",
    summary: "n independent binary choices",
    example: "bernoulli(5)",
    params: &[SIZE_PARAM],
    build: |args| {
        Ok(Arc::new(Bernoulli {
            n: args[0].int() as usize,
        }))
    },
    random_instance: |seed| {
        Arc::new(Bernoulli {
            n: small_size(seed).min(5),
        })
    },
    gradient_instance: |seed| {
        Arc::new(Bernoulli {
            n: 6 + (seed % 3) as usize,
        })
    },
};

const SOLVERS: &[SoftSolver] = &[
    SoftSolver {
        regularizer: Regularizer::BinaryEntropy,
        name: "sigmoid",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule: "the sigmoid has an exact analytic VJP: g ⊙ z ⊙ (1 − z)",
    },
    SoftSolver {
        regularizer: Regularizer::Euclidean,
        name: "clipped_linear",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule: "the clipped linear map has an exact analytic VJP: g where 0 < z < 1",
    },
];

#[derive(Clone, Debug)]
pub struct Bernoulli {
    pub n: usize,
}

impl Structure for Bernoulli {
    fn describe(&self) -> String {
        format!("bernoulli(n = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n]
    }
    fn coordinates(&self) -> Coordinates {
        Coordinates::Binary
    }
    fn hard(&self) -> Hard {
        Hard::Positive
    }
    fn lower(&self, soft: &SoftCall) -> Soft {
        match soft.solver.regularizer {
            Regularizer::Euclidean => Soft::Clip,
            _ => Soft::Sigmoid,
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    fn enumerate(&self) -> Vec<Vec<f64>> {
        (0..1usize << self.n)
            .map(|bits| (0..self.n).map(|i| ((bits >> i) & 1) as f64).collect())
            .collect()
    }
    fn conditional_gumbel(&self) -> Option<Conditional> {
        Some(Conditional::Logistic)
    }
    fn score_function(&self) -> Option<ScoreFunction> {
        Some(ScoreFunction::Bernoulli)
    }
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        match regularizer {
            Regularizer::Euclidean => Some(0.5 * z.iter().map(|x| (x - 0.5).powi(2)).sum::<f64>()),
            other => other.value(z),
        }
    }
}
