//! Maximum-weight assignment: `w: n×n → σ = argmax_σ Σ_i w_{i,σ(i)}`, exact, O(n³).
//!
//! A dense shortest-augmenting-path solver with dual potentials in the style of Jonker &
//! Volgenant (1987), "A shortest augmenting path algorithm for dense and sparse linear assignment
//! problems": the problem is solved as the minimum-cost assignment on `c_ij = max_k w_ik − w_ij ≥ 0`
//! (row maxima subtracted, so that costs are non-negative and bounded by the row's spread).
//! Potentials `(u, v)` with `u_i + v_j ≤ c_ij`, tight on matched pairs, are kept throughout;
//! each free row is matched by one Dijkstra search on the reduced costs `c_ij − u_i − v_j ≥ 0`
//! followed by a potential update and an augmentation. Everything runs in f64: integer weights
//! below 2⁵³ are handled exactly, so ties are resolved exactly and deterministically (the result
//! is a function of `w` alone: rows are augmented in index order, the Dijkstra search takes the
//! first minimum in its scan order and prefers an unmatched column among equal distances).

use crate::real::Real;

/// An optimal assignment and a certificate of its optimality.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// `σ(i)`: the column (position) of row (item) `i`.
    pub col_of_row: Vec<usize>,
    /// Row duals of the max-weight LP: `u_i + v_j ≥ w_ij` for all `i, j`, with equality on the
    /// assignment, so `Σ u + Σ v = Σ_i w_{i,σ(i)}` certifies optimality (LP duality).
    pub u: Vec<f64>,
    /// Column duals, see `u`.
    pub v: Vec<f64>,
}

impl Assignment {
    /// `Σ_i w_{i,σ(i)}` for the `n×n` row-major `w`.
    pub fn objective(&self, w: &[f64]) -> f64 {
        let n = self.col_of_row.len();
        (0..n).map(|i| w[i * n + self.col_of_row[i]]).sum()
    }
}

/// Solves `max_σ Σ_i w_{i,σ(i)}` for a row-major `n×n` matrix of finite weights (see the module
/// doc for the algorithm), in f64. Panics if `w.len() != n²`.
pub fn max_weight_assignment<F: Real>(w: &[F], n: usize) -> Assignment {
    assert_eq!(w.len(), n * n, "assignment: w is not n×n");
    padded_assignment(w, n)
}

/// [`max_weight_assignment`] of the `n × n` matrix whose first rows are `w` (row-major, `n`
/// columns) and whose other rows are zero: the costs are built from `w` directly, with no padded
/// copy of it.
fn padded_assignment<F: Real>(w: &[F], n: usize) -> Assignment {
    let rows = w.len() / n;
    let row_max: Vec<f64> = (0..n)
        .map(|i| match i < rows {
            true => w[i * n..(i + 1) * n]
                .iter()
                .fold(f64::NEG_INFINITY, |m, x| m.max(x.f64())),
            false => 0.0,
        })
        .collect();
    let mut cost = Vec::with_capacity(n * n);
    for (row, &top) in w.chunks_exact(n).zip(&row_max) {
        cost.extend(row.iter().map(|x| top - x.f64()));
    }
    cost.resize(n * n, 0.0);
    let mut solver = MinCost::new(&cost, n);
    for row in 0..n {
        if solver.col_of_row[row] == FREE {
            solver.augment(row);
        }
    }
    // Min-cost duals (ũ, ṽ) with ũ_i + ṽ_j ≤ c_ij become max-weight duals u = max_k w_ik − ũ, v = −ṽ.
    Assignment {
        u: row_max.iter().zip(&solver.u).map(|(m, u)| m - u).collect(),
        v: solver.v.iter().map(|v| -v).collect(),
        col_of_row: solver.col_of_row,
    }
}

const FREE: usize = usize::MAX;

/// The state of the min-cost solver on non-negative costs.
struct MinCost<'a> {
    cost: &'a [f64],
    n: usize,
    u: Vec<f64>,
    v: Vec<f64>,
    col_of_row: Vec<usize>,
    row_of_col: Vec<usize>,
    /// Scratch of the Dijkstra search, kept between augmentations.
    dist: Vec<f64>,
    pred: Vec<usize>,
    todo: Vec<usize>,
    scanned: Vec<usize>,
}

impl<'a> MinCost<'a> {
    /// Column reduction `v_j = min_i c_ij` (with `u = 0`) and a greedy matching on the tight
    /// pairs it creates, as in the initialisation of Jonker & Volgenant.
    fn new(cost: &'a [f64], n: usize) -> Self {
        let mut s = MinCost {
            cost,
            n,
            u: vec![0.0; n],
            v: vec![0.0; n],
            col_of_row: vec![FREE; n],
            row_of_col: vec![FREE; n],
            dist: vec![0.0; n],
            pred: vec![0; n],
            todo: Vec::with_capacity(n),
            scanned: Vec::with_capacity(n),
        };
        // v_j = min_i c_ij and its first row, row by row (consecutive memory).
        let mut best = vec![0; n];
        s.v.copy_from_slice(&cost[..n]);
        for (i, row) in cost.chunks_exact(n).enumerate().skip(1) {
            for ((v, b), &c) in s.v.iter_mut().zip(&mut best).zip(row) {
                if c < *v {
                    (*v, *b) = (c, i);
                }
            }
        }
        for (j, &row) in best.iter().enumerate() {
            if s.col_of_row[row] == FREE {
                s.col_of_row[row] = j;
                s.row_of_col[j] = row;
            }
        }
        s
    }

