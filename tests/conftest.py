"""Shared test helpers."""

import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import ``scripts/<name>.py`` as the module ``scripts.<name>`` (the repository root is on
    ``sys.path`` under pytest: ``tests`` is a package)."""
    return importlib.import_module(f"scripts.{name}")


# ----------------------------------------------------------------------------- device × dtype
# One set of fixtures for the spectral tests (as kornia's): every device present (CPU, CUDA
# when available) × float32 / float64, and dtype-aware tolerances in one place.

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]

# (rtol, atol) per dtype and kind of comparison: "value" (a well-conditioned forward),
# "grad" (a backward through an eigendecomposition: float32 loses ~cond · eps)
_TOL = {
    ("value", torch.float32): (2e-5, 2e-5),
    ("value", torch.float64): (1e-10, 1e-10),
    ("grad", torch.float32): (1e-4, 1e-5),
    ("grad", torch.float64): (1e-8, 1e-10),
}


def tol(dtype: torch.dtype, kind: str = "value") -> dict:
    """``dict(rtol=..., atol=...)`` for ``torch.testing.assert_close`` at this dtype."""
    rtol, atol = _TOL[(kind, dtype)]
    return dict(rtol=rtol, atol=atol)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every available device: cpu, and cuda when present."""
    return torch.device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """float32 and float64."""
    return request.param
