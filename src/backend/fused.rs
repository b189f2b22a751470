//! The fused row kernels that the compiling backends generate — the Cranelift JIT
//! (`backend/jit/`) and CUDA (`backend/cuda/`): what each kernel computes ([`Kernel`]) and
//! which kernel runs a program's forward and backward pass ([`forward_kernel`],
//! [`backward_kernel`]). A forward kernel reads `θ` once and writes `w = θ + noise` and `z`; a
//! backward kernel reads the saved `w` or solution and the cotangent and writes `∂L/∂θ` into
//! the gradient. Both backends read this description only; a program it does not cover (counts'
//! score maps) runs on the reference backend, as does a kernel a backend does not generate (the
//! JIT refuses only a DP table too large, [`Kernel::jit_translates`]; the CUDA backend leaves the
//! combinatorial hard solvers, the dynamic programs and Gaussian noise to the host).

use super::Unsupported;
use crate::ir::{Backward, Decode, Estimator, Hard, Program, Rule, ScoreMap, Soft, Trees};
use crate::kernels::dp::{subset_dp_cells, MAX_DP_CELLS};
use crate::kernels::threshold::Link;
use crate::noise::{Coordinates, Perturbation};
use crate::plan::Mode;
use crate::real::Real;

/// The noise a forward kernel draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Front {
    /// `w = θ`.
    None,
    /// `w = θ − ln(−ln u)`.
    Gumbel,
    /// `w = θ + ln u − ln(1 − u)` (Gumbel on binary coordinates).
    Logistic,
    /// `w = θ + σ·standard_normal(u₁, u₂)` (`sigma_bits`, the f64's bits), by the platform's
    /// `cos` and `sqrt` (JIT only: the CUDA backend leaves it to the host).
    Gaussian { sigma_bits: u64 },
    /// The exponential race `w = ln u₁ · exp(−θ)` (`−E·exp(−θ)`, `E = −ln u₁`), refused where
    /// `|θ| ≥ F::EXP_LIMIT` (the JIT calls the reference's row function).
    Race,
    /// `w = θ + ln E₀ − ln E₁`, `E₀ = −ln u₁`, `E₁ = −ln u₂` (the race on binary coordinates;
    /// `u₂` from the second stream) (the JIT calls the reference's row function).
    RaceLogistic,
}

/// What a forward kernel computes from `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Solve {
    /// The one-hot of the largest `w`, ties to the lowest index.
    Argmax,
    /// `z_i = [w_i > 0]`.
    Positive,
    /// The indicator of the `k` largest `w`, ties to the lowest indices (the JIT calls the Rust
    /// kernel from its compiled row loop).
    TopK { k: usize },
    /// An exact combinatorial solver that is not streaming (the assignment, the maximum trees,
    /// the chain's Viterbi): the Rust kernel, which the JIT calls from its compiled row loop and
    /// the CUDA backend runs on the host.
    Combinatorial(Hard),
    /// `z = soft(w/T)`.
    Soft(SoftKernel),
}

/// A fused soft kernel, forward and vector–Jacobian product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftKernel {
    /// `s = softmax(x)`; `∂L/∂w = s ⊙ (g − ⟨g, s⟩) / T`.
    Softmax,
    /// `s = σ(x)`; `∂L/∂w = g ⊙ s ⊙ (1 − s) / T`.
    Sigmoid,
    /// `s = clip(x + ½, 0, 1)`; `∂L/∂w = g ⊙ [0 < s < 1] / T`.
    Clip,
    /// `s = sparsemax(x)`; `∂L/∂w = (g − mean_S g) ⊙ [s > 0] / T`, `S = {s > 0}` (the JIT calls
    /// the Rust kernel from its compiled row loop).
    Sparsemax,
    /// `s_i = h(x_i − τ)` with `Σ s = k` to `|Σ s − k| ≤ tol` (`tol_bits`, the f64's bits);
    /// `∂L/∂w = d ⊙ (g − ⟨d, g⟩/Σ d) / T`, `d = h'(x − τ)` from `s` (the implicit function
    /// theorem) (the JIT calls the Rust kernels, solve and VJP, from its compiled row loop).
    Threshold { link: Link, k: usize, tol_bits: u64 },
    /// `s = clip(x − τ, 0, 1)` with `Σ s = k` (the capped simplex); `∂L/∂w = (g − mean_L g) ⊙
    /// [0 < s < 1] / T`, `L = {0 < s < 1}` (the JIT calls the Rust kernels, as for the
    /// threshold).
    CappedSimplex { k: usize },
    /// `s = exp(x + α 1ᵀ + 1 βᵀ)` on the `rows × cols` matrix padded square with zero rows,
    /// doubly stochastic to a row residual of `tol` (`tol_bits`) within `iters` iterations, with
    /// Newton steps unless the backward rule is `unrolled` (`newton`; the CUDA kernel takes none
    /// and hands rows it cannot finish to the host); `∂L/∂w` by implicit differentiation at the
    /// fixed point, or (`!newton`) through the unrolled iterations. The JIT calls the Rust
    /// kernels, solve and VJP, from its compiled row loop; the CUDA backend runs the VJP on the
    /// host, as it does for the three kernels below.
    Sinkhorn {
        rows: usize,
        cols: usize,
        iters: usize,
        tol_bits: u64,
        newton: bool,
    },
    /// The edge marginals `μ = ∂ log Z/∂x` of the `trees` on `n` nodes (the matrix-tree
    /// theorem), keeping `L̂⁻ᵀ` for the VJP, the Hessian–vector product through it.
    MatrixTree { n: usize, trees: Trees },
    /// The marginals of `subset(n, k)` under the exponential family, by the
    /// elementary-symmetric-polynomial DP, and their Hessian–vector product (JIT only).
    Esp { k: usize },
    /// The marginals of the chain's `k`-subsets, by the forward–backward DP, and their
    /// Hessian–vector product (JIT only).
    ChainDp { k: usize },
}

