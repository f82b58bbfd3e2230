"""The README's API example runs and does what its comments say."""

import re

import torch

from tests.conftest import ROOT


def test_readme_python_example():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["desc"].shape == (8, 32896) and ns["desc"].dtype == torch.float32
    assert torch.isfinite(ns["x"].grad).all()
    g = ns["G"]
    assert torch.equal(ns["X"].grad, (g + g.T) / 4)  # "exactly, at a 4-fold tie"
    loss, rank = ns["loss"], ns["rank"]
    assert loss.shape == (2,) and rank.tolist() == [64, 64]
