//! `permutation(n)`: `n×n` permutation matrices, rows = items, columns = positions
//! (`z_ij = 1` iff item `i` goes to position `j`).
//!
//! - hard: the maximum-weight assignment `argmax_σ Σ_i w_{i,σ(i)}`, exact in O(n³)
//!   ([`crate::kernels::assignment`], Jonker & Volgenant 1987);
//! - `entropy` (`f = Σ z log z` on the Birkhoff polytope): Sinkhorn on `x = w/T` in log space
//!   ([`crate::kernels::sinkhorn`]), the Gumbel-Sinkhorn relaxation (Mena et al. 2018), with the
//!   backward rules `implicit` (the default) and `unrolled`.
//!
//! The soft solver works in f64 in both precisions (its tolerance 1e-9 is below f32's rounding).

use std::sync::Arc;

use super::categorical::small_size;
use super::{
    Entry, Estimate, Param, ParamKind, Regularizer, Report, Rule, Scores, SoftCall, SoftSolver,
    Solve, Structure, Value, SIZE_PARAM,
};
use crate::kernels::assignment::max_weight_assignment;
use crate::kernels::sinkhorn::{self, Settings};
use crate::kernels::{add_narrowed, narrow, widen};
use crate::real::Real;

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

const SOLVERS: &[SoftSolver] = &[SoftSolver {
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

/// The start of the non-convergence warning; one such warning is kept per forward pass.
const NOT_CONVERGED: &str = "Sinkhorn did not converge";

#[derive(Clone, Debug)]
pub struct Permutation {
    pub n: usize,
}

impl Permutation {
    fn settings(soft: &SoftCall) -> Settings {
        Settings {
            iters: soft.args[0].int().max(1) as usize,
            tol: soft.args[1].real(),
        }
    }
}

impl Structure for Permutation {
    fn describe(&self) -> String {
        format!("permutation(n = {})", self.n)
    }
    fn shape(&self) -> Vec<usize> {
        vec![self.n, self.n]
    }
    fn hard_solver(&self) -> &'static str {
        "assignment"
    }
    fn iterations(&self, soft: &SoftCall) -> usize {
        Self::settings(soft).iters
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

impl<F: Real> Scores<F> for Permutation {}

impl<F: Real> Estimate<F> for Permutation {}

impl<F: Real> Solve<F> for Permutation {
    fn hard(&self, w: &[F], z: &mut [F]) {
        let assignment = max_weight_assignment(&widen(w), self.n);
        z.fill(F::zero());
        for (i, &j) in assignment.col_of_row.iter().enumerate() {
            z[i * self.n + j] = F::one();
        }
    }

    fn soft(
        &self,
        soft: &SoftCall,
        x: &[F],
        z: &mut [F],
        report: &mut Report,
    ) -> Result<(), String> {
        let settings = Self::settings(soft);
        let mut p = vec![0.0; x.len()];
        let outcome = sinkhorn::sinkhorn(&widen(x), self.n, settings, &mut p);
        report.record_max("sinkhorn_iterations", outcome.iterations as f64);
        report.record_max("sinkhorn_residual", outcome.residual);
        if !outcome.converged(settings) {
            // One warning per forward pass, the same whatever rows share it (and however they
            // are split over threads); the worst residual is in the diagnostics.
            report.warn(format!(
                "{NOT_CONVERGED} in {} iterations (tol {:e}); the worst marginal residual is \
                 diagnostics.sinkhorn_residual",
                settings.iters, settings.tol
            ));
        }
        narrow(p, z);
        Ok(())
    }

    fn soft_vjp(
        &self,
        soft: &SoftCall,
        rule: Rule,
        x: &[F],
        z: &[F],
        g: &[F],
        grad_x: &mut [F],
    ) -> Result<(), String> {
        let mut grad = vec![0.0; x.len()];
        let g = widen(g);
        match rule {
            Rule::Unrolled => sinkhorn::sinkhorn_unrolled_vjp(
                &widen(x),
                self.n,
                Self::settings(soft),
                &g,
                &mut grad,
            ),
            _ => sinkhorn::sinkhorn_implicit_vjp(&widen(z), self.n, &g, &mut grad),
        }
        if grad.iter().any(|v| !v.is_finite()) {
            return Err("the Sinkhorn gradient is not finite; use a larger temperature".into());
        }
        add_narrowed(grad, grad_x);
        Ok(())
    }
}
