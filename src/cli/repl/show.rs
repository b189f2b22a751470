//! Arrays as a person reads them: aligned columns with three decimals, long axes elided to their
//! first and last [`EDGE`] entries, soft values in `[0, 1]` shaded with ` ░▒▓█`, and 0/1
//! matrices (permutations, trees) also listed as pairs or edges.

use std::fmt::Write;

use ndarray::{ArrayD, ArrayViewD, Axis, Ix2};

/// Entries kept at each end of an axis longer than `2·EDGE`.
const EDGE: usize = 5;

/// Shades for values in `[0, 1]`, darkest last.
const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// How the entries of a matrix of 0s and 1s are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// `i → j` for each 1 at `(i, j)`: permutations, arborescences, any 0/1 matrix.
    Arrows,
    /// `i — j` once per edge of a symmetric matrix: spanning trees.
    Edges,
}

impl Pairs {
    /// How a layer's outputs are listed: edges for the symmetric adjacency of spanning trees
    /// (read from the layer's exact kernel), arrows otherwise.
    pub fn for_program(program: &sst::ir::Program) -> Pairs {
        match program.hard {
            sst::ir::Hard::MaxSpanningTree { .. } => Pairs::Edges,
            _ => Pairs::Arrows,
        }
    }
}

/// An array, indented by two spaces: a vector on one line, a matrix row by row, higher ranks as
/// one matrix per leading index. `shade`: add a bar of blocks when every value is in `[0, 1]`.
pub fn array(values: &ArrayD<f64>, shade: bool) -> String {
    let width = cell_width(values);
    let shade = shade && values.iter().all(|x| (0.0..=1.0).contains(x));
    let mut out = String::new();
    match values.ndim() {
        0 | 1 => {
            let row: Vec<f64> = values.iter().copied().collect();
            let _ = writeln!(out, "  {}", line(&row, width, shade));
        }
        2 => matrix(&mut out, values.view(), width, shade, "  "),
        _ => {
            let blocks = values.len_of(Axis(0));
            for i in kept(blocks) {
                let Some(i) = i else {
                    out.push_str("  ⋮\n");
                    continue;
                };
                let block = values.index_axis(Axis(0), i).to_owned();
                let _ = writeln!(out, "  [{i}]");
                for text in array(&block, shade).lines() {
                    let _ = writeln!(out, "  {text}");
                }
            }
        }
    }
    out
}

