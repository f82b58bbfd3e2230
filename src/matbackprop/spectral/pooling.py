r"""Log-covariance (second-order, O2P) pooling: the DeepO2P layer (SPEC §3).

For features f_p ∈ ℝᵈ at positions p with weights w_p ≥ 0 (a region mask)::

    C = Σ_p w_p f_p f_pᵀ / Σ_p w_p + ε I  =  FᵀF + ε I,    F = diag(√(w/Σw)) [f_1 … f_N]ᵀ  (N × d)
    Y = log C

Two exact routes, chosen automatically:

- **eig** (N ≥ d): Y = sym_logm(C), Daleckii–Krein backward on the d × d matrix.
- **gram** (N < d, e.g. AlexNet conv5: N = 13·13 = 169 < d = 256): C has rank ≤ N above ε,
  so with the N × N Gram matrix A = F Fᵀ = V Λ Vᵀ::

      log C = log ε · I + Fᵀ h(A) F,    h(A) = V g(Λ) Vᵀ,   g(λ) = log(1 + λ/ε) / λ   (g(0) = 1/ε)

  an identity, not an approximation (the SVD-of-features route of the paper, rewritten so
  that nothing is divided by a singular value). Backward, with Ḡ = sym(G)::

      ∂L/∂F = 2 h(A) F Ḡ + 2 (∂L/∂A) F,   ∂L/∂A = V (Φ ∘ Vᵀ (F Ḡ Fᵀ) V) Vᵀ

  where Φ holds the divided differences of the analytic g, computed without cancellation
  (:func:`dd_log1p_ratio`). Exact at ties (zero rows from the mask, the ≥ d − N eigenvalues
  at ε) and O(N²d + Nd² + N³) instead of O(d³).

The spectral work (Gram matrix, eigendecomposition, divided differences) runs in
``compute_dtype`` (float64 by default: the ε-regularised spectrum spans ~8 orders of
magnitude); without centring, the O(N d²) products with the features run in the input
dtype, so float32 features get mixed precision (gradient within ~2e-6 of the float64
reference over feature scales 1e-3..1e2, measured by ``scripts/bench_peers.py``; ≤ 1e-5 in the
tests) and float64 features an all-float64 computation. ``centered=True`` runs everything in
``compute_dtype`` (its backward cancels large terms: float32 products lost up to 4e-3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._common import (
    InvalidValuesError,
    _check_type,
    exact,
    full_precision,
    refuse_double_backward,
    sym,
    upcast,
    validation_enabled,
)
from .matfun import _named, dd_log, loewner_log_sorted

# ----------------------------------------------------------------------------- g(λ) = log1p(λ/ε)/λ


def log1p_ratio(x: Tensor) -> Tensor:
    """φ(x) = log(1 + x)/x for x ≥ 0, with φ(0) = 1."""
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.ones_like(x), torch.log1p(safe) / safe)


# CPU tensors: evaluate the near-pair formula on the near pairs only (boolean indexing, which
# would synchronise with a GPU but costs nothing extra on the CPU). Tests switch it off to
# check the device code path.
SUBSET_ON_CPU = True


def _dd_log1p_ratio_near(s: Tensor, t: Tensor) -> Tensor:
    """φ[s, t] for 0 ≤ s ≤ t ≤ 2s or t tiny (series / rearranged quotient), elementwise."""
    small = 1e-3 if s.dtype == torch.float64 else 3e-2
    # both tiny: Taylor series Σ_{n≥1} (−1)ⁿ h_{n−1}(s, t)/(n + 1), five terms
    h1 = s + t
    h2 = s * s + s * t + t * t
    h3 = h2 * t + s**3  # s³ + s²t + st² + t³
    h4 = h3 * t + s**4
    series = -0.5 + h1 / 3.0 - h2 / 4.0 + h3 / 5.0 - h4 / 6.0
    # close: with r = (s − t)/(1 + t), φ[s, t] = (t/(1 + t) · log1p(r)/r − log1p(t)) / (s t)
    t_safe = torch.where(t < small, torch.ones_like(t), t)
    s_safe = torch.where(t < small, torch.ones_like(s), s)
    r = (s_safe - t_safe) / (1.0 + t_safe)
    r_safe = torch.where(r == 0, torch.ones_like(r), r)
    psi = torch.where(r == 0, torch.ones_like(r), torch.log1p(r_safe) / r_safe)
    close = (t_safe / (1.0 + t_safe) * psi - torch.log1p(t_safe)) / (s_safe * t_safe)
    return torch.where(t < small, series, close)


def dd_log1p_ratio(x: Tensor, y: Tensor) -> Tensor:
    r"""Divided difference φ[x, y] = (φ(x) − φ(y)) / (x − y) of φ(x) = log1p(x)/x, for x, y ≥ 0.

    Cancellation-free in three regimes (φ′ on the diagonal), with t = max(x, y), s = min(x, y):

    - t tiny (< 1e-3 in float64): the Taylor series Σ_{n≥1} (−1)ⁿ h_{n−1}(s, t)/(n + 1)
      (h = complete homogeneous polynomials), five terms;
    - far, (t − s) > t/2: the plain quotient of φ values (no cancellation);
    - close: φ[s, t] = (t/(1 + t) · log1p(r)/r − log1p(t)) / (s t),  r = (s − t)/(1 + t),
      since y log1p(x) − x log1p(y) = y log1p(r) − (x − y) log1p(y).

    On CUDA both regimes are evaluated everywhere and selected with ``torch.where`` (no
    boolean-mask indexing, hence no host synchronisation). On the CPU, where nothing waits for a
    device, the near formula runs on the near pairs only (:data:`SUBSET_ON_CPU`; 2.6× faster
    for a (100, 169, 169) table here, 0.06 s vs 0.16 s). Both give bitwise equal tables.
    """
    small = 1e-3 if x.dtype == torch.float64 else 3e-2
    diff = x - y  # broadcast
    far = (log1p_ratio(x) - log1p_ratio(y)) / torch.where(diff == 0, torch.ones_like(diff), diff)
    x, y = torch.broadcast_tensors(x, y)
    t, s = torch.maximum(x, y), torch.minimum(x, y)
    near = (diff.abs() <= 0.5 * t) | (t < small)
    if SUBSET_ON_CPU and far.device.type == "cpu":
        far[near] = _dd_log1p_ratio_near(s[near], t[near])
        return far
    s = torch.where(near, s, t)  # far pairs: a harmless stand-in (s = t), result discarded
    return torch.where(near, _dd_log1p_ratio_near(s, t), far)


def dd_log1p_ratio_sorted(x: Tensor) -> Tensor:
    r"""The table φ[x_i, x_j] for ascending x ≥ 0 (an eigh spectrum), (..., n) -> (..., n, n).

    Equal to :func:`dd_log1p_ratio` on all pairs, in about half the passes: with s = x_i ≤
    t = x_j (the upper triangle; the lower one is its transpose),

        φ[s, t] = (ℓ[s, t] − φ(s)) / t,   ℓ[s, t] = log1p((t − s)/(1 + s)) / (t − s)

    (ℓ the divided difference of log1p, cancellation-free; ℓ[s, s] = 1/(1 + s)), since
    φ(s) = ℓ[0, s]. The subtraction cancels only when t is tiny: there (t < 1e-3 in float64)
    the Taylor series of :func:`dd_log1p_ratio` is used, on the leading block of small values
    only on the CPU (no host sync on CUDA: ``torch.where`` over the whole table).
    """
    small = 1e-3 if x.dtype == torch.float64 else 3e-2
    inv1ps = (1.0 / (1.0 + x)).unsqueeze(-1)  # 1/(1 + s), rows
    s, t = x.unsqueeze(-1), x.unsqueeze(-2)
    d = t - s  # ≥ 0 on the upper triangle
    ell = torch.where(d > 0, torch.log1p(d * inv1ps) / d, inv1ps)
    r = (ell - log1p_ratio(x).unsqueeze(-1)) / t
    if SUBSET_ON_CPU and x.device.type == "cpu":
        k = int((x < small).sum(-1).max()) if x.numel() else 0  # leading block (x ascending)
        if k:
            blk = _dd_log1p_ratio_near(x[..., :k].unsqueeze(-1), x[..., :k].unsqueeze(-2))
            r[..., :k, :k] = torch.where(x[..., :k].unsqueeze(-2) < small, blk, r[..., :k, :k])
    else:
        r = torch.where(t < small, _dd_log1p_ratio_near(s, t.expand_as(r)), r)
    n = x.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=x.device).triu()
    return torch.where(upper, r, r.mT)


class _LogGramPlusEps(torch.autograd.Function):
    """Y = log(FᵀF + εI) via the N × N Gram matrix (N < d). F: (B, N, d) -> Y: (B, d, d).

    The Gram matrix, its eigendecomposition and the divided differences run in ``cdt``
    (float64 by default); every product (with F, and with the eigenvectors V) runs in F's
    dtype (mixed precision for float32 features: measured gradient error ~2e-6 against the
    float64 reference). The products with the orthogonal V add no more rounding than the
    products with F already do, and the result is cast to F's dtype anyway; the sensitive part,
    the spectrum and its divided differences (values near ε), stays in ``cdt``.
    """

    @staticmethod
    def forward(ctx, f: Tensor, eps: float, cdt: torch.dtype, dropped: Tensor | None):
        fc = f.to(cdt)
        a = fc @ fc.mT  # (B, N, N)
        if dropped is not None:
            # positions of weight 0 are exact zero rows of F: give them the eigenvalue max Aᵢᵢ
            # instead of 0. An exact identity (A is block-diagonal there, and those rows
            # carry no gradient), and it keeps the eigensolver's O(eps) mixing of the zero
            # block (with h = 1/ε on it) from reaching the result at large feature scales.
            shift = a.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)  # (B, 1)
            a = a + torch.diag_embed(dropped.to(cdt) * shift)
        lam, v = torch.linalg.eigh(a)  # (B, N), (B, N, N)
        lam = lam.clamp_min(0)  # A is PSD; eigh noise can dip below 0
        g = log1p_ratio(lam / eps) / eps  # (B, N)
        vp = v.to(f.dtype)  # products in F's dtype
        h = (vp * g.to(f.dtype).unsqueeze(-2)) @ vp.mT  # h(A) = V g(Λ) Vᵀ  (B, N, N)
        hf = h @ f  # h(A) F  (B, N, d)
        y = sym(f.mT @ hf)
        y.diagonal(dim1=-2, dim2=-1).add_(math.log(eps))  # + log ε · I, in place
        ctx.eps = eps
        ctx.save_for_backward(f, lam, vp, h)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        refuse_double_backward("log_cov_pool")
        f, lam, v, h = ctx.saved_tensors  # v, h in F's dtype
        eps = ctx.eps
        with exact():
            gbar = sym(gy)  # (B, d, d)
            fg = f @ gbar  # F Ḡ  (B, N, d)
            gh = fg @ f.mT  # F Ḡ Fᵀ  (B, N, N)
            phi = dd_log1p_ratio_sorted(lam / eps) / (eps * eps)  # g[λi, λj], in cdt
            ga = v @ (phi.to(v.dtype) * (v.mT @ gh @ v)) @ v.mT  # ∂L/∂A  (B, N, N)
            # ∂L/∂F = 2 (h F Ḡ + (∂L/∂A) F) = 2 (h (F Ḡ) + sym(∂L/∂A) F): O(N² d) each
            gf = torch.baddbmm(h @ fg, sym(ga), f).mul_(2.0)  # (B, N, d)
        return gf, None, None, None


def _features_matrix(
    x: Tensor, mask: Tensor | None, centered: bool
) -> tuple[Tensor, Tensor | None]:
    """F = diag(√(w/Σw)) (features − mean) as (B, N, d), x's dtype (autograd flows to x), and
    the positions of weight 0 (B, N) bool (None without a mask)."""
    b, d, h, w = x.shape
    feats = x.flatten(2).mT  # (B, N, d)
    if mask is None:
        wts = torch.full((b, h * w), 1.0 / (h * w), dtype=x.dtype, device=x.device)
    else:
        m = mask.detach().reshape(b, h * w).to(x.dtype)
        wts = m / m.sum(-1, keepdim=True)
    if centered:
        feats = feats - (wts.unsqueeze(-1) * feats).sum(1, keepdim=True)
    dropped = None if mask is None else wts == 0
    return wts.sqrt().unsqueeze(-1) * feats, dropped


# Largest |feature| for which the gram route's O(N d²) products may run in float32: beyond it
# F Ḡ Fᵀ (≈ |f|² d) nears float32's range and h(A) (≈ 1/|f|²) its subnormals; larger inputs
# run those products in the compute dtype (as the eig route always does).
GRAM_FLOAT32_MAX = 2.0**40


def _check_pool_inputs(x: Tensor, mask: Tensor | None, eps: float, validate: bool) -> float | None:
    """Shapes and eps always (free); values with one fused host sync when validating.
    Returns max |x| (read in the same sync), or None when not validating."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"log_cov_pool: x must be (B, d, H, W), got {getattr(x, 'shape', x)}")
    _check_type(x, "log_cov_pool: x")
    if not eps > 0:
        raise ValueError(f"log_cov_pool: eps must be > 0, got {eps}")
    b, _, h, w = x.shape
    if h * w == 0:
        raise ValueError(
            f"log_cov_pool: x has no spatial positions (H × W = {h} × {w}): a covariance needs "
            "at least one feature vector"
        )
    if mask is not None and mask.shape != (b, h, w):
        raise ValueError(
            f"log_cov_pool: mask must be (B, H, W) = {(b, h, w)}, got {tuple(mask.shape)}"
        )
    if not (validate and validation_enabled()) or x.numel() == 0:
        return None
    xd = x.detach()
    lo, hi = torch.aminmax(xd)  # one pass: finiteness and scale
    flags = [torch.isfinite(lo) & torch.isfinite(hi), torch.maximum(-lo, hi)]
    if mask is not None:
        m = mask.detach().to(x.device)
        flags += [(torch.isfinite(m) & (m >= 0)).all(), (m.reshape(b, -1).sum(-1) > 0).all()]
    x_ok, amax, *mask_ok = torch.stack([t.to(x.dtype) for t in flags]).tolist()  # the one sync
    if not x_ok:
        raise InvalidValuesError("log_cov_pool: x: input contains non-finite values (NaN or Inf)")
    if mask_ok and not mask_ok[0]:
        raise ValueError("log_cov_pool: mask must hold finite non-negative weights")
    if mask_ok and not mask_ok[1]:
        empty = mask.reshape(b, -1).sum(-1) <= 0
        raise ValueError(
            "log_cov_pool: mask has zero total weight for batch items "
            f"{empty.nonzero().flatten().tolist()}"
        )
    return amax


