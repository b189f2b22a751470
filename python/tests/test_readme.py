"""The README's Python blocks run as written."""

import re

import torch

import sst.torch
from conftest import REPO


def test_readme_python_blocks_run():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2, blocks
    for block in blocks:
        torch.manual_seed(2026)  # the blocks' numbers and sst's noise seeds
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
    # The training loop's loss is noisy (Gumbel noise at T = 0.5 keeps it near 0.1 even at the
    # optimum), so what it learned is judged as sort_numbers.py judges it: the exact assignment
    # without noise under the learned scores puts at least 90 % of 1000 held-out numbers in
    # their sorted position (chance: 1/8).
    exact = sst.torch.SSTLayer(namespace["layer"], mode="hard", noise=False)
    x = torch.rand(1000, 8)
    with torch.no_grad():
        z = exact(x[:, :, None] * namespace["a"] + namespace["b"])
    target = torch.nn.functional.one_hot(x.argsort(1).argsort(1), 8).float()
    assert (z * target).sum().item() / 8000 >= 0.9
