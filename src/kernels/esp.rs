//! Exponential-family marginals over k-subsets (DESIGN.md §2): for
//! `p(z) ∝ exp⟨x, z⟩` on `{z ∈ {0,1}ⁿ : Σ z = k}`, `μ = E_p[z] = ∇A(x)`, `A(x) = ln e_k(eˣ)` with
//! `e_k` the elementary symmetric polynomial. The DP `e_j(x_{<i+1}) = e_j(x_{<i}) + e^{x_i}
//! e_{j−1}(x_{<i})` runs forward for prefixes and backward for suffixes, O(nk) (the
//! exponential-family k-subset relaxation of Paulus et al. 2020, "Gradient estimation with
//! stochastic softmax tricks", Table 1). It runs on `min(k, n − k)`: `z ↦ 1 − z` maps k-subsets
//! under `x` to `(n − k)`-subsets under `−x`; and in f64 whatever the precision.
//!
//! Numbers: every term of the DP is positive, so it runs in the linear domain on numbers with an
//! exponent of their own ([`Ext`]: `m · 2^e`, `m ∈ [1, 2)`, `e` an integer held in an f64), which
//! neither overflow nor underflow whatever `x` (at `|x| = 1e8` the sums span `2^{±1e10}`): a sum
//! aligns the two exponents and renormalises, a product multiplies mantissas and adds exponents.
//! No `exp` or `ln` per cell (the log-space DP took one of each), each row step is one loop
//! over the row that the compiler vectorizes (`src/simd.rs`), and the prefix table is kept at
//! checkpoints only ([`run`]), so the working memory stays in cache. The backward pass is the
//! directional derivative `d/dε μ(x + ε g)` of the same DP (forward mode): each cell carries its
//! derivative's mantissa on the cell's exponent.

use crate::real::Real;

/// `z = μ(x)`, the marginals `P(z_i = 1)` of `p(z) ∝ exp⟨x, z⟩` over the k-subsets, in
/// `[0, 1]` with `Σ z = k` up to rounding. Finite for any finite `x`. Allocates about
/// `6√n (min(k, n − k) + 1)` numbers ([`run`]). Panics if the lengths differ or `k > n`.
pub fn esp_marginals<F: Real>(x: &[F], k: usize, z: &mut [F]) {
    assert_eq!(x.len(), z.len(), "esp_marginals: x and z differ in length");
    let (flip, w, _) = lifted(x, x, k);
    run::<false>(&w, &[], kept(x.len(), k), |i, mu, _| {
        z[i] = F::of(if flip { 1.0 - mu } else { mu });
    });
}

/// Backward of [`esp_marginals`]: `grad_x += J g`, `J = ∂μ/∂x = Cov_p(z)` (the Hessian of `A`,
/// symmetric, so `Jᵀ g = J g`), computed exactly as the directional derivative
/// `d/dε μ(x + ε g)` of the same DP (forward mode); the complement `μ = 1 − μ'(−x)` has the same
/// Jacobian `J'(−x)`. Adds into `grad_x`.
pub fn esp_marginals_jvp<F: Real>(x: &[F], k: usize, g: &[F], grad_x: &mut [F]) {
    assert!(
        x.len() == g.len() && x.len() == grad_x.len(),
        "esp_marginals_jvp: length mismatch"
    );
    let (flip, w, dw) = lifted(x, g, k);
    run::<true>(&w, &dw, kept(x.len(), k), |i, _, dmu| {
        grad_x[i] = grad_x[i] + F::of(if flip { -dmu } else { dmu });
    });
}

/// The subset size the DP runs on, `min(k, n − k)`.
fn kept(n: usize, k: usize) -> usize {
    assert!(k <= n, "esp: k = {k} > n = {n}");
    k.min(n - k)
}

/// The DP's weights and tangents in f64: `(x_i, g_i)`, or `(−x_i, −g_i)` for the complement when
/// `2k > n`; the first value says whether the complement was taken.
fn lifted<F: Real>(x: &[F], g: &[F], k: usize) -> (bool, Vec<f64>, Vec<f64>) {
    let flip = 2 * k > x.len();
    let s = if flip { -1.0 } else { 1.0 };
    let w = x.iter().map(|v| s * v.f64()).collect();
    let dw = g.iter().map(|v| s * v.f64()).collect();
    (flip, w, dw)
}

