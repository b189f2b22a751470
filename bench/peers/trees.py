"""Times the workloads of `cargo bench --bench trees` in JAX, NumPy/SciPy and NetworkX and
prints each peer's median next to sst's (read from target/criterion), as the ratio peer / sst
(> 1: sst is faster). Single thread: run with OMP_NUM_THREADS=1 etc. (see run_trees.sh).

Workloads (f64, batch 16, T = 0.5, Gumbel noise; θ as in benches/trees.rs):
- hard: maximum spanning tree (SciPy's minimum_spanning_tree on −w, a loop over the batch) and
  NetworkX maximum spanning tree / maximum arborescence rooted at 0 (batch 1, n ≤ 64);
- soft_fwd_bwd: matrix-tree marginals and their backward for a cotangent: JAX `slogdet` +
  `jax.grad` marginals and `jax.vjp` of those (a Hessian–vector product), jit-compiled and
  vmapped; NumPy LU (`inv`) with the closed forms sst uses.
"""
import json
import os

import timing

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree

jax.config.update("jax_enable_x64", True)

REPEATS = 7
BATCH, T = 16, 0.5
SIZES = [16, 64, 128, 256]
ROOT = "target/criterion"


def median_ms(f, repeats=REPEATS):
    return timing.median_ms(f, repeats)


def theta(n):
    b, i, j = np.meshgrid(np.arange(BATCH), np.arange(n), np.arange(n), indexing="ij")
    return ((b * 31 + i * 17 + j * 7) % 97) / 25.0 - 2.0


def gumbel(shape, rng):
    return -np.log(-np.log(rng.random(shape)))


# ---- JAX: log det of the reduced Laplacian, marginals by jax.grad, backward by jax.vjp ----

def jax_arborescence_z(x):
    n = x.shape[0]
    mask = (1.0 - jnp.eye(n)).at[:, 0].set(0.0)

    def logdet(x):
        xm = jnp.where(mask > 0, x, -jnp.inf)
        shift = jnp.max(xm, axis=0, keepdims=True)
        shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
        a = jnp.where(mask > 0, jnp.exp(x - shift), 0.0)
        lap = jnp.diag(a.sum(axis=0)) - a
        return jnp.linalg.slogdet(lap[1:, 1:])[1]

    return jax.grad(logdet)(x) * mask


def jax_tree_z(x):
    n = x.shape[0]
    upper = jnp.triu(jnp.ones((n, n)), 1)

    def logdet(x):
        xs = jnp.where(upper > 0, x, 0.0)
        xs = xs + xs.T
        shift = jax.lax.stop_gradient(jnp.max(jnp.where(upper > 0, x, -jnp.inf)))
        a = jnp.exp(xs - shift) * (upper + upper.T)
        lap = jnp.diag(a.sum(axis=0)) - a
        return jnp.linalg.slogdet(lap[1:, 1:])[1]

    mu = jax.grad(logdet)(x) * upper
    return mu + mu.T


def jax_fwd_bwd(z_fn):
    def one(x, cot):
        z, vjp = jax.vjp(z_fn, x)
        return z, vjp(cot)[0]

    return jax.jit(jax.vmap(one))


# ---- PyTorch (when installed): logdet + autograd marginals, backward by double backward ----

