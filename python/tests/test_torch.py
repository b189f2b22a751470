"""sst.torch: gradcheck for every support's relaxed plan, agreement with the numpy API,
reproducible seeds, several samples, torch.compile, and autograd's guards."""

import numpy as np
import pytest
import torch

import sst
import sst.torch
from conftest import relaxed_specs, theta_for


@pytest.mark.parametrize("spec", [s for _, s in relaxed_specs()], ids=[i for i, _ in relaxed_specs()])
def test_gradcheck_every_relaxed_plan(spec):
    """torch.autograd.gradcheck in float64 (central differences of the whole map at a fixed
    seed, which fixes the noise) for every support × solver × backward rule."""
    module = sst.torch.SSTLayer(sst.compile(spec)["l"])
    rng = np.random.default_rng(1)
    for seed in range(3):
        theta = torch.tensor(theta_for(module.layer, rng), requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda t: module(t, seed=seed), (theta,), eps=1e-6, atol=1e-6, rtol=1e-4
        ), spec


def test_z_and_gradient_are_the_numpy_layers():
    layer = sst.compile("layer l: subset(6, 2) { regularizer: entropy; estimator: straight_through }")["l"]
    module = sst.torch.SSTLayer(layer)
    rng = np.random.default_rng(2)
    for dtype in [np.float32, np.float64]:
        theta = theta_for(layer, rng, batch=(2, 3), dtype=dtype)
        cot = rng.normal(size=theta.shape).astype(dtype)
        t = torch.tensor(theta, requires_grad=True)
        z = module(t, seed=9, step=4.0)
        (z * torch.tensor(cot)).sum().backward()
        fwd = layer.forward(theta, seed=9, step=4.0)
        assert z.dtype == t.dtype and z.shape == t.shape
        np.testing.assert_array_equal(z.detach().numpy(), fwd.z)
        np.testing.assert_array_equal(t.grad.numpy(), layer.backward(fwd, cot))


def test_manual_seed_makes_a_run_reproducible():
    module = sst.torch.SSTLayer(sst.compile("layer l: categorical(20) {}")["l"])
    theta = torch.zeros(4, 20)
    torch.manual_seed(3)
    a = module(theta)
    torch.manual_seed(3)
    b = module(theta)
    c = module(theta)
    assert torch.equal(a, b) and not torch.equal(b, c)
    gen = torch.Generator().manual_seed(5)
    own = sst.torch.SSTLayer(module.layer, generator=gen)
    d = own(theta)
    gen.manual_seed(5)
    assert torch.equal(own(theta), d)


def test_several_samples_sum_their_gradients_into_theta():
    layer = sst.compile("layer l: bernoulli(5) { estimator: relaxed; temperature: 0.7 }")["l"]
    module = sst.torch.SSTLayer(layer, samples=4)
    theta = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    z = module(theta, seed=2)
    assert z.shape == (4, 3, 5)
    cot = torch.randn(4, 3, 5, dtype=torch.float64)
    (z * cot).sum().backward()
    fwd = layer.forward(theta.detach().numpy(), seed=2, samples=4)
    want = layer.backward(fwd, cot.numpy()).sum(axis=0)
    np.testing.assert_array_equal(theta.grad.numpy(), want)


def test_under_torch_compile_the_numbers_are_eager_ones():
    layer = sst.compile("layer l: permutation(4) { estimator: relaxed; temperature: 0.5 }")["l"]
    module = sst.torch.SSTLayer(layer)

    def model(theta, step):
        z = module(theta, seed=4, step=step)
        return z, (z**2).sum()

    compiled = torch.compile(model, fullgraph=True)
    base = torch.randn(2, 4, 4, dtype=torch.float64)
    for step in [0.0, 1.0]:
        runs = []
        for f in [model, compiled]:
            theta = base.clone().requires_grad_(True)
            z, loss = f(theta, torch.tensor(step))
            loss.backward()
            runs.append((z.detach(), loss.detach(), theta.grad))
        (z0, loss0, grad0), (z1, loss1, grad1) = runs
        # sst's numbers are the same; inductor may sum the loss in another order.
        assert torch.equal(z0, z1) and torch.equal(grad0, grad1)
        assert torch.allclose(loss0, loss1, rtol=1e-14)


def test_a_backward_after_z_was_written_into_is_refused():
    module = sst.torch.SSTLayer(sst.compile("layer l: categorical(3) { estimator: relaxed }")["l"])
    theta = torch.zeros(3, requires_grad=True)
    z = module(theta, seed=0)
    loss = (z * torch.arange(3.0)).sum()
    z.mul_(2)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_a_forward_without_its_kept_pass_is_recomputed():
    """The store of kept forward passes is bounded; a backward whose entry was evicted re-runs
    the forward from theta and the seed and gets the same gradient."""
    from sst._pending import PENDING

    module = sst.torch.SSTLayer(sst.compile("layer l: categorical(5) { estimator: relaxed }")["l"])
    grads = []
    for evict in [False, True]:
        theta = torch.linspace(-1, 1, 5, requires_grad=True)
        z = module(theta, seed=8)
        if evict:
            while len(PENDING):
                PENDING.take(next(iter(PENDING._items)))
        (z * torch.arange(5.0)).sum().backward()
        grads.append(theta.grad)
    assert torch.equal(grads[0], grads[1])
    assert len(PENDING) == 0


def test_no_grad_keeps_nothing():
    from sst._pending import PENDING

    module = sst.torch.SSTLayer(sst.compile("layer l: categorical(5) {}")["l"])
    with torch.no_grad():
        module(torch.zeros(5, requires_grad=True))
    module(torch.zeros(5))
    assert len(PENDING) == 0


def test_reinforce_through_the_surrogate_is_the_layers_score_function_gradient():
    """z passes no gradient back; the surrogate is 0 and its gradient, scaled by what reaches
    it, is Layer.reinforce for the same seed and losses (leave-one-out over 4 samples)."""
    spec = "layer l: categorical(5) { estimator: reinforce(baseline = leave_one_out) }"
    layer = sst.compile(spec)["l"]
    module = sst.torch.SSTLayer(layer, samples=4)
    theta = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    s = module.sample(theta, seed=12)
    losses = (s.z * torch.arange(5.0, dtype=torch.float64)).sum(dim=2)  # [4, 3]
    surrogate = s.surrogate(losses)
    assert surrogate.item() == 0.0
    (losses.sum() + 3.0 * surrogate).backward()
    fwd = layer.forward(theta.detach().numpy(), seed=12, samples=4)
    want = 3.0 * layer.reinforce(fwd, losses.detach().numpy()).sum(axis=0)
    np.testing.assert_array_equal(fwd.z, s.z.detach().numpy())
    np.testing.assert_allclose(theta.grad.numpy(), want, rtol=1e-15, atol=0)
    assert theta.grad.abs().sum() > 0

    plain = sst.torch.SSTLayer(sst.compile("layer l: categorical(5) {}")["l"])
    with pytest.raises(ValueError, match="surrogate is for reinforce"):
        plain.sample(theta).surrogate(torch.zeros(3))


def test_bad_requests_surface_as_request_errors():
    module = sst.torch.SSTLayer(sst.compile("layer pick: categorical(3) {}")["pick"])
    with pytest.raises(sst.RequestError, match="layer `pick`: theta: "):
        module(torch.zeros(4))
