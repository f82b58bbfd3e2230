"""The ``Example`` blocks of the spectral docstrings and the README's Python blocks run as
tests (doctest / exec), so what the documentation shows is what the code does."""

import doctest
import importlib
import pkgutil
import re

import pytest
import torch

import matbackprop.spectral as spectral

from ..conftest import ROOT

MODULES = sorted(
    f"matbackprop.spectral.{m.name}" for m in pkgutil.iter_modules(spectral.__path__)
) + ["matbackprop.spectral"]


def _examples(modname):
    module = importlib.import_module(modname)
    finder = doctest.DocTestFinder(exclude_empty=True)
    globs = {"torch": torch, **vars(spectral)}
    return [t for t in finder.find(module, modname, globs=globs) if t.examples]


def test_every_public_op_has_an_example():
    documented = {t.name.rsplit(".", 1)[-1] for m in MODULES for t in _examples(m)}
    ops = {"eig_layer", "svd_layer", "sym_logm", "sym_sqrtm", "sym_powm", "sym_expm",
           "sym_matfun", "log_cov_pool", "triu_vec", "projector", "ncut_alignment_loss"}  # fmt: skip
    assert ops <= documented, sorted(ops - documented)


@pytest.mark.parametrize("modname", MODULES)
def test_docstring_examples(modname):
    tests = _examples(modname)
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
    )
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def _readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_python_blocks():
    assert _readme_python_blocks()


@pytest.mark.parametrize("i", range(len(_readme_python_blocks())))
def test_readme_python_block_runs(i):
    torch.manual_seed(0)
    exec(compile(_readme_python_blocks()[i], f"README.md python block {i}", "exec"), {})
