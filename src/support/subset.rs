//! `subset(n, k)`: k-hot vectors `Z = {z ∈ {0,1}ⁿ : Σ z = k}`, `conv Z` the capped simplex
//! `{z ∈ [0,1]ⁿ : Σ z = k}` (DESIGN.md §2; Paulus et al. 2020, Table 1, "top k").
//!
//! - hard: the top-k indicator by selection, O(n) (ties to the lowest index);
//! - `binary_entropy` (the default): `z = sigmoid(x − τ)`, `Σ z = k` (threshold solver);
//! - `entropy`: `z = min(1, exp(x − τ))`, `Σ z = k` (threshold solver);
//! - `euclidean`: `z = clip(x − τ, 0, 1)`, the exact projection onto the capped simplex;
//! - `expfamily`: the marginals of `p(z) ∝ exp⟨x, z⟩` over `Z` (elementary-symmetric-polynomial
//!   DP in log space, O(n·min(k, n − k))).

use std::sync::Arc;

use super::{
    ArgError, Entry, Param, ParamKind, Regularizer, Rule, SoftCall, SoftSolver, Structure, Value,
    MAX_INT, SIZE_PARAM,
};
use crate::ir::{Hard, Soft};
use crate::kernels::threshold::Link;
use crate::noise::{uniforms, NoiseKey};

/// The subset size `k ≥ 1` of `subset` and `correlated_subset`.
pub const K_PARAM: Param = Param {
    name: "k",
    kind: ParamKind::Int {
        min: 1,
        max: MAX_INT,
    },
    default: None,
};

pub const ENTRY: Entry = Entry {
    name: "subset",
    summary: "k of n items (k-hot vectors), top-k",
    example: "subset(10, 3)",
    params: &[SIZE_PARAM, K_PARAM],
    build: |args| {
        let (n, k) = sizes(args)?;
        Ok(Arc::new(Subset { n, k }))
    },
    random_instance: |seed| {
        let (n, k) = small_sizes(seed, 8);
        Arc::new(Subset { n, k })
    },
    gradient_instance: |seed| {
        Arc::new(Subset {
            n: 8,
            k: 2 + (seed % 5) as usize,
        })
    },
};

/// `(n, k)` from checked arguments, with `k ≤ n` checked.
pub(crate) fn sizes(args: &[Value]) -> Result<(usize, usize), ArgError> {
    let (n, k) = (args[0].int(), args[1].int());
    if k > n {
        return Err(ArgError {
            param: 1,
            message: format!("k must be at most n = {n}, found {k}"),
        });
    }
    Ok((n as usize, k as usize))
}

/// `1 ≤ k ≤ n ≤ max_n` drawn from `seed`, for random test instances.
pub(crate) fn small_sizes(seed: u64, max_n: usize) -> (usize, usize) {
    let key = NoiseKey {
        seed,
        sample: 0,
        batch: 0,
    };
    let [u, v] = uniforms::<f64>(key, 1);
    let n = 1 + (u * max_n as f64) as usize;
    (n, 1 + (v * n as f64) as usize)
}

/// The argument of the threshold solvers.
const TOL_PARAM: Param = Param {
    name: "tol",
    kind: ParamKind::Positive,
    default: Some(Value::Real(1e-12)),
};

const WHY_IMPLICIT: &str = "the implicit-function theorem on Σ z = k gives the exact VJP \
     d ⊙ (g − ⟨d, g⟩/Σd), d = ∂z/∂τ, without replaying the iterations";

const SOLVERS: &[SoftSolver] = &[
    SoftSolver {
        regularizer: Regularizer::BinaryEntropy,
        name: "bisection",
        params: &[TOL_PARAM],
        rules: &[Rule::Implicit],
        why_rule: WHY_IMPLICIT,
    },
    SoftSolver {
        regularizer: Regularizer::Entropy,
        name: "bisection",
        params: &[TOL_PARAM],
        rules: &[Rule::Implicit],
        why_rule: WHY_IMPLICIT,
    },
    SoftSolver {
        regularizer: Regularizer::Euclidean,
        name: "capped_simplex",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule:
            "the capped-simplex projection has an exact analytic VJP: g − mean(g) where 0 < z < 1",
    },
    SoftSolver {
        regularizer: Regularizer::ExpFamily,
        name: "esp_dp",
        params: &[],
        rules: &[Rule::ClosedForm],
        why_rule: "the Jacobian is the covariance of z (symmetric); forward-mode differentiation \
                   of the log-space DP applies it exactly",
    },
];

#[derive(Clone, Debug)]
pub struct Subset {
    pub n: usize,
    pub k: usize,
}

impl Structure for Subset {
    fn describe(&self) -> String {
        format!("subset(n = {}, k = {})", self.n, self.k)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n]
    }
    fn hard(&self) -> Hard {
        Hard::TopK { k: self.k }
    }
    fn lower(&self, soft: &SoftCall) -> Soft {
        let k = self.k;
        match soft.solver.regularizer {
            Regularizer::Euclidean => Soft::CappedSimplex { k },
            Regularizer::ExpFamily => Soft::Esp { k },
            Regularizer::Entropy => Soft::Threshold {
                link: Link::CappedExp,
                k,
                tol: soft.args[0].real(),
            },
            Regularizer::BinaryEntropy => Soft::Threshold {
                link: Link::Sigmoid,
                k,
                tol: soft.args[0].real(),
            },
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    fn enumerate(&self) -> Vec<Vec<f64>> {
        (0u64..1 << self.n)
            .filter(|bits| bits.count_ones() as usize == self.k)
            .map(|bits| (0..self.n).map(|i| ((bits >> i) & 1) as f64).collect())
            .collect()
    }
}
