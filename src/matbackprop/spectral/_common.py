"""Small batched helpers shared by the spectral layers: symmetrisation, input checks, precision.

Precision: every public layer runs with autocast disabled for its input's device and casts
low-precision inputs (bfloat16/float16, e.g. a trunk's output under ``torch.autocast``) up to
float32 (:func:`full_precision`, :func:`upcast`); gradients flow back to the low-precision
input in its own dtype through the cast.

Host synchronisation: the layers synchronise with the device only to validate their inputs —
one fused check per call (:func:`check_float`, :func:`check_symmetric`: one ``.item()`` each).
``set_validation(False)`` (or the ``validate=False`` argument where a layer has one) skips
the checks for trusted hot loops; invalid inputs then give NaN outputs instead of errors.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import Tensor

# Relative symmetry tolerance max|X - Xᵀ| / max|X| accepted by the input checks.
SYM_RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
FLOATS = (torch.float32, torch.float64)
LOW_PRECISION = (torch.bfloat16, torch.float16)

_VALIDATE = True
F = TypeVar("F", bound=Callable)


def set_validation(enabled: bool) -> bool:
    """Turn the spectral layers' input checks on or off for the whole process; returns the old
    setting. Off, no layer synchronises with the device to validate (``validate=`` arguments
    still turn checks off per call, never on)."""
    global _VALIDATE
    old, _VALIDATE = _VALIDATE, bool(enabled)
    return old


def validation_enabled() -> bool:
    """Whether input checks run (see :func:`set_validation`)."""
    return _VALIDATE


def sym(x: Tensor) -> Tensor:
    """sym(X) = (X + Xᵀ) / 2 over the last two dimensions."""
    return (x + x.mT).mul_(0.5)  # one temporary, halved in place (autograd-safe: add keeps nothing)


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


def _autocast_off() -> contextlib.AbstractContextManager:
    """Disable autocast on every device type where it is on (a no-op context otherwise)."""
    on = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for d in on:
        stack.enter_context(torch.autocast(d, enabled=False))
    return stack


@contextlib.contextmanager
def exact() -> Iterator[None]:
    """Backward-pass context: autocast off and IEEE float32 matmuls (no TF32)."""
    with _autocast_off(), no_tf32():
        yield


def full_precision(fn: F) -> F:
    """Decorator: run a layer with autocast disabled (its own dtypes decide the precision)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _autocast_off():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def upcast(x: Tensor) -> Tensor:
    """bfloat16/float16 -> float32 (differentiable; the gradient comes back in x's dtype);
    float32/float64 and non-tensors pass through."""
    if isinstance(x, Tensor) and x.dtype in LOW_PRECISION:
        return x.float()
    return x


class InvalidValuesError(ValueError):
    """The input's values, not its shape or type, are invalid: non-finite entries, a matrix
    that is not positive (semi-)definite, or a scale that overflowed its dtype. Inside a
    training loop this is how divergence reaches a structured layer (``matbackprop.engine``
    reports it as such); shape and type errors stay plain ``ValueError``s."""


def refuse_double_backward(name: str) -> None:
    """Call first in a layer's ``backward``: raise unless the backward runs without a graph.

    The layers' backward passes are exact but not themselves differentiable (they use the saved
    eigen-/singular vectors as constants), so a second derivative through them — ``create_graph
    =True``: Hessian-vector products, gradient penalties, MAML — would silently miss the terms
    from the dependence of U, Λ on the input. Instead of a wrong number this raises at once.
    (Inside a backward pass grad mode is on exactly when ``create_graph=True``.)
    """
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"{name}: double backward (create_graph=True: Hessian-vector products, gradient "
            "penalties through this layer, MAML) is not supported: its exact backward is not "
            "itself differentiable, and a second derivative through it would be wrong. Take "
            "second derivatives by finite differences of gradients, or keep this layer out of "
            "the create_graph=True pass"
        )


def _check_type(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise ValueError(
            f"{name}: expected float32 or float64 (bfloat16/float16 are cast up to float32), "
            f"got {x.dtype}"
        )


def _minmax_finite(x: Tensor) -> Tensor:
    """0-dim bool tensor: every entry of the non-empty x is finite. One pass (min and max
    propagate NaN, and ±inf shows in them) instead of isfinite's several."""
    lo, hi = torch.aminmax(x.detach())
    return torch.isfinite(lo) & torch.isfinite(hi)


def _all_finite(x: Tensor) -> bool:
    return bool(_minmax_finite(x))  # the one sync


def check_float(x: Tensor, name: str) -> None:
    """Raise ValueError unless `x` is a float32/float64 tensor with only finite values.

    One host synchronisation; none when validation is off (:func:`set_validation`)."""
    _check_type(x, name)
    if _VALIDATE and x.numel() and not _all_finite(x):
        raise InvalidValuesError(f"{name}: input contains non-finite values (NaN or Inf)")


def check_symmetric(x: Tensor, name: str) -> None:
    """Raise ValueError unless `x` is a batch (..., n, n) of finite symmetric float matrices.

    Finiteness and symmetry are fused into one host synchronisation (none when validation
    is off)."""
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        shape = tuple(x.shape) if isinstance(x, Tensor) else None
        raise ValueError(f"{name}: expected square matrices of shape (..., n, n), got {shape}")
    _check_type(x, name)
    if not _VALIDATE or x.numel() == 0:
        return
    x = x.detach()
    asym = (x - x.mT).abs().amax(dim=(-2, -1))
    lo, hi = torch.aminmax(x.flatten(-2), dim=-1)  # one pass for scale and finiteness
    scale = torch.maximum(-lo, hi).clamp_min(torch.finfo(x.dtype).tiny)
    worst = (asym / scale).amax()
    finite = torch.isfinite(lo).all() & torch.isfinite(hi).all()
    worst = float(torch.where(finite, worst, -1.0))  # the one sync
    if worst < 0:
        raise InvalidValuesError(f"{name}: input contains non-finite values (NaN or Inf)")
    if worst > SYM_RTOL[x.dtype]:
        raise ValueError(
            f"{name}: input is not symmetric (max |X - Xᵀ| / max |X| = {worst:.3g} > "
            f"{SYM_RTOL[x.dtype]:g}); pass sym(X) = (X + Xᵀ)/2 if that is what you mean"
        )


def eig_tol(lam: Tensor) -> Tensor:
    """Absolute eigenvalue noise level n·eps·max|λ| per matrix, shape (..., 1)."""
    n = lam.shape[-1]
    return n * torch.finfo(lam.dtype).eps * lam.abs().amax(dim=-1, keepdim=True)
