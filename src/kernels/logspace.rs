//! The scale of the k-subset dynamic programs (`esp`, `chain_subset`: their cells and the bound
//! on them), and the max-plus semiring of the correlated top-k's exact solver: the suffix
//! recursion of `chain_subset` is written once over [`Semiring`] (pytorch-struct's `_dp`;
//! STYLE.md item 13) and runs in [`MaxPlus`], `a ⊕ b = max(a, b)`, `a ⊗ b = a + b`, `0̸ = −∞`,
//! `1̸ = 0` (the log semiring's zero-temperature limit), whose DP value is the best score; the
//! argmax follows from its backpointers (which term of each `⊕` won). The marginals run the same
//! recursion on the numbers of `ext.rs`, in the linear domain.

use crate::real::Real;

/// A semiring number of the subset DPs' recursions.
pub trait Semiring<F: Real>: Copy {
    /// The additive identity `0̸`.
    fn zero() -> Self;
    /// The multiplicative identity `1̸`.
    fn one() -> Self;
    /// `a ⊕ b`.
    fn plus(self, other: Self) -> Self;
    /// `a ⊗ b`.
    fn times(self, other: Self) -> Self;
}

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

/// A max-plus number: `a ⊕ b = max(a, b)`, written `b` if `b ≥ a` else `a` (ties to `b`);
/// `a ⊗ b = a + b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPlus<F>(pub F);

impl<F: Real> Semiring<F> for MaxPlus<F> {
    fn zero() -> Self {
        MaxPlus(F::neg_infinity())
    }
    fn one() -> Self {
        MaxPlus(F::zero())
    }
    fn plus(self, other: Self) -> Self {
        if other.0 >= self.0 {
            other
        } else {
            self
        }
    }
    fn times(self, other: Self) -> Self {
        MaxPlus(self.0 + other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_plus_by_hand() {
        // max(2, 3) = 3, 2 ⊗ 3 = 5, −∞ the identity of max, 0 that of +.
        let (a, b) = (MaxPlus(2.0f64), MaxPlus(3.0));
        assert_eq!(a.plus(b), b);
        assert_eq!(a.times(b), MaxPlus(5.0));
        assert_eq!(MaxPlus::zero().plus(a), a);
        assert_eq!(MaxPlus::one().times(a), a);
    }
}
