"""sst.jax: jax.grad equals the torch gradient (and the numpy layer's) for the same seed,
under jit and vmap, with several samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import sst
import sst.jax
import sst.torch
from conftest import relaxed_specs, theta_for


@pytest.mark.parametrize("spec", [s for _, s in relaxed_specs()], ids=[i for i, _ in relaxed_specs()])
def test_jax_grad_is_the_torch_gradient(spec):
    """For every relaxed plan: the loss sum(z²·c) through jax.grad and through torch autograd,
    at the seed of the same key, in float32 (JAX's default): equal bits."""
    layer = sst.compile(spec)["l"]
    f = sst.jax.layer_fn(layer)
    module = sst.torch.SSTLayer(layer)
    rng = np.random.default_rng(4)
    theta = theta_for(layer, rng, dtype=np.float32)
    c = rng.normal(size=theta.shape).astype(np.float32)
    key = jax.random.key(6)

    got = jax.grad(lambda t: jnp.sum(f(t, key) ** 2 * c))(jnp.asarray(theta))
    t = torch.tensor(theta, requires_grad=True)
    (module(t, seed=sst.jax.seed_of(key)) ** 2 * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(np.asarray(got), t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_jit_vmap_and_samples():
    layer = sst.compile("layer l: bernoulli(4) { estimator: relaxed; temperature: 0.5 }")["l"]
    f = sst.jax.layer_fn(layer, samples=3)
    theta = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    key = jax.random.key(1)

    def loss(t, k):
        return jnp.sum(f(t, k, 2.0) ** 2)

    eager = jax.value_and_grad(loss)(theta, key)
    jitted = jax.jit(jax.value_and_grad(loss))(theta, key)
    np.testing.assert_array_equal(eager[1], jitted[1])
    fwd = layer.forward(np.asarray(theta), seed=sst.jax.seed_of(key), samples=3, step=2.0)
    assert f(theta, key, 2.0).shape == (3, 2, 4)
    want = layer.backward(fwd, 2 * np.asarray(fwd.z)).sum(axis=0)
    np.testing.assert_allclose(eager[1], want, rtol=1e-6)

    keys = jax.random.split(key, 2)
    mapped = jax.vmap(jax.grad(loss))(jnp.stack([theta, theta]), keys)
    for i in range(2):
        np.testing.assert_array_equal(mapped[i], jax.grad(loss)(theta, keys[i]))


def test_the_same_key_gives_the_same_sample():
    f = sst.jax.layer_fn(sst.compile("layer l: categorical(10) {}")["l"])
    theta = jnp.zeros(10)
    k1, k2 = jax.random.split(jax.random.key(0))
    assert jnp.array_equal(f(theta, k1), f(theta, k1))
    assert not jnp.array_equal(f(theta, k1), f(theta, k2))
    raw = jax.random.PRNGKey(3)
    assert jnp.array_equal(f(theta, raw), f(theta, raw))


def test_bad_requests_raise_the_request_error():
    f = sst.jax.layer_fn(sst.compile("layer pick: categorical(3) {}")["pick"])
    with pytest.raises(Exception, match="layer `pick`: theta: "):
        f(jnp.zeros(4), jax.random.key(0)).block_until_ready()
