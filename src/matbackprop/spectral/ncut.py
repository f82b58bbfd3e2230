r"""Normalized-cuts alignment layer: the DeepNCut loss (SPEC §5), without any m × m matrix.

Features F ≥ 0 (m × d, m = pixels), linear affinity W = F Fᵀ (never formed), degrees
d = W 1 + ε = F (Fᵀ 1) + ε, Z = D^{-1/2} F. Ground truth E (m × k one-hot), T = D^{1/2} E
(orthogonal columns; empty labels dropped). The Bach–Jordan alignment with full projectors::

    J = ½ ‖Π_Z − Π_T‖²_F = ½ (rank Z + rank T) − ⟨Π_Z, Π_T⟩,   ⟨Π_Z, Π_T⟩ = ‖Q_Zᵀ Q_T‖²_F

⟨Π_Z, Π_T⟩ = tr(Mᵀ (ZᵀZ)⁺ M) with M = Zᵀ Q_T (d × k): one d × d eigendecomposition per item.
ZᵀZ, ZᵀQ_T and Z P M are accumulated in float64 block-wise (P has entries up to 1/σ_min²).
Its backward is the projector formula (SPEC §2) with S = Q_T Q_Tᵀ, evaluated right to left::

    ∂/∂Z = 2 (I − Π_Z) Q_T Q_Tᵀ (Z⁺)ᵀ = 2 (Q_T − Z P M)(P M)ᵀ,   ∂/∂Q_T = 2 Z P M,   P = (ZᵀZ)⁺

so the cost is O(m d²) for the Gram matrix ZᵀZ and O(m d k) for everything else; memory
O(m d). Gradients flow through D on both sides (Z and T) by ordinary autograd. The rank of
Z is numerical (eigenvalues of ZᵀZ above ``rtol · λ_max``) and is returned for monitoring.
Double backward is refused (``NotImplementedError``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (
    InvalidValuesError,
    check_float,
    exact,
    full_precision,
    refuse_double_backward,
    upcast,
    validation_enabled,
)

_CHUNK = 16384  # rows per float64 block: extra memory O(chunk · d), not O(m · d)


def _chunks(m: int):
    return [slice(i, min(i + _CHUNK, m)) for i in range(0, m, _CHUNK)]


class _ProjectorAlignment(torch.autograd.Function):
    """c = ⟨Π_Z, Q Qᵀ⟩ = tr(Qᵀ Π_Z Q) for Z = F r (rows of F (B, m, d) scaled by r (B, m, 1)),
    Q (B, m, k) -> (B,), plus rank Z. Z is formed block by block, never as a whole.

    All products with Z are accumulated in float64, block by block over the m rows: P = (ZᵀZ)⁺
    has entries up to 1/σ_min², which would amplify float32 rounding in ZᵀQ and Z P M.
    """

    @staticmethod
    def forward(ctx, f: Tensor, r: Tensor, q: Tensor, rtol: float | None):
        b, m, d = f.shape
        k = q.shape[-1]
        acc = f.new_zeros(b, d, d + k, dtype=torch.float64)  # [ZᵀZ | M = ZᵀQ], one GEMM a block
        buf = f.new_empty(b, min(_CHUNK, m), d + k, dtype=torch.float64)  # reused: no refaults
        for sl in _chunks(m):
            zq = buf[:, : sl.stop - sl.start]
            torch.mul(f[:, sl], r[:, sl], out=zq[..., :d])  # Z block, straight into float64
            zq[..., d:].copy_(q[:, sl])
            acc.baddbmm_(zq[..., :d].mT, zq)
        gram, mzq = acc[..., :d], acc[..., d:]
        lam, v = torch.linalg.eigh(gram)  # ascending (B, d), (B, d, d)
        if rtol is None:
            rtol = max(m, d) * torch.finfo(torch.float64).eps
        keep = lam > rtol * lam[..., -1:].clamp_min(0)  # numerical rank of Z
        inv = torch.where(keep, 1.0 / torch.where(keep, lam, 1.0), 0.0)
        pm = (v * inv.unsqueeze(-2)) @ (v.mT @ mzq)  # P M  (B, d, k)
        c = (mzq * pm).sum((-2, -1))  # tr(Mᵀ P M)
        rank = keep.sum(-1)
        ctx.save_for_backward(f, r, q, pm)
        ctx.mark_non_differentiable(rank)
        return c.to(f.dtype), rank

    @staticmethod
    def backward(ctx, gc: Tensor, _grank):
        refuse_double_backward("ncut_alignment_loss")
        f, r, q, pm = ctx.saved_tensors
        b, m, d = f.shape
        gc2 = 2.0 * gc.double()[:, None, None]
        gf, gr, gq = torch.empty_like(f), torch.empty_like(r), torch.empty_like(q)
        pm_t = pm.mT.to(f.dtype)  # (B, k, d)
        buf = f.new_empty(b, min(_CHUNK, m), d, dtype=torch.float64)
        with exact():
            for sl in _chunks(m):
                zc = buf[:, : sl.stop - sl.start]
                torch.mul(f[:, sl], r[:, sl], out=zc)
                pi_q = zc @ pm  # Π_Z Q = Z P M, float64 (B, chunk, k)
                # the residual Q − Π_Z Q cancels where the fit is good: float64; the product
                # with (P M)ᵀ that follows is a k-term sum without cancellation: f's dtype
                resid = (gc2 * (q[:, sl].double() - pi_q)).to(f.dtype)
                gz = resid @ pm_t  # ∂/∂Z block  (B, chunk, d)
                gr[:, sl] = (gz * f[:, sl]).sum(-1, keepdim=True)  # ∂/∂r = Σ_d ∂/∂Z · F
                gf[:, sl] = gz.mul_(r[:, sl])  # ∂/∂F = ∂/∂Z · r
                gq[:, sl] = gc2 * pi_q
        return gf, gr, gq, None


def _check_ncut_inputs(features: Tensor, labels: Tensor, validate: bool) -> None:
    """Shapes and dtypes always (free); values with one fused host sync when validating."""
    if not isinstance(features, Tensor) or features.ndim != 3:
        raise ValueError(
            f"ncut_alignment_loss: features must be (B, m, d), got {getattr(features, 'shape', features)}"
        )
    if features.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"ncut_alignment_loss: features: expected float32 or float64 (bfloat16/float16 are "
            f"cast up to float32), got {features.dtype}"
        )
    if not isinstance(labels, Tensor) or labels.shape != features.shape[:2]:
        raise ValueError(
            f"ncut_alignment_loss: labels must be (B, m) = {tuple(features.shape[:2])}, "
            f"got {getattr(labels, 'shape', labels)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"ncut_alignment_loss: labels must be integer, got {labels.dtype}")
    if not (validate and validation_enabled()) or not features.numel():
        return
    # one pass: min and max propagate NaN, and ±inf shows in them
    lo, hi = torch.aminmax(features.detach())
    lo = float(torch.where(torch.isfinite(lo) & torch.isfinite(hi), lo, float("nan")))  # the sync
    if lo != lo:
        raise InvalidValuesError(
            "ncut_alignment_loss: features: input contains non-finite values (NaN or Inf)"
        )
    if lo < 0:
        raise ValueError("ncut_alignment_loss: features must be non-negative (e.g. ReLU outputs)")


def _compact_labels(labels: Tensor, valid: Tensor) -> tuple[Tensor, int]:
    """Map the label ids present in the batch to 0..k−1 (sorted), invalid pixels to 0.

    Sparse ids (e.g. 1e9) cost nothing: the one-hot width is the number of distinct ids in the
    batch, not max id + 1. Ids absent from an item give empty columns, which the loss drops.
    Two host syncs (the number of distinct ids, and whether −1 is one of them).

    Shape: labels, valid (B, m) -> (B, m) int64, k.
    """
    ids, inverse = torch.unique(torch.where(valid, labels, -1), return_inverse=True)  # sorted
    shift = int((ids[:1] < 0).sum())  # 1 where some pixel is invalid: −1 is then ids[0]
    return (inverse - shift).clamp_min(0), max(ids.numel() - shift, 1)


def degrees(f: Tensor, eps: float) -> Tensor:
    """d = W 1 + ε = F (Fᵀ 1) + ε without forming W = F Fᵀ. Shape: (B, m, d) -> (B, m, 1)."""
    return f @ f.sum(-2).unsqueeze(-1) + eps


@full_precision
def ncut_alignment_loss(
    features: Tensor,
    labels: Tensor,
    eps: float = 1e-6,
    ignore_index: int = -1,
    num_classes: int | None = None,
    rtol: float | None = None,
    return_rank: bool = False,
    validate: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Normalized-cuts alignment loss J = ½‖Π_Z − Π_T‖²_F per item, in O(m d²) time, O(m d) memory.

    .. math::
        d = F(Fᵀ1) + ε, \quad Z = D^{-1/2} F, \quad T = D^{1/2} E, \quad
        J = ½ (\mathrm{rank}\,Z + \mathrm{rank}\,T) − ‖Q_Zᵀ Q_T‖²_F

    Args:
        features: non-negative features (ReLU outputs) of the m pixels of the feature grid.
        labels: ground-truth segment id of each pixel, any non-negative integers (sparse ids
            such as 1e9 are relabelled to 0..k−1 over the batch); pixels labelled
            ``ignore_index`` (or any negative label) take no part (their features are zeroed).
            Labels absent from an item are ignored.
        eps: added to the degrees (keeps D invertible for dead pixels).
        num_classes: k when the labels are already compact ids in 0..k−1 (skips the
            relabelling and its host syncs); default: the distinct ids in the batch.
        rtol: relative rank tolerance on the eigenvalues of ZᵀZ, computed in float64
            (default ``max(m, d) · eps(float64)``).
        return_rank: also return the numerical rank of Z (the paper monitors it).
        validate: check the features' values (one host sync) and that the loss came out
            finite (one more); off here or globally with ``set_validation(False)``.

    Precision: autocast is off inside; bfloat16/float16 features are cast up to float32 and
    their gradient goes back in their own dtype. Products with Z accumulate in float64.

    Shape:
        features (B, m, d), labels (B, m) -> loss (B,) [, rank (B,) int64].

    Raises:
        ValueError: wrong shapes/dtypes, non-finite or negative features, or a non-finite loss
            from finite features (the feature scale overflowed the dtype: rescale them).
        NotImplementedError: double backward (``create_graph=True``).

    Example:
        >>> labels = torch.tensor([[0, 0, 1, 1]])
        >>> perfect = torch.nn.functional.one_hot(labels).double()  # features = the segments
        >>> ncut_alignment_loss(perfect, labels).abs().item() < 1e-12
        True
    """
    features = upcast(features)
    _check_ncut_inputs(features, labels, validate)
    valid = labels >= 0  # (B, m)
    if ignore_index >= 0:
        valid = valid & (labels != ignore_index)
    if features.device.type == "cpu" and bool(valid.all()):  # nothing ignored: skip a pass
        f = features
    else:
        f = features * valid.unsqueeze(-1).to(features.dtype)  # ignored pixels drop out (B, m, d)
    if num_classes is None:
        labels, k = _compact_labels(labels, valid)
    else:
        k = int(num_classes)
    onehot = torch.zeros(*labels.shape, k, dtype=f.dtype, device=f.device)  # E (B, m, k)
    onehot.scatter_(-1, labels.clamp(0, k - 1).unsqueeze(-1), valid.unsqueeze(-1).to(f.dtype))

    deg = degrees(f, eps)  # (B, m, 1)
    r = deg.rsqrt()  # Z = D^{-1/2} F = F r, formed block by block inside  (B, m, 1)
    t = onehot * deg.sqrt()  # D^{1/2} E  (B, m, k)
    norms2 = t.square().sum(-2, keepdim=True)  # (B, 1, k)
    nonempty = norms2 > 0
    q_t = t * torch.where(nonempty, norms2, 1.0).rsqrt()  # orthonormal (or zero) columns
    rank_t = nonempty.sum((-2, -1))  # (B,)

    c, rank_z = _ProjectorAlignment.apply(f, r, q_t, rtol)
    loss = 0.5 * (rank_z + rank_t).to(c.dtype) - c
    if validate and validation_enabled() and not bool(torch.isfinite(loss).all()):
        raise InvalidValuesError(
            f"ncut_alignment_loss: the loss is not finite although the features are: the "
            f"feature scale overflowed {features.dtype} (max feature "
            f"{float(features.detach().amax()):.3g}; the degrees grow with its square). Rescale "
            "the features (e.g. a lower learning rate, or normalise them) or use float64"
        )
    return (loss, rank_z) if return_rank else loss


