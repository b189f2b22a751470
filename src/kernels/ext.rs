//! Nonnegative numbers with an exponent of their own and the row operations of the
//! exponential-family dynamic programs on them (`esp`, `chain_subset`). Every term of those DPs is
//! positive, so they run in the linear domain on [`Ext`] numbers, `m · 2^e` (`m ∈ [1, 2)`, `e` an
//! integer held in an f64), which neither overflow nor underflow whatever the logits (at
//! `|x| = 1e8` the sums span `2^{±1e10}`): a sum aligns the two exponents and renormalises, a
//! product multiplies mantissas and adds exponents — no `exp` or `ln` per cell. Each number
//! carries its derivative's mantissa on its exponent, so the same DP gives the directional
//! derivative `d/dε` of its result (forward mode). Rows are held as three planes ([`Planes`]) and
//! each row operation is one loop the compiler vectorizes (`src/simd.rs`); [`Checkpointed`]
//! keeps a forward table at `√n` rows.

/// The exponent of zero: far below any exponent a nonzero term reaches, so that aligning with it
/// scales zero's mantissa, not the other operand's, and zero plus zero stays zero.
pub(super) const ZERO_EXP: f64 = -1e300;

/// The largest `|w|` that [`Ext::exp`] represents as it is; beyond, `e^{±1e200}` (`w` that
/// large differs from its neighbours by far more than any DP can resolve).
const EXP_ARG_LIMIT: f64 = 1e200;

/// A nonnegative number `m · 2^e` (`m ∈ [1, 2)` and `e` an integer, or `m = 0`, `e = ZERO_EXP`)
/// and its derivative `dm · 2^e` along the DP's direction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ext {
    pub(super) m: f64,
    pub(super) e: f64,
    pub(super) dm: f64,
}

impl Ext {
    pub(super) const ZERO: Ext = Ext {
        m: 0.0,
        e: ZERO_EXP,
        dm: 0.0,
    };
    pub(super) const ONE: Ext = Ext {
        m: 1.0,
        e: 0.0,
        dm: 0.0,
    };

    /// `e^w` with derivative `e^w · dw`: `w = e·ln 2 + r`, `|r| ≤ ln2/2` (ln 2 split in two as
    /// in sst's `exp`, so `r` carries no more error than `w` itself), `m = e^r` normalised into
    /// `[1, 2)`. Finite for any finite `w`: `w` is clamped to `±`[`EXP_ARG_LIMIT`] (exponents
    /// stay far from [`ZERO_EXP`]), and `r` to `[−1, 1]`, a bound it leaves only where the
    /// rounding of `|w| ≳ 2⁵²` exceeds `ln 2` (there every `r` is as right as `w`).
    pub(super) fn exp(w: f64, dw: f64) -> Ext {
        let c = &crate::math::EXP_F64;
        let w = w.clamp(-EXP_ARG_LIMIT, EXP_ARG_LIMIT);
        let e = (w / std::f64::consts::LN_2).round();
        let m = ((w - e * c.ln2_hi) - e * c.ln2_lo).clamp(-1.0, 1.0).exp();
        normalised(m, e, m * dw)
    }
}

/// `2^d` for an integer `d ≤ 0` (0 below the normal range), built in the exponent bits: the
/// biased exponent read off the bits of `biased + 2⁵²` (no float-to-integer conversion, which
/// does not vectorize).
#[inline(always)]
pub(super) fn pow2(d: f64) -> f64 {
    const MAGIC: f64 = 4_503_599_627_370_496.0; // 2⁵²
    let biased = if d < -1022.0 { 0.0 } else { d + 1023.0 };
    f64::from_bits((biased + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) << 52)
}

/// `a·s + b·t` on [`Ext`] numbers (a cell of the DPs), derivative by the product rule; `T`:
/// whether derivatives are carried. Branch-free, for vector loops.
#[inline(always)]
fn add_scaled<const T: bool>(a: Ext, s: Ext, b: Ext, t: Ext) -> Ext {
    let (am, ae) = (a.m * s.m, a.e + s.e);
    let (bm, be) = (b.m * t.m, b.e + t.e);
    let top = if ae >= be { ae } else { be };
    let (sa, sb) = (pow2(ae - top), pow2(be - top));
    let m = am * sa + bm * sb;
    let dm = if T {
        (a.dm * s.m + a.m * s.dm) * sa + (b.dm * t.m + b.m * t.dm) * sb
    } else {
        0.0
    };
    normalised(m, top, dm)
}

/// `a·b`, derivative by the product rule.
pub(super) fn product(a: Ext, b: Ext) -> Ext {
    normalised(a.m * b.m, a.e + b.e, a.dm * b.m + a.m * b.dm)
}

/// `a + b`, derivative carried.
pub(super) fn sum(a: Ext, b: Ext) -> Ext {
    add_scaled::<true>(a, Ext::ONE, b, Ext::ONE)
}