/// The exponent of zero: far below any exponent a nonzero term reaches, so that aligning with it
/// scales zero's mantissa, not the other operand's, and zero plus zero stays zero.
const ZERO_EXP: f64 = -1e300;

/// A nonnegative number `m · 2^e` (`m ∈ [1, 2)` and `e` an integer, or `m = 0`, `e = ZERO_EXP`)
/// and its derivative `dm · 2^e` along the DP's direction.
#[derive(Clone, Copy, Debug)]
struct Ext {
    m: f64,
    e: f64,
    dm: f64,
}

impl Ext {
    const ZERO: Ext = Ext {
        m: 0.0,
        e: ZERO_EXP,
        dm: 0.0,
    };
    const ONE: Ext = Ext {
        m: 1.0,
        e: 0.0,
        dm: 0.0,
    };

    /// `e^w` with derivative `e^w · dw`: `w = e·ln 2 + r`, `|r| ≤ ln2/2` (ln 2 split in two as
    /// in sst's `exp`, so `r` carries no more error than `w` itself), `m = e^r` normalised into
    /// `[1, 2)`.
    fn exp(w: f64, dw: f64) -> Ext {
        let c = &crate::math::EXP_F64;
        let e = (w / std::f64::consts::LN_2).round();
        let m = ((w - e * c.ln2_hi) - e * c.ln2_lo).exp();
        let (m, e) = if m < 1.0 { (2.0 * m, e - 1.0) } else { (m, e) };
        Ext { m, e, dm: m * dw }
    }
}

/// `2^d` for an integer `d ≤ 0` (0 below the normal range), built in the exponent bits: the
/// biased exponent read off the bits of `biased + 2⁵²` (no float-to-integer conversion, which
/// does not vectorize).
#[inline(always)]
fn pow2(d: f64) -> f64 {
    const MAGIC: f64 = 4_503_599_627_370_496.0; // 2⁵²
    let biased = if d < -1022.0 { 0.0 } else { d + 1023.0 };
    f64::from_bits((biased + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) << 52)
}

/// `a + b·t` on [`Ext`] numbers (the DP's cell), derivative by the product rule; `T`: whether
/// derivatives are carried. Branch-free, for vector loops.
#[inline(always)]
fn add_scaled<const T: bool>(a: Ext, b: Ext, t: Ext) -> Ext {
    let (bm, be) = (b.m * t.m, b.e + t.e);
    let top = if a.e >= be { a.e } else { be };
    let (sa, sb) = (pow2(a.e - top), pow2(be - top));
    let m = a.m * sa + bm * sb;
    let dm = if T {
        a.dm * sa + (b.dm * t.m + b.m * t.dm) * sb
    } else {
        0.0
    };
    normalised(m, top, dm)
}

/// `(m, e, dm)` with `m ∈ [0, 8)` brought into `[1, 2)` (its own exponent moved into `e`);
/// zero gets [`ZERO_EXP`].
#[inline(always)]
fn normalised(m: f64, e: f64, dm: f64) -> Ext {
    let biased = m.to_bits() >> 52;
    let shift = (biased as i64 - 1023) as f64;
    let down = f64::from_bits(2046u64.wrapping_sub(biased) << 52);
    if m == 0.0 {
        Ext::ZERO
    } else {
        Ext {
            m: m * down,
            e: e + shift,
            dm: dm * down,
        }
    }
}

/// Rows of [`Ext`] numbers as three planes (mantissas, exponents, derivatives' mantissas), so
/// that the row loops read consecutive memory and vectorize.
#[derive(Clone)]
struct Planes {
    m: Vec<f64>,
    e: Vec<f64>,
    dm: Vec<f64>,
}

impl Planes {
    /// `len` zeros.
    fn zeros(len: usize) -> Planes {
        Planes {
            m: vec![0.0; len],
            e: vec![ZERO_EXP; len],
            dm: vec![0.0; len],
        }
    }

