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

Range checks (with validation on, in the same host sync as the domain check): a result
f(λ) that overflows the dtype raises InvalidValuesError in the forward (``sym_expm``); a
gradient that would overflow (f′ at an extreme eigenvalue not finite) or be infinite (√λ and
λ^p, 0 < p < 1, at a singular matrix) raises InvalidValuesError when the backward runs.
Double backward (``create_graph=True``) is refused with ``NotImplementedError``: the backward
uses U and Λ as constants, so its own derivative would be wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._common import (
    InvalidValuesError,
    check_symmetric,
    eig_tol,
    exact,
    full_precision,
    refuse_double_backward,
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


def loewner_log_sorted(lam: Tensor) -> Tensor:
    """The table F_ij = (log λ_i − log λ_j)/(λ_i − λ_j), F_ii = 1/λ_i, for ascending λ > 0
    (an eigh spectrum): (..., n) -> (..., n, n), equal to :func:`dd_log` on all pairs.

    With s = λ_i ≤ t = λ_j (upper triangle; the lower one is its transpose) and δ = (t − s)/s ≥ 0,
    F = log1p(δ)/(t − s): one log1p, cancellation-free (relative error a few eps at any gap,
    exact 1/s at ties), in about a third of the passes of the pairwise formula."""
    inv_s = (1.0 / lam).unsqueeze(-1)
    d = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # t − s, ≥ 0 above the diagonal
    table = torch.where(d > 0, torch.log1p(d * inv_s) / d, inv_s)
    n = lam.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=lam.device).triu()
    return torch.where(upper, table, table.mT)


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
        ctx, x: Tensor, f: ElementFn, dd: DividedDifference, domain: str, check: bool, spec: _Spec
    ) -> Tensor:
        lam, u = torch.linalg.eigh(x)  # (..., n), (..., n, n)
        lam, ctx.backward_error = _check_spectrum(lam, f, dd, domain, check, spec)
        y = (u * f(lam).unsqueeze(-2)) @ u.mT  # (..., n, n)
        ctx.dd, ctx.name, ctx.loewner = dd, spec.name, spec.loewner
        ctx.save_for_backward(lam, u)
        return sym(y)

    @staticmethod
    def backward(ctx, g: Tensor):
        refuse_double_backward(ctx.name)
        if ctx.backward_error:
            raise InvalidValuesError(f"{ctx.name}: {ctx.backward_error}")
        lam, u = ctx.saved_tensors
        with exact():
            if ctx.loewner is not None:  # a faster table for the ascending spectrum
                loewner = ctx.loewner(lam)
            else:
                loewner = ctx.dd(
                    lam.unsqueeze(-1), lam.unsqueeze(-2)
                )  # (..., n, n), F_ii = f′(λ_i)
            gx = u @ (loewner * (u.mT @ sym(g) @ u)) @ u.mT
        return sym(gx), None, None, None, None, None


class _Spec(NamedTuple):
    """What the spectrum check may assume of f: ``monotone`` (f and f′ monotone on the domain,
    so their largest magnitudes sit at the extreme eigenvalues: overflow is checked there),
    ``singular_at_zero`` (f′(0) = ∞, e.g. √λ: not differentiable at a singular matrix) and
    ``loewner`` (optional: the divided-difference table from the ascending spectrum, faster
    than the pairwise ``dd``)."""

    name: str = "sym_matfun"
    monotone: bool = False
    singular_at_zero: bool = False
    loewner: Callable[[Tensor], Tensor] | None = None


def _check_spectrum(
    lam: Tensor, f: ElementFn, dd: DividedDifference, domain: str, check: bool, spec: _Spec
) -> tuple[Tensor, str | None]:
    """Check the spectrum against the function's domain and the dtype's range, with one host
    sync when ``check``. Returns λ (clamped at 0 for 'psd') and the reason the backward must
    refuse (None if it may run).

    Raises InvalidValuesError for a spectrum outside the domain, or (``spec.monotone``) a
    result f(λ) that overflows the dtype. A gradient that would overflow (f′(λ) not finite at
    an extreme eigenvalue) or be infinite (``spec.singular_at_zero`` at a numerically singular
    matrix) is refused when the backward runs, so a forward-only use still works."""
    clamp = domain == "psd"
    if not check or not lam.numel():
        return (lam.clamp_min(0) if clamp else lam), None
    lo, hi = lam[..., 0].min(), lam[..., -1].max()
    tol = eig_tol(lam)  # (..., 1) noise level per matrix
    parts = [lo, hi, (lam[..., :1] + tol).min(), (lam[..., :1] - tol).min()]
    if spec.monotone:
        ends = torch.stack([lo, hi])
        ends = ends.clamp_min(0) if clamp else ends
        parts += [*f(ends), *dd(ends, ends)]
    vals = torch.stack(parts).tolist()  # the one sync
    lo_v, hi_v, lo_plus, lo_minus = vals[:4]
    if domain == "pd" and lo_v <= 0:
        raise InvalidValuesError(f"input is not positive definite (smallest eigenvalue {lo_v:.3g})")
    if domain == "psd" and lo_plus < 0:
        raise InvalidValuesError(
            f"input is not positive semi-definite (smallest eigenvalue {lo_v:.3g})"
        )
    backward_error = None
    dtype = str(lam.dtype).replace("torch.", "")
    if spec.monotone:
        f_lo, f_hi, d_lo, d_hi = vals[4:]
        for end, val in ((hi_v, f_hi), (lo_v, f_lo)):
            if not math.isfinite(val):
                raise InvalidValuesError(
                    f"the result overflows {dtype} (f(λ) = {val} at the eigenvalue {end:.4g}); "
                    "rescale the input or use float64"
                )
        for end, der in ((lo_v, d_lo), (hi_v, d_hi)):
            if not math.isfinite(der) and not (spec.singular_at_zero and end <= 0):
                backward_error = (
                    f"the gradient overflows {dtype} (f′(λ) = {der} at the eigenvalue {end:.4g}); "
                    "use float64 or rescale the input"
                )
    if spec.singular_at_zero and lo_minus <= 0:
        backward_error = (
            f"not differentiable at a singular matrix (smallest eigenvalue {lo_v:.3g}, zero "
            "within rounding): the derivative of the function is infinite at 0, so the "
            "gradient would be inf/NaN. Add a ridge (X + εI) before the layer"
        )
    return (lam.clamp_min(0) if clamp else lam), backward_error


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
            ``domain`` (InvalidValuesError for the values).
        NotImplementedError: double backward (``create_graph=True``).

    Example:
        >>> x = torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))
        >>> sym_matfun(x, torch.tanh, lambda t: 1 - torch.tanh(t) ** 2).diagonal()
        tensor([0.0000, 0.7616], dtype=torch.float64)
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
    try:
        return _SymMatFun.apply(x, f, divided_difference, domain, check, _Spec())
    except ValueError as e:  # keeps the class (InvalidValuesError or ValueError)
        raise type(e)(f"sym_matfun: {e}") from None