/// `(m, e, dm)` with `m` zero or a normal number below `2^1023` brought into `[1, 2)` (its own
/// exponent moved into `e`); zero gets [`ZERO_EXP`].
#[inline(always)]
pub(super) fn normalised(m: f64, e: f64, dm: f64) -> Ext {
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
pub(super) struct Planes {
    pub(super) m: Vec<f64>,
    pub(super) e: Vec<f64>,
    pub(super) dm: Vec<f64>,
}

impl Planes {
    /// `len` zeros.
    pub(super) fn zeros(len: usize) -> Planes {
        Planes {
            m: vec![0.0; len],
            e: vec![ZERO_EXP; len],
            dm: vec![0.0; len],
        }
    }

    pub(super) fn set(&mut self, q: usize, x: Ext) {
        self.split(q..q + 1).1.set(0, x);
    }

    /// Entries `range` of the three planes.
    pub(super) fn slice(&self, range: std::ops::Range<usize>) -> View<'_> {
        let all = View {
            m: &self.m,
            e: &self.e,
            dm: &self.dm,
        };
        all.slice(range)
    }

    /// Entries `range`, to write, and (to read) the entries before `range.start`.
    pub(super) fn split(&mut self, range: std::ops::Range<usize>) -> (View<'_>, ViewMut<'_>) {
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
    pub(super) fn copy_from(&mut self, other: &Planes) {
        let len = other.m.len();
        self.split(0..len).1.copy_from(other.slice(0..len));
    }
}

/// A run of [`Ext`] numbers in [`Planes`].
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) m: &'a [f64],
    pub(super) e: &'a [f64],
    pub(super) dm: &'a [f64],
}

/// A run of [`Ext`] numbers in [`Planes`], to write.
pub(super) struct ViewMut<'a> {
    pub(super) m: &'a mut [f64],
    pub(super) e: &'a mut [f64],
    pub(super) dm: &'a mut [f64],
}

impl<'a> ViewMut<'a> {
    /// The first `mid` entries and the rest.
    pub(super) fn split_at(self, mid: usize) -> (ViewMut<'a>, ViewMut<'a>) {
        let (m0, m1) = self.m.split_at_mut(mid);
        let (e0, e1) = self.e.split_at_mut(mid);
        let (d0, d1) = self.dm.split_at_mut(mid);
        (
            ViewMut {
                m: m0,
                e: e0,
                dm: d0,
            },
            ViewMut {
                m: m1,
                e: e1,
                dm: d1,
            },
        )
    }

    /// Entry `q` ← `x`.
    pub(super) fn set(&mut self, q: usize, x: Ext) {
        (self.m[q], self.e[q], self.dm[q]) = (x.m, x.e, x.dm);
    }

    /// Copies `from` (of the same length) into this run.
    pub(super) fn copy_from(self, from: View) {
        self.m.copy_from_slice(from.m);
        self.e.copy_from_slice(from.e);
        self.dm.copy_from_slice(from.dm);
    }
}

impl<'a> View<'a> {
    pub(super) fn get(self, q: usize) -> Ext {
        Ext {
            m: self.m[q],
            e: self.e[q],
            dm: self.dm[q],
        }
    }

    pub(super) fn slice(self, range: std::ops::Range<usize>) -> View<'a> {
        View {
            m: &self.m[range.clone()],
            e: &self.e[range.clone()],
            dm: &self.dm[range],
        }
    }
}

#[inline(always)]
fn row_step_body<const T: bool>(a: View, s: Ext, b: View, t: Ext, out: ViewMut) {
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
            s,
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
    fn row_step_values / row_step_values_on(a: View, s: Ext, b: View, t: Ext, out: ViewMut) = row_step_body::<false>
}

crate::simd::multiversion! {
    /// [`row_step`] with derivatives, vectorized for this CPU.
    fn row_step_tangents / row_step_tangents_on(a: View, s: Ext, b: View, t: Ext, out: ViewMut) = row_step_body::<true>
}

