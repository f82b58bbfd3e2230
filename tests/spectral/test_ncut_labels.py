"""ncut_alignment_loss: sparse label ids are relabelled, overflowed feature scales are reported."""

import pytest
import torch

from matbackprop.spectral import ncut_alignment_loss


def _dense_loss(f: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """½‖Π_Z − Π_T‖²_F with explicit m × m projectors (float64), labels < 0 ignored."""
    out = []
    for fi, li in zip(f.double(), labels):
        valid = li >= 0
        fi = fi * valid[:, None]
        d = fi @ fi.sum(0) + eps  # degrees (m,)
        z = fi / d.sqrt()[:, None]
        ids = li[valid].unique()
        e = torch.stack([(li == k).double() for k in ids], 1)  # (m, k) one-hot of present ids
        t = e * d.sqrt()[:, None]
        pz, pt = z @ torch.linalg.pinv(z), t @ torch.linalg.pinv(t)
        out.append(0.5 * (pz - pt).square().sum())
    return torch.stack(out)


def test_sparse_ids_equal_compact_ids_and_dense_reference():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 30, 5, generator=g, dtype=torch.float64)
    compact = torch.randint(0, 3, (2, 30), generator=g)
    compact[1] = compact[1].clamp_max(1)  # item 1 has fewer segments: empty columns after relabel
    compact[0, :4] = -1  # ignored pixels
    ids = torch.tensor([10**9 - 7, 10**9 + 3, 10**9 + 11])  # sparse, near 1e9
    sparse = torch.where(compact >= 0, ids[compact.clamp_min(0)], -1)
    got = ncut_alignment_loss(f, sparse)  # before: tried to allocate ~1e9 one-hot columns
    torch.testing.assert_close(got, ncut_alignment_loss(f, compact), rtol=0, atol=0)
    torch.testing.assert_close(got, _dense_loss(f, compact), rtol=1e-9, atol=1e-9)


def test_gradient_unchanged_by_relabelling():
    g = torch.Generator().manual_seed(1)
    f = torch.rand(1, 20, 4, generator=g, dtype=torch.float64)
    lab = torch.randint(0, 3, (1, 20), generator=g)
    f1, f2 = f.clone().requires_grad_(), f.clone().requires_grad_()
    ncut_alignment_loss(f1, lab).sum().backward()
    ncut_alignment_loss(f2, lab * 1000 + 5).sum().backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=0, atol=0)


def test_overflowing_feature_scale_raises():
    g = torch.Generator().manual_seed(2)
    f = torch.rand(1, 20, 4, generator=g)
    lab = torch.randint(0, 3, (1, 20), generator=g)
    assert torch.isfinite(ncut_alignment_loss(f, lab)).all()
    with pytest.raises(ValueError, match="feature scale overflowed"):
        ncut_alignment_loss(f * 1e30, lab)  # before: returned NaN silently
    # float64 holds the same features without overflow
    torch.testing.assert_close(
        ncut_alignment_loss(f.double() * 1e30, lab), ncut_alignment_loss(f.double(), lab)
    )
