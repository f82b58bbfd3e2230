r"""Orthogonal projector layer Π(Z) = Z Z⁺ onto the column space of Z (SPEC §2).

Forward via the thin SVD Z = U Σ Vᵀ, keeping the r singular values above ``rtol · σ_max``
(default ``rtol = max(m, n) · eps``, as ``torch.linalg.matrix_rank``): Π = U_r U_rᵀ, Z⁺ = V_r Σ_r⁻¹ U_rᵀ.

Backward, from dΠ = 2 sym((I − Π) dZ Z⁺)::

    ∂L/∂Z = 2 (I − Π) sym(∂L/∂Π) (Z⁺)ᵀ

valid where the numerical rank of Z is locally constant (log it: :func:`numerical_rank`).
Double backward is refused (``NotImplementedError``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_float, exact, full_precision, refuse_double_backward, sym, upcast


def _rank_mask(s: Tensor, rtol: float | None, m: int, n: int) -> Tensor:
    """(…, k) bool: singular values above rtol · σ_max (σ descending)."""
    if rtol is None:
        rtol = max(m, n) * torch.finfo(s.dtype).eps
    return s > rtol * s[..., :1]


@full_precision
def numerical_rank(z: Tensor, rtol: float | None = None) -> Tensor:
    """Numerical rank of each matrix: #σ > rtol · σ_max. Shape: (..., m, n) -> (...) int64."""
    s = torch.linalg.svdvals(upcast(z))
    return _rank_mask(s, rtol, z.shape[-2], z.shape[-1]).sum(-1)


class _Projector(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, rtol: float | None):
        u, s, vh = torch.linalg.svd(z, full_matrices=False)  # (..., m, k), (..., k), (..., k, n)
        keep = _rank_mask(s, rtol, z.shape[-2], z.shape[-1])  # (..., k)
        u_r = u * keep.unsqueeze(-2)
        s_inv = torch.where(keep, 1.0 / torch.where(keep, s, 1.0), 0.0)
        ctx.save_for_backward(u_r, s_inv, vh)
        return u_r @ u_r.mT  # (..., m, m)

    @staticmethod
    def backward(ctx, g: Tensor):
        refuse_double_backward("projector")
        u_r, s_inv, vh = ctx.saved_tensors
        with exact():
            a = sym(g) @ (u_r * s_inv.unsqueeze(-2))  # sym(G) U Σ⁺ (..., m, k)
            a = a - u_r @ (u_r.mT @ a)  # (I − Π) ...
            gz = 2.0 * a @ vh  # (..., m, n)
        return gz, None


@full_precision
def projector(z: Tensor, rtol: float | None = None, validate: bool = True) -> Tensor:
    r"""Orthogonal projector Π = Z Z⁺ onto the column space of Z, with the paper's backward.

    .. math:: ∂L/∂Z = 2 (I − Π)\, \mathrm{sym}(∂L/∂Π)\, (Z⁺)ᵀ

    Args:
        z: matrices (bfloat16/float16 are cast up to float32; autocast is off inside).
        rtol: relative rank tolerance on singular values (default ``max(m, n) · eps``).
        validate: check dtype/finiteness first (one host sync; see ``set_validation``).

    Shape:
        z (..., m, n) -> (..., m, m).

    Example:
        >>> projector(torch.tensor([[1.0], [1.0]]))
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    z = upcast(z)
    if validate:
        if not isinstance(z, Tensor) or z.ndim < 2:
            raise ValueError(
                f"projector: expected (..., m, n) matrices, got {getattr(z, 'shape', z)}"
            )
        check_float(z, "projector")
    return _Projector.apply(z, rtol)


class Projector(nn.Module):
    """Module form of :func:`projector`."""

    def __init__(self, rtol: float | None = None) -> None:
        super().__init__()
        self.rtol = rtol

    def forward(self, z: Tensor) -> Tensor:
        return projector(z, self.rtol)
