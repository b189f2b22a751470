//! The kernel IR: what a layer computes, as closed, `Copy` enums a backend can read.
//!
//! A [`Program`] is the pipeline of one row, with every size and setting resolved:
//!
//! `θ ─scores→ ℓ ─noise→ w ─(hard | soft(w/T))→ s ─decode→ z`,
//!
//! and for the backward pass the rule that turns `∂L/∂z` into `∂L/∂θ` (the [`Backward`] rule
//! through the soft kernel, and the [`Estimator`]). Each support lowers itself into these nodes
//! (`Structure::lower` in `src/support/`); backends (`src/backend/`) match on them and never see a
//! support, a name or a string.

use serde::Serialize;

use crate::kernels::counts::CountLaw;
use crate::kernels::threshold::Link;
use crate::noise::{Coordinates, Perturbation};

/// The map from `θ` to the scores the noise and the kernels act on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMap {
    /// The scores are `θ`.
    Identity,
    /// A count's truncated log-pmf `ℓ_k = log p_k(θ) − log Σ_{j≤K} p_j(θ)`, `k = 0..=K`, from
    /// one number `θ` per row (GenGS, Joo et al.).
    Counts {
        law: CountLaw,
        truncation: Truncation,
    },
}

/// Where a count's support `{0..K}` is cut.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// `K` fixed by the spec (or the law's own end: binomial trials).
    Fixed(usize),
    /// For each row, the smallest `K ≥ 1` whose dropped tail mass `P(X > K)` is below `tail`.
    Auto { tail: f64 },
}

/// The exact kernel `s = argmax_{s∈Z} ⟨w, s⟩`, ties to the lowest index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hard {
    /// The one-hot of the largest entry.
    Argmax,
    /// `s_i = [w_i > 0]` for each coordinate.
    Positive,
    /// The indicator of the `k` largest entries.
    TopK { k: usize },
    /// The best `k`-subset of a chain with pair scores (Viterbi in the max-plus semiring).
    ChainViterbi { k: usize },
    /// The maximum-weight perfect matching of a `rows × cols` matrix (`rows ≤ cols`; each row
    /// matched to a distinct column), by the Hungarian algorithm on the square matrix padded
    /// with `cols − rows` zero rows.
    Assignment { rows: usize, cols: usize },
    /// The maximum spanning tree of the complete graph on `n` nodes (upper triangle of `w`).
    MaxSpanningTree { n: usize },
    /// The maximum arborescence of the complete digraph on `n` nodes rooted at `root`.
    MaxArborescence { n: usize, root: usize },
}

impl Hard {
    /// The algorithm's name, as `sst check` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Hard::Argmax => "argmax",
            Hard::Positive => "threshold",
            Hard::TopK { .. } => "top_k",
            Hard::ChainViterbi { .. } => "viterbi",
            Hard::Assignment { .. } => "assignment",
            Hard::MaxSpanningTree { .. } => "prim",
            Hard::MaxArborescence { .. } => "chu_liu_edmonds",
        }
    }
}

/// Which trees a matrix-tree kernel sums over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trees {
    /// Spanning trees of the complete graph (weights in the upper triangle; marginals written
    /// into both halves); the root of the directed computation is chosen per row.
    Undirected,
    /// Arborescences rooted at this node (no diagonal, no edge into the root).
    Rooted(usize),
}

/// The relaxed kernel `s = argmax_{s∈conv Z} ⟨x, s⟩ − f(s)`, `x = w/T`, with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Soft {
    /// `s = softmax(x)`.
    Softmax,
    /// The Euclidean projection onto the simplex.
    Sparsemax,
    /// `s = σ(x)` per coordinate.
    Sigmoid,
    /// `s = clip(x + ½, 0, 1)` per coordinate.
    Clip,
    /// `s_i = h(x_i − τ)` with `Σ s = k`, `τ` by a safeguarded Newton/bisection to `tol`.
    Threshold { link: Link, k: usize, tol: f64 },
    /// The Euclidean projection onto the capped simplex `{s ∈ [0,1]ⁿ : Σ s = k}`.
    CappedSimplex { k: usize },
    /// The marginals of `p(s) ∝ exp⟨x, s⟩` over `k`-subsets (elementary symmetric polynomials).
    Esp { k: usize },
    /// The marginals of the chain `k`-subset model (log-space forward–backward).
    ChainDp { k: usize },
    /// Entropic optimal transport onto the doubly (sub)stochastic matrices of a `rows × cols`
    /// matrix: Sinkhorn on the square matrix padded with `cols − rows` rows of zero scores,
    /// at most `iters` iterations, to a marginal residual of `tol`.
    Sinkhorn {
        rows: usize,
        cols: usize,
        iters: usize,
        tol: f64,
    },
    /// The edge marginals `∇ log Σ_trees exp⟨x, tree⟩` of the matrix-tree theorem on `n` nodes.
    MatrixTree { n: usize, trees: Trees },
}

