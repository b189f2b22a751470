//! `matching(n, m)`: `n` rows matched to distinct columns among `m ≥ n`, `Z = {z ∈ {0,1}^{n×m} :
//! Σ_j z_ij = 1, Σ_i z_ij ≤ 1}` (every row to one column, every column at most one row).
//!
//! Both solvers run on the square `m×m` problem padded with `m − n` zero rows, `W̄ = [w; 0]`,
//! and keep its first `n` rows (the padding rows take the columns left free):
//! - hard: the maximum-weight assignment on `W̄` (its objective is `⟨w, z⟩`: the padding adds 0),
//!   [`crate::kernels::assignment`];
//! - `entropy`: Sinkhorn on `X̄ = [x; 0]`, `x = w/T` ([`crate::kernels::sinkhorn`]), with the
//!   backward rules `implicit` and `unrolled` of the padded problem restricted to the real entries.
//!   The regularizer is the entropy of the completed plan, `f(z) = Σ z log z + Σ_j s_j log(s_j /
//!   (m − n))` with the column slack `s_j = 1 − Σ_i z_ij` (the padding rows share it equally), so
//!   that `T → 0` gives the hard solution; for `n = 1` the solution is `z_j = sigmoid(x_j − τ)`
//!   with `Σ z = 1`, not `softmax(x)`. For `m = n` both solvers are those of `permutation(n)`.
//!
//! The noise perturbs `θ`'s `n×m` entries only: the padding is added inside the solvers.

use std::sync::Arc;

use super::permutation::Permutation;
use super::subset::small_sizes;
use super::{
    ArgError, Entry, Estimate, Param, ParamKind, Regularizer, Report, Rule, Scores, SoftCall,
    SoftSolver, Solve, Structure, Value, MAX_INT, SIZE_PARAM,
};
use crate::real::Real;

/// The number of columns `m ≥ n`.
const M_PARAM: Param = Param {
    name: "m",
    kind: ParamKind::Int {
        min: 1,
        max: MAX_INT,
    },
    default: None,
};

pub const ENTRY: Entry = Entry {
    name: "matching",
    summary: "n rows matched to distinct columns among m ≥ n (rows sum to 1, columns to ≤ 1)",
    example: "matching(3, 5)",
    params: &[SIZE_PARAM, M_PARAM],
    build: |args| {
        let (n, m) = sizes(args)?;
        Ok(Arc::new(Matching::new(n, m)))
    },
    random_instance: |seed| {
        let (m, n) = small_sizes(seed, 4);
        Arc::new(Matching::new(n.min(3), m))
    },
    gradient_instance: |seed| Arc::new(Matching::new(4, 5 + (seed % 3) as usize)),
};

/// `(n, m)` from checked arguments, with `m ≥ n` checked.
fn sizes(args: &[Value]) -> Result<(usize, usize), ArgError> {
    let (n, m) = (args[0].int(), args[1].int());
    if m < n {
        return Err(ArgError {
            param: 1,
            message: format!("m must be at least n = {n}, found {m}"),
        });
    }
    Ok((n as usize, m as usize))
}

#[derive(Clone, Debug)]
pub struct Matching {
    pub n: usize,
    pub m: usize,
    /// The square problem the solvers run on: `permutation(m)`.
    padded: Permutation,
}

impl Matching {
    /// `matching(n, m)`; the caller checks `1 ≤ n ≤ m`.
    pub fn new(n: usize, m: usize) -> Matching {
        Matching {
            n,
            m,
            padded: Permutation { n: m },
        }
    }

    /// `[rows; 0]`: the `n×m` rows followed by `m − n` zero rows.
    fn pad<F: Real>(&self, rows: &[F]) -> Vec<F> {
        let mut square = vec![F::zero(); self.m * self.m];
        square[..rows.len()].copy_from_slice(rows);
        square
    }

    /// The padded problem's full solution from its first `n` rows `z`: every padding row is
    /// `s / (m − n)`, `s_j = 1 − Σ_i z_ij` the column slack (the padding rows are equal at the
    /// Sinkhorn fixed point, whose column sums are exact).
    fn complete<F: Real>(&self, z: &[F]) -> Vec<F> {
        let mut square = self.pad(z);
        let spare = self.m - self.n;
        if spare > 0 {
            let share: Vec<F> = column_slack(z, self.m)
                .into_iter()
                .map(|s| F::of(s / spare as f64))
                .collect();
            for row in square[z.len()..].chunks_exact_mut(self.m) {
                row.copy_from_slice(&share);
            }
        }
        square
    }
}

