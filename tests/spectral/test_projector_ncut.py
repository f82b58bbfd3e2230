"""projector, ncut_alignment_loss, spectral_embedding: against dense m × m formulas."""

import numpy as np
import pytest
import torch

from matbackprop.spectral import (
    NCutAlignmentLoss,
    Projector,
    ncut_alignment_loss,
    numerical_rank,
    projector,
    spectral_embedding,
)

from ..conftest import tol


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- projector


def test_projector_value_and_rank(device, dtype):
    z = torch.randn(3, 7, 3, dtype=torch.float64, generator=_gen(0))
    z[1, :, 2] = z[1, :, 0] + z[1, :, 1]  # rank 2
    p = Projector()(z.to(dtype).to(device))
    torch.testing.assert_close(p.cpu(), (z @ torch.linalg.pinv(z)).to(dtype), **tol(dtype, "grad"))
    assert numerical_rank(z.to(device)).tolist() == [3, 2, 3]
    torch.testing.assert_close(p @ p, p, **tol(dtype, "grad"))


def test_projector_gradcheck_full_column_rank(device):
    z = torch.randn(2, 6, 3, dtype=torch.float64, generator=_gen(1)).to(device).requires_grad_()
    w = torch.randn(2, 6, 6, dtype=torch.float64, generator=_gen(2)).to(device)
    assert torch.autograd.gradcheck(lambda a: (projector(a) * w).sum(), (z,))


def test_projector_gradient_rank_deficient_matches_pinv_autograd():
    """Rank 2 of 3 columns: our formula vs autograd through Z pinv(Z) along rank-preserving directions."""
    gen = _gen(3)
    a = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    b = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.randn(6, 6, dtype=torch.float64, generator=gen)
    (g1,) = torch.autograd.grad((projector(a @ b) * w).sum(), b)  # perturbing B keeps rank ≤ 2
    (g2,) = torch.autograd.grad((((a @ b) @ torch.linalg.pinv(a @ b)) * w).sum(), b)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)


def test_projector_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        projector(torch.tensor([[1.0, float("nan")]]))


# ----------------------------------------------------------------------------- ncut


def dense_ncut(f, labels, eps=1e-6, ignore=True):
    """½‖Π_Z − Π_T‖²_F with explicit m × m matrices (W = F Fᵀ, pinv projectors)."""
    valid = (labels >= 0).to(f.dtype)
    f = f * valid.unsqueeze(-1)
    k = int(labels.max()) + 1
    e = torch.nn.functional.one_hot(labels.clamp_min(0), k).to(f.dtype) * valid.unsqueeze(-1)
    w = f @ f.mT  # (B, m, m)
    d = w.sum(-1, keepdim=True) + eps
    z, t = f / d.sqrt(), e * d.sqrt()
    t = t[..., t.square().sum(-2).sum(0) > 0]  # drop labels empty in the whole batch
    pz = z @ torch.linalg.pinv(z)
    pt = t @ torch.linalg.pinv(t)
    return 0.5 * (pz - pt).square().sum((-2, -1))


def test_ncut_value_and_gradient_equal_dense_formula(device):
    f = torch.rand(3, 40, 6, dtype=torch.float64, generator=_gen(4)).to(device).requires_grad_()
    labels = torch.randint(0, 4, (3, 40), generator=_gen(5)).to(device)
    loss, rank = ncut_alignment_loss(f, labels, return_rank=True)
    ref = dense_ncut(f, labels)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    (g1,) = torch.autograd.grad(loss.sum(), f)
    (g2,) = torch.autograd.grad(ref.sum(), f)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    assert rank.tolist() == [6, 6, 6]


def test_ncut_gradcheck(device):
    f = torch.rand(2, 15, 4, dtype=torch.float64, generator=_gen(6)).to(device).requires_grad_()
    labels = torch.randint(0, 3, (2, 15), generator=_gen(7)).to(device)
    assert torch.autograd.gradcheck(lambda a: ncut_alignment_loss(a, labels), (f,))


