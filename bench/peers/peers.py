"""Times the workloads of `sst bench --json` in NumPy (+ SciPy's `expit`), JAX and, when it is
installed, PyTorch, and prints each peer's median next to sst's as the ratio sst / peer
(> 1: sst is slower than that peer, < 1: sst is faster), then the fastest peer of each workload
and sst / fastest.

    python peers.py SST_JSON      # SST_JSON: what `sst bench --json` printed (run.sh does both)

Environment: PEERS_THREADS (default 1) sets the BLAS/OpenMP/torch threads and, at 1, turns off
XLA's multi-threaded Eigen (run.sh also pins every process to the same cores with taskset);
PEERS_REPEATS (default 15) the timed runs per workload.

Rules, the same for every peer: θ as in `sst bench` (`theta` below), cotangent c = θ/2, T = 0.5;
each call draws fresh noise inside the timed function (NumPy: the Generator moves on; JAX: the
key is `fold_in(key, call number)`, inside the jitted function; torch: its global generator);
JAX functions are `jax.jit`ed, warmed up (compile excluded) and waited on with
`block_until_ready`; the peers of one workload run alternately (timing.alternating_medians_ms).
The first output of each peer is checked: finite, hard samples one-hot, soft top-k rows summing
to k within 1e-4, Sinkhorn columns summing to 1 within 1e-4. Only the workloads in SST_JSON are
timed; sst workloads without a peer show -. The JAX column of the implicit Sinkhorn workload is
OTT-JAX (`pip install ott-jax` into the venv; without it that cell shows -).
"""
import itertools
import json
import math
import os
import sys

THREADS = int(os.environ.get("PEERS_THREADS", "1"))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))
if THREADS == 1:
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import numpy as np
from scipy.special import expit

import timing
import trees

REPEATS = int(os.environ.get("PEERS_REPEATS", "15"))
T = 0.5
DTYPES = [(np.float32, "f32"), (np.float64, "f64")]
CATEGORICAL = (1024, 1000)
BINARY = (4096, 1024)
TOPK, K = (256, 4096), 64
SINKHORN, SINKHORN_ITERS = (64, 50, 50), 50
# Matrix-tree marginals of TREE_BATCH rooted digraphs (root 0), no noise, f64 (trees.py's peers).
TREE_BATCH, TREE_SIZES = 16, (64, 128, 256)
# Bisection steps for the soft top-k threshold τ. The bracket [min x + ln((n-k)/n), max x + ln(n/k)]
# (Σ sigmoid(x - τ) ≥ k at its low end, ≤ k at its high end, as in sst) is < 100 wide here, so
# 40 steps (f32) and 60 (f64) take τ to the precision of the dtype, so |Σz - k| is rounding
# alone: measured ≤ 1e-15·k in f64 and ≤ 7e-7·k in f32 (in exact arithmetic ~27 steps would
# reach 1e-6·k; f32 cannot do much better than that whatever the count).
BISECT_ITERS = {"f32": 40, "f64": 60}
# rtol = atol of the linear solve in OTT-JAX's implicit Sinkhorn backward. At a converged fixed
# point of the bench instance (|∇| ≤ 0.55) OTT's default 1e-6 leaves |∇ - exact| ≈ 1.5e-4 in f64,
# 1e-10 leaves 1e-10 at no measured cost (sst's solve stops at 1e-14); f32 keeps 1e-6 (3.5e-5
# from exact): at 1e-7 its solve cannot converge and lineax raises.
IMPLICIT_TOL = {"f32": 1e-6, "f64": 1e-10}


