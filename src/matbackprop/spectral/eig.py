r"""EIG layer: X = U Σ Uᵀ for symmetric X, with the paper's backward (SPEC §2).

Backward, with K̃_ij = 1/(σ_i − σ_j) for i ≠ j and K̃_ii = 0::

    ∂L/∂X = U ( sym(K̃ᵀ ∘ (Uᵀ ∂L/∂U)) + (∂L/∂Σ)_diag ) Uᵀ

from the first variation dU = U (K̃ᵀ ∘ (Uᵀ dX U)), dΣ = (Uᵀ dX U)_diag.

Eigenvector gradients are undefined at tied eigenvalues (σ_i = σ_j): the eigenvectors of a
repeated eigenvalue are only defined up to a rotation of their eigenspace. Where a gap is
exactly zero this layer sets K̃_ij = 0 (the minimum-norm choice, exact for losses that do not
depend on the basis chosen inside the eigenspace); near-ties give correct but huge gradients.
For functions of the spectrum (log, sqrt, powers) use :mod:`matbackprop.spectral.matfun`, whose
Daleckii–Krein backward is exact at ties. Double backward is refused (``NotImplementedError``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_symmetric, exact, full_precision, refuse_double_backward, sym, upcast


def inv_gaps(sigma: Tensor) -> Tensor:
    """K̃ᵀ with K̃ᵀ_ij = 1/(σ_j − σ_i) off the diagonal, 0 on it and at exact ties. (..., n, n)."""
    diff = sigma.unsqueeze(-2) - sigma.unsqueeze(-1)  # diff_ij = σ_j − σ_i
    zero = diff == 0
    return torch.where(zero, torch.zeros_like(diff), 1.0 / torch.where(zero, 1.0, diff))


class _Eig(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor):
        sigma, u = torch.linalg.eigh(x)  # (..., n) ascending, (..., n, n)
        ctx.save_for_backward(sigma, u)
        return sigma, u

    @staticmethod
    def backward(ctx, g_sigma: Tensor | None, g_u: Tensor | None):
        refuse_double_backward("eig_layer")
        sigma, u = ctx.saved_tensors
        with exact():
            inner = torch.zeros_like(u)
            if g_u is not None:
                inner = sym(inv_gaps(sigma) * (u.mT @ g_u))
            if g_sigma is not None:
                inner = inner + torch.diag_embed(g_sigma)
            gx = u @ inner @ u.mT
        return sym(gx)


@full_precision
def eig_layer(x: Tensor, validate: bool = True) -> tuple[Tensor, Tensor]:
    r"""Eigendecomposition of symmetric matrices with the paper's matrix-backpropagation backward.

    .. math::
        ∂L/∂X = U \left( \mathrm{sym}(K̃ᵀ ∘ (Uᵀ ∂L/∂U)) + (∂L/∂Σ)_{diag} \right) Uᵀ

    Args:
        x: symmetric matrices (bfloat16/float16 are cast up to float32; autocast is off inside).
        validate: check symmetry/finiteness first (one host sync; see ``set_validation``).

    Returns:
        (eigvals, eigvecs), eigenvalues ascending like ``torch.linalg.eigh``.

    Shape:
        x (..., n, n) -> eigvals (..., n), eigvecs (..., n, n).

    Note:
        Eigenvector gradients are undefined at ties; see the module docstring.

    Example:
        >>> lam, u = eig_layer(torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
        >>> lam
        tensor([1., 3.])
    """
    x = upcast(x)
    if validate:
        check_symmetric(x, "eig_layer")
    return _Eig.apply(x)


class EigLayer(nn.Module):
    """Module form of :func:`eig_layer`."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return eig_layer(x)
