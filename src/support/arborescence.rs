//! `arborescence(nodes, root = 0)`: the spanning arborescences of the complete digraph on `n`
//! nodes rooted at `root` (every other node has exactly one parent, and all are reached from
//! the root), as `n × n` 0/1 matrices with `z[i][j] = 1` for the tree edge `i → j`. `θ[i][j]` is
//! the weight of `i → j`; the diagonal and the edges into the root are ignored (zero gradient).
//!
//! - hard: the maximum arborescence (Chu–Liu/Edmonds, O(n³));
//! - `expfamily` (`f = A*`): edge marginals `μ = ∇A(x)`, `A = log det L̂` by the directed
//!   matrix-tree theorem (Tutte 1948; Koo et al. 2007): `L̂` is the Laplacian of `exp(x)` with the
//!   root's row and column removed, `μ_ij = exp(x_ij)(M_jj − M_ji)`, `M = L̂⁻¹`; backward: the exact
//!   Hessian–vector product through `M` (`src/kernels/matrix_tree.rs`).

use std::sync::Arc;

use super::spanning_tree::{small_nodes, NODES_PARAM, SOLVERS};
use super::{ArgError, Entry, Param, ParamKind, SoftCall, SoftSolver, Structure, Value, MAX_INT};
use crate::ir::{Hard, Soft, Trees};
use crate::kernels::matrix_tree::restrict_rooted;

pub const ENTRY: Entry = Entry {
    name: "arborescence",
    summary: "arborescences (directed spanning trees) of the complete digraph, rooted at root",
    example: "arborescence(5, root = 0)",
    params: &[
        NODES_PARAM,
        Param {
            name: "root",
            kind: ParamKind::Int {
                min: 0,
                max: MAX_INT,
            },
            default: Some(Value::Int(0)),
        },
    ],
    build: |args| {
        let (n, root) = (args[0].int() as usize, args[1].int() as usize);
        if root >= n {
            return Err(ArgError {
                param: 1,
                message: format!(
                    "root = {root} is not a node of a graph with {n} nodes (0 ≤ root < {n})"
                ),
            });
        }
        Ok(Arc::new(Arborescence { n, root }))
    },
    random_instance: |seed| {
        let n = small_nodes(seed);
        let root = small_nodes(seed.wrapping_add(0x5EED)) % n;
        Arc::new(Arborescence { n, root })
    },
    gradient_instance: |seed| {
        Arc::new(Arborescence {
            n: 6,
            root: (seed % 6) as usize,
        })
    },
};

#[derive(Clone, Debug)]
pub struct Arborescence {
    pub n: usize,
    pub root: usize,
}

impl Structure for Arborescence {
    fn describe(&self) -> String {
        format!("arborescence(nodes = {}, root = {})", self.n, self.root)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.n]
    }
    fn hard(&self) -> Hard {
        Hard::MaxArborescence {
            n: self.n,
            root: self.root,
        }
    }
    fn lower(&self, _: &SoftCall) -> Soft {
        Soft::MatrixTree {
            n: self.n,
            trees: Trees::Rooted(self.root),
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// Every parent function of the non-root nodes (`n^(n−1)` of them) whose parent chains all
    /// reach the root.
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let (n, root) = (self.n, self.root);
        let nodes: Vec<usize> = (0..n).filter(|&j| j != root).collect();
        let count = n.pow(nodes.len() as u32);
        (0..count)
            .filter_map(|code| {
                let mut parent = vec![root; n];
                for (p, &j) in nodes.iter().enumerate() {
                    parent[j] = code / n.pow(p as u32) % n;
                }
                let reaches_root = |j: usize| {
                    let mut k = j;
                    (0..n).any(|_| {
                        k = parent[k];
                        k == root
                    })
                };
                let ok = nodes.iter().all(|&j| parent[j] != j && reaches_root(j));
                ok.then(|| {
                    let mut z = vec![0.0; n * n];
                    for &j in &nodes {
                        z[parent[j] * n + j] = 1.0;
                    }
                    z
                })
            })
            .collect()
    }
    fn restrict_gradient(&self, grad: &mut [f64]) {
        restrict_rooted(grad, self.n, self.root);
    }
}