/// The precision a kernel computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// The precision of `F`.
    pub fn of<F: Real>() -> Precision {
        match F::NAME {
            "f32" => Precision::F32,
            _ => Precision::F64,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> i64 {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
        }
    }

    /// Uniforms per Philox block ([`crate::noise::uniforms_per_block`]).
    pub fn uniforms_per_block(self) -> usize {
        match self {
            Precision::F32 => crate::noise::uniforms_per_block::<f32>() as usize,
            Precision::F64 => crate::noise::uniforms_per_block::<f64>() as usize,
        }
    }
}

/// One fused kernel: what it computes, for rows of `n` elements in one precision. The compile
/// caches' key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub n: usize,
    pub precision: Precision,
    pub pass: Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    Forward {
        front: Front,
        solve: Solve,
    },
    /// `recompute`: the soft solution is re-solved from the saved `w` (straight-through);
    /// otherwise it is the saved solution (relaxed).
    Backward {
        soft: SoftKernel,
        recompute: bool,
    },
}

impl Front {
    /// The noise's name, as `sst check` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Front::None => "none",
            Front::Gumbel => "gumbel",
            Front::Logistic => "logistic",
            Front::Gaussian { .. } => "gaussian",
            Front::Race => "neg_exponential",
            Front::RaceLogistic => "neg_exponential (binary)",
        }
    }
}

impl Solve {
    /// The solve's name, as `sst check` shows it (`top_k`, `sinkhorn`).
    pub fn name(self) -> &'static str {
        match self {
            Solve::Argmax => "argmax",
            Solve::Positive => "positive",
            Solve::TopK { .. } => "top_k",
            Solve::Combinatorial(hard) => hard.name(),
            Solve::Soft(soft) => soft.name(),
        }
    }

    /// Whether this is a hard mode's solve (an exact solver, no temperature).
    pub fn is_hard(self) -> bool {
        !matches!(self, Solve::Soft(_))
    }
}

impl SoftKernel {
    /// The kernel's name, as `sst check` shows it.
    pub fn name(self) -> &'static str {
        match self {
            SoftKernel::Softmax => "softmax",
            SoftKernel::Sigmoid => "sigmoid",
            SoftKernel::Clip => "clip",
            SoftKernel::Sparsemax => "sparsemax",
            SoftKernel::Threshold { .. } => "threshold",
            SoftKernel::CappedSimplex { .. } => "capped_simplex",
            SoftKernel::Sinkhorn { .. } => "sinkhorn",
            SoftKernel::MatrixTree { .. } => "matrix_tree",
            SoftKernel::Esp { .. } => "esp_dp",
            SoftKernel::ChainDp { .. } => "forward_backward",
        }
    }

    /// The f64 per row the kernel keeps for its VJP: `L̂⁻ᵀ` for the matrix-tree, `(n − 1)²`;
    /// none for the others.
    pub fn kept_width(self) -> usize {
        match self {
            SoftKernel::MatrixTree { n, .. } => (n - 1) * (n - 1),
            _ => 0,
        }
    }

    /// Whether the VJP reads `x = w/T` (and what the solve kept) besides the solution: the
    /// kernels whose VJP is a linear solve or a DP's second pass.
    pub fn vjp_reads_x(self) -> bool {
        matches!(
            self,
            SoftKernel::Sinkhorn { .. }
                | SoftKernel::MatrixTree { .. }
                | SoftKernel::Esp { .. }
                | SoftKernel::ChainDp { .. }
        )
    }
}

impl Kernel {
    /// The f64 per row a forward kernel keeps for the backward pass
    /// ([`SoftKernel::kept_width`]); none for the hard kernels and the backward kernels.
    pub fn kept_width(&self) -> usize {
        match self.pass {
            Pass::Forward {
                solve: Solve::Soft(soft),
                ..
            } => soft.kept_width(),
            _ => 0,
        }
    }

