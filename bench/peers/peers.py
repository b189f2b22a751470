"""Times the workloads of `sst bench` in NumPy, JAX and (if installed) PyTorch and prints each
peer's median next to sst's, as the ratio peer / sst (> 1: sst is faster)."""
import json
import sys

import timing

import numpy as np

REPEATS = 15
BATCH, N, T = 1024, 1000, 0.5


def median_ms(f):
    return timing.median_ms(f, REPEATS)


def theta(dtype):
    i = np.arange(BATCH)[:, None]
    j = np.arange(N)[None, :]
    return (((i * 31 + j * 17) % 97) / 25.0 - 2.0).astype(dtype)


def numpy_peers(dtype, name):
    th = theta(dtype)
    cot = th * 0.5
    rng = np.random.default_rng(1)

    def gumbel_softmax():
        w = th - np.log(-np.log(rng.random(th.shape, dtype=dtype)))
        x = w / T
        z = np.exp(x - x.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
        return z * (cot - (cot * z).sum(axis=1, keepdims=True)) / T

    def hard():
        w = th - np.log(-np.log(rng.random(th.shape, dtype=dtype)))
        return w.argmax(axis=1)

    return {
        f"gumbel_softmax_fwd_bwd_1024x1000_{name}": median_ms(gumbel_softmax),
        f"gumbel_max_hard_1024x1000_{name}": median_ms(hard),
    }


def jax_peers(dtype, name):
    import jax
    import jax.numpy as jnp

    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    th = jnp.asarray(theta(dtype))
    cot = th * 0.5
    key = jax.random.PRNGKey(1)

    @jax.jit
    def gumbel_softmax(th, cot, key):
        g = jax.random.gumbel(key, th.shape, dtype=th.dtype)
        f = lambda t: jnp.sum(jax.nn.softmax((t + g) / T, axis=1) * cot)
        return jax.grad(f)(th)

    @jax.jit
    def hard(th, key):
        return jnp.argmax(th + jax.random.gumbel(key, th.shape, dtype=th.dtype), axis=1)

    return {
        f"gumbel_softmax_fwd_bwd_1024x1000_{name}": median_ms(lambda: gumbel_softmax(th, cot, key).block_until_ready()),
        f"gumbel_max_hard_1024x1000_{name}": median_ms(lambda: hard(th, key).block_until_ready()),
    }


def torch_peers(dtype, name):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    th = torch.tensor(theta(dtype), requires_grad=True)
    cot = th.detach() * 0.5

    def gumbel_softmax():
        th.grad = None
        F.gumbel_softmax(th, tau=T, dim=1).backward(cot)
        return th.grad

    return {f"gumbel_softmax_fwd_bwd_1024x1000_{name}": median_ms(gumbel_softmax)}


def main():
    sst = {row["name"]: row["median_ms"] for row in json.load(open(sys.argv[1]))}
    peers = {}
    for dtype, name in [(np.float32, "f32"), (np.float64, "f64")]:
        peers.setdefault("numpy", {}).update(numpy_peers(dtype, name))
        try:
            peers.setdefault("jax", {}).update(jax_peers(dtype, name))
        except ImportError:
            pass
        try:
            peers.setdefault("torch", {}).update(torch_peers(dtype, name))
        except ImportError:
            pass
    print(f"{'workload':<40} {'sst ms':>9} " + " ".join(f"{p + ' ms':>10} {'ratio':>6}" for p in peers))
    for workload, ms in sst.items():
        cells = []
        for p, table in peers.items():
            if workload in table:
                cells.append(f"{table[workload]:>10.3f} {table[workload] / ms:>6.2f}")
            else:
                cells.append(f"{'-':>10} {'-':>6}")
        print(f"{workload:<40} {ms:>9.3f} " + " ".join(cells))


if __name__ == "__main__":
    main()
