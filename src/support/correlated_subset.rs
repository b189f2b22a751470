//! `correlated_subset(n, k)`: correlated top-k (Paulus et al. 2020, Table 1, "Corr. Top k").
//! `w` has `2n − 1` entries, `n` unary scores then `n − 1` pairwise scores of adjacent pairs;
//! `Z = {z ∈ {0,1}^{2n−1} : Σ_{i<n} z_i = k, z_{n+i} = z_i z_{i+1}}` (DESIGN.md §2, §5).
//!
//! - hard: max-plus DP over (position, count, previous bit), O(n·min(k, n − k));
//! - `expfamily` (the only regularizer): unary and pairwise marginals of `p(z) ∝ exp⟨x, z⟩`
//!   by log-space forward–backward, O(n·min(k, n − k)); backward by forward mode through it.

use std::sync::Arc;

use super::subset::{sizes, small_sizes, K_PARAM};
use super::{ArgError, Entry, Regularizer, Rule, SoftCall, SoftSolver, Structure, SIZE_PARAM};
use crate::ir::{Hard, Soft};
use crate::kernels::dp::{dp_too_large, subset_dp_cells, MAX_DP_CELLS};

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
                message: dp_too_large("correlated top-k", cells),
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
    fn hard(&self) -> Hard {
        Hard::ChainViterbi { k: self.k }
    }
    fn lower(&self, _: &SoftCall) -> Soft {
        Soft::ChainDp { k: self.k }
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
