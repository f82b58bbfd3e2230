r"""SVD layer: X = U Σ Vᵀ (thin), with the matrix-backpropagation backward (SPEC §2).

With K_ij = 1/(σ_i² − σ_j²) (i ≠ j), K_ii = 0, k = min(m, n), and Ū, Σ̄, V̄ the incoming
gradients, the general backward is::

    ∂L/∂X = U [ Kᵀ∘(UᵀŪ − ŪᵀU) Σ + Σ̄_diag + Σ Kᵀ∘(VᵀV̄ − V̄ᵀV) ] Vᵀ
            + (I − UUᵀ) Ū Σ⁻¹ Vᵀ + U Σ⁻¹ V̄ᵀ (I − VVᵀ)

The last two terms vanish when U (resp. V) is square. With Ū = 0 this is the paper's
pooling case ``∂L/∂X = U (2Σ sym(Kᵀ ∘ (Vᵀ∂L/∂V)) + (∂L/∂Σ)_diag) Vᵀ``.
As for the EIG layer, singular-vector gradients are undefined at tied singular values
(K set to 0 at exact ties) and the Σ⁻¹ terms need σ > 0. K is never formed from σ²: the
backward uses Kᵀ_ij σ_j = 1/(σ_j − σ_i) · σ_j/(σ_j + σ_i) on σ/σ_max, so it is correct at any
scale whose gradient is representable (float32 σ ≈ 1e-30 … 1e30, float64 1e-300 … 1e300).
Double backward is refused (``NotImplementedError``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_float, exact, full_precision, refuse_double_backward, upcast
from .eig import inv_gaps


def scaled_gap_terms(s: Tensor) -> tuple[Tensor, Tensor]:
    """(Kᵀ_ij σ_j, σ_i Kᵀ_ij) with Kᵀ_ij = 1/(σ_j² − σ_i²), 0 on the diagonal and at exact ties.

    Scale-aware: with σ̃ = σ/σ_max (a power of two, so exact) and
    1/(σ_j² − σ_i²) = 1/((σ̃_j − σ̃_i)(σ̃_j + σ̃_i)) / σ_max², the terms are
    [1/(σ̃_j − σ̃_i)] · [σ̃_j/(σ̃_j + σ̃_i)] / σ_max: no σ² is ever formed, so nothing overflows or
    underflows where the result itself is representable (float32 σ from 1e-30 to 1e30).
    Shape: (..., k) -> two (..., k, k).
    """
    smax = s.abs().amax(-1, keepdim=True)
    tiny = torch.finfo(s.dtype).tiny
    scale = torch.exp2(torch.floor(torch.log2(smax.clamp_min(tiny))))  # (..., 1), a power of 2
    st = s / scale  # σ̃ ∈ [0, 2)
    inv_diff = inv_gaps(st)  # 1/(σ̃_j − σ̃_i), 0 at ties
    total = st.unsqueeze(-2) + st.unsqueeze(-1)  # σ̃_j + σ̃_i
    safe = torch.where(total == 0, torch.ones_like(total), total)
    kt_sj = inv_diff * (st.unsqueeze(-2) / safe) / scale.unsqueeze(-1)
    si_kt = inv_diff * (st.unsqueeze(-1) / safe) / scale.unsqueeze(-1)
    return kt_sj, si_kt


class _SVD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)  # (..., m, k), (..., k), (..., k, n)
        v = vh.mT
        ctx.save_for_backward(u, s, v)
        return u, s, v

    @staticmethod
    def backward(ctx, gu: Tensor | None, gs: Tensor | None, gv: Tensor | None):
        refuse_double_backward("svd_layer")
        u, s, v = ctx.saved_tensors
        m, n, k = u.shape[-2], v.shape[-2], s.shape[-1]
        with exact():
            # Kᵀ_ij σ_j and σ_i Kᵀ_ij, scale-aware (see scaled_gap_terms): no σ² is formed
            kt_sj, si_kt = scaled_gap_terms(s)
            inner = torch.zeros(*s.shape, k, dtype=s.dtype, device=s.device)
            if gs is not None:
                inner = inner + torch.diag_embed(gs)
            if gu is not None:
                utgu = u.mT @ gu
                inner = inner + kt_sj * (utgu - utgu.mT)
            if gv is not None:
                vtgv = v.mT @ gv
                inner = inner + si_kt * (vtgv - vtgv.mT)
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
        NotImplementedError: double backward (``create_graph=True``).

    Example:
        >>> u, s, v = svd_layer(torch.tensor([[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]]))
        >>> s
        tensor([3., 2.])
        >>> u.shape, v.shape
        (torch.Size([3, 2]), torch.Size([2, 2]))
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