/// The 1s of each 2-D slice as pairs, e.g. `0 → 2, 1 → 0, 2 → 1`, when `values` has rank ≥ 2
/// and only 0/1 entries; `None` otherwise.
pub fn pairs(values: &ArrayD<f64>, style: Pairs) -> Option<String> {
    if values.ndim() < 2 || values.is_empty() || !values.iter().all(|&x| x == 0.0 || x == 1.0) {
        return None;
    }
    let shape = values.shape();
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let flat = values
        .to_shape((values.len() / (rows * cols), rows, cols))
        .ok()?;
    let blocks = flat.len_of(Axis(0));
    let mut out = String::new();
    for b in 0..blocks {
        let m = flat.index_axis(Axis(0), b);
        let m = m.into_dimensionality::<Ix2>().ok()?;
        let symmetric = rows == cols && (0..rows).all(|i| (0..i).all(|j| m[[i, j]] == m[[j, i]]));
        let edges = style == Pairs::Edges && symmetric;
        let mut list = Vec::new();
        for ((i, j), &x) in m.indexed_iter() {
            if x == 1.0 && (!edges || i <= j) {
                list.push(if edges {
                    format!("{i} — {j}")
                } else {
                    format!("{i} → {j}")
                });
            }
        }
        let label = if blocks > 1 {
            format!("[{b}] ")
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {label}{}", elide(&list).join(", "));
    }
    Some(out)
}

/// The widest cell of the array, so that every column lines up.
fn cell_width(values: &ArrayD<f64>) -> usize {
    values
        .iter()
        .map(|&x| cell(x, 0).chars().count())
        .max()
        .unwrap_or(1)
}

/// One number, three decimals, right-aligned in `width` (no `-0.000`).
fn cell(x: f64, width: usize) -> String {
    let x = if x == 0.0 { 0.0 } else { x };
    let text = format!("{x:.3}");
    let text = if text == "-0.000" {
        "0.000".into()
    } else {
        text
    };
    format!("{text:>width$}")
}

/// A row of cells, the middle elided, with its shade bar when asked for.
fn line(row: &[f64], width: usize, shade: bool) -> String {
    let cells: Vec<String> = row.iter().map(|&x| cell(x, width)).collect();
    let mut text = elide_with(&cells, &format!("{:>width$}", "…")).join(" ");
    if shade {
        let blocks: Vec<String> = row.iter().map(|&x| block(x).to_string()).collect();
        let _ = write!(text, "  │{}│", elide_with(&blocks, "…").concat());
    }
    text
}

/// A matrix, one indented line per row, rows elided like columns.
fn matrix(out: &mut String, m: ArrayViewD<f64>, width: usize, shade: bool, indent: &str) {
    let rows = m.len_of(Axis(0));
    for i in kept(rows) {
        match i {
            Some(i) => {
                let row: Vec<f64> = m.index_axis(Axis(0), i).iter().copied().collect();
                let _ = writeln!(out, "{indent}{}", line(&row, width, shade));
            }
            None => {
                let _ = writeln!(out, "{indent}{:>width$}", "⋮");
            }
        }
    }
}

/// The shade of a value in `[0, 1]`.
fn block(x: f64) -> char {
    let level = (x.clamp(0.0, 1.0) * 4.0).round() as usize;
    SHADES[level.min(4)]
}

/// The indices shown of an axis of length `n`: all, or the first and last [`EDGE`] with `None`
/// standing for the elided middle.
fn kept(n: usize) -> Vec<Option<usize>> {
    if n <= 2 * EDGE {
        return (0..n).map(Some).collect();
    }
    let mut out: Vec<Option<usize>> = (0..EDGE).map(Some).collect();
    out.push(None);
    out.extend((n - EDGE..n).map(Some));
    out
}

/// The items with the middle replaced by `…` when there are more than `2·EDGE`.
fn elide(items: &[String]) -> Vec<String> {
    elide_with(items, "…")
}

fn elide_with(items: &[String], ellipsis: &str) -> Vec<String> {
    kept(items.len())
        .into_iter()
        .map(|i| match i {
            Some(i) => items[i].clone(),
            None => ellipsis.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn vectors_align_with_three_decimals() {
        let v = array![0.5, -1.0, 2.0].into_dyn();
        assert_eq!(array(&v, false), "   0.500 -1.000  2.000\n");
    }

    #[test]
    fn long_vectors_keep_five_at_each_end() {
        let v = ArrayD::from_shape_fn(vec![20], |i| i[0] as f64);
        let text = array(&v, false);
        assert!(text.contains("4.000      … 15.000"), "{text}");
        assert!(!text.contains(" 5.000"), "{text}");
    }

    #[test]
    fn soft_rows_are_shaded() {
        let v = array![[0.0, 1.0], [0.5, 0.25]].into_dyn();
        let text = array(&v, true);
        assert!(text.contains("│ █│"), "{text}");
        assert!(text.contains("│▒░│"), "{text}");
    }

    #[test]
    fn permutations_list_pairs_and_trees_edges() {
        let p = array![[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]].into_dyn();
        assert_eq!(pairs(&p, Pairs::Arrows).unwrap(), "  0 → 1, 1 → 2, 2 → 0\n");
        let t = array![[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]].into_dyn();
        assert_eq!(pairs(&t, Pairs::Edges).unwrap(), "  0 — 1, 0 — 2\n");
        assert!(pairs(&array![[0.5, 0.5]].into_dyn(), Pairs::Arrows).is_none());
        assert!(pairs(&array![1.0, 0.0].into_dyn(), Pairs::Arrows).is_none());
    }
}