def test_ncut_ignored_pixels_empty_labels_dead_pixels():
    gen = _gen(8)
    f = torch.rand(2, 30, 5, dtype=torch.float64, generator=gen)
    f[0, :4] = 0.0  # dead ReLU pixels
    labels = torch.randint(0, 3, (2, 30), generator=gen)
    labels[1, labels[1] == 1] = 2  # label 1 empty in item 1
    labels[:, -3:] = -1  # ignored
    f.requires_grad_()
    loss = ncut_alignment_loss(f, labels)
    ref = torch.stack([dense_ncut(f[i : i + 1], labels[i : i + 1])[0] for i in range(2)])
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-9)
    (g,) = torch.autograd.grad(loss.sum(), f)
    assert torch.isfinite(g).all()
    assert (g[:, -3:] == 0).all()  # ignored pixels get no gradient


def test_ncut_rank_deficient_features():
    gen = _gen(9)
    base = torch.rand(1, 50, 2, dtype=torch.float64, generator=gen)
    f = torch.cat([base, base.sum(-1, keepdim=True)], -1)  # rank 2 of 3 columns
    labels = torch.randint(0, 2, (1, 50), generator=gen)
    loss, rank = ncut_alignment_loss(f, labels, return_rank=True)
    assert rank.item() == 2
    torch.testing.assert_close(loss, dense_ncut(f, labels), rtol=1e-8, atol=1e-8)


def test_ncut_perfect_features_give_zero_loss():
    """Features = one-hot of the ground truth: Π_Z = Π_T, J = 0."""
    labels = torch.randint(0, 3, (1, 60), generator=_gen(10))
    f = torch.nn.functional.one_hot(labels, 3).double()
    torch.testing.assert_close(
        ncut_alignment_loss(f, labels), torch.zeros(1, dtype=torch.float64), atol=1e-10, rtol=0
    )


def test_ncut_module_reduction_and_float32(device):
    f = torch.rand(2, 20, 4, generator=_gen(11)).to(device)
    labels = torch.randint(0, 2, (2, 20), generator=_gen(12)).to(device)
    per = ncut_alignment_loss(f, labels)
    assert per.dtype == torch.float32 and per.shape == (2,)
    torch.testing.assert_close(NCutAlignmentLoss()(f, labels), per.mean())
    ref = ncut_alignment_loss(f.double(), labels)
    torch.testing.assert_close(per.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "f,labels,match",
    [
        (torch.rand(2, 5), torch.zeros(2, 5, dtype=torch.long), r"\(B, m, d\)"),
        (-torch.rand(1, 5, 2), torch.zeros(1, 5, dtype=torch.long), "non-negative"),
        (torch.rand(1, 5, 2), torch.zeros(1, 4, dtype=torch.long), "labels must be"),
        (torch.rand(1, 5, 2), torch.zeros(1, 5), "integer"),
        (torch.full((1, 5, 2), float("inf")), torch.zeros(1, 5, dtype=torch.long), "non-finite"),
    ],
)
def test_ncut_bad_input(f, labels, match):
    with pytest.raises(ValueError, match=match):
        ncut_alignment_loss(f, labels)


def test_spectral_embedding_matches_dense_eigenvectors():
    f = torch.rand(1, 40, 5, dtype=torch.float64, generator=_gen(13))
    emb = spectral_embedding(f, 3)
    d = (f @ f.mT).sum(-1) + 1e-6
    n = f[0] @ f[0].T / torch.sqrt(d[0][:, None] * d[0][None, :])
    lam, u = np.linalg.eigh(n.numpy())
    ref = torch.from_numpy(u[:, ::-1][:, :3].copy())
    # equal up to the sign of each column
    signs = torch.sign((emb[0] * ref).sum(0))
    torch.testing.assert_close(emb[0] * signs, ref, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="1 ≤ k ≤ d"):
        spectral_embedding(f, 6)