impl Soft {
    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Soft::Softmax => "softmax",
            Soft::Sparsemax => "sparsemax",
            Soft::Sigmoid => "sigmoid",
            Soft::Clip => "clipped_linear",
            Soft::Threshold { .. } => "threshold",
            Soft::CappedSimplex { .. } => "capped_simplex",
            Soft::Esp { .. } => "esp_dp",
            Soft::ChainDp { .. } => "forward_backward",
            Soft::Sinkhorn { .. } => "sinkhorn",
            Soft::MatrixTree { .. } => "matrix_tree",
        }
    }

    /// The most passes over a row the kernel may make (its iteration cap), for the work
    /// budget of a request; 1 for kernels that finish in a fixed number of passes.
    pub fn iterations(self) -> usize {
        match self {
            Soft::Sinkhorn { iters, .. } => iters,
            _ => 1,
        }
    }

    /// How many f64 a soft forward pass keeps per row for its backward pass: the matrix-tree
    /// kernels' inverse of the reduced Laplacian, `(n − 1)²`; none for the others.
    pub fn kept_len(self) -> usize {
        match self {
            Soft::MatrixTree { n, .. } => (n - 1) * (n - 1),
            _ => 0,
        }
    }
}

/// The linear map from the kernels' solution `s` to the layer's output `z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// `z = s`.
    Identity,
    /// A count: `z = Σ_k k·s_k`.
    CountMean,
}

/// A backward rule that a soft kernel implements itself (the generic `finite_diff` is not one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An analytic vector–Jacobian product.
    ClosedForm,
    /// The implicit-function theorem on the solver's optimality conditions.
    Implicit,
    /// Reverse mode through the solver's iterations as they ran.
    Unrolled,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::ClosedForm => "closed_form",
            Rule::Implicit => "implicit",
            Rule::Unrolled => "unrolled",
        }
    }
}

/// How `∂L/∂w` is computed through the soft kernel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backward {
    /// A rule the soft kernel implements itself.
    Native(Rule),
    /// `dL/dw ≈ [z_T(w + h·g) − z_T(w − h·g)] / (2h)`, `h = eps/‖g‖` (valid since `∂z_T/∂w` is
    /// symmetric).
    FiniteDiff { eps: f64 },
}

/// The baseline `b` of the score-function estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// `b = 0`.
    None,
    /// A moving average of past losses kept by the layer: `b ← 0.9·b + 0.1·mean(f)` after each
    /// call (the first call uses `b = 0`).
    Ema,
    /// The mean of the other samples' losses of the same call and batch row; the per-sample
    /// estimate is `S/(S−1)·(f_s − mean f)·∇log q(z_s)`, unbiased for `S ≥ 2`.
    LeaveOneOut,
}

impl Baseline {
    /// The names of `reinforce(baseline = …)`, in the order of [`Baseline::from_name`].
    pub const NAMES: &'static [&'static str] = &["none", "ema", "leave_one_out"];

    pub fn from_name(name: &str) -> Baseline {
        match name {
            "ema" => Baseline::Ema,
            "leave_one_out" => Baseline::LeaveOneOut,
            _ => Baseline::None,
        }
    }
}

/// The support's Gumbel noise drawn conditionally on a hard sample (Gumbel-Rao).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conditional {
    /// Gumbel-max on a one-hot: `estimator::conditional_gumbel_max`.
    GumbelMax,
    /// Logistic noise per coordinate given its sign: `estimator::conditional_logistic`.
    Logistic,
}

/// `∇_θ log q(z|θ)` of the support's sampler (REINFORCE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFunction {
    /// One-hot under Gumbel-max: `z − softmax(θ)`.
    Categorical,
    /// Independent coins: `z − σ(θ)`.
    Bernoulli,
}

/// What the forward pass returns and which gradient the backward pass computes, with the
/// support's estimator hook where the estimator needs one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// The gradient of the soft output.
    Relaxed,
    /// The soft gradient at the hard sample's `w`.
    StraightThrough,
    /// The soft gradient averaged over `draws` conditional noise vectors.
    GumbelRao {
        draws: usize,
        conditional: Conditional,
    },
    /// The score function with a baseline.
    Reinforce {
        baseline: Baseline,
        score: ScoreFunction,
    },
}

/// One layer's computation, per row; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Program {
    /// The entries of one row of `θ` and of `z`.
    pub row_len: usize,
    pub scores: ScoreMap,
    pub noise: Perturbation,
    pub coordinates: Coordinates,
    pub hard: Hard,
    pub soft: Soft,
    pub decode: Decode,
    pub backward: Backward,
    pub estimator: Estimator,
}

impl Program {
    /// Whether a backward pass (or the score function) reads `θ` itself, beyond what the forward
    /// pass saved: the score maps' derivatives, Gumbel-Rao's conditional noise (drawn around
    /// the scores) and REINFORCE's score function do; the identity map's other estimators
    /// differentiate the saved `w` and solution alone.
    pub fn backward_reads_theta(&self) -> bool {
        self.scores != ScoreMap::Identity
            || matches!(
                self.estimator,
                Estimator::GumbelRao { .. } | Estimator::Reinforce { .. }
            )
    }
}
