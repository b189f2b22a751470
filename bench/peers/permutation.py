"""Peers of `cargo bench --bench permutation`, single thread: SciPy's `linear_sum_assignment`
(maximize=True) on uniform [0, 1) n×n weights, and Gumbel-Sinkhorn forward + backward (batch 32,
20 log-domain iterations, T = 1, loss <c, P>) in JAX (jit, reverse mode through the iterations)
NumPy (forward + hand-written unrolled backward) and, when installed, PyTorch (autograd through
the log-domain iterations, one thread). Prints median milliseconds."""
import os

import timing

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

BATCH, ITERS = 32, 20


def median_ms(f, repeats=10):
    return timing.median_ms(f, repeats)


def scipy_assignment():
    rng = np.random.default_rng(0)
    for n in (64, 256, 1024):
        w = rng.random((n, n))
        print(f"assignment n={n}: scipy {median_ms(lambda: linear_sum_assignment(w, maximize=True)):.3f} ms")


def numpy_sinkhorn(x, c):
    a = np.zeros(x.shape[:2])
    b = np.zeros((x.shape[0], x.shape[2]))
    trace = []
    for _ in range(ITERS):
        a = -logsumexp(x + b[:, None, :], axis=2)
        b = -logsumexp(x + a[:, :, None], axis=1)
        trace.append((a, b))
    p = np.exp(x + a[:, :, None] + b[:, None, :])
    gp = c * p
    gx, abar, bbar = gp.copy(), gp.sum(2), gp.sum(1)
    for k in range(ITERS - 1, -1, -1):
        a, b = trace[k]
        bprev = trace[k - 1][1] if k else np.zeros_like(b)
        q = np.exp(x + a[:, :, None] + b[:, None, :])
        gx -= q * bbar[:, None, :]
        abar = abar - (q * bbar[:, None, :]).sum(2)
        r = np.exp(x + a[:, :, None] + bprev[:, None, :])
        gx -= r * abar[:, :, None]
        bbar = -(r * abar[:, :, None]).sum(1)
        abar = np.zeros_like(abar)
    return gx


def sinkhorn_peers():
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp as jlse

    jax.config.update("jax_enable_x64", True)

    @jax.jit
    def jax_fwd_bwd(theta, c, key):
        g = jax.random.gumbel(key, theta.shape, dtype=theta.dtype)

        def loss(th):
            x = th + g
            a = jnp.zeros(x.shape[:2])
            b = jnp.zeros((x.shape[0], x.shape[2]))
            for _ in range(ITERS):
                a = -jlse(x + b[:, None, :], axis=2)
                b = -jlse(x + a[:, :, None], axis=1)
            return jnp.sum(c * jnp.exp(x + a[:, :, None] + b[:, None, :]))

        return jax.grad(loss)(theta)

    rng = np.random.default_rng(1)
    for n in (64, 256):
        theta = rng.random((BATCH, n, n))
        c = theta - 0.5
        gumbel = -np.log(-np.log(rng.random(theta.shape)))
        jt, jc, key = jnp.asarray(theta), jnp.asarray(c), jax.random.PRNGKey(0)
        jax_ms = median_ms(lambda: jax_fwd_bwd(jt, jc, key).block_until_ready())
        np_ms = median_ms(lambda: numpy_sinkhorn(theta + gumbel, c), repeats=3)
        torch_ms = torch_sinkhorn_ms(theta, gumbel, c)
        print(f"gumbel_sinkhorn fwd+bwd b={BATCH} n={n} {ITERS} it: jax {jax_ms:.2f} ms, numpy {np_ms:.2f} ms, torch {torch_ms}")


def torch_sinkhorn_ms(theta, gumbel, c):
    """Forward + backward of <c, P> through the log-domain iterations in PyTorch (autograd), or
    "-" when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return "-"
    torch.set_num_threads(1)
    th = torch.tensor(theta, requires_grad=True)
    g, cc = torch.tensor(gumbel), torch.tensor(c)

    def run():
        th.grad = None
        x = th + g
        a = torch.zeros(x.shape[:2], dtype=x.dtype)
        b = torch.zeros((x.shape[0], x.shape[2]), dtype=x.dtype)
        for _ in range(ITERS):
            a = -torch.logsumexp(x + b[:, None, :], dim=2)
            b = -torch.logsumexp(x + a[:, :, None], dim=1)
        (cc * torch.exp(x + a[:, :, None] + b[:, None, :])).sum().backward()
        return th.grad

    return f"{median_ms(run, repeats=5):.2f} ms"


if __name__ == "__main__":
    scipy_assignment()
    sinkhorn_peers()