/// `s_j = max(0, 1 − Σ_i z_ij)` for the row-major `z` with `m` columns.
fn column_slack<F: Real>(z: &[F], m: usize) -> Vec<f64> {
    let mut slack = vec![1.0; m];
    for row in z.chunks_exact(m) {
        slack
            .iter_mut()
            .zip(row)
            .for_each(|(s, zij)| *s -= zij.f64());
    }
    slack.into_iter().map(|s| s.max(0.0)).collect()
}

impl Structure for Matching {
    fn describe(&self) -> String {
        format!("matching(n = {}, m = {})", self.n, self.m)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.m]
    }
    fn hard_solver(&self) -> &'static str {
        self.padded.hard_solver()
    }
    fn iterations(&self, soft: &SoftCall) -> usize {
        self.padded.iterations(soft)
    }
    fn soft_solvers(&self) -> &'static [SoftSolver] {
        self.padded.soft_solvers()
    }
    /// The entropy of the completed plan (module doc).
    fn regularizer_value(&self, regularizer: Regularizer, z: &[f64]) -> Option<f64> {
        let spare = (self.m - self.n) as f64;
        if spare == 0.0 {
            return regularizer.value(z);
        }
        let slack_entropy: f64 = column_slack(z, self.m)
            .into_iter()
            .filter(|&s| s > 0.0)
            .map(|s| s * (s / spare).ln())
            .sum();
        Some(regularizer.value(z)? + slack_entropy)
    }
    /// The `m!/(m − n)!` injective maps rows → columns, in lexicographic order of
    /// `(σ(0), …, σ(n−1))`.
    fn enumerate(&self) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        extend_injections(&mut vec![], self.n, self.m, &mut out);
        out
    }
}

/// Appends to `out`, as `n×m` 0/1 matrices, every injective `σ: 0..n → 0..m` that starts with
/// `prefix`.
fn extend_injections(prefix: &mut Vec<usize>, n: usize, m: usize, out: &mut Vec<Vec<f64>>) {
    if prefix.len() == n {
        let mut z = vec![0.0; n * m];
        for (i, &j) in prefix.iter().enumerate() {
            z[i * m + j] = 1.0;
        }
        out.push(z);
        return;
    }
    for j in 0..m {
        if !prefix.contains(&j) {
            prefix.push(j);
            extend_injections(prefix, n, m, out);
            prefix.pop();
        }
    }
}

impl<F: Real> Scores<F> for Matching {}

impl<F: Real> Estimate<F> for Matching {}

impl<F: Real> Solve<F> for Matching {
    fn hard(&self, w: &[F], z: &mut [F]) {
        let mut square = vec![F::zero(); self.m * self.m];
        Solve::<F>::hard(&self.padded, &self.pad(w), &mut square);
        z.copy_from_slice(&square[..z.len()]);
    }

    fn soft(
        &self,
        soft: &SoftCall,
        x: &[F],
        z: &mut [F],
        report: &mut Report,
    ) -> Result<(), String> {
        let mut square = vec![F::zero(); self.m * self.m];
        Solve::<F>::soft(&self.padded, soft, &self.pad(x), &mut square, report)?;
        z.copy_from_slice(&square[..z.len()]);
        Ok(())
    }

    /// The padded problem's `J̄ᵀ [g; 0]`, restricted to the real rows.
    fn soft_vjp(
        &self,
        soft: &SoftCall,
        rule: Rule,
        x: &[F],
        z: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String> {
        let mut square = vec![F::zero(); self.m * self.m];
        Solve::<F>::soft_vjp(
            &self.padded,
            soft,
            rule,
            &self.pad(x),
            &self.complete(z),
            &self.pad(g),
            &mut square,
        )?;
        for (gx, d) in grad_x.iter_mut().zip(&square) {
            *gx = *gx + *d;
        }
        Ok(())
    }
}