def names(dt):
    """The workload names of `sst bench --json` for one dtype, keyed by short names."""
    return {
        "softmax_fwd_bwd": f"gumbel_softmax_fwd_bwd_1024x1000_{dt}",
        "softmax_fwd": f"gumbel_softmax_fwd_1024x1000_{dt}",
        "sparsemax": f"gumbel_sparsemax_fwd_bwd_1024x1000_{dt}",
        "hard": f"gumbel_max_hard_1024x1000_{dt}",
        "concrete": f"binary_concrete_fwd_bwd_4096x1024_{dt}",
        "topk": f"topk_soft_fwd_bwd_256x4096_k{K}_{dt}",
        "sinkhorn": f"sinkhorn_fwd_bwd_64x50x50_it{SINKHORN_ITERS}_{dt}",
        "sinkhorn_implicit": f"sinkhorn_implicit_fwd_bwd_64x50x50_it{SINKHORN_ITERS}_{dt}",
        "copy": f"copy_bandwidth_1024x1000_{dt}",
    }


def tree_peers(dt, fwd, fwd_bwd):
    """The matrix-tree workloads of one peer, f64 only: `fwd(x)` the marginals of x = θ/T,
    `fwd_bwd(x, c)` the marginals and the gradient ∂⟨c, μ⟩/∂x, divided by T here (sst's
    gradient is with respect to θ)."""
    if dt != "f64":
        return {}
    out = {}
    for n in TREE_SIZES:
        th = theta((TREE_BATCH, n, n), np.float64)
        x, cot = th / T, th * 0.5

        def step(x=x, cot=cot):
            mu, grad = fwd_bwd(x, cot)
            return mu, grad / T

        out[f"arborescence_marginals_fwd_{TREE_BATCH}x{n}_f64"] = lambda x=x: fwd(x)
        out[f"arborescence_marginals_fwd_bwd_{TREE_BATCH}x{n}_f64"] = step
    return out


def theta(shape, dtype):
    """θ[i, j] = ((31 i + 17 j) mod 97)/25 - 2, with j the flat index over the trailing axes."""
    rows, cols = shape[0], math.prod(shape[1:])
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return (((i * 31 + j * 17) % 97) / 25.0 - 2.0).astype(dtype).reshape(shape)


# ---- NumPy ----

def open_uniform(rng, shape, dtype):
    """Uniforms in the open interval (0, 1): `Generator.random` is in [0, 1) and can return 0.0,
    so it is clipped up to the smallest normal number (log is then finite; 1.0 never comes)."""
    u = rng.random(shape, dtype=dtype)
    return np.maximum(u, np.finfo(dtype).tiny, out=u)


def np_gumbel(rng, shape, dtype):
    """-log(-log u), computed in place."""
    g = open_uniform(rng, shape, dtype)
    np.log(g, out=g)
    np.negative(g, out=g)
    np.log(g, out=g)
    np.negative(g, out=g)
    return g


def np_softmax(x):
    """Row softmax of x, in place."""
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def np_soft_topk(x, k, iters):
    """z = sigmoid(x - τ) with τ per row such that Σz = k, τ by `iters` bisection steps."""
    n = x.shape[1]
    lo = x.min(axis=1, keepdims=True) + math.log((n - k) / n)
    hi = x.max(axis=1, keepdims=True) + math.log(n / k)
    buf = np.empty_like(x)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        big = expit(np.subtract(x, mid, out=buf), out=buf).sum(axis=1, keepdims=True) > k
        lo = np.where(big, mid, lo)
        hi = np.where(big, hi, mid)
    return expit(np.subtract(x, 0.5 * (lo + hi), out=buf), out=buf)


def np_sparsemax(x):
    """Row sparsemax by the sort-based rule: z = max(x - τ, 0), τ from the sorted prefix sums."""
    n = x.shape[1]
    srt = -np.sort(-x, axis=1)
    cum = np.cumsum(srt, axis=1)
    j = np.arange(1, n + 1, dtype=x.dtype)
    support = 1.0 + j * srt > cum
    k = support.sum(axis=1, keepdims=True)
    tau = (np.take_along_axis(cum, k - 1, axis=1) - 1.0) / k
    return np.maximum(x - tau, 0.0)


def threshold_vjp(z, g):
    """The implicit VJP of z = sigmoid(x - τ(x)) with Σz = k: s ⊙ (g - ⟨g, s⟩/Σs), s = z(1 - z)."""
    s = z * (1.0 - z)
    return s * (g - (g * s).sum(axis=-1, keepdims=True) / s.sum(axis=-1, keepdims=True))


