//! `correlated_subset(n, k)`: correlated top-k (Paulus et al. 2020, Table 1, "Corr. Top k").
//! `w` has `2n − 1` entries, `n` unary scores then `n − 1` pairwise scores of adjacent pairs;
//! `Z = {z ∈ {0,1}^{2n−1} : Σ_{i<n} z_i = k, z_{n+i} = z_i z_{i+1}}` (DESIGN.md §2, §5).
//!
//! - hard: max-plus DP over (position, count, previous bit), O(n·min(k, n − k));
//! - `expfamily` (the only regularizer): unary and pairwise marginals of `p(z) ∝ exp⟨x, z⟩`
//!   by log-space forward–backward, O(n·min(k, n − k)); backward by forward mode through it.

use std::sync::Arc;

use super::subset::{sizes, small_sizes, too_large, K_PARAM, MAX_DP_CELLS};
use super::{
    ArgError, Entry, Estimate, Regularizer, Report, Rule, Scores, SoftCall, SoftSolver, Solve,
    Structure, SIZE_PARAM,
};
use crate::kernels::chain_subset::{chain_argmax, chain_marginals, chain_marginals_jvp};
use crate::kernels::logspace::subset_dp_cells;
use crate::real::Real;

pub const ENTRY: Entry = Entry {
    name: "correlated_subset",
    summary: "k of n items in a row, scored per item and per adjacent pair (correlated top-k)",
    example: "correlated_subset(10, 3)",
    params: &[SIZE_PARAM, K_PARAM],
    build: |args| {
        let (n, k) = sizes(args)?;
        let cells = subset_dp_cells(n, k);
        if cells > MAX_DP_CELLS {
            return Err(ArgError {
                param: 1,
                message: too_large("correlated top-k", cells),
            });
        }
        Ok(Arc::new(CorrelatedSubset { n, k }))
    },
    random_instance: |seed| {
        let (n, k) = small_sizes(seed, 7);
        Arc::new(CorrelatedSubset { n, k })
    },
    gradient_instance: |seed| {
        Arc::new(CorrelatedSubset {
            n: 7,
            k: 2 + (seed % 4) as usize,
        })
    },
};

const SOLVERS: &[SoftSolver] = &[SoftSolver {
    regularizer: Regularizer::ExpFamily,
    name: "forward_backward",
    params: &[],
    rules: &[Rule::ClosedForm],
    why_rule: "the Jacobian is the covariance of z (symmetric); forward-mode differentiation of \
               the log-space forward–backward applies it exactly",
}];

#[derive(Clone, Debug)]
pub struct CorrelatedSubset {
    pub n: usize,
    pub k: usize,
}

impl Structure for CorrelatedSubset {
    fn describe(&self) -> String {
        format!("correlated_subset(n = {}, k = {})", self.n, self.k)
    }
    fn shape(&self) -> Vec<usize> {
        vec![2 * self.n - 1]
    }
    fn hard_solver(&self) -> &'static str {
        "viterbi"
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let n = self.n;
        (0u64..1 << n)
            .filter(|bits| bits.count_ones() as usize == self.k)
            .map(|bits| {
                let bit = |i: usize| ((bits >> i) & 1) as f64;
                (0..n)
                    .map(bit)
                    .chain((0..n - 1).map(|i| bit(i) * bit(i + 1)))
                    .collect()
            })
            .collect()
    }
}

impl<F: Real> Scores<F> for CorrelatedSubset {}

impl<F: Real> Estimate<F> for CorrelatedSubset {}

impl<F: Real> Solve<F> for CorrelatedSubset {
    fn hard(&self, w: &[F], z: &mut [F]) {
        chain_argmax(w, self.k, z);
    }

    fn soft(&self, _: &SoftCall, x: &[F], z: &mut [F], _: &mut Report) -> Result<(), String> {
        chain_marginals(x, self.k, z);
        Ok(())
    }

    fn soft_vjp(
        &self,
        _: &SoftCall,
        _: Rule,
        x: &[F],
        _: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String> {
        chain_marginals_jvp(x, self.k, g, grad_x);
        Ok(())
    }
}
