//! The directed matrix-tree theorem (Tutte 1948; Koo, Globerson, Carreras & Collins 2007):
//! `x: n×n → μ = ∇A(x)`, `A(x) = log Σ_{arborescences 𝒯 rooted at r} exp(Σ_{(i→j)∈𝒯} x_ij)
//! = log det L̂`, where `L̂` is the Laplacian of the weights `a_ij = exp(x_ij)` (edge `i → j`),
//! `L̂_jj = Σ_i a_ij`, `L̂_ij = −a_ij`, with the root's row and column removed.
//!
//! Undirected spanning trees are the symmetric case (Kirchhoff): with `x_ij = x_ji` every spanning
//! tree is one arborescence from any root, and the undirected marginal of `{i, j}` is
//! `μ_ij + μ_ji`. Only the entries `i ≠ j`, `j ≠ r` (the edges) are read; the others of `μ` and
//! of the gradients are left untouched.
//!
//! Numerics: every column `j` (the edges into `j`) is shifted by its maximum, which leaves `μ`
//! and `∇²A` unchanged (every arborescence has exactly one edge into each non-root node), so
//! `L̂_jj ≥ 1`. The inverse `M = L̂⁻¹` comes from faer's blocked LU with partial pivoting
//! ([`lu_inverse`]), accepted when the marginals it gives pass their identities (each in
//! `[0, 1]`, each node's in-marginals summing to 1: `consistent`). Otherwise `L̂` is factored
//! in its subtraction-free variant for M-matrices (`m_matrix_inverse`), whose inverse is
//! accurate entrywise, so that the rounding error of the marginals can be estimated from it;
//! where `L̂` is singular in f64 or that estimate exceeds [`MAX_FORWARD_ERROR`] (low
//! temperatures: weights spanning more than f64 can resolve), the marginals come from a
//! subtraction-free elimination in log space instead ([`log_space_marginals`]), which holds at
//! any temperature. The forward pass keeps `M` so that the backward
//! pass, a Hessian–vector product through `M`, does not factor `L̂` again; it uses the
//! forward-mode derivative of the log-space elimination where `M` is missing or inaccurate
//! ([`MAX_BACKWARD_ERROR`], [`MAX_COLUMN_RESIDUAL`]).

use std::borrow::Cow;
use std::ops::{Add, Mul, Sub};

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::lu::partial_pivoting::factor::{lu_in_place, lu_in_place_scratch};
use faer::linalg::lu::partial_pivoting::inverse::{inverse as lu_inverse, inverse_scratch};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::kernels::all_finite;
use crate::math::{exp_slice_f64, ln_f64};
use crate::real::{Concrete, Real};

/// The largest estimated rounding error of the LU marginals that [`marginals`] accepts; beyond
/// it the marginals come from the log-space elimination. The estimate is a worst case; typical
/// errors are a few hundred times smaller.
pub const MAX_FORWARD_ERROR: f64 = 1e-6;

/// The largest estimated rounding error (of the marginals built from the same inverse) at which
/// [`marginals_hvp`] uses the inverse; beyond it, the log-space derivative ([`log_space_hvp`]).
pub const MAX_BACKWARD_ERROR: f64 = 1e-5;

/// How far outside `[0, 1]`, and how far from 1 each node's in-marginals may sum, for
/// `consistent` to accept the marginals of faer's inverse. Partial pivoting bounds the inverse's
/// error by norms, not entrywise: at low temperatures (ill-conditioned `L̂`) its marginals drift,
/// and the backward pass's cancellation `dM_jj − dM_ji` amplifies the drift. At well-conditioned
/// `L̂` these identities hold to ~1e-15; 1e-12 sends the drifting cases to the subtraction-free
/// inverse (1e-9 let the low-temperature tree gradients in tests/reliability.rs drift past
/// their identity).
pub const MAX_IDENTITY_ERROR: f64 = 1e-12;

/// How [`marginals`] computed its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The inverse of `L̂` (faer's LU, or the subtraction-free elimination).
    Lu,
    /// The log-space elimination ([`log_space_marginals`]).
    LogSpace,
}

/// Whether entry `(i, j)` is an edge `i → j` of the complete digraph rooted at `root`.
pub fn is_edge(i: usize, j: usize, root: usize) -> bool {
    i != j && j != root
}

/// Index of a non-root node in the reduced Laplacian (the root's row and column removed).
fn reduced(i: usize, root: usize) -> usize {
    i - usize::from(i > root)
}

/// `f(j, jj)` for every non-root column `j` of an `n`-node row and its index `jj` in a reduced
/// row: two runs of consecutive indices, before and after the root (loops that vectorize).
#[inline(always)]
fn each_reduced(n: usize, root: usize, mut f: impl FnMut(usize, usize)) {
    for j in 0..root {
        f(j, j);
    }
    for j in root + 1..n {
        f(j, j - 1);
    }
}

/// `Mᵀ` as kept by a forward pass ([`marginals`]), if it kept one.
fn kept_inverse(kept: Option<&[f64]>) -> Option<&[f64]> {
    kept.filter(|m| !m.is_empty() && !m[0].is_nan())
}

/// `μ_ij = ∂A/∂x_ij` for every edge `i → j` (written into `mu`, which is `n × n`; zero off the
/// edges): the inverse's marginals, else the log-space elimination's. Never fails for finite
/// `x`. `Mᵀ` is written into `keep` when it is not empty (`(n − 1)²` numbers, row-major; a NaN
/// first where the marginals came from log space).
pub fn marginals(x: &[f64], n: usize, root: usize, mu: &mut [f64], keep: &mut [f64]) -> Method {
    let mut own = Vec::new();
    let mt = match keep.is_empty() {
        true => {
            own.resize((n - 1) * (n - 1), 0.0);
            &mut own[..]
        }
        false => keep,
    };
    match inverse(x, n, root, MAX_FORWARD_ERROR, mu, mt) {
        Some(_) => Method::Lu,
        None => {
            log_space_marginals(x, n, root, mu);
            if let Some(first) = mt.first_mut() {
                *first = f64::NAN;
            }
            Method::LogSpace
        }
    }
}

