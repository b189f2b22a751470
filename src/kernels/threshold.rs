//! Threshold solvers of `subset(n, k)` (DESIGN.md §2): `x: n → z ∈ C_k = {z ∈ [0,1]ⁿ : Σ z = k}`,
//! `z_i = h(x_i − τ)` with the one `τ` for which `Σ z = k`, where `h` is the link of the
//! regularizer (the KKT conditions of `argmax_{z ∈ C_k} ⟨x, z⟩ − f(z)`):
//! - binary entropy `f = Σ z log z + (1 − z) log(1 − z)`: `h = sigmoid`;
//! - entropy `f = Σ z log z`: `h(t) = min(1, exp(t))` (the `−1` of `∂f` is absorbed in `τ`).

use super::extent;
use crate::math::{exp_f64, exp_slice_f64};
use crate::real::Real;
use crate::simd::multiversion;

/// The most iterations of [`solve_threshold`]; each at least halves the bracket every second
/// step, so this is reached only if the residual never gets within `tol` (reported).
pub const MAX_ITERS: usize = 300;

/// The link `h` of a threshold solver: `z_i = h(x_i − τ)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// `h(t) = 1 / (1 + exp(−t))` (binary entropy).
    Sigmoid,
    /// `h(t) = min(1, exp(t))` (entropy).
    CappedExp,
}

impl Link {
    /// `(h(t), h'(t))`, with `exp` (sst's, [`crate::math`]) of non-positive arguments only, so
    /// finite for any finite `t`.
    #[inline(always)]
    /// At the kink of `CappedExp` (`t = 0`) the derivative is taken from the right, 0.
    fn eval(self, t: f64) -> (f64, f64) {
        match self {
            Link::Sigmoid => {
                let e = exp_f64(-t.abs());
                let d = e / ((1.0 + e) * (1.0 + e));
                if t >= 0.0 {
                    ((1.0 + e).recip(), d)
                } else {
                    (e / (1.0 + e), d)
                }
            }
            Link::CappedExp if t >= 0.0 => (1.0, 0.0),
            Link::CappedExp => {
                let e = exp_f64(t);
                (e, e)
            }
        }
    }

    /// `h''` from `h` and `h'`: `h'·(1 − 2h)` for the sigmoid, `h'` for the capped exponential
    /// (`eᵗ` below the cap, 0 above).
    #[inline(always)]
    fn curvature(self, h: f64, d: f64) -> f64 {
        match self {
            Link::Sigmoid => d * (1.0 - 2.0 * h),
            Link::CappedExp => d,
        }
    }

    /// `[h(t), h'(t), h''(t)]` ([`Link::eval`], [`Link::curvature`]).
    #[inline(always)]
    fn eval3(self, t: f64) -> [f64; 3] {
        let (h, d) = self.eval(t);
        [h, d, self.curvature(h, d)]
    }

    /// `[h(t), h'(t), h''(t)]` at `t = ln(e/c)` from `e = eᵗ⁺ᵗᵃᵘ` and `c = eᵗᵃᵘ` (`ic = 1/c`):
    /// the sigmoid is `e/(e + c)` with slope `h·c/(e + c)`, the capped exponential
    /// `min(1, e·ic)`. A division at most, no exponential: what [`solve_threshold`] evaluates
    /// on its cache.
    #[inline(always)]
    fn eval_cached(self, e: f64, c: f64, ic: f64) -> [f64; 3] {
        let (h, d) = match self {
            Link::Sigmoid => {
                let r = 1.0 / (e + c);
                let h = e * r;
                (h, h * c * r)
            }
            Link::CappedExp => {
                let v = e * ic;
                if v >= 1.0 {
                    (1.0, 0.0)
                } else {
                    (v, v)
                }
            }
        };
        [h, d, self.curvature(h, d)]
    }

