"""Times the work of `cargo bench --bench subset` in NumPy and JAX (single thread, f64, one row,
θ_i = ((i·2654435761) mod 100003)/10000.3 − 5, T = 1) and prints the medians in ms:
- hard top-k: `np.argpartition` + indicator; `jax.lax.top_k` + indicator;
- binary entropy: z = sigmoid(x − τ), Σz = k, τ by 60 bisection steps (NumPy, JAX);
- entropy: z = min(1, exp(x − τ)), Σz = k, τ by 60 bisection steps (NumPy);
- euclidean: sort-based projection onto the capped simplex, τ by 60 bisection steps on
  clip(x − τ, 0, 1) (NumPy).
No peer has the exponential-family DPs."""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"


import timing

import numpy as np

REPEATS = 10
ITERS = 60


def median_ms(f):
    return timing.median_ms(f, REPEATS)


def theta(n):
    i = np.arange(n, dtype=np.uint64)
    return ((i * np.uint64(2654435761)) % np.uint64(100003)).astype(np.float64) / 10000.3 - 5.0


def bisect_np(x, k, h):
    lo, hi = x.min() - 40.0, x.max() + 40.0
    for _ in range(ITERS):
        mid = 0.5 * (lo + hi)
        if h(x - mid).sum() > k:
            lo = mid
        else:
            hi = mid
    return h(x - 0.5 * (lo + hi))


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def numpy_peers(n, k):
    x = theta(n)

    def hard():
        z = np.zeros(n)
        z[np.argpartition(-x, k - 1)[:k]] = 1.0
        return z

    return {
        "hard_top_k": median_ms(hard),
        "binary_entropy": median_ms(lambda: bisect_np(x, k, sigmoid)),
        "entropy": median_ms(lambda: bisect_np(x, k, lambda t: np.minimum(1.0, np.exp(t)))),
        "euclidean": median_ms(lambda: bisect_np(x, k, lambda t: np.clip(t, 0.0, 1.0))),
    }


def jax_peers(n, k):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x = jnp.asarray(theta(n))

    @jax.jit
    def hard(x):
        _, idx = jax.lax.top_k(x, k)
        return jnp.zeros_like(x).at[idx].set(1.0)

    @jax.jit
    def bin_ent(x):
        def body(_, b):
            lo, hi = b
            mid = 0.5 * (lo + hi)
            big = jax.nn.sigmoid(x - mid).sum() > k
            return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

        lo, hi = jax.lax.fori_loop(0, ITERS, body, (x.min() - 40.0, x.max() + 40.0))
        return jax.nn.sigmoid(x - 0.5 * (lo + hi))

    return {
        "hard_top_k": median_ms(lambda: hard(x).block_until_ready()),
        "binary_entropy": median_ms(lambda: bin_ent(x).block_until_ready()),
    }


def main():
    for n in (1_000, 10_000, 100_000):
        for k in (10, n // 10):
            for peer, run in (("numpy", numpy_peers), ("jax", jax_peers)):
                for name, ms in run(n, k).items():
                    print(f"{peer:6s} {name:15s} n={n:<7d} k={k:<6d} {ms:10.4f} ms")


if __name__ == "__main__":
    main()
