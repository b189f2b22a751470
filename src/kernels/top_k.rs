//! Top-k selection: `w: n → z ∈ {0,1}ⁿ, z = argmax_{|z| = k} ⟨w, z⟩`, the exact solver of
//! `subset(n, k)` (DESIGN.md §2).

use crate::real::Real;

/// `z_i = 1` for the `k` largest `w_i`, ties to the lowest index; `0` elsewhere.
///
/// Quickselect (`select_nth_unstable_by`, O(n) expected) finds the k-th largest value `t` in a
/// copy of `w` held in `z`; then the entries `> t` and the first `k − #{w > t}` entries equal to
/// `t` get a one (when every entry equal to `t` is taken, that is `z_i = [w_i ≥ t]`, one
/// branch-free pass). Allocates nothing. Assumes no NaN and `k ≤ n`; `k = 0` gives zeros.
/// Panics if the lengths differ.
pub fn top_k<F: Real>(w: &[F], k: usize, z: &mut [F]) {
    assert_eq!(w.len(), z.len(), "top_k: w and z differ in length");
    assert!(k <= w.len(), "top_k: k = {k} > n = {}", w.len());
    if k == 0 {
        z.fill(F::zero());
        return;
    }
    z.copy_from_slice(w);
    let (_, &mut t, _) = z.select_nth_unstable_by(k - 1, |a, b| b.f64().total_cmp(&a.f64()));
    let (above, equal) = w.iter().fold((0, 0), |(a, e), &wi| {
        (a + usize::from(wi > t), e + usize::from(wi == t))
    });
    let mut ties = k - above;
    if ties == equal {
        for (zi, &wi) in z.iter_mut().zip(w) {
            *zi = if wi >= t { F::one() } else { F::zero() };
        }
        return;
    }
    for (zi, &wi) in z.iter_mut().zip(w) {
        let one = wi > t || (wi == t && ties > 0);
        if wi == t && ties > 0 {
            ties -= 1;
        }
        *zi = if one { F::one() } else { F::zero() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_and_breaks_ties_low() {
        let mut z = [0.0; 5];
        top_k(&[0.5f64, 3.0, -1.0, 2.0, 0.0], 2, &mut z);
        assert_eq!(z, [0.0, 1.0, 0.0, 1.0, 0.0]);
        top_k(&[1.0f64, 2.0, 2.0, 2.0, 0.0], 2, &mut z);
        assert_eq!(z, [0.0, 1.0, 1.0, 0.0, 0.0]);
        top_k(&[7.0f64; 5], 3, &mut z);
        assert_eq!(z, [1.0, 1.0, 1.0, 0.0, 0.0]);
        top_k(&[7.0f64; 5], 5, &mut z);
        assert_eq!(z, [1.0; 5]);
        let mut zf = [0.0f32; 3];
        top_k(&[-1e4f32, 1e4, -1e4], 2, &mut zf);
        assert_eq!(zf, [1.0, 1.0, 0.0]);
    }
}
