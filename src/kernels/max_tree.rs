//! Exact maximum trees of complete graphs given as dense `n × n` weight matrices (row-major):
//! `argmax_{trees 𝒯} Σ_{e∈𝒯} w_e` for undirected spanning trees (Prim) and for arborescences
//! rooted at `r` (Chu–Liu/Edmonds).

use crate::kernels::widen;
use crate::real::Real;

/// Maximum spanning tree of the complete graph whose edge `{i, j}` weighs `w[min·n + max]`
/// (Prim 1957, the dense O(n²) variant: each node keeps its best link to the tree, which suits
/// a complete graph better than Kruskal's O(n² log n) sort). Returns `parent` with
/// `parent[0] = 0` and `{i, parent[i]}` the tree's edges for `i > 0`. Ties go to the lowest
/// index. Panics if `n = 0`.
pub fn max_spanning_tree(w: &[f64], n: usize) -> Vec<usize> {
    let weight = |i: usize, j: usize| w[i.min(j) * n + i.max(j)];
    let mut parent = vec![0; n];
    let mut link = vec![f64::NEG_INFINITY; n];
    let mut in_tree = vec![false; n];
    let mut next = 0;
    for _ in 0..n {
        let v = next;
        in_tree[v] = true;
        let mut best: Option<usize> = None;
        for u in (0..n).filter(|&u| !in_tree[u]) {
            let wt = weight(u, v);
            if wt > link[u] {
                link[u] = wt;
                parent[u] = v;
            }
            if best.is_none_or(|b| link[u] > link[b]) {
                best = Some(u);
            }
        }
        match best {
            Some(b) => next = b,
            None => break,
        }
    }
    parent
}