def _check_scale(amax: float, d: int, eps: float, method: str, cdt: torch.dtype) -> None:
    """Raise InvalidValuesError where the feature scale overflows the compute dtype: the
    covariance (≤ d·max|f|²) in the eig route; in the gram route also the squared ratio
    (λ/ε)² that the divided differences of log1p(λ/ε)/λ need (they fall off as (ε/λ)²)."""
    big = torch.finfo(cdt).max
    lam_max = d * amax * amax  # bound on the largest eigenvalue (weights sum to 1)
    if method == "gram":
        ok = lam_max / eps < math.sqrt(big) / 16
    else:
        ok = lam_max < big / (16 * d)
    if not ok:
        dt = str(cdt).replace("torch.", "")
        raise InvalidValuesError(
            f"log_cov_pool: the feature scale overflows the compute dtype {dt} (max |x| = "
            f"{amax:.3g}, d = {d}, eps = {eps:g}, {method} route); rescale the features, or use "
            "compute_dtype=torch.float64"
        )


@full_precision
def log_cov_pool(
    x: Tensor,
    mask: Tensor | None = None,
    eps: float = 1e-3,
    centered: bool = False,
    compute_dtype: torch.dtype | None = torch.float64,
    method: str = "auto",
    validate: bool = True,
) -> Tensor:
    r"""Log-covariance pooling log(Σ_p w_p f_p f_pᵀ / Σ_p w_p + εI) of a feature map.

    .. math::
        C = \frac{\sum_p w_p f_p f_pᵀ}{\sum_p w_p} + εI, \qquad Y = \log C

    Uncentred second moment as in O2P "average pooling"; ``centered=True`` subtracts the
    (weighted) mean first. Gradients are exact (Daleckii–Krein), including at the ≥ d − N
    eigenvalues tied at ε; the mask is treated as a constant (no gradient).

    Args:
        x: feature map, e.g. conv5 + ReLU.
        mask: optional non-negative weights per position (a region mask at feature resolution);
            each item must have positive total weight.
        eps: ridge ε > 0.
        centered: subtract the weighted mean.
        compute_dtype: dtype of the eigendecomposition and divided differences (None: the input
            dtype); uncentred, the O(N d²) products with the features run in the input dtype.
        method: ``"auto"`` (gram when H·W < d), ``"gram"`` or ``"eig"``.
        validate: check x and mask for non-finite/negative/empty values and the feature
            scale against the compute dtype's range (one fused host sync); off here or
            globally (``set_validation(False)``), bad values give NaN.

    Raises:
        ValueError: wrong shapes, no spatial positions (H·W = 0), eps ≤ 0, a bad mask.
        InvalidValuesError: non-finite features, or a feature scale that overflows the compute
            dtype (float64: max |x| ≳ 1e74 on the gram route). Features above 2⁴⁰ run the gram
            route's products in the compute dtype instead of float32 (exact up to that limit;
            the scale is read by the validation sync, so unvalidated such scales give NaN).
        NotImplementedError: double backward (``create_graph=True``) through the layer.

    Precision: autocast is off inside; bfloat16/float16 features (a trunk under autocast)
    are cast up to float32 first, and their gradient goes back in their own dtype.

    Shape:
        x (B, d, H, W), mask (B, H, W) -> (B, d, d), dtype of x (float32 for bfloat16/float16).

    Example:
        >>> x = torch.relu(torch.randn(2, 8, 3, 3))
        >>> log_cov_pool(x).shape
        torch.Size([2, 8, 8])
    """
    x = upcast(x)
    amax = _check_pool_inputs(x, mask, eps, validate)
    dtype = compute_dtype or x.dtype
    n, d = x.shape[-2] * x.shape[-1], x.shape[1]
    if method == "auto":
        method = "gram" if n < d else "eig"
    if method not in ("gram", "eig"):
        raise ValueError(f"log_cov_pool: method must be 'auto', 'gram' or 'eig', got {method!r}")
    if amax is not None:
        _check_scale(amax, d, eps, method, dtype)
    # centring's backward subtracts large, nearly cancelling per-position gradients: keep it
    # (and the products) in the compute dtype; uncentred pooling runs its products in x's
    # dtype, unless the features are too large for float32 products (GRAM_FLOAT32_MAX)
    promote = centered or (amax is not None and amax > GRAM_FLOAT32_MAX)
    f, dropped = _features_matrix(x.to(dtype) if promote else x, mask, centered)  # (B, N, d)
    if method == "gram":
        y = _LogGramPlusEps.apply(f, float(eps), dtype, dropped)
    elif method == "eig":
        fc = f.to(dtype)
        c = fc.mT @ fc + eps * torch.eye(d, dtype=dtype, device=x.device)  # (B, d, d)
        y = _named(
            "log_cov_pool", sym(c), torch.log, dd_log, "pd", False, loewner=loewner_log_sorted
        )
    return y.to(x.dtype)