/// The weights ([`weights`]), with `Mᵀ = L̂⁻ᵀ` (row-major, `(n − 1)²` numbers) written into `mt` and
/// the marginals `μ_ij = a_ij (M_jj − M_ji)` into `mu`: faer's inverse where its marginals are
/// [`consistent`], else the subtraction-free one where its error estimate is at most
/// `max_error`; `None` when neither holds.
fn inverse(
    x: &[f64],
    n: usize,
    root: usize,
    max_error: f64,
    mu: &mut [f64],
    mt: &mut [f64],
) -> Option<Vec<f64>> {
    let a = weights(x, n, root);
    let m = n - 1;
    let mut lu = reduced_laplacian_transposed(&a, n, root);
    if lu_inverse_transposed(&mut lu, m, mt) && consistent(koo_marginals(&a, mt, n, root, mu), root)
    {
        return Some(a);
    }
    let mut lap = reduced_laplacian(&a, n, root);
    let inverse = m_matrix_inverse(&mut lap, &mut excess(&a, n, root), m)?;
    transpose_into(&inverse, m, mt);
    if error_bound(&a, mt, n, root) > max_error {
        return None;
    }
    koo_marginals(&a, mt, n, root, mu);
    Some(a)
}

/// What [`consistent`] reads of marginals: per column, the smallest and largest entries and the
/// sum (a NaN entry makes its column's sum NaN; the root's column is all zeros). Column by
/// column, so that taking in a row is one vectorized pass.
struct Summary {
    least: Vec<f64>,
    most: Vec<f64>,
    sums: Vec<f64>,
}

impl Summary {
    fn new(n: usize) -> Summary {
        Summary {
            least: vec![f64::INFINITY; n],
            most: vec![f64::NEG_INFINITY; n],
            sums: vec![0.0; n],
        }
    }

    /// Takes in one row of the array.
    #[inline(always)]
    fn add_row(&mut self, row: &[f64]) {
        let columns = self
            .least
            .iter_mut()
            .zip(&mut self.most)
            .zip(&mut self.sums);
        for (((lo, hi), sum), &v) in columns.zip(row) {
            *sum += v;
            *lo = if v < *lo { v } else { *lo };
            *hi = if v > *hi { v } else { *hi };
        }
    }
}

/// The [`Summary`] of an `n × n` row-major array of marginals.
#[cfg(test)]
fn summary(mu: &[f64], n: usize) -> Summary {
    let mut s = Summary::new(n);
    mu.chunks_exact(n).for_each(|row| s.add_row(row));
    s
}

/// Whether marginals pass the identities every exact answer satisfies: each in `[0, 1]`, and the
/// edges into each non-root node (one of which every arborescence has) summing to 1, both to
/// [`MAX_IDENTITY_ERROR`]. The sum is `(M L̂)_jj`, so this checks the inverse where it is used.
fn consistent(s: Summary, root: usize) -> bool {
    let tol = MAX_IDENTITY_ERROR;
    s.least.iter().all(|&lo| lo >= -tol)
        && s.most.iter().all(|&hi| hi <= 1.0 + tol)
        && s.sums
            .iter()
            .enumerate()
            .all(|(j, c)| j == root || (c - 1.0).abs() <= tol)
}