/// Maximum arborescence rooted at `root` of the complete digraph whose edge `i → j` weighs
/// `w[i·n + j]` (the diagonal and the edges into `root` are ignored). Returns `parent` (with
/// `parent[root] = root`); ties go to the root, then to the lowest index.
///
/// Chu–Liu/Edmonds in the dense O(n²) form of Tarjan (1977, "Finding optimum branchings",
/// *Networks* 7) with the correction of Camerini, Fratta & Maffioli (1979, *Networks* 9):
///
/// * Super-nodes live in the `n` slots of one working matrix (a contracted cycle takes the slot
///   of its smallest member; the others retire) and every matrix entry remembers the original
///   edge it stands for, so no node-to-super-node look-up is needed.
/// * A path is grown backwards along best incoming edges (an O(n) column scan per step). When
///   it reaches the root or a super-node already known to hang from the root, the whole path is
///   final. When it closes on itself, the cycle `C` is contracted in O(n·|C|): the new column is
///   `max_{c∈C} (w_xc − y_c)` (`y_c` the weight of `c`'s chosen edge), the new row is
///   `max_{c∈C} w_cx`, and the new super-node continues the path.
/// * At most `n − 1` contractions with `Σ|C| < 2n` members and at most `2n` path steps make the
///   whole O(n²) time and memory. Expansion walks the contraction history backwards: the edge
///   entering a cycle picks the member it enters (found by climbing the history from its head,
///   O(n) per cycle), and every other member keeps its cycle edge.
pub fn max_arborescence(w: &[f64], n: usize, root: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    // Working matrix over slots and, per entry, the original edge `u·n + v` behind it.
    let mut g = w[..n * n].to_vec();
    let mut edge: Vec<usize> = (0..n * n).collect();
    for i in 0..n {
        g[i * n + i] = f64::NEG_INFINITY;
        g[i * n + root] = f64::NEG_INFINITY;
    }
    // Super-node ids: originals are 0..n, contractions n.. in creation order.
    let mut id_of_slot: Vec<usize> = (0..n).collect();
    let mut up: Vec<usize> = vec![usize::MAX; n]; // contraction-history parent of each id
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n]; // member ids of each id
    let mut in_edge: Vec<usize> = vec![usize::MAX; n]; // chosen original edge of each id
    let mut y = vec![0.0; n]; // weight of each slot's chosen edge in the working matrix
    let mut active = vec![true; n];
    // 0: not reached, 1: on the current path, 2: hangs from the root.
    let mut state = vec![0u8; n];
    state[root] = 2;
    let mut path: Vec<usize> = Vec::with_capacity(n);
    let mut cycle: Vec<usize> = Vec::with_capacity(n);
    let mut in_cycle = vec![false; n];

    for start in 0..n {
        if state[start] != 0 || !active[start] {
            continue;
        }
        path.clear();
        path.push(start);
        state[start] = 1;
        while let Some(&s) = path.last() {
            // Best incoming edge of `s`: the root on ties, then the lowest slot.
            let mut b = root;
            let mut top = g[root * n + s];
            for a in 0..n {
                if active[a] && a != s && g[a * n + s] > top {
                    (top, b) = (g[a * n + s], a);
                }
            }
            in_edge[id_of_slot[s]] = edge[b * n + s];
            y[s] = top;
            match state[b] {
                2 => {
                    for &p in &path {
                        state[p] = 2;
                    }
                    break;
                }
                0 => {
                    state[b] = 1;
                    path.push(b);
                }
                _ => {
                    // `b` is on the path: the cycle is `b` and everything pushed after it.
                    cycle.clear();
                    while let Some(p) = path.pop() {
                        cycle.push(p);
                        if p == b {
                            break;
                        }
                    }
                    cycle.sort_unstable();
                    let r = cycle[0];
                    for &c in &cycle {
                        in_cycle[c] = true;
                    }
                    for x in 0..n {
                        if !active[x] || in_cycle[x] {
                            continue;
                        }
                        let (mut top_in, mut arg_in) = (f64::NEG_INFINITY, r);
                        let (mut top_out, mut arg_out) = (f64::NEG_INFINITY, r);
                        for &c in &cycle {
                            let gain = g[x * n + c] - y[c];
                            if gain > top_in {
                                (top_in, arg_in) = (gain, c);
                            }
                            if g[c * n + x] > top_out {
                                (top_out, arg_out) = (g[c * n + x], c);
                            }
                        }
                        g[x * n + r] = top_in;
                        edge[x * n + r] = edge[x * n + arg_in];
                        if x != root {
                            g[r * n + x] = top_out;
                            edge[r * n + x] = edge[arg_out * n + x];
                        }
                    }
                    let id = up.len();
                    up.push(usize::MAX);
                    in_edge.push(usize::MAX);
                    let mut ids = Vec::with_capacity(cycle.len());
                    for &c in &cycle {
                        ids.push(id_of_slot[c]);
                        up[id_of_slot[c]] = id;
                        in_cycle[c] = false;
                        if c != r {
                            active[c] = false;
                        }
                    }
                    members.push(ids);
                    id_of_slot[r] = id;
                    g[r * n + r] = f64::NEG_INFINITY;
                    path.push(r);
                }
            }
        }
    }

    // Expansion, newest super-node first: its entering edge goes to the member holding the
    // edge's head; every other member keeps the edge it chose inside the cycle.
    let mut chosen = vec![usize::MAX; up.len()];
    for s in 0..n {
        if active[s] && s != root {
            chosen[id_of_slot[s]] = in_edge[id_of_slot[s]];
        }
    }
    for id in (n..up.len()).rev() {
        let e = chosen[id];
        let mut m = e % n;
        while up[m] != id {
            m = up[m];
        }
        for &k in &members[id] {
            chosen[k] = if k == m { e } else { in_edge[k] };
        }
    }
    (0..n)
        .map(|v| if v == root { root } else { chosen[v] / n })
        .collect()
}

/// The adjacency of the maximum spanning tree of `w` (upper-triangle weights): `s_ij = s_ji = 1`
/// on the tree's edges, 0 elsewhere.
pub fn max_spanning_tree_indicator<F: Real>(w: &[F], n: usize, s: &mut [F]) {
    let parent = max_spanning_tree(&widen(w), n);
    s.fill(F::zero());
    for (i, &p) in parent.iter().enumerate().skip(1) {
        s[i * n + p] = F::one();
        s[p * n + i] = F::one();
    }
}

/// The edge indicator `s_pj = 1` of the maximum arborescence of `w` rooted at `root` (only the
/// edges `i → j`, `i ≠ j ≠ root`, are read).
pub fn max_arborescence_indicator<F: Real>(w: &[F], n: usize, root: usize, s: &mut [F]) {
    let parent = max_arborescence(&crate::kernels::matrix_tree::rooted(w, n, root), n, root);
    s.fill(F::zero());
    for (j, &p) in parent.iter().enumerate().filter(|&(j, _)| j != root) {
        s[p * n + j] = F::one();
    }
}