    /// `h'` recovered from `z = h(t)`: `z(1 − z)` for the sigmoid, `z` below the cap (else 0).
    #[inline(always)]
    fn slope_from_output(self, z: f64) -> f64 {
        match self {
            Link::Sigmoid => z * (1.0 - z),
            Link::CappedExp if z < 1.0 => z,
            Link::CappedExp => 0.0,
        }
    }

    /// `[lo, hi]` with `Σ h(x − lo) ≥ k ≥ Σ h(x − hi)` (`1 ≤ k < n`): both links have
    /// `h(t) ≤ eᵗ`, so `hi = max x + ln(n/k)`; `1 − sigmoid(t) ≤ e⁻ᵗ` gives
    /// `lo = min x + ln((n − k)/n)`, and the capped exponential is 1 on all of `x` at `lo = min x`.
    fn bracket(self, min: f64, max: f64, n: f64, k: f64) -> (f64, f64) {
        let hi = max + (n / k).ln();
        match self {
            Link::Sigmoid => (min + ((n - k) / n).ln(), hi),
            Link::CappedExp => (min, hi),
        }
    }
}

const LANES: usize = 16;

/// `Σ_i eval(a_i, b_i)`, each of its `N` terms summed apart (`a`, `b` of one length: one slice
/// given twice where the terms read one), element `i` summed in lane `i mod 16` (the same bits
/// on every CPU variant). Evaluated a block at a time into buffers, then summed: a plain map is
/// what the compiler vectorizes whatever `eval` holds (a division, a branch, a conversion from
/// f32). `emit(first index, first terms)` receives each block's first terms (a solver writes
/// its output from them).
#[inline(always)]
fn lane_sums<A: Copy, B: Copy, const N: usize>(
    a: &[A],
    b: &[B],
    eval: impl Fn(A, B) -> [f64; N],
    mut emit: impl FnMut(usize, &[f64]),
) -> [f64; N] {
    const BLOCK: usize = 16 * LANES;
    assert_eq!(a.len(), b.len(), "lane_sums: a and b differ in length");
    let mut sums = [[0.0; LANES]; N];
    let mut buffers = [[0.0; BLOCK]; N];
    for (block, (a, b)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        for (i, (&ai, &bi)) in a.iter().zip(b).enumerate() {
            let terms = eval(ai, bi);
            for t in 0..N {
                buffers[t][i] = terms[t];
            }
        }
        for t in 0..N {
            add_lanes(&mut sums[t], &buffers[t][..a.len()]);
        }
        emit(block * BLOCK, &buffers[0][..a.len()]);
    }
    sums.map(|lanes| lanes.iter().sum())
}

/// `lanes[i mod 16] += values[i]`, in order of `i`.
#[inline(always)]
fn add_lanes(lanes: &mut [f64; LANES], values: &[f64]) {
    let mut acc = *lanes;
    let mut chunks = values.chunks_exact(LANES);
    for chunk in chunks.by_ref() {
        for l in 0..LANES {
            acc[l] += chunk[l];
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x;
    }
    *lanes = acc;
}

/// [`lane_sums`] of three terms over the f64 cache `e`, sixteen entries at a time: a group of
/// f64 vectorizes as it is, without the buffers (measured: the threshold solve 25 % faster than
/// through [`lane_sums`]; an f32 slice, converted, does not vectorize this way, nor does this
/// loop written for any number of terms).
#[inline(always)]
fn cache_sums(
    e: &[f64],
    eval: impl Fn(f64) -> [f64; 3],
    mut emit: impl FnMut(usize, &[f64]),
) -> [f64; 3] {
    let (mut s, mut d, mut c) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let whole = e.len() / LANES * LANES;
    for first in (0..whole).step_by(LANES) {
        let group = &e[first..first + LANES];
        let (mut h, mut dh, mut ch) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            [h[l], dh[l], ch[l]] = eval(group[l]);
        }
        for l in 0..LANES {
            s[l] += h[l];
            d[l] += dh[l];
            c[l] += ch[l];
        }
        emit(first, &h);
    }
    // The last, partial group.
    for (l, &ei) in e[whole..].iter().enumerate() {
        let [h, dh, ch] = eval(ei);
        s[l] += h;
        d[l] += dh;
        c[l] += ch;
        emit(whole + l, &[h]);
    }
    [s, d, c].map(|lanes| lanes.iter().sum())
}