/// The column sums of an `n × n` row-major array.
fn column_sums(a: &[f64], n: usize) -> Vec<f64> {
    let mut sums = vec![0.0; n];
    for row in a.chunks_exact(n) {
        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    sums
}

/// `out += ∇²A(x) v` on the edges: the exact Hessian–vector product (= the VJP of
/// [`marginals`], the Hessian being symmetric). With `M = L̂⁻¹`, `B_ij = M_jj − M_ji`
/// (`M_jj` for `i = r`), `μ_ij = a_ij B_ij`, `da = a ⊙ v`, `dL̂` built from `da` like `L̂` from
/// `a`, `dM = −M dL̂ M`:  `dμ_ij = da_ij B_ij + a_ij (dM_jj − dM_ji)`. O(n³).
///
/// `Mᵀ` is the forward pass's (`kept`) when it kept one, else computed as [`marginals`] does
/// (with the looser [`MAX_BACKWARD_ERROR`]). Where there is none, the product overflows, or it
/// fails its identity `Σ_i (∇²A v)_ij = 0` (every arborescence has one edge into `j`, so
/// `Σ_i μ_ij = 1`) by more than [`MAX_COLUMN_RESIDUAL`]` · ‖v‖∞` — cancellation in
/// `dM_jj − dM_ji` at low temperatures — the product comes from [`log_space_hvp`] instead.
pub fn marginals_hvp(
    x: &[f64],
    n: usize,
    root: usize,
    v: &[f64],
    kept: Option<&[f64]>,
    out: &mut [f64],
) {
    let factored = match kept_inverse(kept) {
        Some(mt) => Some((weights(x, n, root), Cow::Borrowed(mt))),
        None => {
            let mut mt = vec![0.0; (n - 1) * (n - 1)];
            inverse(
                x,
                n,
                root,
                MAX_BACKWARD_ERROR,
                &mut vec![0.0; n * n],
                &mut mt,
            )
            .map(|a| (a, Cow::Owned(mt)))
        }
    };
    let lu = factored
        .map(|(a, mt)| lu_hvp(&a, &mt, n, root, v))
        .filter(|hv| column_residual(hv, n, root) <= MAX_COLUMN_RESIDUAL * max_abs(v));
    match lu {
        Some(hv) => out.iter_mut().zip(hv).for_each(|(o, h)| *o += h),
        // Low temperatures: the inverse has lost its digits; differentiate the log-space route.
        None => log_space_hvp(x, n, root, v, out),
    }
}

/// The largest `|Σ_i (∇²A v)_ij|`, relative to `‖v‖∞`, at which [`marginals_hvp`] keeps the
/// product from the inverse.
pub const MAX_COLUMN_RESIDUAL: f64 = 1e-9;

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `max_j |Σ_i hv_ij|` over the non-root columns (zero in exact arithmetic); NaN when an entry
/// overflowed (a NaN or infinite sum wins the maximum).
fn column_residual(hv: &[f64], n: usize, root: usize) -> f64 {
    let sums = column_sums(hv, n);
    (0..n).filter(|&j| j != root).fold(0.0, |worst, j| {
        let r = sums[j].abs();
        if r > worst || r.is_nan() {
            r
        } else {
            worst
        }
    })
}

/// The product of [`marginals_hvp`] from the weights `a` and `Mᵀ` (see there), as a new `n × n`
/// array; `dMᵀ = −Mᵀ dL̂ᵀ Mᵀ` by two of faer's matrix products.
fn lu_hvp(a: &[f64], mt: &[f64], n: usize, root: usize, v: &[f64]) -> Vec<f64> {
    let m = n - 1;
    let da: Vec<f64> = a.iter().zip(v).map(|(a, v)| a * v).collect();
    let dl = reduced_laplacian(&da, n, root);
    let dl_t = MatRef::from_row_major_slice(&dl, m, m).transpose();
    let mut dl_mt = vec![0.0; m * m];
    matmul(
        MatMut::from_row_major_slice_mut(&mut dl_mt, m, m),
        Accum::Replace,
        dl_t,
        MatRef::from_row_major_slice(mt, m, m),
        1.0,
        Par::Seq,
    );
    let mut dmt = vec![0.0; m * m];
    matmul(
        MatMut::from_row_major_slice_mut(&mut dmt, m, m),
        Accum::Replace,
        MatRef::from_row_major_slice(mt, m, m),
        MatRef::from_row_major_slice(&dl_mt, m, m),
        -1.0,
        Par::Seq,
    );
    let mut hv = vec![0.0; n * n];
    let (diag, ddiag) = (diagonal(mt, m), diagonal(&dmt, m));
    for i in 0..n {
        let (ai, dai, hvi) = (&a[i * n..], &da[i * n..], &mut hv[i * n..(i + 1) * n]);
        if i == root {
            each_reduced(n, root, |j, jj| {
                hvi[j] = dai[j] * diag[jj] + ai[j] * ddiag[jj]
            });
        } else {
            let ii = reduced(i, root);
            let (mti, dmti) = (&mt[ii * m..(ii + 1) * m], &dmt[ii * m..(ii + 1) * m]);
            each_reduced(n, root, |j, jj| {
                hvi[j] = dai[j] * (diag[jj] - mti[jj]) + ai[j] * (ddiag[jj] - dmti[jj])
            });
        }
    }
    hv
}

/// `t ← aᵀ` for row-major `m × m` matrices.
fn transpose_into(a: &[f64], m: usize, t: &mut [f64]) {
    for (i, row) in a.chunks_exact(m).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * m + i] = v;
        }
    }
}

/// The diagonal of a row-major `m × m` matrix.
fn diagonal(a: &[f64], m: usize) -> Vec<f64> {
    (0..m).map(|k| a[k * m + k]).collect()
}

crate::simd::multiversion! {
    /// Koo et al. (2007), eq. 6: `μ_ij = a_ij (M_jj − M_ji)`, `μ_rj = a_rj M_jj`, from `Mᵀ`
    /// (row `i` of `μ` reads row `i` of `Mᵀ`); zero off the edges, where `a` is. Returns the
    /// marginals' [`Summary`], taken row by row as they are written. Compiled for the CPU's
    /// widest vectors.
    fn koo_marginals / koo_marginals_on(a: &[f64], mt: &[f64], n: usize, root: usize, mu: &mut [f64]) -> Summary = koo_marginals_body
}

#[inline(always)]
fn koo_marginals_body(a: &[f64], mt: &[f64], n: usize, root: usize, mu: &mut [f64]) -> Summary {
    let m = n - 1;
    let diag = diagonal(mt, m);
    let mut summary = Summary::new(n);
    for (i, (ai, mui)) in a.chunks_exact(n).zip(mu.chunks_exact_mut(n)).enumerate() {
        mui[root] = 0.0;
        if i == root {
            each_reduced(n, root, |j, jj| mui[j] = ai[j] * diag[jj]);
        } else {
            let mti = &mt[reduced(i, root) * m..];
            each_reduced(n, root, |j, jj| mui[j] = ai[j] * (diag[jj] - mti[jj]));
        }
        summary.add_row(mui);
    }
    summary
}

/// `a_rj` for each non-root `j`: the part of `L̂`'s column `j` diagonal that no off-diagonal
/// entry balances (its edge from the root).
fn excess(a: &[f64], n: usize, root: usize) -> Vec<f64> {
    let mut excess = vec![0.0; n - 1];
    each_reduced(n, root, |j, jj| excess[jj] = a[root * n + j]);
    excess
}

/// The column-shifted weights `a_ij = exp(x_ij − max_k x_kj)` on the edges, 0 elsewhere.
fn weights(x: &[f64], n: usize, root: usize) -> Vec<f64> {
    // The column maxima over the edges: row i's entries but its diagonal, in two runs.
    let mut shift = vec![f64::NEG_INFINITY; n];
    for (i, row) in x.chunks_exact(n).enumerate() {
        for run in [0..i, i + 1..n] {
            let (s, r) = (&mut shift[run.clone()], &row[run]);
            s.iter_mut().zip(r).for_each(|(s, &v)| *s = s.max(v));
        }
    }
    shift[root] = 0.0;
    let mut a = Vec::with_capacity(n * n);
    for row in x.chunks_exact(n) {
        a.extend(row.iter().zip(&shift).map(|(v, s)| v - s));
    }
    crate::math::exp_slice_f64(&mut a);
    for (i, row) in a.chunks_exact_mut(n).enumerate() {
        row[i] = 0.0;
        row[root] = 0.0;
    }
    a
}

