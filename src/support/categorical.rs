//! `categorical(n)`: one-hot vectors `Z = {e_1, …, e_n}`.
//!
//! - hard: `z = e_{argmax w}` (ties to the lowest index);
//! - `entropy` (`f = Σ z log z`): `z = softmax(x)`, the Gumbel-softmax / Concrete relaxation
//!   (Jang et al. 2017; Maddison et al. 2017);
//! - `euclidean` (`f = ½‖z‖²`): `z = sparsemax(x)`, the projection onto the simplex
//!   (Martins & Astudillo 2016).

use std::sync::Arc;

use super::{Entry, Regularizer, Rule, SoftCall, SoftSolver, Structure, SIZE_PARAM};
use crate::ir::{Conditional, Hard, ScoreFunction, Soft};
use crate::noise::{uniform, NoiseKey};

pub const ENTRY: Entry = Entry {
    name: "categorical",
    summary: "one of n categories (one-hot vectors)",
    example: "categorical(5)",
    params: &[SIZE_PARAM],
    build: |args| {
        Ok(Arc::new(Categorical {
            n: args[0].int() as usize,
        }))
    },
    random_instance: |seed| {
        Arc::new(Categorical {
            n: small_size(seed),
        })
    },
    gradient_instance: |seed| {
        Arc::new(Categorical {
            n: 6 + (seed % 3) as usize,
        })
    },
};

const SOLVERS: &[SoftSolver] = &[
    SoftSolver {
        regularizer: Regularizer::Entropy,
        name: "softmax",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule: "softmax has an exact analytic VJP: z ⊙ (g − ⟨g, z⟩)",
    },
    SoftSolver {
        regularizer: Regularizer::Euclidean,
        name: "sparsemax",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule: "sparsemax has an exact analytic VJP: g − mean(g) on the support",
    },
];

/// A size in `1..=6` drawn from `seed`, for random test instances.
pub(crate) fn small_size(seed: u64) -> usize {
    let u = uniform::<f64>(
        NoiseKey {
            seed,
            sample: 0,
            batch: 0,
        },
        0,
    );
    1 + (u * 6.0) as usize
}

#[derive(Clone, Debug)]
pub struct Categorical {
    pub n: usize,
}

impl Structure for Categorical {
    fn describe(&self) -> String {
        format!("categorical(n = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n]
    }
    fn hard(&self) -> Hard {
        Hard::Argmax
    }
    fn lower(&self, soft: &SoftCall) -> Soft {
        match soft.solver.regularizer {
            Regularizer::Euclidean => Soft::Sparsemax,
            _ => Soft::Softmax,
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    fn conditional_gumbel(&self) -> Option<Conditional> {
        Some(Conditional::GumbelMax)
    }
    fn score_function(&self) -> Option<ScoreFunction> {
        Some(ScoreFunction::Categorical)
    }
    fn enumerate(&self) -> Vec<Vec<f64>> {
        (0..self.n)
            .map(|i| (0..self.n).map(|j| f64::from(u8::from(i == j))).collect())
            .collect()
    }
}
