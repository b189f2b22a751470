"""sst's Python package against PyTorch, side by side in one run (optional; never part of CI):
sst.torch Gumbel-softmax forward+backward (1024, 1000) f32 against F.gumbel_softmax,
Gumbel-Sinkhorn (64 x 50x50, 50 iterations, unrolled) against a torch log-domain Sinkhorn, and
the call overhead of a tiny layer (categorical(8), batch 1) through the numpy API and
sst.torch (F.gumbel_softmax on the same tiny input for scale).

Needs the package and torch: python/.venv (scripts/python-env, then `pip install ./python`).
    taskset -c 0 python/.venv/bin/python bench/peers/python_layers.py       # one core
    taskset -c 0-1 python/.venv/bin/python bench/peers/python_layers.py 2   # both cores
Prints the median ms of interleaved runs (timing.py's rule) and the ratio sst / torch
(> 1: sst is slower), with fresh noise on every call.
"""

import sys
import timeit

import numpy as np
import torch
import torch.nn.functional as F

import sst
import sst.torch
from timing import alternating_medians_ms

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
REPEATS = 15
T = 0.5
torch.set_num_threads(THREADS)


def fwd_bwd(theta, cot, f):
    def run():
        z = f(theta)
        (z * cot).sum().backward()
        theta.grad = None

    return run


def leaf(shape):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(shape, generator=gen).requires_grad_(True)
    return theta, torch.randn(shape, generator=gen)


def torch_sinkhorn(x, iters):
    for _ in range(iters):
        x = x - torch.logsumexp(x, dim=2, keepdim=True)
        x = x - torch.logsumexp(x, dim=1, keepdim=True)
    return torch.exp(x)


def gumbel(shape):
    u = torch.rand(shape).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(u))


def report(name, medians, sst_key, peer_key):
    cells = ", ".join(f"{k} {v:.3f} ms" for k, v in medians.items())
    print(f"{name}: {cells}; sst/torch {medians[sst_key] / medians[peer_key]:.2f}")


def main():
    print(f"threads {THREADS}, torch {torch.__version__}, median of {REPEATS} interleaved runs")
    softmax = sst.torch.SSTLayer(
        sst.compile(f"layer l: categorical(1000) {{ temperature: {T} }}")["l"]
    )
    theta, cot = leaf((1024, 1000))
    layer = softmax.layer
    th_np, cot_np = theta.detach().numpy(), cot.numpy()

    def numpy_api():
        layer.backward(layer.forward(th_np), cot_np)

    medians = alternating_medians_ms(
        {
            "sst.torch": fwd_bwd(theta, cot, softmax),
            "sst numpy API": numpy_api,
            "torch F.gumbel_softmax": fwd_bwd(theta, cot, lambda t: F.gumbel_softmax(t, tau=T, dim=1)),
        },
        REPEATS,
    )
    report("gumbel_softmax_fwd_bwd_1024x1000_f32", medians, "sst.torch", "torch F.gumbel_softmax")

    sinkhorn = sst.torch.SSTLayer(
        sst.compile(
            f"layer l: permutation(50) {{ solver: sinkhorn(iters = 50, tol = 1e-300); "
            f"backward: unrolled; temperature: {T} }}"
        )["l"]
    )
    theta, cot = leaf((64, 50, 50))
    medians = alternating_medians_ms(
        {
            "sst.torch": fwd_bwd(theta, cot, sinkhorn),
            "torch log-domain": fwd_bwd(
                theta, cot, lambda t: torch_sinkhorn((t + gumbel(t.shape)) / T, 50)
            ),
        },
        REPEATS,
    )
    report("sinkhorn_fwd_bwd_64x50x50_it50_f32", medians, "sst.torch", "torch log-domain")

    tiny = sst.compile("layer l: categorical(8) { estimator: relaxed }")["l"]
    tiny_torch = sst.torch.SSTLayer(tiny)
    th, c = np.zeros((1, 8), np.float32), np.ones((1, 8), np.float32)
    fwd = tiny.forward(th)
    t8, c8 = leaf((1, 8))
    calls = {
        "numpy API forward": lambda: tiny.forward(th),
        "numpy API backward": lambda: tiny.backward(fwd, c),
        "sst.torch forward+backward": fwd_bwd(t8, c8, tiny_torch),
        "torch F.gumbel_softmax forward+backward": fwd_bwd(t8, c8, lambda t: F.gumbel_softmax(t, tau=T)),
    }
    for name, f in calls.items():
        n = 2000
        best = min(timeit.repeat(f, number=n, repeat=5)) / n
        print(f"call overhead, categorical(8) batch 1, {name}: {best * 1e6:.1f} us")


if __name__ == "__main__":
    main()