/// `[Σ_i h(t_i), Σ_i h'(t_i), Σ_i h''(t_i)]` at `t = x − m − τ`, from `x` (`cache` `None`) or
/// from the cached `E = exp(x − m)` (one link's loop each, so that it vectorizes), writing
/// `z_i = h(t_i)`.
#[inline(always)]
fn sums_body<F: Real>(
    link: Link,
    x: &[F],
    cache: Option<&[f64]>,
    m: f64,
    tau: f64,
    z: &mut [F],
) -> [f64; 3] {
    let (c, ic) = (exp_f64(tau), exp_f64(-tau));
    let write = |first: usize, h: &[f64]| {
        for (zi, &hi) in z[first..first + h.len()].iter_mut().zip(h) {
            *zi = F::of(hi);
        }
    };
    match (link, cache) {
        (Link::Sigmoid, Some(e)) => cache_sums(e, |e| Link::Sigmoid.eval_cached(e, c, ic), write),
        (Link::CappedExp, Some(e)) => {
            cache_sums(e, |e| Link::CappedExp.eval_cached(e, c, ic), write)
        }
        (Link::Sigmoid, None) => lane_sums(
            x,
            x,
            |xi, _| Link::Sigmoid.eval3((xi.f64() - m) - tau),
            write,
        ),
        (Link::CappedExp, None) => lane_sums(
            x,
            x,
            |xi, _| Link::CappedExp.eval3((xi.f64() - m) - tau),
            write,
        ),
    }
}

multiversion! {
    /// [`sums_body`] compiled for the CPU's widest vectors.
    fn sums<F: Real> / sums_on(link: Link, x: &[F], cache: Option<&[f64]>, m: f64, tau: f64, z: &mut [F]) -> [f64; 3] = sums_body
}

/// The largest spread `max x − min x` solved on the cache `E = exp(x − max x)`: every `E_i`
/// stays a normal f64 (above `e^{−708}`), and `c = e^τ` too (the bracket reaches at most
/// `ln(n)` below `min x − max x`).
pub const CACHED_SPREAD: f64 = 600.0;

/// What [`solve_threshold`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solved {
    pub tau: f64,
    pub iterations: usize,
    /// `|Σ z − k|` at the returned `τ` (in f64).
    pub residual: f64,
    /// False only when [`MAX_ITERS`] ran out with the residual above `tol`.
    pub converged: bool,
}

