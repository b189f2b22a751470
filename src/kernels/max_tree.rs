//! Exact maximum trees of complete graphs given as dense `n × n` weight matrices (row-major):
//! `argmax_{trees 𝒯} Σ_{e∈𝒯} w_e` for undirected spanning trees (Prim) and for arborescences
//! rooted at `r` (Chu–Liu/Edmonds).

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
/// `w[i·n + j]` (Chu & Liu 1965; Edmonds 1967): every node takes its best incoming edge; a cycle
/// among those is contracted into one node whose incoming edges are re-weighed by
/// `w_uv − w_{best(v) v}`, the smaller graph is solved, and the cycle is re-opened where the
/// chosen edge enters it. O(n²) per contraction, O(n³) in all. Returns `parent` (with
/// `parent[root] = root`). Ties go to the lowest index.
pub fn max_arborescence(w: &[f64], n: usize, root: usize) -> Vec<usize> {
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

#[cfg(test)]
mod tests {
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
}