/// The reduced Laplacian (row-major, `(n−1) × (n−1)`) of edge weights `a` (zero off the edges):
/// `L̂_jj = Σ_i a_ij`, `L̂_ij = −a_ij`, the root's row and column removed.
fn reduced_laplacian(a: &[f64], n: usize, root: usize) -> Vec<f64> {
    laplacian_at(a, n, root, |ii, jj| ii * (n - 1) + jj)
}

/// `L̂ᵀ` row-major, which is `L̂` column-major (what faer factors fastest), written from the rows
/// of `a` (see [`reduced_laplacian`]).
fn reduced_laplacian_transposed(a: &[f64], n: usize, root: usize) -> Vec<f64> {
    laplacian_at(a, n, root, |ii, jj| jj * (n - 1) + ii)
}

/// `L̂` with entry `(ii, jj)` stored at `at(ii, jj)`, from the rows of `a`.
#[inline(always)]
fn laplacian_at(a: &[f64], n: usize, root: usize, at: impl Fn(usize, usize) -> usize) -> Vec<f64> {
    let m = n - 1;
    let sums = column_sums(a, n);
    let mut lap = vec![0.0; m * m];
    for (i, ai) in a.chunks_exact(n).enumerate().filter(|&(i, _)| i != root) {
        let ii = reduced(i, root);
        each_reduced(n, root, |j, jj| lap[at(ii, jj)] = -ai[j]);
        lap[at(ii, ii)] = sums[i];
    }
    lap
}

/// `mt ← Mᵀ = L̂⁻ᵀ` (row-major) from faer's blocked LU with partial pivoting, one thread; `false`
/// when an entry is not finite (singular `L̂`). `lu` holds `L̂` column-major (the row-major `L̂ᵀ`,
/// [`reduced_laplacian_transposed`]) and is factored in place; `M = U⁻¹ L⁻¹ P` is written
/// column-major, which is `Mᵀ` row-major: faer's lower-level calls, without the copies of its
/// `PartialPivLu` (the input, the split factors, the zeroed inverse).
fn lu_inverse_transposed(lu: &mut [f64], m: usize, mt: &mut [f64]) -> bool {
    let (mut perm, mut perm_inv) = (vec![0usize; m], vec![0usize; m]);
    let scratch = lu_in_place_scratch::<usize, f64>(m, m, Par::Seq, Default::default())
        .or(inverse_scratch::<usize, f64>(m, Par::Seq));
    let mut memory = MemBuffer::new(scratch);
    let stack = MemStack::new(&mut memory);
    let mut factors = MatMut::from_column_major_slice_mut(lu, m, m);
    let (_, p) = lu_in_place(
        factors.as_mut(),
        &mut perm,
        &mut perm_inv,
        Par::Seq,
        stack,
        Default::default(),
    );
    // The unit lower factor and the upper one share `factors`: each inversion reads its triangle.
    let factors = factors.as_ref();
    let out = MatMut::from_column_major_slice_mut(mt, m, m);
    lu_inverse(out, factors, factors, p, Par::Seq, stack);
    all_finite(mt)
}

/// A first-order bound on the rounding error of `μ_ij = a_ij (M_jj − M_ji)` from the
/// subtraction-free inverse (given as `Mᵀ`): its entries carry relative errors of order `n·ε`
/// ([`m_matrix_inverse`]), so the error is about `n·ε·max_ij a_ij (M_jj + M_ji)` (a worst case;
/// typical errors are smaller): small unless the difference cancels.
fn error_bound(a: &[f64], mt: &[f64], n: usize, root: usize) -> f64 {
    let m = n - 1;
    let diag = diagonal(mt, m);
    let mut worst: f64 = 0.0;
    for (i, ai) in a.chunks_exact(n).enumerate() {
        if i == root {
            each_reduced(n, root, |j, jj| worst = worst.max(ai[j] * diag[jj]));
        } else {
            let mti = &mt[reduced(i, root) * m..];
            each_reduced(n, root, |j, jj| {
                worst = worst.max(ai[j] * (diag[jj] + mti[jj]))
            });
        }
    }
    n as f64 * f64::EPSILON * worst
}

/// `L̂⁻¹` of a row-major `m × m` reduced Laplacian, a column diagonally dominant M-matrix whose
/// column `j` sums to `excess[j] ≥ 0` (its edge from the root). Gaussian elimination in the
/// variant of Grassmann, Taksar & Heyman (1985): the off-diagonal updates only add magnitudes,
/// and each new pivot is recomputed as `excess + Σ |off-diagonals|` of its column (the excess
/// itself updated as `s_j += |L_kj| s_k / L_kk`) instead of by a cancelling subtraction. No
/// pivoting is needed: partial pivoting would keep the diagonal of such a matrix anyway. The
/// factors then have signs that make both substitutions subtraction-free, so every entry of the
/// (nonnegative) inverse has a relative error of order `m·ε` (Alfa, Xue & Ye 2002). `a` and
/// `excess` are overwritten. `None` when a pivot is zero or not finite.
fn m_matrix_inverse(a: &mut [f64], excess: &mut [f64], m: usize) -> Option<Vec<f64>> {
    let mut colsum = vec![0.0; m];
    for k in 0..m {
        let pivot = a[k * m + k];
        if !(pivot > 0.0 && pivot.is_finite()) {
            return None;
        }
        let (top, rest) = a.split_at_mut((k + 1) * m);
        let row_k = &top[k * m..];
        colsum[k + 1..].fill(0.0);
        for (r, row) in rest.chunks_exact_mut(m).enumerate() {
            let i = k + 1 + r;
            let l = row[k] / pivot;
            row[k] = l;
            for (r, &u) in row[k + 1..].iter_mut().zip(&row_k[k + 1..]) {
                *r -= l * u;
            }
            for range in [k + 1..i, i + 1..m] {
                for (c, &r) in colsum[range.clone()].iter_mut().zip(&row[range]) {
                    *c -= r;
                }
            }
        }
        let sk = excess[k];
        for j in k + 1..m {
            excess[j] -= row_k[j] * sk / pivot;
        }
        for (r, row) in rest.chunks_exact_mut(m).enumerate() {
            let j = k + 1 + r;
            row[j] = colsum[j] + excess[j];
        }
    }
    // M = U⁻¹ L⁻¹: solve L U M = I row by row (L unit lower, U upper).
    let mut x = vec![0.0; m * m];
    for i in 0..m {
        x[i * m + i] = 1.0;
    }
    for i in 1..m {
        let (done, rest) = x.split_at_mut(i * m);
        let row_i = &mut rest[..m];
        for k in 0..i {
            // Row k of L⁻¹ vanishes beyond column k.
            let l = a[i * m + k];
            for (r, &y) in row_i[..=k].iter_mut().zip(&done[k * m..=k * m + k]) {
                *r -= l * y;
            }
        }
    }
    for i in (0..m).rev() {
        let (head, tail) = x.split_at_mut((i + 1) * m);
        let row_i = &mut head[i * m..];
        for k in i + 1..m {
            let u = a[i * m + k];
            for (r, &y) in row_i.iter_mut().zip(&tail[(k - i - 1) * m..(k - i) * m]) {
                *r -= u * y;
            }
        }
        let d = a[i * m + i];
        for r in row_i.iter_mut() {
            *r /= d;
        }
    }
    Some(x)
}