/// The recursive O(n³) Chu–Liu/Edmonds that `max_arborescence` replaced, kept as a reference.
#[cfg(test)]
mod reference {
    /// The former recursive O(n³) solver, kept as the tests' reference: maximum arborescence rooted at `root` of the complete digraph whose edge `i → j` weighs
    /// `w[i·n + j]` (Chu & Liu 1965; Edmonds 1967): every node takes its best incoming edge; a cycle
    /// among those is contracted into one node whose incoming edges are re-weighed by
    /// `w_uv − w_{best(v) v}`, the smaller graph is solved, and the cycle is re-opened where the
    /// chosen edge enters it. O(n²) per contraction, O(n³) in all. Returns `parent` (with
    /// `parent[root] = root`). Ties go to the lowest index.
    pub fn reference_arborescence(w: &[f64], n: usize, root: usize) -> Vec<usize> {
        let mut g = w.to_vec();
        for i in 0..n {
            g[i * n + i] = f64::NEG_INFINITY;
            g[i * n + root] = f64::NEG_INFINITY;
        }
        solve(&g, n, root)
    }

    fn solve(g: &[f64], k: usize, root: usize) -> Vec<usize> {
        let best: Vec<usize> = (0..k)
            .map(|v| {
                if v == root {
                    return root;
                }
                (0..k).fold(root, |b, u| if g[u * k + v] > g[b * k + v] { u } else { b })
            })
            .collect();
        match find_cycle(&best, root) {
            None => best,
            Some(cycle) => contract(g, k, root, &best, &cycle),
        }
    }

    /// A cycle of the best-incoming-edge graph, if any.
    fn find_cycle(best: &[usize], root: usize) -> Option<Vec<usize>> {
        let mut mark = vec![usize::MAX; best.len()];
        for start in 0..best.len() {
            let mut v = start;
            while v != root && mark[v] == usize::MAX {
                mark[v] = start;
                v = best[v];
            }
            if v != root && mark[v] == start {
                let mut cycle = vec![v];
                let mut u = best[v];
                while u != v {
                    cycle.push(u);
                    u = best[u];
                }
                cycle.sort_unstable();
                return Some(cycle);
            }
        }
        None
    }

    /// Contracts `cycle` into one node, solves the smaller problem and expands its answer.
    fn contract(g: &[f64], k: usize, root: usize, best: &[usize], cycle: &[usize]) -> Vec<usize> {
        let mut in_cycle = vec![false; k];
        for &c in cycle {
            in_cycle[c] = true;
        }
        let outside: Vec<usize> = (0..k).filter(|&v| !in_cycle[v]).collect();
        let c = outside.len();
        let size = c + 1;
        let mut h = vec![f64::NEG_INFINITY; size * size];
        let mut enter = vec![0; k];
        let mut leave = vec![0; k];
        for (a, &u) in outside.iter().enumerate() {
            for (b, &v) in outside.iter().enumerate() {
                h[a * size + b] = g[u * k + v];
            }
            let (mut top, mut arg) = (f64::NEG_INFINITY, cycle[0]);
            for &v in cycle {
                let gain = g[u * k + v] - g[best[v] * k + v];
                if gain > top {
                    (top, arg) = (gain, v);
                }
            }
            h[a * size + c] = top;
            enter[u] = arg;
            if u != root {
                let (mut top, mut arg) = (f64::NEG_INFINITY, cycle[0]);
                for &x in cycle {
                    if g[x * k + u] > top {
                        (top, arg) = (g[x * k + u], x);
                    }
                }
                h[c * size + a] = top;
                leave[u] = arg;
            }
        }
        let new_root = outside
            .iter()
            .position(|&v| v == root)
            .expect("root outside");
        let sub = solve(&h, size, new_root);
        let mut parent = best.to_vec();
        for (a, &v) in outside.iter().enumerate() {
            if v != root {
                parent[v] = if sub[a] == c {
                    leave[v]
                } else {
                    outside[sub[a]]
                };
            }
        }
        let from = outside[sub[c]];
        parent[enter[from]] = from;
        parent
    }
}

#[cfg(test)]
mod tests {
    use super::reference::reference_arborescence;
    use super::*;

    #[test]
    fn prim_by_hand() {
        // Path 0–2–1–3 is the heaviest: weights 5, 4, 3 against 1s elsewhere.
        let n = 4;
        let mut w = vec![1.0; n * n];
        w[2] = 5.0; // {0, 2}
        w[n + 2] = 4.0; // {1, 2}
        w[n + 3] = 3.0; // {1, 3}
        assert_eq!(max_spanning_tree(&w, n), vec![0, 2, 0, 1]);
    }

