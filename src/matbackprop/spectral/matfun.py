r"""Symmetric matrix functions Y = U f(Λ) Uᵀ with an exact Daleckii–Krein backward.

Forward: X = U Λ Uᵀ (``torch.linalg.eigh``), Y = U f(Λ) Uᵀ.

Backward (Daleckii–Krein / Loewner form, SPEC §2)::

    ∂L/∂X = U (F ∘ Uᵀ sym(G) U) Uᵀ,   F_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j),   F_ii = f′(λ_i)

It equals the paper's EIG-layer route (``∂L/∂U = 2 sym(G) U f(Λ)``, ``∂L/∂Λ = f′(Λ)(UᵀGU)_diag``
fed to the EIG backward) wherever the eigenvalues are distinct, and stays finite and exact
at ties, where the paper's route divides by zero. The divided differences F_ij are computed
without cancellation:

- log:   F_ij = 2/(λ_i + λ_j) · atanh(z)/z,  z = (λ_i − λ_j)/(λ_i + λ_j)
- exp:   F_ij = exp((λ_i + λ_j)/2) · sinh(h)/h,  h = (λ_i − λ_j)/2
- sqrt:  F_ij = 1 / (√λ_i + √λ_j)
- λ^p:   F_ij = exp((p − 1) m) · sinh(p h)/sinh(h),  m, h = mean / half-difference of log λ
- generic f: the plain quotient where the relative gap is large, the mean of f′ at both ends
  where it is tiny (error O(gap²)).

The input must be symmetric (checked; X and Xᵀ differing by more than a dtype-aware tolerance
raises ValueError); the gradient returned is symmetric.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._common import (
    InvalidValuesError,
    check_symmetric,
    eig_tol,
    exact,
    full_precision,
    sym,
    upcast,
    validation_enabled,
)

ElementFn = Callable[[Tensor], Tensor]
DividedDifference = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- divided differences


def _small(dtype: torch.dtype) -> float:
    """Switch point for series expansions: their truncation error is below eps there."""
    return 1e-4 if dtype == torch.float64 else 3e-3


def _atanhc(z: Tensor) -> Tensor:
    """atanh(z)/z for |z| < 1, exact at z = 0."""
    z2 = z * z
    series = 1.0 + z2 / 3.0 + z2 * z2 / 5.0
    safe = torch.where(z == 0, torch.ones_like(z), z)
    return torch.where(z.abs() < _small(z.dtype), series, torch.atanh(safe) / safe)


def _sinhc(h: Tensor) -> Tensor:
    """sinh(h)/h, exact at h = 0."""
    h2 = h * h
    series = 1.0 + h2 / 6.0 + h2 * h2 / 120.0
    safe = torch.where(h == 0, torch.ones_like(h), h)
    return torch.where(h.abs() < _small(h.dtype), series, torch.sinh(safe) / safe)


def dd_log(a: Tensor, b: Tensor) -> Tensor:
    """Divided difference of log at (a, b) > 0, cancellation-free; log′(a) on the diagonal."""
    s = a + b
    z = (a - b) / s
    near = 2.0 / s * _atanhc(z.clamp(-0.5, 0.5))
    diff = torch.where(a == b, torch.ones_like(a), a - b)
    far = (torch.log(a) - torch.log(b)) / diff
    return torch.where(z.abs() <= 0.5, near, far)


def dd_exp(a: Tensor, b: Tensor) -> Tensor:
    """Divided difference of exp at (a, b): exp((a+b)/2) sinh(h)/h, h = (a−b)/2."""
    return torch.exp(0.5 * (a + b)) * _sinhc(0.5 * (a - b))


def dd_sqrt(a: Tensor, b: Tensor) -> Tensor:
    """Divided difference of sqrt at (a, b) ≥ 0: 1/(√a + √b) (infinite only at a = b = 0)."""
    return 1.0 / (torch.sqrt(a) + torch.sqrt(b))


def dd_pow(a: Tensor, b: Tensor, p: float) -> Tensor:
    """Divided difference of x^p at (a, b) ≥ 0, exp·sinh form where a ≈ b, plain quotient elsewhere."""
    big = torch.maximum(a.abs(), b.abs())
    close = (a - b).abs() <= 0.5 * big
    tiny = torch.finfo(a.dtype).tiny
    la, lb = torch.log(a.clamp_min(tiny)), torch.log(b.clamp_min(tiny))
    m, h = 0.5 * (la + lb), 0.5 * (la - lb)
    h2 = h * h
    series = p * (1.0 + (p * p - 1.0) * h2 / 6.0)
    safe = torch.where(h == 0, torch.ones_like(h), h)
    ratio = torch.where(h.abs() < _small(a.dtype), series, torch.sinh(p * safe) / torch.sinh(safe))
    near = torch.exp((p - 1.0) * m) * ratio
    diff = torch.where(close, torch.ones_like(a), a - b)
    far = (a.clamp_min(0) ** p - b.clamp_min(0) ** p) / diff
    return torch.where(close, near, far)


def dd_generic(f: ElementFn, df: ElementFn) -> DividedDifference:
    """Divided difference from f and f′: quotient where the relative gap exceeds eps^(1/3),
    mean of f′ at both ends below it (both errors ≈ eps^(2/3))."""

    def dd(a: Tensor, b: Tensor) -> Tensor:
        tau = torch.finfo(a.dtype).eps ** (1.0 / 3.0)
        scale = torch.maximum(a.abs(), b.abs()).clamp_min(1.0)
        close = (a - b).abs() <= tau * scale
        diff = torch.where(close, torch.ones_like(a), a - b)
        return torch.where(close, 0.5 * (df(a) + df(b)), (f(a) - f(b)) / diff)

    return dd


# ----------------------------------------------------------------------------- autograd function


class _SymMatFun(torch.autograd.Function):
    """Y = U f(Λ) Uᵀ; backward ∂L/∂X = U (F ∘ Uᵀ sym(G) U) Uᵀ with F = divided differences."""

    @staticmethod
    def forward(
        ctx, x: Tensor, f: ElementFn, dd: DividedDifference, domain: str, check: bool
    ) -> Tensor:
        lam, u = torch.linalg.eigh(x)  # (..., n), (..., n, n)
        lam = _check_domain(lam, domain, check)
        y = (u * f(lam).unsqueeze(-2)) @ u.mT  # (..., n, n)
        ctx.dd = dd
        ctx.save_for_backward(lam, u)
        return sym(y)

    @staticmethod
    def backward(ctx, g: Tensor):
        lam, u = ctx.saved_tensors
        with exact():
            loewner = ctx.dd(lam.unsqueeze(-1), lam.unsqueeze(-2))  # (..., n, n), F_ii = f′(λ_i)
            gx = u @ (loewner * (u.mT @ sym(g) @ u)) @ u.mT
        return sym(gx), None, None, None, None


def _check_domain(lam: Tensor, domain: str, check: bool) -> Tensor:
    """Check the spectrum against the function's domain (one host sync when ``check``);
    returns λ (clamped at 0 for 'psd')."""
    if check and domain != "any" and lam.numel():
        if domain == "pd":
            low = float(lam[..., 0].min())  # the one sync
            if low <= 0:
                raise InvalidValuesError(
                    f"input is not positive definite (smallest eigenvalue {low:.3g})"
                )
        else:  # psd: eigenvalues down to −noise are zeros
            if float((lam[..., :1] + eig_tol(lam)).min()) < 0:
                raise InvalidValuesError(
                    "input is not positive semi-definite "
                    f"(smallest eigenvalue {float(lam[..., 0].min()):.3g})"
                )
    return lam.clamp_min(0) if domain == "psd" else lam


@full_precision
def sym_matfun(
    x: Tensor,
    f: ElementFn,
    df: ElementFn | None = None,
    *,
    divided_difference: DividedDifference | None = None,
    domain: str = "any",
    validate: bool = True,
) -> Tensor:
    r"""Matrix function U f(Λ) Uᵀ of symmetric matrices with an exact Daleckii–Krein backward.

    .. math::
        ∂L/∂X = U (F ∘ Uᵀ \mathrm{sym}(G) U) Uᵀ, \quad F_{ij} = \frac{f(λ_i) − f(λ_j)}{λ_i − λ_j},
        \quad F_{ii} = f′(λ_i)

    Args:
        x: symmetric matrices.
        f: elementwise function applied to the eigenvalues.
        df: its derivative; used for the default divided difference (plain quotient where the
            relative gap is large, mean of f′ at both ends where it is tiny).
        divided_difference: optional ``dd(a, b)`` overriding the default (must return f′(a) at a = b).
        domain: ``"any"``, ``"psd"`` (eigenvalues ≥ −noise, clamped to 0) or ``"pd"`` (> 0).
        validate: check symmetry/finiteness (one host sync) and the spectrum against ``domain``
            (one more); disable in trusted hot loops (or globally: ``set_validation(False)``).
            Unchecked, a spectrum outside the domain gives NaN instead of an error.

    Shape:
        x (..., n, n) -> (..., n, n), same dtype and device (bfloat16/float16 inputs are cast
        up to float32; autocast is off inside).

    Raises:
        ValueError: non-square, non-float, non-finite, non-symmetric input, or spectrum outside
            ``domain``.
    """
    x = upcast(x)
    if validate:
        check_symmetric(x, "sym_matfun")
    if divided_difference is None:
        if df is None:
            raise ValueError("sym_matfun: give df (the derivative of f) or divided_difference")
        divided_difference = dd_generic(f, df)
    if domain not in ("any", "psd", "pd"):
        raise ValueError(f"sym_matfun: domain must be 'any', 'psd' or 'pd', got {domain!r}")
    check = validate and validation_enabled()
    return _SymMatFun.apply(x, f, divided_difference, domain, check)


@full_precision
def _named(name: str, x: Tensor, f, dd, domain: str, validate: bool) -> Tensor:
    x = upcast(x)
    if validate:
        check_symmetric(x, name)
    try:
        return _SymMatFun.apply(x, f, dd, domain, validate and validation_enabled())
    except ValueError as e:  # keeps the class (InvalidValuesError or ValueError)
        raise type(e)(f"{name}: {e}") from None


def sym_logm(x: Tensor, validate: bool = True) -> Tensor:
    """Matrix logarithm of symmetric positive-definite matrices.

    Shape: x (..., n, n) -> (..., n, n). Raises ValueError if x is not SPD.
    """
    return _named("sym_logm", x, torch.log, dd_log, "pd", validate)


def sym_expm(x: Tensor, validate: bool = True) -> Tensor:
    """Matrix exponential of symmetric matrices.

    Shape: x (..., n, n) -> (..., n, n).
    """
    return _named("sym_expm", x, torch.exp, dd_exp, "any", validate)


def sym_sqrtm(x: Tensor, validate: bool = True) -> Tensor:
    """Principal square root of symmetric positive semi-definite matrices.

    The gradient is finite where x is positive definite (∞ along a zero eigenvalue, as the
    function is not differentiable there). Shape: x (..., n, n) -> (..., n, n).
    """
    return _named("sym_sqrtm", x, torch.sqrt, dd_sqrt, "psd", validate)


def sym_powm(x: Tensor, p: float, validate: bool = True) -> Tensor:
    """Matrix power X^p of symmetric matrices: positive semi-definite for p > 0, definite for p ≤ 0.

    Shape: x (..., n, n) -> (..., n, n).
    """
    p = float(p)
    domain = "psd" if p > 0 else "pd"
    return _named(
        "sym_powm", x, lambda lam: lam.pow(p), lambda a, b: dd_pow(a, b, p), domain, validate
    )


class SymLogm(nn.Module):
    """Module form of :func:`sym_logm`."""

    def forward(self, x: Tensor) -> Tensor:
        return sym_logm(x)


class SymSqrtm(nn.Module):
    """Module form of :func:`sym_sqrtm`."""

    def forward(self, x: Tensor) -> Tensor:
        return sym_sqrtm(x)


class SymExpm(nn.Module):
    """Module form of :func:`sym_expm`."""

    def forward(self, x: Tensor) -> Tensor:
        return sym_expm(x)


class SymPowm(nn.Module):
    """Module form of :func:`sym_powm` with a fixed exponent ``p``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return sym_powm(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
