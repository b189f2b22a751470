"""The numpy API: the same bits as the Rust layer (through ``sst eval``), memory handling,
the released interpreter lock, and errors."""

import json
import subprocess
import threading
import time

import numpy as np
import pytest

import sst
from conftest import theta_for

ESTIMATORS = ["relaxed", "straight_through", "gumbel_rao(draws = 4)", "reinforce(baseline = none)"]


def cli(sst_bin, tmp_path, spec, request):
    path = tmp_path / "l.sst"
    path.write_text(spec)
    out = subprocess.run(
        [str(sst_bin), "eval", str(path)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_are_the_rust_layers_bits(sst_bin, tmp_path, estimator, dtype):
    """Every support × estimator × precision, hard and soft, one and three samples: z, w and
    the gradient equal `sst eval`'s, bit for bit (supports that refuse the estimator are
    left out; at least two take each)."""
    rng = np.random.default_rng(7)
    checked = 0
    for support in sst.supports():
        spec = f"layer l: {support['instance']} {{ estimator: {estimator} }}"
        try:
            layer = sst.compile(spec)["l"]
        except sst.SpecError as e:
            assert "is not available for" in str(e), e
            continue
        checked += 1
        for mode in ["hard", "soft"]:
            for samples in [1, 3]:
                theta = theta_for(layer, rng, dtype=dtype)
                cot = rng.normal(size=theta.shape).astype(dtype)
                fwd = layer.forward(theta, seed=11, mode=mode, samples=samples)
                grad = layer.backward(fwd, cot)
                want = cli(
                    sst_bin,
                    tmp_path,
                    spec,
                    {
                        "theta": theta.tolist(),
                        "dtype": "f32" if dtype == np.float32 else "f64",
                        "mode": mode,
                        "noise": {"seed": 11},
                        "samples": samples,
                        "with_w": True,
                        "cotangent": cot.tolist(),
                    },
                )
                what = f"{spec} {mode} samples={samples} {dtype.__name__}"
                assert fwd.z.dtype == dtype and grad.dtype == dtype, what
                np.testing.assert_array_equal(fwd.z, np.array(want["z"], dtype), what)
                np.testing.assert_array_equal(grad, np.array(want["grad_theta"], dtype), what)
                if layer.plan()["program"]["scores"] == "identity":
                    np.testing.assert_array_equal(fwd.w, np.array(want["w"], dtype), what)
    assert checked >= 2, checked


def test_outputs_are_read_only_views_that_keep_the_forward_alive():
    layer = sst.compile("layer l: categorical(5) { estimator: relaxed }")["l"]
    theta = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    z = layer.forward(theta, seed=1).z
    again = layer.forward(theta, seed=1).z.copy()
    assert not z.flags.writeable
    with pytest.raises(ValueError):
        z[0, 0] = 1.0
    assert isinstance(z.base, sst.Forward)
    import gc

    gc.collect()
    np.testing.assert_array_equal(z, again)
    # numpy.asarray(fwd) is z without a copy.
    fwd = layer.forward(theta, seed=1)
    assert np.shares_memory(np.asarray(fwd), fwd.z)


def test_theta_is_read_in_place_whatever_its_strides():
    layer = sst.compile("layer l: categorical(5) { estimator: relaxed }")["l"]
    big = np.random.default_rng(0).normal(size=(4, 10))
    strided = big[::2, ::2]
    assert not strided.flags.c_contiguous
    a = layer.forward(strided, seed=3).z
    b = layer.forward(np.ascontiguousarray(strided), seed=3).z
    np.testing.assert_array_equal(a, b)


def test_a_fresh_seed_unless_one_is_given_and_the_seed_replays():
    layer = sst.compile("layer l: categorical(50) { estimator: straight_through }")["l"]
    theta = np.zeros(50)
    a, b = layer.forward(theta), layer.forward(theta)
    assert a.seed != b.seed
    np.testing.assert_array_equal(layer.forward(theta, seed=a.seed).z, a.z)
    assert layer.forward(theta, noise=False, mode="soft").z == pytest.approx(np.full(50, 0.02))


def test_the_interpreter_lock_is_released_while_a_kernel_runs():
    """A Python thread keeps counting while a long forward pass runs in another."""
    layer = sst.compile(
        "layer l: permutation(50) { solver: sinkhorn(iters = 400, tol = 1e-300); estimator: relaxed }"
    )["l"]
    theta = np.random.default_rng(0).normal(size=(16, 50, 50))
    done = threading.Event()
    counts = []

    def count():
        n = 0
        while not done.is_set():
            n += 1
        counts.append(n)

    worker = threading.Thread(target=count)
    start = time.perf_counter()
    layer.forward(theta, seed=0, threads=1)  # warm-up: compile
    worker.start()
    layer.forward(theta, seed=0, threads=1)
    done.set()
    worker.join()
    elapsed = time.perf_counter() - start
    assert elapsed > 0.01, elapsed
    # With the lock held the counter would run only between calls (a few switch intervals).
    assert counts[0] > 10_000, counts


def test_bad_requests_raise_one_line_naming_layer_and_field():
    layer = sst.compile("layer pick: categorical(4) { temperature: 0.5 }")["pick"]
    cases = [
        (lambda: layer.forward(np.zeros(5)), "theta"),
        (lambda: layer.forward(np.array([0.0, np.nan, 0, 0])), "theta"),
        (lambda: layer.forward(np.zeros(4), mode="firm"), "mode"),
        (lambda: layer.forward(np.zeros(4), temperature=-1.0), "temperature"),
        (lambda: layer.forward(np.zeros(4), samples=0), "samples"),
        (lambda: layer.forward(np.zeros(4), samples=-2), "samples"),
        (lambda: layer.forward(np.zeros(4), seed=-1), "seed"),
        (lambda: layer.forward(np.zeros(4), seed=2**64), "seed"),
        (lambda: layer.forward(np.zeros(4), threads=-1), "threads"),
        (lambda: layer.forward(np.zeros(4), backend="gpu"), "backend"),
        (lambda: layer.forward(np.zeros(4), threads=0), "threads"),
        (lambda: layer.forward(["a", "b", "c", "d"]), "theta"),
        (lambda: layer.backward(layer.forward(np.zeros(4)), np.zeros(3)), "cotangent"),
        (lambda: layer.backward(layer.forward(np.zeros(4)), np.zeros(4, np.float32)), "cotangent"),
        (lambda: layer.reinforce(layer.forward(np.zeros(4)), np.zeros(())), "estimator"),
    ]
    for call, field in cases:
        with pytest.raises(sst.RequestError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message, message
        assert message.startswith(f"layer `pick`: {field}: "), message
        assert (info.value.layer, info.value.field) == ("pick", field)


def test_a_forward_pass_goes_back_only_to_its_layer():
    spec = sst.compile("layer a: categorical(3) {}\nlayer b: categorical(3) {}")
    fwd = spec["a"].forward(np.zeros(3))
    with pytest.raises(sst.RequestError, match="made by another layer"):
        spec["b"].backward(fwd, np.zeros(3))


def test_spec_errors_show_the_caret_diagnostic(tmp_path):
    with pytest.raises(sst.SpecError) as info:
        sst.compile("layer x: categorical(4) { temperatur: 0.5 }")
    text = str(info.value)
    assert "<spec>:1:27" in text and "^" in text and "did you mean `temperature`?" in text
    path = tmp_path / "bad.sst"
    path.write_text("layer y: subset(3, 5) {}\n")
    with pytest.raises(sst.SpecError, match=str(path) + ":1:"):
        sst.compile(path)
    with pytest.raises(sst.SpecError, match=str(path) + ":1:"):
        sst.compile(str(path))
    with pytest.raises(OSError):
        sst.compile(tmp_path / "missing.sst")
    with pytest.raises(KeyError, match="the spec declares: x"):
        sst.compile("layer x: categorical(2) {}")["nope"]


def test_reinforce_takes_the_losses_of_a_hard_forward_pass():
    """Score-function gradient of a categorical with no baseline: (f(z) − 0)·(z − softmax θ)."""
    layer = sst.compile("layer l: categorical(4) { estimator: reinforce(baseline = none) }")["l"]
    theta = np.array([[0.1, -0.3, 0.7, 0.0]])
    fwd = layer.forward(theta, seed=5)
    grad = layer.reinforce(fwd, np.array([2.0]))
    p = np.exp(theta) / np.exp(theta).sum()
    np.testing.assert_allclose(grad, 2.0 * (fwd.z - p), rtol=1e-12, atol=1e-15)


def test_plan_and_backend():
    layer = sst.compile("layer l: categorical(4) { estimator: relaxed }")["l"]
    plan = layer.plan()
    assert plan["soft_solver"] == "softmax" and plan["program"]["soft"] == "softmax"
    assert layer.backend("float32") == ("jit", None)
    assert sst.compile("layer l: permutation(3) {}")["l"].backend("float64") == ("jit", None)
    name, why = sst.compile("layer l: poisson(max = 8) {}")["l"].backend("float64")
    assert name == "reference" and "count score maps" in why