/// `μ = ∇A(x)` by Gaussian elimination of the non-root nodes in log space, subtraction-free
/// (Grassmann, Taksar & Heyman 1985): eliminating node `v` of the current graph (pivot
/// `D_v = log Σ_i a_iv`, its weighted in-degree) leaves the Laplacian of the graph with
/// `a'_uw = a_uw + a_uv a_vw / e^{D_v}`, so `A = Σ_v D_v`. Every step adds positive terms, so the
/// result has full relative accuracy at any spread of `x`. The marginals are the reverse-mode
/// derivative of that program: each entry's final value is one log-sum over its contributions,
/// and its adjoint is a marginal of the reduced graph (in `[0, 1]`). O(n³) `exp`.
pub fn log_space_marginals(x: &[f64], n: usize, root: usize, mu: &mut [f64]) {
    log_space_program(x, n, root, mu);
}

/// `out += ∇²A(x) v` on the edges, as the forward-mode derivative of [`log_space_marginals`]
/// in the direction `v` (`∇²A v = dμ/dx · v`): the same elimination on dual numbers, so it holds
/// wherever the log-space marginals do. About twice their cost, O(n³).
pub fn log_space_hvp(x: &[f64], n: usize, root: usize, v: &[f64], out: &mut [f64]) {
    let dual: Vec<Dual> = x.iter().zip(v).map(|(&x, &d)| Dual { x, d }).collect();
    let mut mu = vec![Dual::constant(0.0); n * n];
    log_space_program(&dual, n, root, &mut mu);
    for i in 0..n {
        for j in (0..n).filter(|&j| is_edge(i, j, root)) {
            out[i * n + j] += mu[i * n + j].d;
        }
    }
}

/// The program of [`log_space_marginals`], on numbers of type `T` (plain, or dual for its
/// derivative).
fn log_space_program<T: Num>(x: &[T], n: usize, root: usize, mu: &mut [T]) {
    // Node order: the non-root nodes, then the root (never eliminated).
    let order: Vec<usize> = (0..n).filter(|&i| i != root).chain([root]).collect();
    let last = n - 1;
    let at = |i: usize, j: usize| x[order[i] * n + order[j]];
    let mut f = vec![T::constant(f64::NEG_INFINITY); n * n];
    for i in 0..n {
        for j in (0..last).filter(|&j| j != i) {
            f[i * n + j] = at(i, j);
        }
    }
    let mut d = vec![T::constant(0.0); last];
    for v in 0..last {
        d[v] = (v + 1..n).fold(T::constant(f64::NEG_INFINITY), |s, i| {
            s.logaddexp(f[i * n + v])
        });
        for u in v + 1..n {
            let fuv = f[u * n + v] - d[v];
            for w in (v + 1..last).filter(|&w| w != u) {
                f[u * n + w] = f[u * n + w].logaddexp(fuv + f[v * n + w]);
            }
        }
    }
    let mut adj = vec![T::constant(0.0); n * n];
    for v in (0..last).rev() {
        let mut dv = T::constant(1.0);
        for u in v + 1..n {
            let fuv = f[u * n + v] - d[v];
            let mut col = T::constant(0.0);
            for w in (v + 1..last).filter(|&w| w != u) {
                let p = adj[u * n + w] * (fuv + f[v * n + w] - f[u * n + w]).exp();
                col = col + p;
                adj[v * n + w] = adj[v * n + w] + p;
            }
            adj[u * n + v] = adj[u * n + v] + col;
            dv = dv - col;
        }
        for i in v + 1..n {
            adj[i * n + v] = adj[i * n + v] + dv * (f[i * n + v] - d[v]).exp();
        }
    }
    for i in 0..n {
        for j in (0..last).filter(|&j| j != i) {
            mu[order[i] * n + order[j]] = adj[i * n + j] * (at(i, j) - f[i * n + j]).exp();
        }
    }
}

/// The arithmetic [`log_space_program`] needs.
trait Num: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    fn constant(x: f64) -> Self;
    fn exp(self) -> Self;
    /// `log(e^self + e^other)`.
    fn logaddexp(self, other: Self) -> Self;
}

impl Num for f64 {
    fn constant(x: f64) -> f64 {
        x
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn logaddexp(self, other: f64) -> f64 {
        super::logaddexp(self, other)
    }
}

/// A value `x` with its derivative `d` along one direction (forward mode).
#[derive(Clone, Copy, Debug)]
struct Dual {
    x: f64,
    d: f64,
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual {
            x: self.x + o.x,
            d: self.d + o.d,
        }
    }
}

impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual {
            x: self.x - o.x,
            d: self.d - o.d,
        }
    }
}

impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual {
            x: self.x * o.x,
            d: self.d * o.x + self.x * o.d,
        }
    }
}

impl Num for Dual {
    fn constant(x: f64) -> Dual {
        Dual { x, d: 0.0 }
    }
    fn exp(self) -> Dual {
        let e = self.x.exp();
        Dual {
            x: e,
            d: e * self.d,
        }
    }
    /// `hi + log(1 + t)`, `t = e^{lo − hi}`; derivative `(ḣi + t·l̇o) / (1 + t)`.
    fn logaddexp(self, other: Dual) -> Dual {
        let (hi, lo) = if self.x >= other.x {
            (self, other)
        } else {
            (other, self)
        };
        if lo.x == f64::NEG_INFINITY {
            return hi;
        }
        let t = (lo.x - hi.x).exp();
        Dual {
            x: hi.x + t.ln_1p(),
            d: (hi.d + t * lo.d) / (1.0 + t),
        }
    }
}

/// The node of the largest weighted degree `log Σ_j exp(y_ij)` (the first on ties): as the root
/// of an undirected computation it keeps the entries of `L̂⁻¹` (resistances to the root) and so
/// the cancellation in the marginals small. Max-shifted, with sst's `exp` and `ln`
/// ([`crate::math`]) summed in index order: the CUDA kernel computes the same bits, so both pick
/// the same root (the backward pass reuses the forward's inverse, which is the root's).
fn best_root(y: &[f64], n: usize) -> usize {
    let mut row = Vec::with_capacity(n);
    let degrees: Vec<f64> = (0..n)
        .map(|i| {
            row.clear();
            row.extend((0..n).filter(|&j| j != i).map(|j| y[i * n + j]));
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter_mut().for_each(|v| *v -= m);
            exp_slice_f64(&mut row);
            m + ln_f64(row.iter().fold(0.0, |s, &e| s + e))
        })
        .collect();
    (1..n).fold(0, |b, i| if degrees[i] > degrees[b] { i } else { b })
}

/// The symmetric f64 logits `y_ij = y_ji = x_{min(i,j), max(i,j)}` of an undirected graph whose
/// edge `{i, j}` weighs the upper-triangle entry of `x`.
fn symmetric<F: Real>(x: &[F], n: usize) -> Vec<f64> {
    let mut y = crate::kernels::widen(x);
    for i in 1..n {
        for j in 0..i {
            y[i * n + j] = y[j * n + i];
        }
    }
    y
}

/// The f64 logits of the edges `i → j` of the digraph rooted at `root`, 0 off the edges.
pub fn rooted<F: Real>(x: &[F], n: usize, root: usize) -> Vec<f64> {
    let mut y = crate::kernels::widen(x);
    for (i, row) in y.chunks_exact_mut(n).enumerate() {
        row[i] = 0.0;
        row[root] = 0.0;
    }
    y
}

/// Spanning-tree edge marginals of the complete graph with edge weights in the upper triangle
/// of `x` (Kirchhoff): the directed kernel on the symmetric logits from the best root, the
/// marginal of `{i, j}` being `μ_ij + μ_ji`, written into both halves of `z` (zero diagonal).
pub fn undirected_marginals<F: Real>(x: &[F], n: usize, z: &mut [F], keep: &mut [f64]) -> Method {
    let y = symmetric(x, n);
    let mut mu = vec![0.0; n * n];
    let method = marginals(&y, n, best_root(&y, n), &mut mu, keep);
    for (k, zk) in z.iter_mut().enumerate() {
        let (i, j) = (k / n, k % n);
        *zk = F::of(if i == j { 0.0 } else { mu[k] + mu[j * n + i] });
    }
    method
}

/// The VJP of [`undirected_marginals`] on the upper triangle: the cotangent folded onto the
/// upper triangle, the directed Hessian–vector product, and its two halves summed. Adds into
/// `grad_x` above the diagonal. `kept`: what the forward pass kept, if it ran at `x`.
pub fn undirected_marginals_vjp<F: Real>(
    x: &[F],
    n: usize,
    g: &[F],
    kept: Option<&[f64]>,
    grad_x: &mut [F],
) {
    let mut fold = crate::kernels::widen(g);
    fold_undirected(&mut fold, n);
    let v = symmetric(&fold, n);
    let y = symmetric(x, n);
    let mut hv = vec![0.0; n * n];
    marginals_hvp(&y, n, best_root(&y, n), &v, kept, &mut hv);
    for i in 0..n {
        for j in i + 1..n {
            grad_x[i * n + j] = grad_x[i * n + j] + F::of(hv[i * n + j] + hv[j * n + i]);
        }
    }
}

/// Arborescence edge marginals rooted at `root` (zero off the edges); `M` kept as in
/// [`marginals`].
pub fn rooted_marginals<F: Real>(
    x: &[F],
    n: usize,
    root: usize,
    z: &mut [F],
    keep: &mut [f64],
) -> Method {
    let x = rooted(x, n, root);
    match crate::real::concrete(z) {
        Concrete::F64(z) => marginals(&x, n, root, z, keep),
        Concrete::F32(z) => {
            let mut mu = vec![0.0; n * n];
            let method = marginals(&x, n, root, &mut mu, keep);
            crate::kernels::narrow(mu, z);
            method
        }
    }
}

/// The VJP of [`rooted_marginals`]; adds into `grad_x` on the edges. `kept`: what the forward
/// pass kept, if it ran at `x`.
pub fn rooted_marginals_vjp<F: Real>(
    x: &[F],
    n: usize,
    root: usize,
    g: &[F],
    kept: Option<&[f64]>,
    grad_x: &mut [F],
) {
    let mut hv = vec![0.0; n * n];
    marginals_hvp(
        &rooted(x, n, root),
        n,
        root,
        &rooted(g, n, root),
        kept,
        &mut hv,
    );
    crate::kernels::add_narrowed(hv, grad_x);
}

