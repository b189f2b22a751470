//! `spanning_tree` and `arborescence` against their own enumeration written here (Prüfer
//! sequences, parent functions): exact maximum trees and exact marginals `Σ_𝒯 z_𝒯 e^{⟨x, z_𝒯⟩} / Σ_𝒯
//! e^{⟨x, z_𝒯⟩}` for n ≤ 6; optimality of the hard trees for large n (the cycle property for
//! spanning trees, an independent Chu–Liu/Edmonds written here for arborescences); zero
//! gradients on the ignored entries; extreme logits; argument errors.

mod common;

use common::{compile_error, layer, Rng};
use ndarray::{ArrayD, IxDyn};
use sst::{Mode, Noise, Options};

/// A tree as its list of directed edges `(i, j)`; undirected trees store `i < j`.
type Tree = Vec<(usize, usize)>;

/// Every spanning tree of `K_n`, decoded from its Prüfer sequence.
fn spanning_trees(n: usize) -> Vec<Tree> {
    let len = n - 2;
    (0..n.pow(len as u32))
        .map(|code| {
            let seq: Vec<usize> = (0..len).map(|p| code / n.pow(p as u32) % n).collect();
            let mut degree = vec![1; n];
            for &a in &seq {
                degree[a] += 1;
            }
            let mut tree = Tree::new();
            for &a in &seq {
                let leaf = (0..n).find(|&b| degree[b] == 1).unwrap();
                tree.push((leaf.min(a), leaf.max(a)));
                degree[leaf] -= 1;
                degree[a] -= 1;
            }
            let rest: Vec<usize> = (0..n).filter(|&b| degree[b] == 1).collect();
            tree.push((rest[0], rest[1]));
            tree
        })
        .collect()
}

/// Every arborescence rooted at `root`: the parent functions whose chains reach the root.
fn arborescences(n: usize, root: usize) -> Vec<Tree> {
    let nodes: Vec<usize> = (0..n).filter(|&j| j != root).collect();
    (0..n.pow(nodes.len() as u32))
        .filter_map(|code| {
            let mut parent = vec![root; n];
            for (p, &j) in nodes.iter().enumerate() {
                parent[j] = code / n.pow(p as u32) % n;
            }
            let reaches = |j: usize| {
                let mut k = j;
                for _ in 0..n {
                    if k == root {
                        return true;
                    }
                    k = parent[k];
                }
                k == root
            };
            nodes
                .iter()
                .all(|&j| parent[j] != j && reaches(j))
                .then(|| nodes.iter().map(|&j| (parent[j], j)).collect())
        })
        .collect()
}

fn score(tree: &Tree, w: &ArrayD<f64>) -> f64 {
    tree.iter().map(|&(i, j)| w[[i, j]]).sum()
}

/// The tree as the support's `z`: both halves for undirected trees.
fn as_z(tree: &Tree, n: usize, symmetric: bool) -> ArrayD<f64> {
    let mut z = ArrayD::zeros(IxDyn(&[n, n]));
    for &(i, j) in tree {
        z[[i, j]] = 1.0;
        if symmetric {
            z[[j, i]] = 1.0;
        }
    }
    z
}

/// The two supports at `n` nodes (the arborescence with a root drawn from `rng`): spec, the
/// enumeration, whether `z` is symmetric.
fn instances(n: usize, rng: &mut Rng) -> Vec<(String, Vec<Tree>, bool)> {
    let root = (rng.next_u64() % n as u64) as usize;
    vec![
        (
            format!("spanning_tree(nodes = {n})"),
            spanning_trees(n),
            true,
        ),
        (
            format!("arborescence(nodes = {n}, root = {root})"),
            arborescences(n, root),
            false,
        ),
    ]
}

#[test]
fn enumerations_have_cayley_and_tutte_counts() {
    // n^(n−2) spanning trees; n^(n−2) arborescences per root of the complete digraph.
    for n in 2..=6 {
        assert_eq!(spanning_trees(n).len(), n.pow(n as u32 - 2));
        assert_eq!(arborescences(n, n - 1).len(), n.pow(n as u32 - 2));
    }
}

