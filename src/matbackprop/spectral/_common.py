"""Small batched helpers shared by the spectral layers: symmetrisation, input checks, TF32 guard."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

# Relative symmetry tolerance max|X - Xᵀ| / max|X| accepted by the input checks.
SYM_RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def sym(x: Tensor) -> Tensor:
    """sym(X) = (X + Xᵀ) / 2 over the last two dimensions."""
    return 0.5 * (x + x.mT)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Run CUDA float32 matmuls in full IEEE precision (as PyTorch's own linalg backward does)."""
    mm = torch.backends.cuda.matmul
    if hasattr(mm, "fp32_precision"):
        prev = mm.fp32_precision
        mm.fp32_precision = "ieee"
        try:
            yield
        finally:
            mm.fp32_precision = prev
    else:  # pragma: no cover - older PyTorch
        prev = mm.allow_tf32
        mm.allow_tf32 = False
        try:
            yield
        finally:
            mm.allow_tf32 = prev


def check_float(x: Tensor, name: str) -> None:
    """Raise ValueError unless `x` is a float32/float64 tensor with only finite values."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: expected float32 or float64, got {x.dtype}")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name}: input contains non-finite values (NaN or Inf)")


def check_symmetric(x: Tensor, name: str) -> None:
    """Raise ValueError unless `x` is a batch (..., n, n) of finite symmetric float matrices."""
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        shape = tuple(x.shape) if isinstance(x, Tensor) else None
        raise ValueError(f"{name}: expected square matrices of shape (..., n, n), got {shape}")
    check_float(x, name)
    if x.numel() == 0:
        return
    x = x.detach()
    asym = (x - x.mT).abs().amax(dim=(-2, -1))
    scale = x.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(x.dtype).tiny)
    worst = float((asym / scale).max())
    if worst > SYM_RTOL[x.dtype]:
        raise ValueError(
            f"{name}: input is not symmetric (max |X - Xᵀ| / max |X| = {worst:.3g} > "
            f"{SYM_RTOL[x.dtype]:g}); pass sym(X) = (X + Xᵀ)/2 if that is what you mean"
        )


def eig_tol(lam: Tensor) -> Tensor:
    """Absolute eigenvalue noise level n·eps·max|λ| per matrix, shape (..., 1)."""
    n = lam.shape[-1]
    return n * torch.finfo(lam.dtype).eps * lam.abs().amax(dim=-1, keepdim=True)