    fn get(&self, q: usize) -> Ext {
        Ext {
            m: self.m[q],
            e: self.e[q],
            dm: self.dm[q],
        }
    }

    fn set(&mut self, q: usize, x: Ext) {
        (self.m[q], self.e[q], self.dm[q]) = (x.m, x.e, x.dm);
    }

    /// Entries `range` of the three planes.
    fn slice(&self, range: std::ops::Range<usize>) -> View<'_> {
        let all = View {
            m: &self.m,
            e: &self.e,
            dm: &self.dm,
        };
        all.slice(range)
    }

    /// Entries `range`, to write, and (to read) the entries before `range.start`.
    fn split(&mut self, range: std::ops::Range<usize>) -> (View<'_>, ViewMut<'_>) {
        let (m0, m1) = self.m.split_at_mut(range.start);
        let (e0, e1) = self.e.split_at_mut(range.start);
        let (d0, d1) = self.dm.split_at_mut(range.start);
        let len = range.len();
        let before = View {
            m: m0,
            e: e0,
            dm: d0,
        };
        let out = ViewMut {
            m: &mut m1[..len],
            e: &mut e1[..len],
            dm: &mut d1[..len],
        };
        (before, out)
    }

    /// Copies `other` (of the same length) into these planes.
    fn copy_from(&mut self, other: &Planes) {
        let len = other.m.len();
        self.split(0..len).1.copy_from(other.slice(0..len));
    }
}

/// A run of [`Ext`] numbers in [`Planes`].
#[derive(Clone, Copy)]
struct View<'a> {
    m: &'a [f64],
    e: &'a [f64],
    dm: &'a [f64],
}

/// A run of [`Ext`] numbers in [`Planes`], to write.
struct ViewMut<'a> {
    m: &'a mut [f64],
    e: &'a mut [f64],
    dm: &'a mut [f64],
}

impl ViewMut<'_> {
    /// Copies `from` (of the same length) into this run.
    fn copy_from(self, from: View) {
        self.m.copy_from_slice(from.m);
        self.e.copy_from_slice(from.e);
        self.dm.copy_from_slice(from.dm);
    }
}

impl<'a> View<'a> {
    fn slice(self, range: std::ops::Range<usize>) -> View<'a> {
        View {
            m: &self.m[range.clone()],
            e: &self.e[range.clone()],
            dm: &self.dm[range],
        }
    }
}

#[inline(always)]
fn row_step_body<const T: bool>(a: View, b: View, t: Ext, out: ViewMut) {
    let len = a.m.len();
    let (om, oe, odm) = (&mut out.m[..len], &mut out.e[..len], &mut out.dm[..len]);
    let (b_m, b_e, b_dm) = (&b.m[..len], &b.e[..len], &b.dm[..len]);
    let (a_e, a_dm) = (&a.e[..len], &a.dm[..len]);
    for q in 0..len {
        let x = add_scaled::<T>(
            Ext {
                m: a.m[q],
                e: a_e[q],
                dm: a_dm[q],
            },
            Ext {
                m: b_m[q],
                e: b_e[q],
                dm: b_dm[q],
            },
            t,
        );
        (om[q], oe[q], odm[q]) = (x.m, x.e, x.dm);
    }
}

crate::simd::multiversion! {
    /// [`row_step`] without derivatives, vectorized for this CPU.
    fn row_step_values / row_step_values_on(a: View, b: View, t: Ext, out: ViewMut) = row_step_body::<false>
}

crate::simd::multiversion! {
    /// [`row_step`] with derivatives, vectorized for this CPU.
    fn row_step_tangents / row_step_tangents_on(a: View, b: View, t: Ext, out: ViewMut) = row_step_body::<true>
}

/// `out[q] = a[q] + b[q]·t` for every `q` of `a`: one row of the DP.
fn row_step<const T: bool>(a: View, b: View, t: Ext, out: ViewMut) {
    match T {
        true => row_step_tangents(a, b, t, out),
        false => row_step_values(a, b, t, out),
    }
}