def numpy_peers(dtype, dt):
    rng = np.random.default_rng(1)
    cat = theta(CATEGORICAL, dtype)
    cat_cot = cat * 0.5
    binary = theta(BINARY, dtype)
    binary_cot = binary * 0.5
    topk = theta(TOPK, dtype)
    topk_cot = topk * 0.5
    rows = np.arange(CATEGORICAL[0])

    def softmax_fwd_bwd():
        # z = softmax((θ + G)/T); grad = z ⊙ (c - ⟨c, z⟩)/T.
        z = np_softmax((cat + np_gumbel(rng, cat.shape, dtype)) / T)
        grad = z * (cat_cot - (cat_cot * z).sum(axis=1, keepdims=True))
        grad /= T
        return z, grad

    def softmax_fwd():
        return np_softmax((cat + np_gumbel(rng, cat.shape, dtype)) / T)

    def sparsemax():
        # z = sparsemax((θ + G)/T); grad = (c - mean of c over the support) on the support, / T.
        z = np_sparsemax((cat + np_gumbel(rng, cat.shape, dtype)) / T)
        on = z > 0
        mean = (cat_cot * on).sum(axis=1, keepdims=True) / on.sum(axis=1, keepdims=True)
        grad = np.where(on, cat_cot - mean, 0.0) / T
        return z, grad

    def hard():
        # One-hot of argmax(θ + G).
        idx = (cat + np_gumbel(rng, cat.shape, dtype)).argmax(axis=1)
        z = np.zeros_like(cat)
        z[rows, idx] = 1.0
        return z

    def concrete():
        # z = sigmoid((θ + log u - log(1 - u))/T); grad = c ⊙ z(1 - z)/T.
        u = open_uniform(rng, binary.shape, dtype)
        z = expit((binary + (np.log(u) - np.log1p(-u))) / T)
        grad = binary_cot * z * (1.0 - z)
        grad /= T
        return z, grad

    def soft_topk():
        # z = sigmoid(x - τ), x = (θ + G)/T, Σz = k by bisection; grad = implicit VJP / T.
        z = np_soft_topk((topk + np_gumbel(rng, topk.shape, dtype)) / T, K, BISECT_ITERS[dt])
        grad = threshold_vjp(z, topk_cot)
        grad /= T
        return z, grad

    n = names(dt)
    return {
        n["softmax_fwd_bwd"]: softmax_fwd_bwd,
        n["softmax_fwd"]: softmax_fwd,
        n["sparsemax"]: sparsemax,
        n["hard"]: hard,
        n["concrete"]: concrete,
        n["topk"]: soft_topk,
        # NumPy has no autodiff: no Sinkhorn peer. The copy is a memory-bandwidth reference.
        n["copy"]: lambda: np.copy(cat),
        # The closed forms sst uses, on LAPACK's inverse.
        **tree_peers(dt, trees.np_directed, trees.np_directed),
    }


# ---- SciPy ----

def uniform_theta(shape):
    """θ uniform in [0, 1): SplitMix64 of the flat index k, its top 53 bits over 2⁵³, as
    `sst bench` builds it for the assignment (uint64 arithmetic wraps, as it does there)."""
    z = np.arange(math.prod(shape), dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / 2.0**53).reshape(shape)


def scipy_peers(dtype, dt):
    """The exact assignment (maximum weight) of a 1024 × 1024 matrix, f64 only."""
    if dt != "f64":
        return {}
    from scipy.optimize import linear_sum_assignment

    w = uniform_theta((1024, 1024))
    return {"assignment_hard_1x1024_f64": lambda: linear_sum_assignment(w, maximize=True)}


# ---- JAX ----