/// `out[q] = a[q]·s + b[q]·t` for every `q` of `a`: one row of a DP.
pub(super) fn row_step<const T: bool>(a: View, s: Ext, b: View, t: Ext, out: ViewMut) {
    match T {
        true => row_step_tangents(a, s, b, t, out),
        false => row_step_values(a, s, b, t, out),
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
pub(super) fn pair_sum<const T: bool>(a: View, b: View) -> Ext {
    match T {
        true => pair_sum_tangents(a, b),
        false => pair_sum_values(a, b),
    }
}

/// The rows `0..=n` of a forward recursion `row_{i+1} = step(i, row_i)`, `width` numbers a row,
/// kept at checkpoints every `c = ⌈√(n + 1)⌉` rows: [`Checkpointed::fill`] computes a block of
/// `c` rows again from its checkpoint when a backward sweep reaches it. The table costs twice its
/// steps, but the memory is `2√n` rows, which stay in cache (the whole table, `n` rows, is tens
/// of megabytes at `n = 10⁴, k = 100`, read back from memory and mapped afresh by every call).
pub(super) struct Checkpointed<S> {
    /// Rows per block.
    pub(super) c: usize,
    n: usize,
    width: usize,
    checkpoints: Planes,
    /// The rows of the block last filled, from its checkpoint on.
    pub(super) block: Planes,
    /// Which block `block` holds.
    filled: Option<usize>,
    step: S,
}

impl<S: Fn(usize, View, ViewMut)> Checkpointed<S> {
    /// The checkpoints of the recursion from row 0 (written by `first` into zeros).
    pub(super) fn new(n: usize, width: usize, first: impl FnOnce(ViewMut), step: S) -> Self {
        let c = ((n + 1) as f64).sqrt().ceil() as usize;
        let blocks = (n + 1).div_ceil(c);
        let mut table = Checkpointed {
            c,
            n,
            width,
            checkpoints: Planes::zeros(blocks * width),
            block: Planes::zeros(c * width),
            filled: None,
            step,
        };
        first(table.checkpoints.split(0..width).1);
        for b in 0..blocks - 1 {
            let rows = table.fill(b);
            // The next checkpoint: row (b + 1)·c, one step from this block's last row.
            let (_, next) = table.checkpoints.split((b + 1) * width..(b + 2) * width);
            let last = table.block.slice((rows - 1) * width..rows * width);
            (table.step)((b + 1) * c - 1, last, next);
        }
        table
    }

    /// The number of blocks.
    pub(super) fn blocks(&self) -> usize {
        (self.n + 1).div_ceil(self.c)
    }

    /// Rows `b·c..` of block `b` (at most `c`, at most up to row `n`) into `block`, from its
    /// checkpoint, unless it holds them already; returns how many.
    pub(super) fn fill(&mut self, b: usize) -> usize {
        let (width, first) = (self.width, b * self.c);
        let rows = self.c.min(self.n + 1 - first);
        if self.filled == Some(b) {
            return rows;
        }
        self.filled = Some(b);
        let (_, start) = self.block.split(0..width);
        start.copy_from(self.checkpoints.slice(b * width..(b + 1) * width));
        for r in 1..rows {
            let (done, next) = self.block.split(r * width..(r + 1) * width);
            (self.step)(first + r - 1, done.slice((r - 1) * width..r * width), next);
        }
        rows
    }

    /// Row `first + r` of the block last filled (from `first`).
    pub(super) fn row(&self, r: usize) -> View<'_> {
        self.block.slice(r * self.width..(r + 1) * self.width)
    }
}

/// `μ = s·t / z` (at most 1) and its derivative `μ (ṡ/s + ṫ/t − ż/z)`; `(0, 0)` when `s = 0`.
pub(super) fn ratio(s: Ext, t: Ext, z: Ext) -> (f64, f64) {
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
            let (s, t) = (Ext::exp(-2.5, -0.25), Ext::exp(3.25, 0.5));
            type Bits = (Vec<f64>, Vec<f64>, Vec<f64>, f64, f64);
            let mut first: Option<Bits> = None;
            for variant in Variant::all_available() {
                let mut out = Planes::zeros(len);
                let (_, o) = out.split(0..len);
                row_step_tangents_on(variant, a.slice(0..len), s, b.slice(0..len), t, o);
                for q in 0..len {
                    // ln(e^{va − 2.5} + e^{vb + 3.25}), derivative along (da, db, −0.25, 0.5).
                    let (x, y) = (va[q] - 2.5, vb[q] + 3.25);
                    let hi = x.max(y);
                    let want = hi + ((x - hi).exp() + (y - hi).exp()).ln();
                    let got = out.slice(0..len).get(q);
                    assert!((ln(got) - want).abs() <= 1e-14 * want.abs().max(1.0), "{q}");
                    let (wx, wy) = ((x - want).exp(), (y - want).exp());
                    let dwant = wx * (da[q] - 0.25) + wy * (db[q] + 0.5);
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

    /// `Ext::exp` is `e^w` to rounding where f64 resolves `w`, and a normalised, finite number
    /// for every finite `w`, the largest included.
    #[test]
    fn exp_is_accurate_and_finite_for_every_finite_argument() {
        for w in [-700.5, -1.0, 0.0, 0.3, 1e5, -1e8, 3e12] {
            let x = Ext::exp(w, 2.0);
            assert!(
                (ln(x) - w).abs() <= 4.0 * f64::EPSILON * w.abs().max(1.0),
                "{w}"
            );
            assert_eq!(x.dm, 2.0 * x.m, "{w}");
        }
        for w in [1e17, -1e19, 1e200, -1e250, f64::MAX, f64::MIN] {
            let x = Ext::exp(w, 1.0);
            assert!((1.0..2.0).contains(&x.m) && x.e.is_finite(), "{w}: {x:?}");
            assert!(x.e.abs() <= 1.5 * EXP_ARG_LIMIT, "{w}: {x:?}");
        }
    }
}