    #[test]
    fn edmonds_opens_the_cycle_where_it_pays() {
        // 1 ↔ 2 prefer each other (10); entering from the root costs less at 2 (root → 2: 3)
        // than at 1 (root → 1: 1): the answer is 0 → 2 → 1.
        let n = 3;
        let mut w = vec![0.0; n * n];
        w[1] = 1.0;
        w[2] = 3.0;
        w[n + 2] = 10.0;
        w[2 * n + 1] = 10.0;
        assert_eq!(max_arborescence(&w, n, 0), vec![0, 2, 0]);
    }

    /// xorshift64*: a dependency-free deterministic generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, k: usize) -> usize {
            (self.next() % k as u64) as usize
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Checks that `parent` is an arborescence rooted at `root` and returns its weight.
    fn arborescence_weight(w: &[f64], n: usize, root: usize, parent: &[usize]) -> f64 {
        assert_eq!(parent.len(), n);
        assert_eq!(parent[root], root);
        for start in 0..n {
            let (mut v, mut steps) = (start, 0);
            while v != root {
                assert_ne!(parent[v], v, "self-loop at {v}");
                v = parent[v];
                steps += 1;
                assert!(steps < n, "cycle through {start}: {parent:?}");
            }
        }
        (0..n)
            .filter(|&v| v != root)
            .map(|v| w[parent[v] * n + v])
            .sum()
    }

    fn random_weights(rng: &mut Rng, n: usize, kind: usize) -> Vec<f64> {
        (0..n * n)
            .map(|_| match kind {
                0 => rng.below(4) as f64,
                1 => rng.unit() * 2.0 - 1.0,
                2 => [-1e6, 0.0, 1e6, 1.0][rng.below(4)],
                _ => (rng.below(21) as f64 - 10.0) * 1e5,
            })
            .collect()
    }

    #[test]
    fn dense_solver_matches_the_cubic_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let n = 2 + rng.below(39);
            let root = rng.below(n);
            let kind = case % 4;
            let w = random_weights(&mut rng, n, kind);
            let fast = max_arborescence(&w, n, root);
            let slow = reference_arborescence(&w, n, root);
            let (a, b) = (
                arborescence_weight(&w, n, root, &fast),
                arborescence_weight(&w, n, root, &slow),
            );
            let tol = if kind == 1 { 1e-9 } else { 0.0 };
            assert!(
                (a - b).abs() <= tol,
                "case {case} (n {n}, root {root}, kind {kind}): {a} vs {b}"
            );
            assert_eq!(max_arborescence(&w, n, root), fast, "not deterministic");
        }
    }

    #[test]
    fn dense_solver_edge_cases() {
        assert_eq!(max_arborescence(&[5.0], 1, 0), vec![0]);
        // All weights equal: every node hangs from the root.
        let n = 7;
        let w = vec![2.0; n * n];
        assert_eq!(max_arborescence(&w, n, 3), vec![3; n]);
        // A heavy 2-cycle hanging off a heavy chain, and the reference agrees exactly.
        let n = 5;
        let mut w = vec![0.0; n * n];
        for (u, v, x) in [
            (0, 1, 1.0),
            (1, 2, 5.0),
            (2, 3, 9.0),
            (3, 2, 9.0),
            (3, 4, 9.0),
            (4, 3, 9.0),
        ] {
            w[u * n + v] = x;
        }
        let fast = max_arborescence(&w, n, 0);
        assert_eq!(
            arborescence_weight(&w, n, 0, &fast),
            arborescence_weight(&w, n, 0, &reference_arborescence(&w, n, 0))
        );
        assert_eq!(fast, vec![0, 0, 1, 2, 3]);
    }

    /// `cargo test --release --lib max_tree::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing() {
        let mut rng = Rng(7);
        for n in [64, 128, 256, 512] {
            let w = random_weights(&mut rng, n, 1);
            let reps = 20;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(max_arborescence(&w, n, 0));
            }
            let fast = t.elapsed().as_secs_f64() / reps as f64;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(reference_arborescence(&w, n, 0));
            }
            let slow = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "n {n}: dense {:.3} ms, reference {:.3} ms",
                fast * 1e3,
                slow * 1e3
            );
        }
    }
}