def torch_fwd_bwd(support, backward=True):
    """A function (x, cot) -> (marginals, grad) for the batch (`backward=False`: x -> marginals),
    or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", "1")))

    def run(x, cot=None):
        x = torch.tensor(x, requires_grad=True)
        b, n, _ = x.shape
        if support == "arborescence":
            mask = 1.0 - torch.eye(n, dtype=x.dtype)
            mask[:, 0] = 0.0
            xm = x.masked_fill(mask == 0, float("-inf"))
            shift = xm.amax(dim=1, keepdim=True).detach().nan_to_num(neginf=0.0)
            a = torch.exp(x - shift) * mask
        else:
            upper = torch.triu(torch.ones(n, n, dtype=x.dtype), 1)
            sym = upper + upper.T
            xs = x * upper
            xs = xs + xs.transpose(1, 2)
            shift = x.masked_fill(upper == 0, float("-inf")).amax(dim=(1, 2), keepdim=True).detach()
            a = torch.exp(xs - shift) * sym
        lap = torch.diag_embed(a.sum(dim=1)) - a
        logdet = torch.logdet(lap[:, 1:, 1:]).sum()
        (mu,) = torch.autograd.grad(logdet, x, create_graph=backward)
        if not backward:
            return mu
        z = mu if support == "arborescence" else mu + mu.transpose(1, 2)
        (grad,) = torch.autograd.grad((z * torch.tensor(cot)).sum(), x)
        return z.detach(), grad

    return run


# ---- NumPy: LU inverse and the closed forms (the directed kernel, root 0) ----

def np_directed(x, v=None):
    """Marginals and the Hessian–vector product of log det L̂ for a batch of logit matrices
    (`v=None`: the marginals alone)."""
    b, n, _ = x.shape
    mask = np.ones((n, n)) - np.eye(n)
    mask[:, 0] = 0.0
    xm = np.where(mask > 0, x, -np.inf)
    shift = xm.max(axis=1, keepdims=True)
    shift[~np.isfinite(shift)] = 0.0
    a = np.exp(np.where(mask > 0, x - shift, 0.0)) * mask
    lap = np.zeros_like(a)
    idx = np.arange(n)
    lap[:, idx, idx] = a.sum(axis=1)
    lap -= a
    m = np.linalg.inv(lap[:, 1:, 1:])
    full = np.zeros_like(a)
    full[:, 1:, 1:] = m
    diag = full[:, idx, idx]
    bmat = diag[:, None, :] - np.transpose(full, (0, 2, 1))
    mu = a * bmat
    if v is None:
        return mu
    da = a * v
    dl = np.zeros_like(a)
    dl[:, idx, idx] = da.sum(axis=1)
    dl -= da
    dm = np.zeros_like(a)
    dm[:, 1:, 1:] = -m @ dl[:, 1:, 1:] @ m
    ddiag = dm[:, idx, idx]
    hv = da * bmat + a * (ddiag[:, None, :] - np.transpose(dm, (0, 2, 1)))
    return mu, hv


def np_arborescence(x, cot):
    return np_directed(x, cot)


def np_tree(x, cot):
    n = x.shape[1]
    upper = np.triu(np.ones((n, n)), 1)
    xs = x * upper
    xs = xs + np.transpose(xs, (0, 2, 1))
    fold = (cot + np.transpose(cot, (0, 2, 1))) * upper
    fold = fold + np.transpose(fold, (0, 2, 1))
    mu, hv = np_directed(xs, fold)
    return mu + np.transpose(mu, (0, 2, 1)), (hv + np.transpose(hv, (0, 2, 1))) * upper


# ---- hard peers ----

def scipy_mst(w):
    for row in w:
        minimum_spanning_tree(-(np.triu(row, 1) + 10.0) * np.triu(np.ones_like(row), 1))


def nx_tree(w):
    n = w.shape[0]
    g = nx.Graph()
    g.add_weighted_edges_from((i, j, w[i, j]) for i in range(n) for j in range(i + 1, n))
    nx.maximum_spanning_tree(g)


def nx_arborescence(w):
    n = w.shape[0]
    g = nx.DiGraph()
    g.add_weighted_edges_from((i, j, w[i, j]) for i in range(n) for j in range(1, n) if i != j)
    nx.maximum_spanning_arborescence(g)


def sst_ms(group, func, n):
    path = os.path.join(ROOT, group, func, str(n), "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except OSError:
        return None


def report(rows):
    print(f"{'workload':44} {'peer':28} {'peer ms':>10} {'sst ms':>10} {'peer/sst':>9}")
    for workload, peer, ms, sst in rows:
        ratio = f"{ms / sst:9.2f}" if sst else "        -"
        sst_s = f"{sst:10.3f}" if sst else "         -"
        print(f"{workload:44} {peer:28} {ms:10.3f} {sst_s} {ratio}")


def main():
    rng = np.random.default_rng(1)
    rows = []
    for support, jz, npf in [("spanning_tree", jax_tree_z, np_tree),
                             ("arborescence", jax_arborescence_z, np_arborescence)]:
        group = f"{support}_b{BATCH}_f64"
        step = jax_fwd_bwd(jz)
        for n in SIZES:
            th = theta(n)
            cot = th * 0.5
            sst_soft = sst_ms(group, "soft_fwd_bwd", n)
            sst_hard = sst_ms(group, "hard", n)
            reps = REPEATS if n <= 128 else 3

            def jax_run():
                x = (th + gumbel(th.shape, rng)) / T
                z, g = step(jnp.asarray(x), jnp.asarray(cot))
                g.block_until_ready()

            def np_run():
                x = (th + gumbel(th.shape, rng)) / T
                npf(x, cot)

            rows.append((f"{group} soft_fwd_bwd n={n}", "JAX slogdet+grad+vjp (jit)",
                         median_ms(jax_run, reps), sst_soft))
            rows.append((f"{group} soft_fwd_bwd n={n}", "NumPy LU + closed forms",
                         median_ms(np_run, reps), sst_soft))
            torch_step = torch_fwd_bwd(support)
            if torch_step is not None:
                rows.append((f"{group} soft_fwd_bwd n={n}", "PyTorch logdet + double backward",
                             median_ms(lambda: torch_step((th + gumbel(th.shape, rng)) / T, cot), reps),
                             sst_soft))
            if support == "spanning_tree":
                rows.append((f"{group} hard n={n}", "SciPy minimum_spanning_tree",
                             median_ms(lambda: scipy_mst(th + gumbel(th.shape, rng)), reps),
                             sst_hard))
            if n <= 64:
                peer = nx_tree if support == "spanning_tree" else nx_arborescence
                name = "NetworkX (batch 1)"
                ms = median_ms(lambda: peer(th[0] + gumbel(th[0].shape, rng)), 3)
                # sst's figure is for batch 16: compare per tree.
                rows.append((f"{group} hard n={n} per tree", name, ms,
                             sst_hard / BATCH if sst_hard else None))
    report(rows)


if __name__ == "__main__":
    main()
