"""sst layers in JAX: ``sst.jax.layer_fn(layer)`` is a ``jax.custom_vjp`` function
``f(theta, key, step=0.0) -> z`` whose forward and backward run sst through
``jax.pure_callback`` (on the host), so it works under ``jax.jit``, ``jax.grad`` and
``jax.vmap`` (one call per mapped element).

    import jax, sst, sst.jax
    f = sst.jax.layer_fn(sst.compile(SPEC)["pick"], mode="soft")
    grad = jax.grad(lambda th: loss(f(th, key)))(theta)

The PRNG ``key`` (a typed key or a raw ``uint32[2]`` key) becomes sst's 64-bit seed through
``jax.random.bits``, so the same key gives the same sample. The ``reinforce`` estimator has no
pathwise gradient and is refused (``Layer.reinforce`` takes the samples' losses directly).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ._pending import PENDING


def seed_of(key):
    """The sst seed a PRNG key stands for: two 32-bit words of ``jax.random.bits(key)``, the
    first high (so ``layer.forward(theta, seed=seed_of(key))`` draws what ``f(theta, key)``
    does)."""
    bits = np.asarray(jax.random.bits(key, (2,), jnp.uint32))
    return _seed(bits)


def _seed(bits):
    return (int(bits[0]) << 32) | int(bits[1])


def layer_fn(layer, *, mode=None, temperature=None, samples=1, noise=True):
    """``layer`` as ``f(theta, key, step=0.0)``: ``z`` shaped like ``theta`` (``[samples,
    *theta.shape]`` for ``samples > 1``, whose gradients are summed into ``theta``'s).
    ``mode``, ``temperature`` (overriding the spec's schedule), ``samples`` and ``noise``
    (``False``: ``w = theta``) hold for every call."""
    if layer.plan()["estimator"].startswith("reinforce"):
        raise ValueError(
            f"layer `{layer.name}`: estimator: reinforce has no pathwise gradient for "
            "jax.grad; call Layer.forward and Layer.reinforce with the samples' losses"
        )

    def z_shape(theta):
        shape = theta.shape if samples == 1 else (samples, *theta.shape)
        return jax.ShapeDtypeStruct(shape, theta.dtype)

    def run(theta, bits, step):
        return layer.forward(
            np.asarray(theta),
            seed=_seed(bits),
            step=float(step),
            mode=mode,
            temperature=temperature,
            samples=samples,
            noise=noise,
        )

    def forward_host(keep):
        def call(theta, bits, step):
            fwd = run(theta, bits, step)
            token = PENDING.keep(fwd) if keep else 0
            return np.asarray(fwd.z), np.int32(token)

        return call

    def backward_host(grad_z, token, theta, bits, step):
        fwd = PENDING.take(int(token))
        if fwd is None:
            fwd = run(theta, bits, step)
        grad = layer.backward(fwd, np.ascontiguousarray(grad_z))
        return grad.sum(axis=0) if samples > 1 else grad

    def forward(theta, bits, step, keep):
        shapes = (z_shape(theta), jax.ShapeDtypeStruct((), jnp.int32))
        return jax.pure_callback(
            forward_host(keep), shapes, theta, bits, step, vmap_method="sequential"
        )

    @jax.custom_vjp
    def apply(theta, bits, step):
        return forward(theta, bits, step, keep=False)[0]

    def apply_fwd(theta, bits, step):
        z, token = forward(theta, bits, step, keep=True)
        return z, (token, theta, bits, step)

    def apply_bwd(residuals, grad_z):
        token, theta, bits, step = residuals
        shape = jax.ShapeDtypeStruct(theta.shape, theta.dtype)
        grad = jax.pure_callback(
            backward_host, shape, grad_z, token, theta, bits, step, vmap_method="sequential"
        )
        return grad, None, None

    apply.defvjp(apply_fwd, apply_bwd)

    def f(theta, key, step=0.0):
        theta = jnp.asarray(theta)
        bits = jax.random.bits(key, (2,), jnp.uint32)
        return apply(theta, bits, jnp.asarray(step, jnp.float32))

    return f
