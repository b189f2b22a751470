//! `matching(n, m)`: each of `n` rows matched to a distinct one of `m ≥ n` columns, as `n × m`
//! 0/1 matrices (rows sum to 1, columns to at most 1): assigning `n` items to `m` slots.
//! `matching(n, n)` is `permutation(n)`.
//!
//! - hard: the maximum-weight matching, by the assignment solver on the `m × m` matrix padded
//!   with `m − n` zero rows (its first `n` rows);
//! - `entropy` → `sinkhorn`: Sinkhorn on `w/T` padded the same way (the noise perturbs only the
//!   real entries), its first `n` rows. This maximises `⟨x, z⟩ − f(z)` over the matching
//!   polytope with `f` the entropy of the completed plan, `f(z) = Σ z log z + Σ_j s_j
//!   log(s_j/(m − n))`, `s_j = 1 − Σ_i z_ij` the column slack (the padding rows of the optimal
//!   plan are equal, `s/(m − n)` each); `T → 0` gives the hard solution. Backward `implicit`
//!   (default) or `unrolled`, those of the padded problem restricted to the real entries.

use std::sync::Arc;

use super::categorical::small_size;
use super::permutation::SOLVERS;
use super::{ArgError, Entry, Param, Regularizer, SoftCall, SoftSolver, Structure, SIZE_PARAM};
use crate::ir::{Hard, Soft};

pub const ENTRY: Entry = Entry {
    name: "matching",
    summary: "n rows matched to distinct columns among m ≥ n (n×m, rows sum to 1, columns ≤ 1)",
    example: "matching(3, 5)",
    params: &[
        SIZE_PARAM,
        Param {
            name: "m",
            ..SIZE_PARAM
        },
    ],
    build: |args| {
        let (n, m) = (args[0].int() as usize, args[1].int() as usize);
        if m < n {
            return Err(ArgError {
                param: 1,
                message: format!("m must be at least n = {n}, found {m}"),
            });
        }
        Ok(Arc::new(Matching { n, m }))
    },
    random_instance: |seed| {
        let m = 1 + small_size(seed) % 5;
        let n = 1 + small_size(seed.wrapping_add(0x5EED)) % m;
        Arc::new(Matching { n, m })
    },
    gradient_instance: |seed| {
        Arc::new(Matching {
            n: 2 + (seed % 3) as usize,
            m: 6,
        })
    },
};

#[derive(Clone, Debug)]
pub struct Matching {
    pub n: usize,
    pub m: usize,
}

impl Structure for Matching {
    fn describe(&self) -> String {
        format!("matching(n = {}, m = {})", self.n, self.m)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.m]
    }
    fn hard(&self) -> Hard {
        Hard::Assignment {
            rows: self.n,
            cols: self.m,
        }
    }
    fn lower(&self, soft: &SoftCall) -> Soft {
        Soft::Sinkhorn {
            rows: self.n,
            cols: self.m,
            iters: soft.args[0].int().max(1) as usize,
            tol: soft.args[1].real(),
        }
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        SOLVERS
    }
    /// Every injective map of the rows into the columns, `m!/(m − n)!` of them.
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let (n, m) = (self.n, self.m);
        let mut out = Vec::new();
        let mut cols = Vec::with_capacity(n);
        extend_injections(n, m, &mut cols, &mut out);
        out
    }
    /// The entropy of the completed plan, see the module documentation.
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        let (n, m) = (self.n, self.m);
        let plain = regularizer.value(z)?;
        let xlogx = |v: f64| if v > 0.0 { v * v.ln() } else { 0.0 };
        let pad = (m - n) as f64;
        let slack = |j: usize| (1.0 - (0..n).map(|i| z[i * m + j]).sum::<f64>()).max(0.0);
        Some(
            plain
                + (0..m)
                    .map(|j| pad * xlogx(slack(j) / pad.max(1.0)))
                    .sum::<f64>(),
        )
    }
}

/// Appends to `out` every injection that extends the partial one `cols` (row `i` in column
/// `cols[i]`), as `n × m` 0/1 matrices.
fn extend_injections(n: usize, m: usize, cols: &mut Vec<usize>, out: &mut Vec<Vec<f64>>) {
    if cols.len() == n {
        let mut z = vec![0.0; n * m];
        for (i, &j) in cols.iter().enumerate() {
            z[i * m + j] = 1.0;
        }
        out.push(z);
        return;
    }
    for j in 0..m {
        if !cols.contains(&j) {
            cols.push(j);
            extend_injections(n, m, cols, out);
            cols.pop();
        }
    }
}