def triu_vec(y: Tensor) -> Tensor:
    """Upper triangle of symmetric matrices with off-diagonals × √2 (keeps the Frobenius norm).

    Shape: y (..., d, d) -> (..., d(d+1)/2).

    Example:
        >>> triu_vec(torch.tensor([[1.0, 2.0], [2.0, 3.0]]))
        tensor([1.0000, 2.8284, 3.0000])
    """
    if y.ndim < 2 or y.shape[-1] != y.shape[-2]:
        raise ValueError(f"triu_vec: expected (..., d, d), got {tuple(y.shape)}")
    d = y.shape[-1]
    i, j = torch.triu_indices(d, d, device=y.device)
    scale = torch.where(i == j, 1.0, math.sqrt(2.0)).to(y.dtype)
    return y[..., i, j] * scale


class LogCovPool(nn.Module):
    """Module form of :func:`log_cov_pool` (no parameters).

    Shape: x (B, d, H, W), mask (B, H, W) -> (B, d, d).
    """

    def __init__(
        self,
        eps: float = 1e-3,
        centered: bool = False,
        compute_dtype: torch.dtype | None = torch.float64,
        method: str = "auto",
    ) -> None:
        super().__init__()
        self.eps, self.centered, self.compute_dtype, self.method = (
            eps,
            centered,
            compute_dtype,
            method,
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return log_cov_pool(x, mask, self.eps, self.centered, self.compute_dtype, self.method)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, centered={self.centered}, compute_dtype={self.compute_dtype}"