/// Folds a cotangent of symmetric marginals onto the upper triangle, where the weights live:
/// `c_ij ← c_ij + c_ji` for `i < j`, 0 on and below the diagonal.
pub fn fold_undirected(c: &mut [f64], n: usize) {
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

/// Zeroes the entries that are not weights of an undirected graph: the diagonal and below.
pub fn restrict_undirected(grad: &mut [f64], n: usize) {
    for (k, g) in grad.iter_mut().enumerate() {
        if k / n >= k % n {
            *g = 0.0;
        }
    }
}

/// Zeroes the entries that are not edges of the digraph rooted at `root`.
pub fn restrict_rooted(grad: &mut [f64], n: usize, root: usize) {
    for (k, g) in grad.iter_mut().enumerate() {
        if !is_edge(k / n, k % n, root) {
            *g = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;
    use crate::simd::Variant;

    /// Every parent function of the non-root nodes that reaches the root: the arborescences.
    fn arborescences(n: usize, root: usize) -> Vec<Vec<usize>> {
        let nodes: Vec<usize> = (0..n).filter(|&i| i != root).collect();
        let mut out = Vec::new();
        let total = (n as u64).pow(nodes.len() as u32);
        for code in 0..total {
            let mut parent = vec![usize::MAX; n];
            let mut c = code;
            for &j in &nodes {
                parent[j] = (c % n as u64) as usize;
                c /= n as u64;
            }
            let ok = nodes.iter().all(|&j| {
                let mut k = j;
                for _ in 0..n {
                    if k == root {
                        return true;
                    }
                    if parent[k] == k {
                        return false;
                    }
                    k = parent[k];
                }
                k == root
            });
            if ok {
                out.push(parent);
            }
        }
        out
    }

    fn brute(x: &[f64], n: usize, root: usize) -> Vec<f64> {
        let trees = arborescences(n, root);
        let scores: Vec<f64> = trees
            .iter()
            .map(|p| (0..n).filter(|&j| j != root).map(|j| x[p[j] * n + j]).sum())
            .collect();
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut mu = vec![0.0; n * n];
        for (p, wt) in trees.iter().zip(&weights) {
            for j in (0..n).filter(|&j| j != root) {
                mu[p[j] * n + j] += wt / total;
            }
        }
        mu
    }

    #[test]
    fn both_methods_match_brute_force() {
        for seed in 0..30 {
            let mut r = XorShift::new(seed);
            let n = 2 + (r.next_u64() % 4) as usize;
            let root = (r.next_u64() % n as u64) as usize;
            let x = r.vec(n * n, -3.0, 3.0);
            let want = brute(&x, n, root);
            let mut lu = vec![0.0; n * n];
            assert_eq!(marginals(&x, n, root, &mut lu, &mut []), Method::Lu);
            let mut log = vec![0.0; n * n];
            log_space_marginals(&x, n, root, &mut log);
            // The subtraction-free inverse, the fallback of faer's.
            let a = weights(&x, n, root);
            let mut lap = reduced_laplacian(&a, n, root);
            let inv = m_matrix_inverse(&mut lap, &mut excess(&a, n, root), n - 1).expect("regular");
            let mut gth = vec![0.0; n * n];
            let mut mt = vec![0.0; (n - 1) * (n - 1)];
            transpose_into(&inv, n - 1, &mut mt);
            koo_marginals(&a, &mt, n, root, &mut gth);
            for k in 0..n * n {
                assert!((lu[k] - want[k]).abs() < 1e-12, "{lu:?} vs {want:?}");
                assert!((log[k] - want[k]).abs() < 1e-12, "{log:?} vs {want:?}");
                assert!((gth[k] - want[k]).abs() < 1e-12, "{gth:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn hvp_matches_differences_of_marginals() {
        for seed in 0..20 {
            let mut r = XorShift::new(50 + seed);
            let n = 2 + (r.next_u64() % 5) as usize;
            let root = (r.next_u64() % n as u64) as usize;
            let x = r.vec(n * n, -2.0, 2.0);
            let v = r.vec(n * n, -1.0, 1.0);
            let mut hv = vec![0.0; n * n];
            marginals_hvp(&x, n, root, &v, None, &mut hv);
            let h = 1e-6;
            let at = |s: f64| {
                let xs: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + s * h * b).collect();
                let mut mu = vec![0.0; n * n];
                marginals(&xs, n, root, &mut mu, &mut []);
                mu
            };
            let (p, m) = (at(1.0), at(-1.0));
            for k in 0..n * n {
                let fd = (p[k] - m[k]) / (2.0 * h);
                assert!((hv[k] - fd).abs() < 1e-7, "{k}: {} vs {fd}", hv[k]);
            }
        }
    }

    /// The forward-mode derivative of the log-space elimination is the same Hessian–vector
    /// product as the inverse's, and it holds where the inverse has lost its digits (checked
    /// there against central differences of the log-space marginals, which stay accurate).
    #[test]
    fn log_space_hvp_matches_the_inverse_and_holds_at_low_temperature() {
        for seed in 0..200 {
            let mut r = XorShift::new(90 + seed);
            let n = 2 + (r.next_u64() % 6) as usize;
            let root = (r.next_u64() % n as u64) as usize;
            let x = r.vec(n * n, -2.0, 2.0);
            let v = r.vec(n * n, -1.0, 1.0);
            let (mut lu, mut log) = (vec![0.0; n * n], vec![0.0; n * n]);
            marginals_hvp(&x, n, root, &v, None, &mut lu);
            log_space_hvp(&x, n, root, &v, &mut log);
            for k in 0..n * n {
                assert!(
                    (lu[k] - log[k]).abs() < 1e-10,
                    "{k}: {} vs {}",
                    lu[k],
                    log[k]
                );
            }
            // x/T at T = 0.002: weights spanning e^2000.
            let cold: Vec<f64> = x.iter().map(|a| a / 0.002).collect();
            let mut hv = vec![0.0; n * n];
            marginals_hvp(&cold, n, root, &v, None, &mut hv);
            let h = 1e-4;
            let at = |s: f64| {
                let xs: Vec<f64> = cold.iter().zip(&v).map(|(a, b)| a + s * h * b).collect();
                let mut mu = vec![0.0; n * n];
                log_space_marginals(&xs, n, root, &mut mu);
                mu
            };
            let (p, m) = (at(1.0), at(-1.0));
            for k in 0..n * n {
                let fd = (p[k] - m[k]) / (2.0 * h);
                assert!(
                    hv[k].is_finite() && (hv[k] - fd).abs() < 1e-6,
                    "{k}: {} vs {fd}",
                    hv[k]
                );
            }
        }
    }

    /// The backward pass from the inverse the forward pass kept is the one that factors `L̂`
    /// again; a forward pass in log space keeps a NaN marker instead, and its backward pass
    /// differentiates the log-space elimination.
    #[test]
    fn the_kept_inverse_gives_the_same_product() {
        for seed in 0..20 {
            let mut r = XorShift::new(300 + seed);
            let n = 2 + (r.next_u64() % 40) as usize;
            let root = (r.next_u64() % n as u64) as usize;
            for scale in [1.0, 1000.0] {
                let x: Vec<f64> = r.vec(n * n, -2.0, 2.0).iter().map(|a| a * scale).collect();
                let v = r.vec(n * n, -1.0, 1.0);
                let (mut mu, mut keep) = (vec![0.0; n * n], vec![0.0; (n - 1) * (n - 1)]);
                let method = marginals(&x, n, root, &mut mu, &mut keep);
                assert_eq!(kept_inverse(Some(&keep)).is_some(), method == Method::Lu);
                let (mut kept, mut fresh) = (vec![0.0; n * n], vec![0.0; n * n]);
                marginals_hvp(&x, n, root, &v, Some(&keep), &mut kept);
                marginals_hvp(&x, n, root, &v, None, &mut fresh);
                for k in 0..n * n {
                    let tol = 1e-10 * (1.0 + fresh[k].abs());
                    assert!(
                        (kept[k] - fresh[k]).abs() <= tol,
                        "{k}: {} vs {}",
                        kept[k],
                        fresh[k]
                    );
                }
            }
        }
    }

    /// Koo's marginals and their summary are the same bits on every SIMD variant of the CPU.
    #[test]
    fn koo_marginals_agree_across_variants() {
        let mut r = XorShift::new(91);
        for n in [2, 9, 40] {
            let (a, mt) = (r.vec(n * n, 0.0, 1.0), r.vec((n - 1) * (n - 1), 0.0, 1.0));
            let root = n / 3;
            let mut want = vec![0.0; n * n];
            let s = koo_marginals_on(Variant::Baseline, &a, &mt, n, root, &mut want);
            for variant in Variant::all_available() {
                let mut mu = vec![1.0; n * n];
                let t = koo_marginals_on(variant, &a, &mt, n, root, &mut mu);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&mu), bits(&want), "{variant:?}");
                for (u, v) in [(&t.least, &s.least), (&t.most, &s.most), (&t.sums, &s.sums)] {
                    assert_eq!(bits(u), bits(v), "{variant:?}");
                }
            }
        }
    }

    /// At moderate spreads of the logits, faer's inverse passes the identities (so the blocked
    /// LU, not the slower subtraction-free elimination, serves the usual case).
    #[test]
    fn faer_inverse_serves_moderate_logits() {
        for seed in 0..40 {
            let mut r = XorShift::new(700 + seed);
            let n = 2 + (r.next_u64() % 60) as usize;
            let root = (r.next_u64() % n as u64) as usize;
            let x = r.vec(n * n, -6.0, 6.0);
            let a = weights(&x, n, root);
            let mut lu = reduced_laplacian_transposed(&a, n, root);
            let mut mt = vec![0.0; (n - 1) * (n - 1)];
            assert!(lu_inverse_transposed(&mut lu, n - 1, &mut mt), "regular");
            let mut mu = vec![0.0; n * n];
            koo_marginals(&a, &mt, n, root, &mut mu);
            assert!(consistent(summary(&mu, n), root), "seed {seed}, n {n}");
        }
    }

    /// Marginals outside `[0, 1]` or not summing to 1 over a node's in-edges are refused.
    #[test]
    fn inconsistent_marginals_are_refused() {
        let (n, root) = (3, 0);
        let mut x = vec![0.0; n * n];
        x[1] = 0.5;
        let mut mu = vec![0.0; n * n];
        marginals(&x, n, root, &mut mu, &mut []);
        assert!(consistent(summary(&mu, n), root));
        let mut off = mu.clone();
        off[n + 2] += 1e-6;
        assert!(!consistent(summary(&off, n), root));
        let mut outside = mu.clone();
        outside[1] = -1e-3;
        outside[2 * n + 1] += 1e-3;
        assert!(!consistent(summary(&outside, n), root));
    }

    #[test]
    fn log_space_holds_where_lu_is_singular() {
        // A 2-cycle 1 ↔ 2 (weight 0) entered from the root at −5000 (into 1) or −6000 (into 2):
        // the column-shifted Laplacian is [[1, −1], [−1, 1]] in f64, the tree 0 → 1 → 2 certain.
        let n = 3;
        let mut x = vec![0.0; n * n];
        x[1] = -5000.0;
        x[2] = -6000.0;
        let (mut mu, mut mt) = (vec![0.0; n * n], vec![0.0; (n - 1) * (n - 1)]);
        assert!(inverse(&x, n, 0, MAX_FORWARD_ERROR, &mut mu, &mut mt).is_none());
        assert_eq!(marginals(&x, n, 0, &mut mu, &mut []), Method::LogSpace);
        let want = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        for k in 0..n * n {
            assert!((mu[k] - want[k]).abs() < 1e-12, "{mu:?}");
        }
    }
}