@full_precision
def spectral_embedding(features: Tensor, k: int, eps: float = 1e-6) -> Tensor:
    """Leading k left singular vectors of Z = D^{-1/2} F (spectral embedding of D^{-1/2} W D^{-1/2}).

    Computed from the d × d Gram matrix ZᵀZ (no m × m matrix); columns beyond the rank are 0.

    Shape: features (B, m, d) -> (B, m, k), largest singular value first.
    """
    if not isinstance(features, Tensor) or features.ndim != 3:
        raise ValueError(
            f"spectral_embedding: features must be (B, m, d), got {getattr(features, 'shape', features)}"
        )
    features = upcast(features)
    check_float(features, "spectral_embedding: features")
    if not 1 <= k <= features.shape[-1]:
        raise ValueError(f"spectral_embedding: need 1 ≤ k ≤ d = {features.shape[-1]}, got {k}")
    with torch.no_grad():
        f = features.double()
        z = f * degrees(f, eps).rsqrt()  # (B, m, d)
        lam, v = torch.linalg.eigh(z.mT @ z)  # ascending
        lam, v = lam.flip(-1)[..., :k], v.flip(-1)[..., :k]
        keep = lam > max(z.shape[-2:]) * torch.finfo(torch.float64).eps * lam[..., :1]
        scale = torch.where(keep, torch.where(keep, lam, 1.0).rsqrt(), 0.0)
        return ((z @ v) * scale.unsqueeze(-2)).to(features.dtype)


class NCutAlignmentLoss(nn.Module):
    """Module form of :func:`ncut_alignment_loss`; returns the batch mean unless ``reduction='none'``."""

    def __init__(self, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.eps, self.reduction = eps, reduction

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        loss = ncut_alignment_loss(features, labels, eps=self.eps)
        return loss if self.reduction == "none" else getattr(loss, self.reduction)()