/// Independent partial sums that let the marginal's sum vectorize.
const LANES: usize = 8;

#[inline(always)]
fn pair_sum_body<const T: bool>(a: View, b: View) -> Ext {
    let len = a.m.len();
    let (a_m, a_e, a_dm) = (&a.m[..len], &a.e[..len], &a.dm[..len]);
    let (b_m, b_e, b_dm) = (&b.m[..len], &b.e[..len], &b.dm[..len]);
    let whole = len - len % LANES;
    let mut tops = [ZERO_EXP; LANES];
    for (ae, be) in a_e[..whole]
        .chunks_exact(LANES)
        .zip(b_e[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            let e = ae[l] + be[l];
            tops[l] = if e > tops[l] { e } else { tops[l] };
        }
    }
    let top = (whole..len)
        .map(|q| a_e[q] + b_e[q])
        .chain(tops)
        .fold(ZERO_EXP, |m, e| if e > m { e } else { m });
    let term = |q: usize| {
        let s = pow2(a_e[q] + b_e[q] - top);
        let dm = if T {
            (a_dm[q] * b_m[q] + a_m[q] * b_dm[q]) * s
        } else {
            0.0
        };
        (a_m[q] * b_m[q] * s, dm)
    };
    let (mut sums, mut dsums) = ([0.0; LANES], [0.0; LANES]);
    fn chunks(v: &[f64], whole: usize) -> std::slice::ChunksExact<'_, f64> {
        v[..whole].chunks_exact(LANES)
    }
    let chunks = |v| chunks(v, whole);
    let values = chunks(a_m)
        .zip(chunks(a_e))
        .zip(chunks(b_m).zip(chunks(b_e)));
    let tangents = chunks(a_dm).zip(chunks(b_dm));
    for (((am, ae), (bm, be)), (adm, bdm)) in values.zip(tangents) {
        for l in 0..LANES {
            let s = pow2(ae[l] + be[l] - top);
            sums[l] += am[l] * bm[l] * s;
            if T {
                dsums[l] += (adm[l] * bm[l] + am[l] * bdm[l]) * s;
            }
        }
    }
    for q in whole..len {
        let (x, dx) = term(q);
        sums[0] += x;
        dsums[0] += dx;
    }
    normalised(sums.iter().sum(), top, dsums.iter().sum())
}

crate::simd::multiversion! {
    /// [`pair_sum`] without derivatives, vectorized for this CPU.
    fn pair_sum_values / pair_sum_values_on(a: View, b: View) -> Ext = pair_sum_body::<false>
}

crate::simd::multiversion! {
    /// [`pair_sum`] with derivatives, vectorized for this CPU.
    fn pair_sum_tangents / pair_sum_tangents_on(a: View, b: View) -> Ext = pair_sum_body::<true>
}

/// `Σ_q a[q]·b[q]` (runs of one length).
fn pair_sum<const T: bool>(a: View, b: View) -> Ext {
    match T {
        true => pair_sum_tangents(a, b),
        false => pair_sum_values(a, b),
    }
}

