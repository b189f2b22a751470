//! `permutation(n)`: `n×n` permutation matrices, rows = items, columns = positions
//! (`z_ij = 1` iff item `i` goes to position `j`).
//!
//! - hard: the maximum-weight assignment `argmax_σ Σ_i w_{i,σ(i)}`, exact in O(n³)
//!   ([`crate::kernels::assignment`], Jonker & Volgenant 1987);
//! - `entropy` (`f = Σ z log z` on the Birkhoff polytope): Sinkhorn on `x = w/T`
//!   ([`crate::kernels::sinkhorn`]), the Gumbel-Sinkhorn relaxation (Mena et al. 2018), with the
//!   backward rules `implicit` (the default) and `unrolled`.
//!
//! The soft solver works in f64 in both precisions (its tolerance 1e-9 is below f32's rounding).

use std::sync::Arc;

use super::categorical::small_size;
use super::{
    Entry, Param, ParamKind, Regularizer, Rule, SoftCall, SoftSolver, Structure, Value, SIZE_PARAM,
};
use crate::ir::{Hard, Soft};

pub const ENTRY: Entry = Entry {
    name: "permutation",
    summary: "an ordering of n items (n×n permutation matrices, rows = items, columns = positions)",
    example: "permutation(4)",
    params: &[SIZE_PARAM],
    build: |args| {
        Ok(Arc::new(Permutation {
            n: args[0].int() as usize,
        }))
    },
    random_instance: |seed| {
        Arc::new(Permutation {
            n: small_size(seed).min(5),
        })
    },
    gradient_instance: |_| Arc::new(Permutation { n: 6 }),
};

/// Sinkhorn with its arguments and rules (shared with `matching`).
pub(crate) const SOLVERS: &[SoftSolver] = &[SoftSolver {
    regularizer: Regularizer::Entropy,
    name: "sinkhorn",
    params: &[
        Param {
            name: "iters",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_ITERS,
            },
            default: Some(Value::Int(1000)),
        },
        Param {
            name: "tol",
            kind: ParamKind::Positive,
            default: Some(Value::Real(1e-9)),
        },
    ],
    rules: &[Rule::Implicit, Rule::Unrolled],
    why_rule: "implicit differentiation at the Sinkhorn fixed point: one linear solve in the \
               dual variables, no replay of the iterations, memory independent of `iters` \
               (`unrolled` replays them and keeps every iteration's duals)",
}];

/// The most Sinkhorn iterations a spec may ask for: each costs O(n²) per row, and `unrolled`
/// keeps every iteration's duals.
pub const MAX_ITERS: i64 = 100_000;

#[derive(Clone, Debug)]
pub struct Permutation {
    pub n: usize,
}

impl Structure for Permutation {
    fn describe(&self) -> String {
        format!("permutation(n = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.n]
    }
    fn hard(&self) -> Hard {
        Hard::Assignment {
            rows: self.n,
            cols: self.n,
        }
    }
    fn lower(&self, soft: &SoftCall) -> Soft {
        Soft::Sinkhorn {
            rows: self.n,
            cols: self.n,
            iters: soft.args[0].int().max(1) as usize,
            tol: soft.args[1].real(),
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// The `n!` permutation matrices, in lexicographic order of `(σ(0), …, σ(n−1))`.
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let n = self.n;
        let mut out = Vec::new();
        let mut sigma: Vec<usize> = (0..n).collect();
        loop {
            let mut z = vec![0.0; n * n];
            for (i, &j) in sigma.iter().enumerate() {
                z[i * n + j] = 1.0;
            }
            out.push(z);
            if !next_permutation(&mut sigma) {
                return out;
            }
        }
    }
}

/// Advances `a` to the next permutation in lexicographic order; false after the last.
fn next_permutation(a: &mut [usize]) -> bool {
    let Some(i) = (1..a.len()).rev().find(|&i| a[i - 1] < a[i]) else {
        return false;
    };
    let j = (i..a.len())
        .rev()
        .find(|&j| a[j] > a[i - 1])
        .expect("a[i] qualifies");
    a.swap(i - 1, j);
    a[i..].reverse();
    true
}
