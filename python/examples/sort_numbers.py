"""Gumbel-Sinkhorn inside a PyTorch model learns to sort 8 numbers (Mena et al. 2018): the
Python port of examples/sort_numbers.rs.

The scores theta_ij = a_j * x_i + b_j come from two trainable vectors (the assignment is
invariant to row constants, so this can say "item i belongs near quantile j"); the layer
permutation(8) with Gumbel noise and Sinkhorn at T = 0.5 is an ``sst.torch.SSTLayer``; the
loss is mean (z - P*)^2 against the sorting permutation P*; Adam. Held out: 1000 new sequences
under the exact assignment without noise.

    python python/examples/sort_numbers.py [--steps 300] [--check]

(300 steps, a few seconds; ``--check`` exits 1 below 90 % of positions correct, the target
scripts/test checks.)
"""

import argparse
import sys

import torch

import sst
import sst.torch

N, BATCH = 8, 32
SPEC = """
layer sort: permutation(8) {
    noise:       gumbel
    regularizer: entropy         # Sinkhorn: the entropic relaxation of the assignment
    estimator:   relaxed
    temperature: 0.5
}
"""


def sorting_permutations(x):
    """P*[b, i, j] = 1 when x[b, i] is the j-th smallest of its sequence."""
    ranks = x.argsort(dim=1).argsort(dim=1)
    return torch.nn.functional.one_hot(ranks, N).to(x.dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(2026)  # the numbers and sst's noise seeds
    layer = sst.compile(SPEC)["sort"]
    train = sst.torch.SSTLayer(layer)
    exact = sst.torch.SSTLayer(layer, mode="hard", noise=False)
    a = torch.zeros(1, 1, N, requires_grad=True)
    b = torch.zeros(1, 1, N, requires_grad=True)
    adam = torch.optim.Adam([a, b], lr=0.1)

    losses = []
    for step in range(args.steps):
        x = torch.rand(BATCH, N)
        z = train(x[:, :, None] * a + b, step=step)
        loss = ((z - sorting_permutations(x)) ** 2).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()
        losses.append(loss.item())

    x = torch.rand(1000, N)
    with torch.no_grad():
        z = exact(x[:, :, None] * a + b)
    right = z * sorting_permutations(x)
    positions = right.sum().item() / (1000 * N)
    sorted_rows = (right.sum(dim=(1, 2)) == N).float().mean().item()
    print(
        f"sort_numbers (torch): loss {losses[0]:.4f} -> {losses[-1]:.4f} in {args.steps} steps; "
        f"held out: {100 * positions:.1f}% of positions correct, {100 * sorted_rows:.1f}% fully sorted"
    )
    if args.check and positions < 0.9:
        print(f"target missed: {100 * positions:.1f}% of positions correct, below 90%")
        sys.exit(1)


if __name__ == "__main__":
    main()