/// Forward–backward over `α[i][j] = e_j(w_{<i})` and the suffix row `β[j] = e_j(w_{>i})`
/// (rolled, stored reversed: `rb[q] = β[k − q]`, so that the marginal's sum pairs aligned
/// entries): `μ_i = e^{w_i} Σ_j α[i][j] β[k−1−j] / α[n][k]` and `μ̇_i = μ_i (ẇ_i + Ṡ/S − Ż/Z)`
/// (`S` the sum, `Z = α[n][k]`); calls `out(i, μ_i, μ̇_i)` for `i = n − 1, …, 0`. `T`: whether
/// derivatives (along `dw`) are carried.
///
/// `α` is kept at checkpoints only, every `c ≈ √(n + 1)` rows, and each block of `c` rows is
/// computed again from its checkpoint when the backward sweep reaches it: `α` costs twice its
/// `n·k` steps, but the memory is `2√n (k + 1)` numbers, which stay in cache (the whole of `α`,
/// `n (k + 1)` numbers, is tens of megabytes at `n = 10⁴, k = 100`, read back from memory and
/// mapped afresh by every call).
fn run<const T: bool>(w: &[f64], dw: &[f64], k: usize, mut out: impl FnMut(usize, f64, f64)) {
    let n = w.len();
    let row = k + 1;
    let t: Vec<Ext> = (0..n)
        .map(|i| Ext::exp(w[i], if T { dw[i] } else { 0.0 }))
        .collect();
    let c = ((n + 1) as f64).sqrt().ceil() as usize;
    let blocks = (n + 1).div_ceil(c);
    let mut checkpoints = Planes::zeros(blocks * row);
    let mut block = Planes::zeros(c * row);
    checkpoints.set(0, Ext::ONE);
    for b in 0..blocks {
        let rows = fill_block::<T>(&t, k, b * c, &checkpoints, b, &mut block);
        if b + 1 < blocks {
            // The next checkpoint: row (b + 1)·c, one step from this block's last row.
            let (_, next) = checkpoints.split((b + 1) * row..(b + 2) * row);
            let last = block.slice((rows - 1) * row..rows * row);
            alpha_step::<T>(last, t[(b + 1) * c - 1], (b + 1) * c - 1, k, next);
        }
    }
    let z = block.get(((n - (blocks - 1) * c) * row) + k);
    let mut rb = Planes::zeros(row);
    rb.set(k, Ext::ONE);
    let mut old = rb.clone();
    for b in (0..blocks).rev() {
        fill_block::<T>(&t, k, b * c, &checkpoints, b, &mut block);
        for i in (b * c..((b + 1) * c).min(n)).rev() {
            let ti = t[i];
            if k == 0 {
                out(i, 0.0, 0.0);
                continue;
            }
            let (lo, hi) = ((k + i).saturating_sub(n), i.min(k - 1));
            let a = (i - b * c) * row;
            let s = pair_sum::<T>(block.slice(a + lo..a + hi + 1), rb.slice(lo + 1..hi + 2));
            let (mu, dmu) = ratio(s, ti, z);
            out(i, mu, dmu);
            // β[j] ← β[j] + e^{w_i} β[j−1] for j = 1..=min(k, n − i): rb[q] + e^{w_i} rb[q + 1].
            let q0 = k - k.min(n - i);
            old.copy_from(&rb);
            let (_, out) = rb.split(q0..k);
            row_step::<T>(old.slice(q0..k), old.slice(q0 + 1..k + 1), ti, out);
        }
    }
}

/// Rows `first..` of `α` (at most the block's size, at most up to row `n`) into `block`, from
/// checkpoint `b` (row `first`); returns how many.
fn fill_block<const T: bool>(
    t: &[Ext],
    k: usize,
    first: usize,
    checkpoints: &Planes,
    b: usize,
    block: &mut Planes,
) -> usize {
    let row = k + 1;
    let rows = (block.m.len() / row).min(t.len() + 1 - first);
    let (_, start) = block.split(0..row);
    start.copy_from(checkpoints.slice(b * row..(b + 1) * row));
    for r in 1..rows {
        let (done, next) = block.split(r * row..(r + 1) * row);
        let prev = done.slice((r - 1) * row..r * row);
        alpha_step::<T>(prev, t[first + r - 1], first + r - 1, k, next);
    }
    rows
}

/// Row `i + 1` of `α` from row `i`: `e_j(w_{≤i}) = e_j(w_{<i}) + e^{w_i} e_{j−1}(w_{<i})` for
/// `j ≤ min(k, i + 1)`, zero beyond.
fn alpha_step<const T: bool>(prev: View, ti: Ext, i: usize, k: usize, next: ViewMut) {
    let top = k.min(i + 1);
    let ViewMut { m, e, dm } = next;
    (m[0], e[0], dm[0]) = (prev.m[0], prev.e[0], prev.dm[0]);
    m[top + 1..].fill(0.0);
    e[top + 1..].fill(ZERO_EXP);
    dm[top + 1..].fill(0.0);
    let out = ViewMut {
        m: &mut m[1..=top],
        e: &mut e[1..=top],
        dm: &mut dm[1..=top],
    };
    row_step::<T>(prev.slice(1..top + 1), prev.slice(0..top), ti, out);
}