    /// `c_rj − u_r − v_j`, the reduced cost of a pair (non-negative up to rounding).
    fn reduced(&self, r: usize, j: usize) -> f64 {
        self.cost[r * self.n + j] - self.u[r] - self.v[j]
    }

    /// Matches the free row `start` by a shortest augmenting path (Dijkstra on reduced costs),
    /// then updates the potentials so that they stay feasible and tight on the new matching.
    fn augment(&mut self, start: usize) {
        let n = self.n;
        self.todo.clear();
        self.todo.extend(0..n);
        self.scanned.clear();
        for j in 0..n {
            self.dist[j] = self.reduced(start, j);
            self.pred[j] = start;
        }
        let sink = loop {
            let pos = self.closest_unscanned();
            let j = self.todo.swap_remove(pos);
            let row = self.row_of_col[j];
            if row == FREE {
                break j;
            }
            self.scanned.push(j);
            self.relax_from(row, self.dist[j]);
        };
        let delta = self.dist[sink];
        self.u[start] += delta;
        for &j in &self.scanned {
            let shift = delta - self.dist[j];
            self.v[j] -= shift;
            self.u[self.row_of_col[j]] += shift;
        }
        let mut j = sink;
        loop {
            let row = self.pred[j];
            self.row_of_col[j] = row;
            let previous = std::mem::replace(&mut self.col_of_row[row], j);
            if row == start {
                break;
            }
            j = previous;
        }
    }

    /// The position in `todo` of the smallest distance (first in scan order; an unmatched
    /// column wins a tie, which ends the search early).
    fn closest_unscanned(&self) -> usize {
        let mut best = 0;
        let mut best_dist = self.dist[self.todo[0]];
        for (pos, &j) in self.todo.iter().enumerate().skip(1) {
            let d = self.dist[j];
            if d < best_dist
                || (d == best_dist
                    && self.row_of_col[j] == FREE
                    && self.row_of_col[self.todo[best]] != FREE)
            {
                best = pos;
                best_dist = d;
            }
        }
        best
    }

    /// Relaxes every unscanned column through the matched `row`, reached at distance `d_row`.
    fn relax_from(&mut self, row: usize, d_row: f64) {
        let base = d_row - self.u[row];
        let cost_row = &self.cost[row * self.n..(row + 1) * self.n];
        for &j in &self.todo {
            let d = base + cost_row[j] - self.v[j];
            if d < self.dist[j] {
                self.dist[j] = d;
                self.pred[j] = row;
            }
        }
    }
}

/// The indicator `s_{i,σ(i)} = 1` of a maximum-weight matching of the `rows × cols` matrix `w`
/// (`rows ≤ cols`): each row matched to a distinct column. The assignment runs on the square
/// `cols × cols` matrix with `cols − rows` rows of zeros appended (any matching of the real rows
/// extends to the padding rows at no weight).
pub fn matching_indicator<F: Real>(w: &[F], rows: usize, cols: usize, s: &mut [F]) {
    let assignment = padded_assignment(&w[..rows * cols], cols);
    s.fill(F::zero());
    for (i, &j) in assignment.col_of_row.iter().take(rows).enumerate() {
        s[i * cols + j] = F::one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;

    /// Every permutation of `0..n` (Heap's algorithm), for brute force.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if k <= 1 {
                out.push(a.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, a, out);
                let swap = if k.is_multiple_of(2) { i } else { 0 };
                a.swap(swap, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(n, &mut (0..n).collect(), &mut out);
        out
    }

    fn check_certificate(w: &[f64], n: usize, a: &Assignment, tol: f64) {
        for i in 0..n {
            for j in 0..n {
                assert!(
                    a.u[i] + a.v[j] >= w[i * n + j] - tol,
                    "dual infeasible at {i},{j}"
                );
            }
        }
        let dual: f64 = a.u.iter().chain(&a.v).sum();
        assert!(
            (dual - a.objective(w)).abs() <= tol * n as f64,
            "duality gap"
        );
    }

    #[test]
    fn matches_brute_force_and_certifies() {
        let mut r = XorShift::new(11);
        for n in 1..=7 {
            let perms = permutations(n);
            for _ in 0..20 {
                let w = r.vec(n * n, -3.0, 3.0);
                let a = max_weight_assignment(&w, n);
                let best = perms
                    .iter()
                    .map(|p| (0..n).map(|i| w[i * n + p[i]]).sum::<f64>())
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!((a.objective(&w) - best).abs() < 1e-12);
                check_certificate(&w, n, &a, 1e-12);
            }
        }
    }

    #[test]
    fn all_ties_give_a_permutation() {
        for n in [1, 2, 5, 30] {
            let a = max_weight_assignment(&vec![7.0; n * n], n);
            let mut seen = vec![false; n];
            for &j in &a.col_of_row {
                assert!(!seen[j]);
                seen[j] = true;
            }
            check_certificate(&vec![7.0; n * n], n, &a, 0.0);
        }
    }
}
