//! `spanning_tree(nodes)`: the spanning trees of the complete graph on `n` nodes, as symmetric
//! `n × n` adjacency matrices (zero diagonal). Edge `{i, j}` weighs `θ[i][j]` for `i < j`; the
//! diagonal and the lower triangle of `θ` are ignored (zero gradient).
//!
//! - hard: the maximum spanning tree (Prim's dense O(n²) algorithm);
//! - `expfamily` (`f = A*`): edge marginals `μ = ∇A(x)`, `A(x) = log Σ_𝒯 exp Σ_{e∈𝒯} x_e = log det L̂`
//!   (Kirchhoff's matrix-tree theorem on the Laplacian of `exp(x)` with one row and column
//!   removed), written into both halves of `z`; backward: the exact Hessian–vector product
//!   through `L̂⁻¹` (`src/kernels/matrix_tree.rs`).
//!
//! The kernel is the directed one: with `x_ij = x_ji` the spanning trees are the arborescences
//! rooted at any node, and the marginal of `{i, j}` is `μ_{i→j} + μ_{j→i}`. The root is the node
//! of the largest weighted degree, which keeps the entries of `L̂⁻¹` (resistances to the root)
//! and so the cancellation in the marginals small.

use std::sync::Arc;

use super::categorical::small_size;
use super::{Entry, Param, ParamKind, Regularizer, Rule, SoftCall, SoftSolver, Structure, MAX_INT};
use crate::ir::{Hard, Soft, Trees};
use crate::kernels::matrix_tree::restrict_undirected;

/// The `nodes` argument of the tree supports: at least two nodes.
pub(crate) const NODES_PARAM: Param = Param {
    name: "nodes",
    kind: ParamKind::Int {
        min: 2,
        max: MAX_INT,
    },
    default: None,
};

pub const ENTRY: Entry = Entry {
    name: "spanning_tree",
    summary: "spanning trees of the complete graph on n nodes (symmetric adjacency)",
    example: "spanning_tree(5)",
    params: &[NODES_PARAM],
    build: |args| {
        Ok(Arc::new(SpanningTree {
            n: args[0].int() as usize,
        }))
    },
    random_instance: |seed| {
        Arc::new(SpanningTree {
            n: small_nodes(seed),
        })
    },
    gradient_instance: |_| Arc::new(SpanningTree { n: 6 }),
};

/// A node count in `2..=5` drawn from `seed`: at most 125 spanning trees and 125 arborescences.
pub(crate) fn small_nodes(seed: u64) -> usize {
    2 + (small_size(seed) - 1) % 4
}

/// The matrix-tree marginals (shared with `arborescence`).
pub(crate) const SOLVERS: &[SoftSolver] = &[SoftSolver {
    regularizer: Regularizer::ExpFamily,
    name: "matrix_tree",
    params: &[],
    rules: &[Rule::ClosedForm],
    why_rule: "the Hessian–vector product of log det L̂ through the inverse Laplacian is exact \
               (dM = −M dL̂ M), O(n³)",
}];

#[derive(Clone, Debug)]
pub struct SpanningTree {
    pub n: usize,
}

impl Structure for SpanningTree {
    fn describe(&self) -> String {
        format!("spanning_tree(nodes = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.n]
    }
    fn hard(&self) -> Hard {
        Hard::MaxSpanningTree { n: self.n }
    }
    fn lower(&self, _: &SoftCall) -> Soft {
        Soft::MatrixTree {
            n: self.n,
            trees: Trees::Undirected,
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// Every spanning tree, decoded from the `n^(n−2)` Prüfer sequences (Prüfer 1918).
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let n = self.n;
        let count = n.pow(n.saturating_sub(2) as u32);
        (0..count)
            .map(|code| {
                let seq: Vec<usize> = (0..n - 2).map(|p| code / n.pow(p as u32) % n).collect();
                let mut z = vec![0.0; n * n];
                for (i, j) in prufer_edges(&seq, n) {
                    z[i * n + j] = 1.0;
                    z[j * n + i] = 1.0;
                }
                z
            })
            .collect()
    }
    fn restrict_gradient(&self, grad: &mut [f64]) {
        restrict_undirected(grad, self.n);
    }
}

/// The `n − 1` edges of the tree with Prüfer sequence `seq` (length `n − 2`).
fn prufer_edges(seq: &[usize], n: usize) -> Vec<(usize, usize)> {
    let mut degree = vec![1; n];
    for &a in seq {
        degree[a] += 1;
    }
    let mut edges = Vec::with_capacity(n - 1);
    for &a in seq {
        let leaf = (0..n).find(|&b| degree[b] == 1).expect("a leaf remains");
        edges.push((leaf, a));
        degree[leaf] -= 1;
        degree[a] -= 1;
    }
    let last: Vec<usize> = (0..n).filter(|&b| degree[b] == 1).collect();
    edges.push((last[0], last[1]));
    edges
}