/// `μ = s·t / z` (at most 1) and its derivative `μ (ṡ/s + ṫ/t − ż/z)`; `(0, 0)` when `s = 0`.
fn ratio(s: Ext, t: Ext, z: Ext) -> (f64, f64) {
    if s.m == 0.0 {
        return (0.0, 0.0);
    }
    let d = (s.e + t.e - z.e).clamp(-1100.0, 4.0);
    let mu = (s.m * t.m / z.m * 2f64.powi(d as i32)).min(1.0);
    (mu, mu * (s.dm / s.m + t.dm / t.m - z.dm / z.m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;
    use crate::simd::Variant;

    /// `ln` of an [`Ext`] value (`−∞` for zero).
    fn ln(x: Ext) -> f64 {
        x.m.ln() + x.e * std::f64::consts::LN_2
    }

    /// A row of [`Ext`] numbers `e^{v}` (zero where `v = −∞`), with tangents.
    fn row(v: &[f64], d: &[f64]) -> Planes {
        let mut p = Planes::zeros(v.len());
        for (q, (&v, &d)) in v.iter().zip(d).enumerate() {
            if v > f64::NEG_INFINITY {
                p.set(q, Ext::exp(v, d));
            }
        }
        p
    }

    /// The row steps and pair sums agree with log-space arithmetic over values spanning
    /// `e^{±1e5}` (far beyond f64) and zeros, with the tangents of the product rule, and give
    /// the same bits on every instruction-set variant this CPU runs.
    #[test]
    fn extended_numbers_match_log_space_on_every_variant() {
        let mut r = XorShift::new(5);
        for len in [1, 7, 8, 9, 37, 101] {
            let mut va: Vec<f64> = r.vec(len, -1e5, 1e5);
            let vb: Vec<f64> = r.vec(len, -1e5, 1e5);
            va[0] = f64::NEG_INFINITY;
            let (da, db) = (r.vec(len, -1.0, 1.0), r.vec(len, -1.0, 1.0));
            let (a, b) = (row(&va, &da), row(&vb, &db));
            let t = Ext::exp(3.25, 0.5);
            type Bits = (Vec<f64>, Vec<f64>, Vec<f64>, f64, f64);
            let mut first: Option<Bits> = None;
            for variant in Variant::all_available() {
                let mut out = Planes::zeros(len);
                let (_, o) = out.split(0..len);
                row_step_tangents_on(variant, a.slice(0..len), b.slice(0..len), t, o);
                for q in 0..len {
                    // ln(e^{va} + e^{vb + 3.25}) and its derivative along (da, db, 0.5).
                    let (x, y) = (va[q], vb[q] + 3.25);
                    let hi = x.max(y);
                    let want = hi + ((x - hi).exp() + (y - hi).exp()).ln();
                    let got = out.get(q);
                    assert!((ln(got) - want).abs() <= 1e-14 * want.abs().max(1.0), "{q}");
                    let (wx, wy) = ((x - want).exp(), (y - want).exp());
                    let dwant = wx * da[q] + wy * (db[q] + 0.5);
                    assert!((got.dm / got.m - dwant).abs() <= 1e-12, "{q}");
                }
                let s = pair_sum_tangents_on(variant, a.slice(0..len), b.slice(0..len));
                let terms: Vec<f64> = (0..len).map(|q| va[q] + vb[q]).collect();
                let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = terms.iter().map(|x| (x - top).exp()).sum();
                match top == f64::NEG_INFINITY {
                    true => assert_eq!(s.m, 0.0),
                    false => {
                        assert!((ln(s) - (top + total.ln())).abs() <= 1e-14 * top.abs().max(1.0))
                    }
                }
                let bits = (out.m.clone(), out.e.clone(), out.dm.clone(), s.m, s.dm);
                match &first {
                    None => first = Some(bits),
                    Some(f) => assert!(*f == bits, "{variant:?} differs"),
                }
            }
        }
    }
}
