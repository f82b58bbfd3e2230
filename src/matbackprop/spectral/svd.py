r"""SVD layer: X = U Σ Vᵀ (thin), with the matrix-backpropagation backward (SPEC §2).

With K_ij = 1/(σ_i² − σ_j²) (i ≠ j), K_ii = 0, k = min(m, n), and Ū, Σ̄, V̄ the incoming
gradients, the general backward is::

    ∂L/∂X = U [ Kᵀ∘(UᵀŪ − ŪᵀU) Σ + Σ̄_diag + Σ Kᵀ∘(VᵀV̄ − V̄ᵀV) ] Vᵀ
            + (I − UUᵀ) Ū Σ⁻¹ Vᵀ + U Σ⁻¹ V̄ᵀ (I − VVᵀ)

The last two terms vanish when U (resp. V) is square. With Ū = 0 this is the paper's
pooling case ``∂L/∂X = U (2Σ sym(Kᵀ ∘ (Vᵀ∂L/∂V)) + (∂L/∂Σ)_diag) Vᵀ``.
As for the EIG layer, singular-vector gradients are undefined at tied singular values
(K set to 0 at exact ties) and the Σ⁻¹ terms need σ > 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_float, exact, full_precision, upcast
from .eig import inv_gaps


class _SVD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)  # (..., m, k), (..., k), (..., k, n)
        v = vh.mT
        ctx.save_for_backward(u, s, v)
        return u, s, v

    @staticmethod
    def backward(ctx, gu: Tensor | None, gs: Tensor | None, gv: Tensor | None):
        u, s, v = ctx.saved_tensors
        m, n, k = u.shape[-2], v.shape[-2], s.shape[-1]
        with exact():
            kt = inv_gaps(s * s)  # Kᵀ_ij = 1/(σ_j² − σ_i²)
            inner = torch.zeros(*s.shape, k, dtype=s.dtype, device=s.device)
            if gs is not None:
                inner = inner + torch.diag_embed(gs)
            if gu is not None:
                utgu = u.mT @ gu
                inner = inner + (kt * (utgu - utgu.mT)) * s.unsqueeze(-2)
            if gv is not None:
                vtgv = v.mT @ gv
                inner = inner + s.unsqueeze(-1) * (kt * (vtgv - vtgv.mT))
            gx = u @ inner @ v.mT
            if gu is not None and m > k:
                gx = gx + ((gu - u @ utgu) / s.unsqueeze(-2)) @ v.mT
            if gv is not None and n > k:
                gx = gx + u @ ((gv - v @ vtgv) / s.unsqueeze(-2)).mT
        return gx


@full_precision
def svd_layer(x: Tensor, validate: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    r"""Thin SVD X = U diag(S) Vᵀ with the matrix-backpropagation backward.

    Note the third output is V, not Vᴴ. Singular values are descending. bfloat16/float16
    inputs are cast up to float32 (autocast is off inside); ``validate`` costs one host sync.

    Shape:
        x (..., m, n) -> U (..., m, k), S (..., k), V (..., n, k), k = min(m, n).

    Raises:
        ValueError: input not a float32/float64 matrix batch, or non-finite.
    """
    x = upcast(x)
    if validate:
        if not isinstance(x, Tensor) or x.ndim < 2:
            raise ValueError(
                f"svd_layer: expected (..., m, n) matrices, got {getattr(x, 'shape', x)}"
            )
        check_float(x, "svd_layer")
    return _SVD.apply(x)


class SVDLayer(nn.Module):
    """Module form of :func:`svd_layer`."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return svd_layer(x)