/// `z_i = h(x_i − τ)` with `Σ_i h(x_i − τ) = k`, by safeguarded Halley–bisection on `τ`
/// (`rtsafe`, Press et al., Numerical Recipes §9.4, with Halley's step for Newton's): keep a
/// bracket `[lo, hi]` around the root; take Halley's step on `f = ln Σ z − ln k`
/// (`halley_step`, from `Σ h`, `Σ h'` and `Σ h''`; Newton's `τ += ln(Σ z / k)·Σ z / Σ h'`
/// where Halley's denominator is not positive) when it stays inside the bracket and shrinks
/// fast enough, else bisect. Stops when `|Σ z − k| ≤ tol` or when `τ` can no longer move (the
/// bracket has collapsed to machine precision). Runs in f64 whatever `F` is, on `x − max x`;
/// O(n) per iteration. Where the spread of `x` is at most [`CACHED_SPREAD`], `E = exp(x − max x)`
/// is computed once and each iteration evaluates the link from it with a division
/// (`Link::eval_cached`), and the iterations start from the upper bound
/// `τ = ln(Σ E / k)` (`h(t) ≤ eᵗ` for both links), near the root when few entries are active.
/// `k = 0` and `k = n` give zeros and ones. Panics if the lengths differ or `k > n`.
pub fn solve_threshold<F: Real>(link: Link, x: &[F], k: usize, tol: f64, z: &mut [F]) -> Solved {
    assert_eq!(
        x.len(),
        z.len(),
        "solve_threshold: x and z differ in length"
    );
    let n = x.len();
    assert!(k <= n, "solve_threshold: k = {k} > n = {n}");
    if k == 0 || k == n {
        z.fill(if k == n { F::one() } else { F::zero() });
        let tau = if k == n {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        return Solved {
            tau,
            iterations: 0,
            residual: 0.0,
            converged: true,
        };
    }
    // τ is solved relative to m = max x, so that its resolution near the root does not
    // depend on the magnitude of x (±1e8 at w = ±1e4, T = 1e-4).
    let (min, m) = extent(x);
    if m - min > CACHED_SPREAD {
        return solve_from(link, x, None, (min, m), k, tol, z);
    }
    // The cache lives in a buffer per thread, grown to the longest row seen (no allocation per
    // row).
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CACHE.with_borrow_mut(|cache| {
        cache.clear();
        cache.extend(x.iter().map(|xi| xi.f64() - m));
        exp_slice_f64(cache);
        solve_from(link, x, Some(cache), (min, m), k, tol, z)
    })
}

/// [`solve_threshold`] from `x`'s extent `(min, m)`, on the cache `exp(x − m)` when given.
fn solve_from<F: Real>(
    link: Link,
    x: &[F],
    cache: Option<&[f64]>,
    (min, m): (f64, f64),
    k: usize,
    tol: f64,
    z: &mut [F],
) -> Solved {
    let (n, kf) = (x.len(), k as f64);
    let (mut lo, mut hi) = link.bracket(min - m, 0.0, n as f64, kf);
    let (mut dx_old, mut dx) = (hi - lo, hi - lo);
    let mut tau = lo + 0.5 * (hi - lo);
    if let Some(e) = cache {
        hi = hi.min((cache_sums(e, |e| [e, 0.0, 0.0], |_, _| {})[0] / kf).ln());
        tau = hi;
    }
    let mut solved = Solved {
        tau,
        iterations: 0,
        residual: f64::INFINITY,
        converged: false,
    };
    // Each evaluation writes `z` at its `τ`; the last one evaluated is the one returned.
    while solved.iterations < MAX_ITERS {
        let [sum, slope, curve] = sums(link, x, cache, m, tau, z);
        let r = sum - kf;
        solved = Solved {
            tau,
            iterations: solved.iterations + 1,
            residual: r.abs(),
            converged: r.abs() <= tol,
        };
        if solved.converged {
            break;
        }
        if r > 0.0 {
            lo = tau;
        } else {
            hi = tau;
        }
        // Halley on `f(τ) = ln Σ h − ln k` (the same root and bracket; Newton's step where
        // Halley's denominator is not positive): with `a = Σ h'/Σ h`, `b = Σ h''/Σ h`,
        // `f' = −a`, `f'' = b − a²`, the step `−2ff'/(2f'² − ff'')`. Exact in one step where
        // `Σ h ≈ e^{−τ}·Σ eˣ` (few entries active), cubic near the root: 13 % fewer sums than
        // Newton's on rows of 4096 at T = 0.5, 21 % at T = 1.
        let step = halley_step((sum / kf).ln(), slope / sum, curve / sum);
        let stepped = tau + step;
        let use_step = slope > 0.0 && stepped > lo && stepped < hi && 2.0 * step.abs() <= dx_old;
        dx_old = dx;
        let next = if use_step {
            dx = step.abs();
            stepped
        } else {
            dx = 0.5 * (hi - lo);
            lo + dx
        };
        if next == tau || next <= lo || next >= hi {
            // No float strictly between: τ is as close to the root as f64 can say.
            solved.converged = true;
            break;
        }
        tau = next;
    }
    Solved {
        tau: solved.tau + m,
        ..solved
    }
}

/// The Halley step `2fa/(2a² − f(b − a²))` on `f` with `f' = −a`, `f'' = b − a²`, or Newton's
/// `f/a` where the denominator is not positive.
fn halley_step(f: f64, a: f64, b: f64) -> f64 {
    let denominator = 2.0 * a * a - f * (b - a * a);
    if denominator > 0.0 {
        2.0 * f * a / denominator
    } else {
        f / a
    }
}

/// Backward of [`solve_threshold`] by the implicit-function theorem on `Σ_i h(x_i − τ) = k`:
/// `∂τ/∂x_j = d_j / Σ d`, `d = h'(x − τ)`, so `J = diag(d) − d dᵀ / Σ d` (symmetric) and
/// `grad_x_i = d_i (g_i − Σ_j d_j g_j / Σ d) / t`, with `d` recovered from the output `z`
/// (0 everywhere when `Σ d = 0`). Writes `grad_x` (the division by `t`, a temperature, is the
/// chain rule of `x = w/T`; 1 for `∂L/∂x`).
pub fn threshold_vjp<F: Real>(link: Link, z: &[F], g: &[F], t: F, grad_x: &mut [F]) {
    assert!(
        z.len() == g.len() && z.len() == grad_x.len(),
        "threshold_vjp: length mismatch"
    );
    vjp(link, z, g, t, grad_x);
}

multiversion! {
    /// [`threshold_vjp`]'s arithmetic, compiled for the CPU's widest vectors.
    fn vjp<F: Real> / vjp_on(link: Link, z: &[F], g: &[F], t: F, grad_x: &mut [F]) = vjp_body
}

/// The body of [`vjp`]: `Σ d` and `Σ d·g` in sixteen f64 lanes (element `i` in lane
/// `i mod 16`) over groups of sixteen, converted from `F` inside the group (the form that
/// vectorizes without buffers), then `grad_x = d·(g − mean)·(1/t)` in f64.
#[inline(always)]
fn vjp_body<F: Real>(link: Link, z: &[F], g: &[F], t: F, grad_x: &mut [F]) {
    let d = |zi: F| link.slope_from_output(zi.f64());
    let (mut sd, mut sdg) = ([0.0; LANES], [0.0; LANES]);
    let (zs, gs) = (z.chunks_exact(LANES), g.chunks_exact(LANES));
    let (z_rest, g_rest) = (zs.remainder(), gs.remainder());
    for (zc, gc) in zs.zip(gs) {
        for l in 0..LANES {
            let dl = d(zc[l]);
            sd[l] += dl;
            sdg[l] += dl * gc[l].f64();
        }
    }
    for (l, (&zi, &gi)) in z_rest.iter().zip(g_rest).enumerate() {
        sd[l] += d(zi);
        sdg[l] += d(zi) * gi.f64();
    }
    let (sd, sdg): (f64, f64) = (sd.iter().sum(), sdg.iter().sum());
    if sd <= 0.0 {
        grad_x.fill(F::zero());
        return;
    }
    let (mean, inv_t) = (sdg / sd, 1.0 / t.f64());
    for ((gx, &zi), &gi) in grad_x.iter_mut().zip(z).zip(g) {
        *gx = F::of(d(zi) * (gi.f64() - mean) * inv_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::XorShift;

    /// The iterations on the cache `exp(x − max x)` (a division per entry, started from
    /// `ln(Σ eˣ/k)`) and on `x` itself (an exponential per entry, from the bracket's middle)
    /// find the same `z`, for both links, spreads up to `CACHED_SPREAD`, any `k`.
    #[test]
    fn the_cached_solve_is_the_direct_one() {
        for seed in 0..40 {
            let mut r = XorShift::new(100 + seed);
            let n = 2 + (r.next_u64() % 3000) as usize;
            let spread = [1.0, 30.0, 300.0, 590.0][seed as usize % 4];
            let x = r.vec(n, -spread / 2.0, spread / 2.0);
            let k = 1 + (r.next_u64() as usize % (n - 1));
            for link in [Link::Sigmoid, Link::CappedExp] {
                let (min, m) = extent(&x);
                let mut e: Vec<f64> = x.iter().map(|xi| xi - m).collect();
                exp_slice_f64(&mut e);
                let (mut cached, mut direct) = (vec![0.0; n], vec![0.0; n]);
                let a = solve_from(link, &x, Some(&e), (min, m), k, 1e-10, &mut cached);
                let b = solve_from(link, &x, None, (min, m), k, 1e-10, &mut direct);
                assert!(
                    a.converged && b.converged,
                    "{link:?} n {n} k {k}: {a:?} {b:?}"
                );
                for (c, d) in cached.iter().zip(&direct) {
                    assert!((c - d).abs() <= 1e-9, "{link:?} n {n} k {k}: {c} vs {d}");
                }
                assert!((cached.iter().sum::<f64>() - k as f64).abs() <= 1e-8);
            }
        }
    }

    /// The lane sums are the same bits in every CPU variant and the plain sums within rounding;
    /// the solved `z` sums to `k`.
    #[test]
    fn lane_sums_agree_across_variants_and_with_plain_sums() {
        for seed in 0..20 {
            let mut r = XorShift::new(seed);
            let n = 2 + (r.next_u64() % 500) as usize;
            let x = r.vec(n, -6.0, 6.0);
            for link in [Link::Sigmoid, Link::CappedExp] {
                let tau = r.vec(1, -2.0, 2.0)[0];
                // Plain sums of h, h' and h'' (h'' by finite differences of h', in f64).
                let plain = x.iter().fold([0.0; 3], |[s, d, c], &xi| {
                    let t = xi - 1.0 - tau;
                    let (h, dh) = link.eval(t);
                    let step = 1e-6;
                    let d2 = (link.eval(t + step).1 - link.eval(t - step).1) / (2.0 * step);
                    [s + h, d + dh, c + d2]
                });
                let variants = crate::simd::Variant::all_available();
                let got: Vec<[f64; 3]> = variants
                    .iter()
                    .map(|&v| sums_on(v, link, &x, None, 1.0, tau, &mut vec![0.0; n]))
                    .collect();
                assert!(got.iter().all(|g| *g == got[0]), "{link:?} {got:?}");
                // On the cache exp(x − 1): the same bits on every variant, and the same sums.
                let mut e: Vec<f64> = x.iter().map(|xi| xi - 1.0).collect();
                exp_slice_f64(&mut e);
                let cached: Vec<[f64; 3]> = variants
                    .iter()
                    .map(|&v| sums_on(v, link, &x, Some(&e), 1.0, tau, &mut vec![0.0; n]))
                    .collect();
                assert!(
                    cached.iter().all(|g| *g == cached[0]),
                    "{link:?} {cached:?}"
                );
                for sums in [got[0], cached[0]] {
                    for t in 0..2 {
                        assert!(
                            (sums[t] - plain[t]).abs() <= 1e-12 * n as f64,
                            "{sums:?} {plain:?}"
                        );
                    }
                    // h'' against finite differences (the capped exponential's kink at 0 aside).
                    if link == Link::Sigmoid {
                        assert!(
                            (sums[2] - plain[2]).abs() <= 1e-6 * n as f64,
                            "{sums:?} {plain:?}"
                        );
                    }
                }
                let k = 1 + (r.next_u64() as usize % (n - 1));
                let mut z = vec![0.0; n];
                let solved = solve_threshold(link, &x, k, 1e-10, &mut z);
                assert!(solved.converged, "{link:?} n {n} k {k}");
                assert!((z.iter().sum::<f64>() - k as f64).abs() <= 1e-8, "{link:?}");
            }
        }
    }
}
