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
use super::{
    Entry, Estimate, Param, ParamKind, Regularizer, Report, Rule, Scores, SoftCall, SoftSolver,
    Solve, Structure, MAX_INT,
};
use crate::kernels::{logsumexp, matrix_tree, max_tree, widen};
use crate::real::Real;

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

const SOLVERS: &[SoftSolver] = &[SoftSolver {
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

/// The node of the largest weighted degree `log Σ_j exp(y_ij)` (the first on ties).
fn best_root(y: &[f64], n: usize) -> usize {
    let degree = |i: usize| {
        let row: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| y[i * n + j]).collect();
        logsumexp(&row)
    };
    (1..n).fold(0, |b, i| if degree(i) > degree(b) { i } else { b })
}

impl SpanningTree {
    /// The symmetric f64 logits `y_ij = y_ji = x_{min(i,j), max(i,j)}` of the directed kernel.
    fn symmetric<F: Real>(&self, x: &[F]) -> Vec<f64> {
        let n = self.n;
        (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                x[i.min(j) * n + i.max(j)].f64()
            })
            .collect()
    }
}

impl Structure for SpanningTree {
    fn describe(&self) -> String {
        format!("spanning_tree(nodes = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.n]
    }
    fn hard_solver(&self) -> &'static str {
        "prim"
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
    fn fold_cotangent(&self, c: &mut [f64]) {
        let n = self.n;
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] = if i < j {
                    c[i * n + j] + c[j * n + i]
                } else {
                    0.0
                };
            }
        }
    }
    fn restrict_gradient(&self, grad: &mut [f64]) {
        let n = self.n;
        for (k, g) in grad.iter_mut().enumerate() {
            if k / n >= k % n {
                *g = 0.0;
            }
        }
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

impl<F: Real> Scores<F> for SpanningTree {}

impl<F: Real> Estimate<F> for SpanningTree {}

impl<F: Real> Solve<F> for SpanningTree {
    fn hard(&self, w: &[F], z: &mut [F]) {
        let n = self.n;
        let parent = max_tree::max_spanning_tree(&widen(w), n);
        z.fill(F::zero());
        for (i, &p) in parent.iter().enumerate().skip(1) {
            z[i * n + p] = F::one();
            z[p * n + i] = F::one();
        }
    }

    fn soft(&self, _: &SoftCall, x: &[F], z: &mut [F], report: &mut Report) -> Result<(), String> {
        let n = self.n;
        let mut mu = vec![0.0; n * n];
        let y = self.symmetric(x);
        if matrix_tree::marginals(&y, n, best_root(&y, n), &mut mu) == matrix_tree::Method::LogSpace
        {
            report.record_max("log_space_marginals", 1.0);
        }
        for i in 0..n {
            for j in 0..n {
                z[i * n + j] = F::of(if i == j {
                    0.0
                } else {
                    mu[i * n + j] + mu[j * n + i]
                });
            }
        }
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
        let n = self.n;
        let mut fold = widen(g);
        self.fold_cotangent(&mut fold);
        let v: Vec<f64> = (0..n * n)
            .map(|k| fold[(k / n).min(k % n) * n + (k / n).max(k % n)])
            .collect();
        let mut hv = vec![0.0; n * n];
        let y = self.symmetric(x);
        matrix_tree::marginals_hvp(&y, n, best_root(&y, n), &v, &mut hv);
        for i in 0..n {
            for j in i + 1..n {
                grad_x[i * n + j] = grad_x[i * n + j] + F::of(hv[i * n + j] + hv[j * n + i]);
            }
        }
        Ok(())
    }
}