    /// Whether the Cranelift JIT translates this kernel, or why not: not an
    /// elementary-symmetric-polynomial DP beyond [`MAX_DP_CELLS`] (the reference backend
    /// reports it).
    pub fn jit_translates(&self) -> Result<(), String> {
        match self.pass {
            Pass::Forward {
                solve: Solve::Soft(SoftKernel::Esp { k }),
                ..
            } if subset_dp_cells(self.n, k) > MAX_DP_CELLS => {
                Err("the esp_dp soft kernel's table is too large".into())
            }
            _ => Ok(()),
        }
    }
}

/// The forward kernel of `program` in `F` for a request's noise and mode, or why there is none.
pub fn forward_kernel<F: Real>(
    program: &Program,
    noise: Perturbation,
    mode: Mode,
) -> Result<Kernel, Unsupported> {
    let why = |s: &str| Err(Unsupported(s.to_string()));
    if program.scores != ScoreMap::Identity || program.decode != Decode::Identity {
        return why("count score maps are not compiled");
    }
    let front = match (noise, program.coordinates) {
        (Perturbation::None, _) => Front::None,
        (Perturbation::Gumbel, Coordinates::Joint) => Front::Gumbel,
        (Perturbation::Gumbel, Coordinates::Binary) => Front::Logistic,
        (Perturbation::NegExponential, Coordinates::Joint) => Front::Race,
        (Perturbation::NegExponential, Coordinates::Binary) => Front::RaceLogistic,
        (Perturbation::Gaussian { sigma }, _) => Front::Gaussian {
            sigma_bits: sigma.to_bits(),
        },
    };
    let solve = match mode {
        Mode::Hard => match program.hard {
            Hard::Argmax => Solve::Argmax,
            Hard::Positive => Solve::Positive,
            Hard::TopK { k } => Solve::TopK { k },
            other => Solve::Combinatorial(other),
        },
        Mode::Soft => Solve::Soft(soft_kernel(program.soft, program.backward)),
    };
    Ok(Kernel {
        n: program.row_len,
        precision: Precision::of::<F>(),
        pass: Pass::Forward { front, solve },
    })
}

/// The backward kernel of `program` in `F` and `mode`, or `None` where the reference backend
/// runs the backward pass (Gumbel-Rao's draws, finite differences, rules other than the
/// solver's exact VJP).
pub fn backward_kernel<F: Real>(
    program: &Program,
    noise: Perturbation,
    mode: Mode,
) -> Option<Kernel> {
    // The fused VJP ends at `∂L/∂w`, which is `∂L/∂θ` only for identity scores and decode and a
    // noise whose chain rule is the identity (additive noise, or none).
    let identity_chain = program.scores == ScoreMap::Identity
        && program.decode == Decode::Identity
        && matches!(
            noise,
            Perturbation::Gumbel | Perturbation::Gaussian { .. } | Perturbation::None
        );
    if !identity_chain {
        return None;
    }
    let soft = soft_kernel(program.soft, program.backward);
    // The solver's own VJP: closed form, or the implicit-function theorem for a threshold;
    // Sinkhorn's by the native rule the kernel carries (`newton`: implicit, else unrolled), the
    // matrix-tree's and the DPs' by the one each has.
    let exact_vjp = match soft {
        SoftKernel::Threshold { .. } => program.backward == Backward::Native(Rule::Implicit),
        _ if soft.vjp_reads_x() => matches!(program.backward, Backward::Native(_)),
        _ => program.backward == Backward::Native(Rule::ClosedForm),
    };
    let gumbel_rao = matches!(program.estimator, Estimator::GumbelRao { .. });
    (exact_vjp && !(mode == Mode::Hard && gumbel_rao)).then_some(Kernel {
        n: program.row_len,
        precision: Precision::of::<F>(),
        pass: Pass::Backward {
            soft,
            recompute: mode == Mode::Hard,
        },
    })
}

/// The fused soft kernel of an IR soft node under the program's backward rule.
fn soft_kernel(soft: Soft, backward: Backward) -> SoftKernel {
    match soft {
        Soft::Softmax => SoftKernel::Softmax,
        Soft::Sigmoid => SoftKernel::Sigmoid,
        Soft::Clip => SoftKernel::Clip,
        Soft::Sparsemax => SoftKernel::Sparsemax,
        Soft::Threshold { link, k, tol } => SoftKernel::Threshold {
            link,
            k,
            tol_bits: tol.to_bits(),
        },
        Soft::CappedSimplex { k } => SoftKernel::CappedSimplex { k },
        Soft::Sinkhorn {
            rows,
            cols,
            iters,
            tol,
        } => SoftKernel::Sinkhorn {
            rows,
            cols,
            iters,
            tol_bits: tol.to_bits(),
            newton: backward != Backward::Native(Rule::Unrolled),
        },
        Soft::MatrixTree { n, trees } => SoftKernel::MatrixTree { n, trees },
        Soft::Esp { k } => SoftKernel::Esp { k },
        Soft::ChainDp { k } => SoftKernel::ChainDp { k },
    }
}