@full_precision
def _named(
    name: str,
    x: Tensor,
    f,
    dd,
    domain: str,
    validate: bool,
    singular_at_zero: bool = False,
    loewner: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    x = upcast(x)
    if validate:
        check_symmetric(x, name)
    spec = _Spec(name, monotone=True, singular_at_zero=singular_at_zero, loewner=loewner)
    try:
        return _SymMatFun.apply(x, f, dd, domain, validate and validation_enabled(), spec)
    except ValueError as e:  # keeps the class (InvalidValuesError or ValueError)
        raise type(e)(f"{name}: {e}") from None


def sym_logm(x: Tensor, validate: bool = True) -> Tensor:
    """Matrix logarithm of symmetric positive-definite matrices.

    Shape: x (..., n, n) -> (..., n, n).

    Raises:
        InvalidValuesError: x not positive definite (forward); the gradient overflows the dtype,
            f′(λ_min) = 1/λ_min (at backward; e.g. float32 λ_min < 3e-39).

    Example:
        >>> x = (2 * torch.eye(3, dtype=torch.float64)).requires_grad_()
        >>> sym_logm(x).diagonal()
        tensor([0.6931, 0.6931, 0.6931], dtype=torch.float64, grad_fn=<DiagonalBackward0>)
        >>> sym_logm(x).trace().backward()
        >>> x.grad.diagonal()  # 1/λ along the 3-fold tie, exactly
        tensor([0.5000, 0.5000, 0.5000], dtype=torch.float64)
    """
    return _named("sym_logm", x, torch.log, dd_log, "pd", validate, loewner=loewner_log_sorted)


def sym_expm(x: Tensor, validate: bool = True) -> Tensor:
    """Matrix exponential of symmetric matrices.

    Shape: x (..., n, n) -> (..., n, n).

    Raises:
        InvalidValuesError: e^λ_max overflows the dtype (λ_max > 88.7 in float32, > 709.8 in
            float64); with validation off the result holds inf instead.

    Example:
        >>> sym_expm(torch.zeros(2, 2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    return _named("sym_expm", x, torch.exp, dd_exp, "any", validate)


def sym_sqrtm(x: Tensor, validate: bool = True) -> Tensor:
    """Principal square root of symmetric positive semi-definite matrices.

    The forward accepts singular matrices (eigenvalues down to −n·eps·max|λ| count as 0). The
    square root is not differentiable at a singular matrix (its derivative is infinite at a
    zero eigenvalue): the backward there raises InvalidValuesError instead of returning inf/NaN
    (with validation off it returns them). Shape: x (..., n, n) -> (..., n, n).

    Example:
        >>> sym_sqrtm(torch.diag(torch.tensor([4.0, 9.0])))
        tensor([[2., 0.],
                [0., 3.]])
    """
    return _named("sym_sqrtm", x, torch.sqrt, dd_sqrt, "psd", validate, singular_at_zero=True)


def sym_powm(x: Tensor, p: float, validate: bool = True) -> Tensor:
    """Matrix power X^p of symmetric matrices: positive semi-definite for p > 0, definite for p ≤ 0.

    For 0 < p < 1 the backward at a singular matrix raises InvalidValuesError (as
    :func:`sym_sqrtm`); for p < 0 a gradient p·λ_min^(p−1) that overflows the dtype raises
    InvalidValuesError at backward (e.g. float32, p = −0.5, λ_min = 1e-30: use float64).
    Shape: x (..., n, n) -> (..., n, n).

    Example:
        >>> sym_powm(torch.diag(torch.tensor([4.0, 16.0])), -0.5)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.2500]])
    """
    p = float(p)
    domain = "psd" if p > 0 else "pd"
    return _named(
        "sym_powm",
        x,
        lambda lam: lam.pow(p),
        lambda a, b: dd_pow(a, b, p),
        domain,
        validate,
        singular_at_zero=0 < p < 1,
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
