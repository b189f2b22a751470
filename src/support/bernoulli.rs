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
use super::{
    Entry, Estimate, Regularizer, Report, Rule, Scores, SoftCall, SoftSolver, Solve, Structure,
    SIZE_PARAM,
};
use crate::estimator;
use crate::kernels::logistic;
use crate::noise::{Coordinates, NoiseKey};
use crate::real::Real;

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
    fn hard_solver(&self) -> &'static str {
        "threshold"
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    fn enumerate(&self) -> Vec<Vec<f64>> {
        (0..1usize << self.n)
            .map(|bits| (0..self.n).map(|i| ((bits >> i) & 1) as f64).collect())
            .collect()
    }
    fn has_conditional_gumbel(&self) -> bool {
        true
    }
    fn has_score(&self) -> bool {
        true
    }
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        match regularizer {
            Regularizer::Euclidean => Some(0.5 * z.iter().map(|x| (x - 0.5).powi(2)).sum::<f64>()),
            other => other.value(z),
        }
    }
}

impl<F: Real> Estimate<F> for Bernoulli {
    fn conditional_gumbel(&self, theta: &[F], z: &[F], key: NoiseKey, draw: u32, w: &mut [F]) {
        estimator::conditional_logistic(theta, z, key, draw, w);
    }
    fn score(&self, theta: &[F], z: &[F], grad: &mut [F]) {
        estimator::score_bernoulli(theta, z, grad);
    }
}

impl<F: Real> Scores<F> for Bernoulli {}

impl<F: Real> Solve<F> for Bernoulli {
    fn hard(&self, w: &[F], z: &mut [F]) {
        for (zi, &wi) in z.iter_mut().zip(w) {
            *zi = if wi > F::zero() { F::one() } else { F::zero() };
        }
    }

    fn soft(&self, soft: &SoftCall, x: &[F], z: &mut [F], _: &mut Report) -> Result<(), String> {
        match soft.solver.regularizer {
            Regularizer::Euclidean => logistic::clipped_linear(x, z),
            _ => logistic::sigmoid(x, z),
        }
        Ok(())
    }

    fn soft_vjp(
        &self,
        soft: &SoftCall,
        _: Rule,
        _: &[F],
        z: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String> {
        match soft.solver.regularizer {
            Regularizer::Euclidean => logistic::clipped_linear_vjp(z, g, grad_x),
            _ => logistic::sigmoid_vjp(z, g, grad_x),
        }
        Ok(())
    }
}
