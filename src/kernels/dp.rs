//! The scale of the k-subset dynamic programs (`esp`, `chain_subset`): their cells and the
//! bound on them, checked before a request runs.

/// The number of (position, count) cells of the k-subset DPs (`esp`, `chain_subset`) on `n`
/// items: `n · min(k, n − k)`, the scale of their memory and time.
pub fn subset_dp_cells(n: usize, k: usize) -> usize {
    n * k.min(n - k)
}

/// The most cells `n · min(k, n − k)` a k-subset dynamic program may use (each cell one or two
/// numbers, twice that in the backward pass).
pub const MAX_DP_CELLS: usize = 1 << 25;

/// The sentence for a `what` dynamic program of `cells` cells beyond [`MAX_DP_CELLS`].
pub fn dp_too_large(what: &str, cells: usize) -> String {
    format!(
        "the {what} dynamic program needs {cells} cells, more than the {MAX_DP_CELLS} it allows; \
         use a smaller n or k, or another regularizer"
    )
}
