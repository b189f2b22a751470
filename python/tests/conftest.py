"""Shared helpers of the Python package's tests.

Plans are generated from ``sst.supports()`` (the Rust registry), so a new support is tested
here without naming it, as the Rust generic tests do.
"""

import os
import pathlib

import numpy as np
import pytest
import torch

import sst

REPO = pathlib.Path(__file__).resolve().parents[2]


def relaxed_specs():
    """``(id, spec)`` for every support's moderate instance × soft solver × native backward
    rule, relaxed (soft forward, soft backward), with iterative solvers run to a tight
    tolerance (``implicit``) or for a fixed count (``unrolled``: a tolerance never reached)."""
    out = []
    for support in sst.supports():
        for solver in support["solvers"]:
            for rule in solver["rules"]:
                args = []
                if "tol" in solver["params"]:
                    args.append("tol = 1e-300" if rule == "unrolled" else "tol = 1e-12")
                if "iters" in solver["params"] and rule == "unrolled":
                    args.append("iters = 50")
                call = solver["solver"] + (f"({', '.join(args)})" if args else "")
                spec = (
                    f"layer l: {support['instance']} {{ regularizer: {solver['regularizer']}; "
                    f"solver: {call}; backward: {rule}; estimator: relaxed; temperature: 1 }}"
                )
                out.append((f"{support['name']}-{solver['regularizer']}-{rule}", spec))
    return out


def theta_for(layer, rng, batch=(2,), dtype=np.float64):
    return rng.normal(size=(*batch, *layer.shape)).astype(dtype)


@pytest.fixture(autouse=True)
def torch_seeded():
    """Every test starts from the same torch generator state, so a run in CI draws the numbers
    it drew here."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def sst_bin():
    """The ``sst`` binary built by ``cargo test --release`` (or $SST_BIN)."""
    path = pathlib.Path(os.environ.get("SST_BIN", REPO / "target" / "release" / "sst"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build --release` (or set SST_BIN)")
    return path