def jax_peers(dtype, dt):
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    jax.config.update("jax_enable_x64", True)  # f64 arrays stay f64; f32 ones stay f32
    key = jax.random.key(1)
    iters = BISECT_ITERS[dt]

    def noise_key(i):
        return jax.random.fold_in(key, i)

    @jax.custom_vjp
    def soft_topk(x):
        return soft_topk_fwd(x)[0]

    def soft_topk_fwd(x):
        # Bisection on τ, vectorised over rows, a fixed number of steps.
        n = x.shape[-1]
        lo = x.min(axis=-1, keepdims=True) + math.log((n - K) / n)
        hi = x.max(axis=-1, keepdims=True) + math.log(n / K)

        def step(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            big = jax.nn.sigmoid(x - mid).sum(axis=-1, keepdims=True) > K
            return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

        lo, hi = jax.lax.fori_loop(0, iters, step, (lo, hi))
        z = jax.nn.sigmoid(x - 0.5 * (lo + hi))
        return z, z

    def soft_topk_bwd(z, g):
        return (threshold_vjp(z, g),)  # the implicit rule, no replay of the bisection

    soft_topk.defvjp(soft_topk_fwd, soft_topk_bwd)

    def sinkhorn(x):
        # Log-domain Sinkhorn: each iteration normalises rows, then columns. A fori_loop (reverse
        # mode through it is a scan): 4-6x faster on XLA CPU than the unrolled Python loop.
        def step(_, x):
            x = x - logsumexp(x, axis=2, keepdims=True)
            return x - logsumexp(x, axis=1, keepdims=True)

        return jnp.exp(jax.lax.fori_loop(0, SINKHORN_ITERS, step, x))

    def ott_sinkhorn_implicit():
        """`sinkhorn` by OTT-JAX with its implicit backward (`ImplicitDiff`: a linear solve of the
        optimality conditions at the output): log-space Sinkhorn on cost -xᵀ, ε = 1, a = b = 1/n,
        P = n·couplingᵀ. OTT updates g (the coupling's columns) first, so on xᵀ its iterates are
        those of `sinkhorn` (rows first, columns exact). min = max iterations make its loop a scan
        of max/inner blocks of `inner_iterations` with no stopping test (no threshold plays a
        part): exactly SINKHORN_ITERS iterations."""
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import implicit_differentiation, sinkhorn as ott_sinkhorn

        tol = IMPLICIT_TOL[dt]
        solver = ott_sinkhorn.Sinkhorn(
            lse_mode=True, min_iterations=SINKHORN_ITERS, max_iterations=SINKHORN_ITERS,
            inner_iterations=SINKHORN_ITERS,
            implicit_diff=implicit_differentiation.ImplicitDiff(solver_kwargs={"rtol": tol, "atol": tol}))

        def one(x):
            geom = geometry.Geometry(cost_matrix=-x.T, epsilon=1.0)
            return x.shape[-1] * solver(linear_problem.LinearProblem(geom)).matrix.T

        return jax.vmap(one)

    def fwd_bwd(layer, noise):
        """(z, vjp of c) of z = layer((θ + noise)/T), reverse mode, one jitted function."""

        @jax.jit
        def run(th, cot, i):
            eps = noise(noise_key(i), th.shape, th.dtype)
            z, vjp = jax.vjp(lambda t: layer((t + eps) / T), th)
            return z, vjp(cot)[0]

        return run

    @jax.jit
    def softmax_fwd(th, i):
        return jax.nn.softmax((th + jax.random.gumbel(noise_key(i), th.shape, th.dtype)) / T, axis=1)

    @jax.jit
    def hard(th, i):
        # One-hot of the first argmax of θ + G, as max + first index reaching it: the same result
        # as jax.nn.one_hot(jnp.argmax(w)), which is 3x slower on XLA CPU (f32).
        w = th + jax.random.gumbel(noise_key(i), th.shape, th.dtype)
        cols = jnp.arange(w.shape[1])
        first = jnp.where(w == w.max(axis=1, keepdims=True), cols, w.shape[1]).min(axis=1, keepdims=True)
        return (cols == first).astype(w.dtype)

    softmax = lambda x: jax.nn.softmax(x, axis=1)
    calls = {
        "softmax_fwd_bwd": (fwd_bwd(softmax, jax.random.gumbel), CATEGORICAL, True),
        "softmax_fwd": (softmax_fwd, CATEGORICAL, False),
        "hard": (hard, CATEGORICAL, False),
        "concrete": (fwd_bwd(jax.nn.sigmoid, jax.random.logistic), BINARY, True),
        "topk": (fwd_bwd(soft_topk, jax.random.gumbel), TOPK, True),
        "sinkhorn": (fwd_bwd(sinkhorn, jax.random.gumbel), SINKHORN, True),
    }
    try:
        calls["sinkhorn_implicit"] = (fwd_bwd(ott_sinkhorn_implicit(), jax.random.gumbel), SINKHORN, True)
    except ImportError as e:
        print(f"(jax {names(dt)['sinkhorn_implicit']} skipped: {e})", file=sys.stderr)
    out = {}
    for short, (f, shape, with_cot) in calls.items():
        th = jnp.asarray(theta(shape, dtype))
        args = (th, th * 0.5) if with_cot else (th,)
        count = itertools.count()
        # A new call number, so new noise, on every call.
        out[names(dt)[short]] = lambda f=f, args=args, count=count: jax.block_until_ready(
            f(*args, next(count)))
    # log det of L̂ by slogdet, marginals by jax.grad, the backward by jax.vjp of those.
    tree_fwd = jax.jit(jax.vmap(trees.jax_arborescence_z))
    tree_fwd_bwd = trees.jax_fwd_bwd(trees.jax_arborescence_z)
    out.update(tree_peers(
        dt,
        lambda x: jax.block_until_ready(tree_fwd(x)),
        lambda x, c: jax.block_until_ready(tree_fwd_bwd(x, c)),
    ))
    return out


# ---- PyTorch (when installed) ----

def torch_peers(dtype, dt):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    torch.manual_seed(1)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    iters = BISECT_ITERS[dt]

    def leaf(shape):
        th = torch.tensor(theta(shape, dtype), requires_grad=True)
        return th, th.detach() * 0.5

    def gumbel(shape):
        u = torch.rand(shape, dtype=tdtype).clamp_(min=torch.finfo(tdtype).tiny)  # (0, 1)
        return -torch.log(-torch.log(u))

    def fwd_bwd(th, cot, z_of):
        th.grad = None
        z = z_of(th)
        z.backward(cot)
        return z.detach(), th.grad

    class SoftTopK(torch.autograd.Function):
        """z = sigmoid(x - τ), Σz = k per row, τ by bisection; backward by the implicit rule."""

        @staticmethod
        def forward(ctx, x):
            n = x.shape[1]
            lo = x.amin(dim=1, keepdim=True) + math.log((n - K) / n)
            hi = x.amax(dim=1, keepdim=True) + math.log(n / K)
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                big = torch.sigmoid(x - mid).sum(dim=1, keepdim=True) > K
                lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
            z = torch.sigmoid(x - 0.5 * (lo + hi))
            ctx.save_for_backward(z)
            return z

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            s = z * (1.0 - z)
            return s * (g - (g * s).sum(dim=1, keepdim=True) / s.sum(dim=1, keepdim=True))

    def sinkhorn(x):
        for _ in range(SINKHORN_ITERS):
            x = x - torch.logsumexp(x, dim=2, keepdim=True)
            x = x - torch.logsumexp(x, dim=1, keepdim=True)
        return torch.exp(x)

    cat, cat_cot = leaf(CATEGORICAL)
    binary, binary_cot = leaf(BINARY)
    topk, topk_cot = leaf(TOPK)
    sink, sink_cot = leaf(SINKHORN)

    def softmax_fwd():
        with torch.no_grad():
            return F.gumbel_softmax(cat, tau=T, dim=1)

    def hard():
        with torch.no_grad():
            idx = (cat + gumbel(cat.shape)).argmax(dim=1, keepdim=True)
            return torch.zeros_like(cat).scatter_(1, idx, 1.0)

    def concrete(t):
        u = torch.rand(t.shape, dtype=tdtype).clamp_(min=torch.finfo(tdtype).tiny)
        return torch.sigmoid((t + (torch.log(u) - torch.log1p(-u))) / T)

    n = names(dt)
    return {
        n["softmax_fwd_bwd"]: lambda: fwd_bwd(cat, cat_cot, lambda t: F.gumbel_softmax(t, tau=T, dim=1)),
        n["softmax_fwd"]: softmax_fwd,
        n["hard"]: hard,
        n["concrete"]: lambda: fwd_bwd(binary, binary_cot, concrete),
        n["topk"]: lambda: fwd_bwd(topk, topk_cot, lambda t: SoftTopK.apply((t + gumbel(t.shape)) / T)),
        n["sinkhorn"]: lambda: fwd_bwd(sink, sink_cot, lambda t: sinkhorn((t + gumbel(t.shape)) / T)),
        # logdet, marginals by autograd.grad(create_graph=True), the backward by a second grad.
        **tree_peers(dt, trees.torch_fwd_bwd("arborescence", backward=False),
                     trees.torch_fwd_bwd("arborescence")),
    }


# ---- checks, timing, report ----

def check(workload, peer, out):
    """The first output of a peer: finite; hard samples one-hot; soft top-k rows sum to k;
    Sinkhorn's columns (normalised last) sum to 1."""
    arrays = [np.asarray(a) for a in (out if isinstance(out, tuple) else (out,))]
    where = f"{peer} {workload}"
    for a in arrays:
        assert np.all(np.isfinite(a)), f"{where}: non-finite output"
    if workload.startswith("gumbel_max_hard"):
        assert np.all(arrays[0].sum(axis=1) == 1) and np.all(arrays[0].max(axis=1) == 1), f"{where}: not one-hot"
    if workload.startswith("topk_soft"):
        worst = np.abs(arrays[0].astype(np.float64).sum(axis=1) - K).max()
        assert worst <= 1e-4, f"{where}: max |Σz - k| = {worst:.2e} > 1e-4"
    if workload.startswith("sinkhorn"):
        worst = np.abs(arrays[0].astype(np.float64).sum(axis=-2) - 1).max()
        assert worst <= 1e-4, f"{where}: max |column sum - 1| = {worst:.2e} > 1e-4"


def load_peers():
    peers = {}
    builders = [("numpy", numpy_peers), ("scipy", scipy_peers), ("jax", jax_peers),
                ("torch", torch_peers)]
    for peer, build in builders:
        try:
            for dtype, dt in DTYPES:
                peers.setdefault(peer, {}).update(build(dtype, dt))
        except ImportError as e:
            print(f"({peer} skipped: {e})", file=sys.stderr)
            peers.pop(peer, None)
    return peers


def report(sst, results, peers):
    cols = "".join(f" {p + ' ms':>10} {'sst/' + p:>10}" for p in peers)
    print(f"{'workload':<43} {'sst ms':>9}{cols} {'best':>6} {'sst/best':>9}")
    for workload, ms in sst.items():
        times = results.get(workload, {})
        cells = ""
        for p in peers:
            cells += f" {times[p]:>10.3f} {ms / times[p]:>10.2f}" if p in times else f" {'-':>10} {'-':>10}"
        if times:
            best = min(times, key=times.get)
            cells += f" {best:>6} {ms / times[best]:>9.2f}"
        else:
            cells += f" {'-':>6} {'-':>9}"
        print(f"{workload:<43} {ms:>9.3f}{cells}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        sst = {row["name"]: row["median_ms"] for row in json.load(f)}
    peers = load_peers()
    results = {}
    for workload in sst:
        fns = {p: table[workload] for p, table in peers.items() if workload in table}
        if not fns:
            continue
        for p, f in fns.items():
            check(workload, p, f())  # also compiles the JAX functions
        results[workload] = timing.alternating_medians_ms(fns, REPEATS)
    report(sst, results, peers)


if __name__ == "__main__":
    main()