#[test]
fn hard_trees_are_the_best_of_all_trees() {
    let mut rng = Rng(11);
    let mut checked = 0;
    for seed in 0..60 {
        let n = 2 + seed % 5;
        for (support, trees, symmetric) in instances(n, &mut rng) {
            let l = layer(&format!("layer l: {support} {{ }}"));
            let w = rng.matrix(n, -3.0, 3.0);
            let mut scores: Vec<(f64, usize)> = trees
                .iter()
                .enumerate()
                .map(|(k, t)| (score(t, &w), k))
                .collect();
            scores.sort_by(|a, b| b.0.total_cmp(&a.0));
            if scores.len() > 1 && scores[0].0 - scores[1].0 < 1e-9 {
                continue;
            }
            let opts = Options::default().noise(Noise::None).mode(Mode::Hard);
            let z = l.try_forward(w.view(), &opts).unwrap().z;
            assert_eq!(
                z,
                as_z(&trees[scores[0].1], n, symmetric),
                "{support}: w = {w}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

/// `Σ_𝒯 z_𝒯 e^{⟨x, z_𝒯⟩} / Σ_𝒯 e^{⟨x, z_𝒯⟩}` over the listed trees.
fn brute_marginals(trees: &[Tree], x: &ArrayD<f64>, n: usize, symmetric: bool) -> ArrayD<f64> {
    let scores: Vec<f64> = trees.iter().map(|t| score(t, x)).collect();
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut mu = ArrayD::zeros(IxDyn(&[n, n]));
    for (t, wt) in trees.iter().zip(&weights) {
        mu = mu + as_z(t, n, symmetric) * (wt / total);
    }
    mu
}

#[test]
fn soft_marginals_are_the_brute_force_marginals() {
    let mut rng = Rng(12);
    for seed in 0..40 {
        let n = 2 + seed % 5;
        for (support, trees, symmetric) in instances(n, &mut rng) {
            let l = layer(&format!("layer l: {support} {{ }}"));
            for t in [0.3, 1.0, 4.0] {
                let w = rng.matrix(n, -3.0, 3.0);
                let opts = Options::default()
                    .noise(Noise::None)
                    .mode(Mode::Soft)
                    .temperature(t);
                let z = l.try_forward(w.view(), &opts).unwrap().z;
                let x = w.mapv(|v| v / t);
                // Only the used entries of x count: i < j for trees, i ≠ j, j ≠ root for arcs.
                let want = brute_marginals(&trees, &x, n, symmetric);
                let err = (&z - &want).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
                assert!(err < 1e-9, "{support} T {t}: z = {z}\nbrute force = {want}");
            }
        }
    }
}

#[test]
fn marginals_sum_like_trees() {
    let mut rng = Rng(13);
    for n in [2, 3, 7, 30, 100] {
        let root = n - 1;
        let specs = [
            (format!("spanning_tree({n})"), true),
            (format!("arborescence({n}, root = {root})"), false),
        ];
        for (support, symmetric) in specs {
            let l = layer(&format!("layer l: {support} {{ }}"));
            let theta = rng.matrix(n, -4.0, 4.0);
            let z = l
                .try_forward(theta.view(), &Options::default().seed(3))
                .unwrap()
                .z;
            assert!(
                z.iter().all(|&v| (-1e-12..=1.0 + 1e-12).contains(&v)),
                "{support}"
            );
            if symmetric {
                assert_eq!(z, z.t(), "{support}: not symmetric");
                let edges: f64 = z.sum() / 2.0;
                assert!((edges - (n - 1) as f64).abs() < 1e-9, "{support}: {edges}");
            } else {
                for j in (0..n).filter(|&j| j != root) {
                    let incoming: f64 = (0..n).map(|i| z[[i, j]]).sum();
                    assert!(
                        (incoming - 1.0).abs() < 1e-10,
                        "{support}: node {j} {incoming}"
                    );
                }
                assert!(
                    (0..n).all(|i| z[[i, root]] == 0.0),
                    "{support}: into the root"
                );
            }
            assert!((0..n).all(|i| z[[i, i]] == 0.0), "{support}: diagonal");
        }
    }
}

/// `parent` of every node from a hard `z`, checking validity on the way.
fn parents(z: &ArrayD<f64>, n: usize, root: usize) -> Vec<usize> {
    let mut parent = vec![usize::MAX; n];
    for i in 0..n {
        for j in 0..n {
            if z[[i, j]] == 1.0 {
                assert_eq!(parent[j], usize::MAX, "node {j} has two parents");
                parent[j] = i;
            } else {
                assert_eq!(z[[i, j]], 0.0);
            }
        }
    }
    assert_eq!(parent[root], usize::MAX, "an edge into the root");
    for j in 0..n {
        let mut k = j;
        for _ in 0..n {
            if k == root {
                break;
            }
            assert_ne!(parent[k], usize::MAX, "node {k} has no parent");
            k = parent[k];
        }
        assert_eq!(k, root, "node {j} does not reach the root");
    }
    parent
}

/// Large n: the maximum spanning tree is a tree (n − 1 edges, connected) and satisfies the cycle
/// property (no outside edge beats the lightest edge of the tree path it closes), which
/// certifies optimality, ties included: with Gumbel-perturbed weights, and with integer weights
/// (many ties) used as they are.
#[test]
fn large_spanning_trees_are_maximal_trees() {
    let mut rng = Rng(14);
    for (n, integers, noise) in [
        (40, false, Noise::Seed(5)),
        (120, false, Noise::Seed(5)),
        (60, true, Noise::None),
        (100, true, Noise::None),
    ] {
        let l = layer(&format!("layer l: spanning_tree({n}) {{ }}"));
        let theta = match integers {
            true => rng.matrix(n, 0.0, 3.0).mapv(f64::floor),
            false => rng.matrix(n, -2.0, 2.0),
        };
        let opts = Options::default().noise(noise).mode(Mode::Hard);
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        let (z, w) = (&fwd.z, &fwd.w);
        assert_eq!(z, &z.t());
        assert_eq!(z.sum(), 2.0 * (n - 1) as f64);
        // Root the tree at 0: with n − 1 edges and every node reaching 0, it is a spanning tree.
        let mut directed = ArrayD::zeros(IxDyn(&[n, n]));
        let mut seen = vec![false; n];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(u) = stack.pop() {
            for v in 0..n {
                if z[[u, v]] != 1.0 || seen[v] {
                    continue;
                }
                seen[v] = true;
                directed[[u, v]] = 1.0;
                stack.push(v);
            }
        }
        let parent = parents(&directed, n, 0);
        let edge = |i: usize, j: usize| w[[i.min(j), i.max(j)]];
        let path_min = |mut a: usize, mut b: usize| {
            let depth = |mut k: usize| {
                let mut d = 0;
                while k != 0 {
                    k = parent[k];
                    d += 1;
                }
                d
            };
            let (mut da, mut db) = (depth(a), depth(b));
            let mut low = f64::INFINITY;
            while a != b {
                if da >= db {
                    low = low.min(edge(a, parent[a]));
                    a = parent[a];
                    da -= 1;
                } else {
                    low = low.min(edge(b, parent[b]));
                    b = parent[b];
                    db -= 1;
                }
            }
            low
        };
        for i in 0..n {
            for j in (i + 1..n).filter(|&j| z[[i, j]] == 0.0) {
                assert!(
                    edge(i, j) <= path_min(i, j),
                    "edge {{{i}, {j}}} improves the tree"
                );
            }
        }
    }
}

/// A weighted arc `(from, to, weight)` of a digraph.
type Arc = (usize, usize, f64);

/// The weight of a maximum arborescence rooted at `root` of the digraph on `0..n` with these
/// arcs (self-loops and arcs into the root are ignored), by Chu–Liu/Edmonds (Chu & Liu 1965,
/// Edmonds 1967) in its plain recursive form on an arc list, O(n·m): every node but the root
/// takes its best incoming arc; without a cycle among them they are the optimum. Otherwise an
/// optimum keeps all arcs but one of every cycle `C`, so `opt(G) = Σ_C w(C) + opt(G/C)`, where
/// `G/C` has each cycle contracted to one node and an arc entering `C` at `v` re-weighted by
/// `− w(best arc into v)` (what swapping it in for `v`'s cycle arc gains). Written from the
/// algorithm as an independent reference. Panics if a node cannot be reached from the root.
fn max_arborescence_weight(n: usize, root: usize, arcs: &[Arc]) -> f64 {
    let mut best_in: Vec<Option<(usize, f64)>> = vec![None; n];
    for &(u, v, w) in arcs {
        if u != v && v != root && best_in[v].is_none_or(|(_, b)| w > b) {
            best_in[v] = Some((u, w));
        }
    }
    let parent = |v: usize| best_in[v].expect("a node without incoming arcs").0;
    let weight_in = |v: usize| best_in[v].expect("a node without incoming arcs").1;
    // Cycles among the chosen arcs: walk up the parents from every node, marking the walk.
    let mut component = vec![usize::MAX; n];
    let mut on_cycle = vec![false; n];
    let mut walked_from = vec![usize::MAX; n];
    let mut nodes = 0;
    for start in 0..n {
        let mut v = start;
        while v != root && walked_from[v] == usize::MAX {
            walked_from[v] = start;
            v = parent(v);
        }
        if v != root && walked_from[v] == start {
            // This walk came back to `v`: the chosen arcs from `v` around to `v` are a cycle.
            let mut u = v;
            loop {
                component[u] = nodes;
                on_cycle[u] = true;
                u = parent(u);
                if u == v {
                    break;
                }
            }
            nodes += 1;
        }
    }
    if nodes == 0 {
        return (0..n).filter(|&v| v != root).map(weight_in).sum();
    }
    let cycles_weight: f64 = (0..n).filter(|&v| on_cycle[v]).map(weight_in).sum();
    for c in component.iter_mut().filter(|c| **c == usize::MAX) {
        *c = nodes;
        nodes += 1;
    }
    let contracted: Vec<Arc> = arcs
        .iter()
        .filter(|&&(u, v, _)| v != root && component[u] != component[v])
        .map(|&(u, v, w)| {
            let gain = if on_cycle[v] { w - weight_in(v) } else { w };
            (component[u], component[v], gain)
        })
        .collect();
    cycles_weight + max_arborescence_weight(nodes, component[root], &contracted)
}

/// The arcs `i → j` of the complete digraph on `n` nodes with weights `w[[i, j]]`.
fn complete_digraph(w: &ArrayD<f64>, n: usize) -> Vec<Arc> {
    (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| i != j)
        .map(|(i, j)| (i, j, w[[i, j]]))
        .collect()
}

/// The reference Chu–Liu/Edmonds itself, against the best of all arborescences (parent
/// functions) for n ≤ 6, with continuous weights and with integer weights (many ties and
/// tied cycles), so that the large-n comparison below rests on a checked reference.
#[test]
fn reference_chu_liu_edmonds_is_the_brute_force_optimum() {
    let mut rng = Rng(19);
    for seed in 0..150 {
        let n = 2 + seed % 5;
        let root = (rng.next_u64() % n as u64) as usize;
        let w = if seed % 2 == 0 {
            rng.matrix(n, -3.0, 3.0)
        } else {
            rng.matrix(n, 0.0, 3.0).mapv(f64::floor)
        };
        let brute = arborescences(n, root)
            .iter()
            .map(|t| score(t, &w))
            .fold(f64::NEG_INFINITY, f64::max);
        let reference = max_arborescence_weight(n, root, &complete_digraph(&w, n));
        assert!(
            (reference - brute).abs() < 1e-12,
            "n {n} root {root}: reference {reference}, brute force {brute}\nw = {w}"
        );
    }
}

/// An `n × n` matrix of integers in `0..n`: about a third of the nodes have tied best incoming
/// arcs, and the best incoming arcs still close cycles (at n = 50…100 the optimum is below the
/// sum of the best incoming arcs in most draws, and a greedy tree grown from the root is worse).
fn integers_below(n: usize, rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[n, n]), rng.ints(n * n, n as u64)).unwrap()
}

/// Large n: the hard arborescence is valid and optimal. Its weight equals the optimum of the
/// independent Chu–Liu/Edmonds above (which no valid arborescence can exceed) at n = 50…100:
/// continuous weights, integer weights with ties, ignored entries (diagonal, arcs into the
/// root) larger than every arc, and Gumbel-perturbed weights.
#[test]
fn large_arborescences_are_maximum() {
    let mut rng = Rng(15);
    for (case, n) in [50, 63, 77, 88, 100].into_iter().enumerate() {
        let root = (rng.next_u64() % n as u64) as usize;
        let l = layer(&format!("layer l: arborescence({n}, root = {root}) {{ }}"));
        let ignored_large = rng.matrix(n, -2.0, 2.0);
        let ignored_large = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| {
            if i[0] == i[1] || i[1] == root {
                10.0
            } else {
                ignored_large[&i]
            }
        });
        for (kind, theta, noise) in [
            ("uniform", rng.matrix(n, -2.0, 2.0), Noise::None),
            ("integers below n", integers_below(n, &mut rng), Noise::None),
            ("ignored entries 10", ignored_large, Noise::None),
            ("gumbel", rng.matrix(n, -2.0, 2.0), Noise::Seed(case as u64)),
        ] {
            let opts = Options::default().noise(noise).mode(Mode::Hard);
            let fwd = l.try_forward(theta.view(), &opts).unwrap();
            let w = &fwd.w;
            let parent = parents(&fwd.z, n, root);
            let ours: f64 = (0..n)
                .filter(|&j| j != root)
                .map(|j| w[[parent[j], j]])
                .sum();
            let optimum = max_arborescence_weight(n, root, &complete_digraph(w, n));
            // Both sum n − 1 weights in different orders (the reference also subtracts): rounding
            // of at most a few hundred ulps of Σ|w| ≤ 1e4; exact for the integers.
            assert!(
                (ours - optimum).abs() <= 1e-9,
                "n {n} root {root} {kind}: arborescence weighs {ours}, the optimum is {optimum}"
            );
        }
    }
}

#[test]
fn ignored_entries_get_zero_gradient() {
    let mut rng = Rng(16);
    for rule in ["closed_form", "finite_diff"] {
        for (support, _, symmetric) in instances(5, &mut rng) {
            let root = support
                .split("root = ")
                .nth(1)
                .map_or(0, |r| r.trim_end_matches(')').parse().unwrap());
            for noise in ["gumbel", "gaussian(sigma = 2)", "neg_exponential"] {
                let l = layer(&format!(
                    "layer l: {support} {{ noise: {noise}; backward: {rule}; temperature: 0.7 }}"
                ));
                let theta = ArrayD::from_shape_fn(IxDyn(&[3, 5, 5]), |_| rng.uniform(-2.0, 2.0));
                let cot = ArrayD::from_shape_fn(IxDyn(&[3, 5, 5]), |_| rng.uniform(-1.0, 1.0));
                let fwd = l
                    .try_forward(theta.view(), &Options::default().seed(9))
                    .unwrap();
                let grad = l.try_backward(&fwd, cot.view()).unwrap();
                for (idx, &g) in grad.indexed_iter() {
                    let (i, j) = (idx[1], idx[2]);
                    let ignored = if symmetric {
                        i >= j
                    } else {
                        i == j || j == root
                    };
                    if ignored {
                        assert_eq!(g, 0.0, "{support} {noise} {rule}: grad{idx:?}");
                    } else {
                        assert!(g.is_finite());
                    }
                }
                assert!(grad.iter().any(|&g| g != 0.0), "{support}: all zero");
            }
        }
    }
}

#[test]
fn f32_marginals_match_f64() {
    let mut rng = Rng(17);
    for (support, _, _) in instances(6, &mut rng) {
        let l = layer(&format!("layer l: {support} {{ }}"));
        // The same scores in both precisions (the two draw different noise: each uses every
        // bit of its Philox blocks).
        let theta = rng.matrix(6, -3.0, 3.0);
        let opts = Options::default().noise(Noise::None);
        let z64 = l.try_forward(theta.view(), &opts).unwrap().z;
        let z32 = l
            .try_forward(theta.mapv(|v| v as f32).view(), &opts)
            .unwrap()
            .z;
        let err = z64
            .iter()
            .zip(&z32)
            .map(|(a, &b)| (a - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "{support}: {err}");
    }
}

/// Logits `w/T` within ±50 at n = 200 give finite marginals and gradients by LU; far beyond,
/// the marginals still come (log space) and the backward is a clear error, never NaN.
#[test]
fn extreme_logits() {
    let mut rng = Rng(18);
    let n = 200;
    for support in [
        format!("spanning_tree({n})"),
        format!("arborescence({n}, root = 5)"),
    ] {
        let l = layer(&format!("layer l: {support} {{ temperature: 0.1 }}"));
        let opts = Options::default().noise(Noise::None).mode(Mode::Soft);
        let theta = rng.matrix(n, -5.0, 5.0);
        let fwd = l.try_forward(theta.view(), &opts).unwrap();
        assert!(fwd.z.iter().all(|v| (-1e-9..=1.0 + 1e-9).contains(v)));
        assert!(
            fwd.report.values.is_empty(),
            "{support}: {:?}",
            fwd.report.values
        );
        let grad = l.try_backward(&fwd, theta.view()).unwrap();
        assert!(grad.iter().all(|v| v.is_finite()), "{support}");
    }
    // ±1e4 at T = 1e-4 (logits ±1e8) on the complete graph: log space forward.
    let l = layer("layer l: spanning_tree(200) { temperature: 1e-4 }");
    let theta = rng.matrix(n, -1e4, 1e4);
    let fwd = l
        .try_forward(theta.view(), &Options::default().seed(1))
        .unwrap();
    assert!(fwd
        .z
        .iter()
        .all(|v| v.is_finite() && (-1e-9..=1.0 + 1e-9).contains(v)));
    assert_eq!(fwd.report.values.get("log_space_marginals"), Some(&1.0));
    let hard = l
        .try_forward(theta.view(), &Options::default().seed(1).mode(Mode::Hard))
        .unwrap();
    let gap = (&fwd.z - &hard.z)
        .mapv(f64::abs)
        .fold(0.0, |a: f64, &b| a.max(b));
    assert!(
        gap < 1e-6,
        "the soft tree should be the hard one at T = 1e-4: {gap}"
    );
    // The backward holds there too (the log-space route's derivative): finite, and with the
    // identity of spanning trees — n − 1 edges whatever θ, so the gradient of ⟨c, z⟩ sums to
    // zero over the edges i < j.
    let grad = l.try_backward(&fwd, theta.view()).unwrap();
    assert!(grad.iter().all(|g| g.is_finite()));
    let size: f64 = grad.iter().map(|g| g.abs()).sum();
    let sum: f64 = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| grad[[i, j]])
        .sum();
    assert!(
        sum.abs() <= 1e-8 * (1.0 + size),
        "{sum:e} vs Σ|g| = {size:e}"
    );
}

#[test]
fn bad_arguments_and_shapes_are_clear_errors() {
    let e = compile_error("layer l: spanning_tree(1) { }");
    assert!(e.contains("≥ 2"), "{e}");
    let e = compile_error("layer l: arborescence(nodes = 1) { }");
    assert!(e.contains("≥ 2"), "{e}");
    let e = compile_error("layer l: arborescence(4, root = 4) { }");
    assert!(e.contains("root = 4 is not a node"), "{e}");
    let l = layer("layer l: arborescence(4, root = 3) { }");
    let theta = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
    let e = l
        .try_forward(theta.view(), &Options::default())
        .unwrap_err();
    assert_eq!(e.field, "theta");
    assert!(e.message.contains("[4, 4]"), "{e}");
}

/// A preset is its expansion (docs/language.md: `noise: gumbel; regularizer: expfamily;
/// estimator: relaxed`): the plan takes those three fields from the preset (they are also the
/// defaults, so the plan's record of where they came from is what tells the preset was read),
/// and gives the same soft marginals at the same seed as the spelled-out layer.
#[test]
fn presets_are_their_expansions() {
    let expansion = "noise: gumbel; regularizer: expfamily; estimator: relaxed";
    for (name, args, support, n) in [
        ("sst_spanning_tree", "6", "spanning_tree", 6),
        ("sst_arborescence", "5, root = 2", "arborescence", 5),
    ] {
        let preset = format!("{name}({args})");
        let l = layer(&format!("layer l: {preset} {{ temperature: 0.5 }}"));
        assert_eq!(l.plan().preset.as_deref(), Some(name));
        for field in ["noise", "regularizer", "estimator"] {
            let why = &l.plan().decision(field).why;
            assert!(why.contains(name), "{preset}: {field} {why}");
        }
        let spelled = layer(&format!(
            "layer l: {support}({args}) {{ {expansion}; temperature: 0.5 }}"
        ));
        let theta = ArrayD::from_shape_fn(IxDyn(&[2, n, n]), |i| (i[1] * 3 + i[2]) as f64 * 0.1);
        let fwd = l.try_forward(theta.view(), &Options::default()).unwrap();
        let want = spelled
            .try_forward(theta.view(), &Options::default())
            .unwrap();
        assert_eq!(fwd.mode, Mode::Soft, "{preset}");
        assert_eq!(fwd.z, want.z, "{preset}");
    }
}
