"""eig_layer and svd_layer: values, the paper's backward against finite differences, errors."""

import pytest
import torch

from matbackprop.spectral import EigLayer, SVDLayer, eig_layer, svd_layer, sym

from ..conftest import tol
from .conftest import random_spd


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_eig_values_match_eigh(device, dtype):
    x = random_spd(6, (2, 3), cond=20.0, dtype=dtype).to(device)
    lam, u = EigLayer()(x)
    lam_ref = torch.linalg.eigvalsh(x.cpu().double()).to(dtype)
    torch.testing.assert_close(lam.cpu(), lam_ref, **tol(dtype))
    torch.testing.assert_close((u * lam.unsqueeze(-2)) @ u.mT, x, **tol(dtype))
    assert lam.shape == (2, 3, 6) and u.shape == (2, 3, 6, 6)


def _eig_loss(a, w):
    """Gauge-invariant: eigenvalues and the rank-one projectors u_i u_iᵀ."""
    lam, u = eig_layer(sym(a))
    proj = torch.einsum("...ik,...jk->...kij", u, u)  # (..., n, n, n): P_k = u_k u_kᵀ
    return (lam * lam).sum() + (proj * w).sum()


def test_eig_gradcheck_distinct_eigenvalues(device):
    x = random_spd(5, (2,), eigvals=[1.0, 2.0, 3.5, 5.0, 8.0], seed=1).to(device).requires_grad_()
    w = torch.randn(2, 5, 5, 5, dtype=torch.float64, generator=_gen(0)).to(device)
    assert torch.autograd.gradcheck(lambda a: _eig_loss(a, w), (x,))


def test_eig_sign_convention_against_finite_differences():
    """SPEC §2: one copy of the authors' code has K̃ transposed; ours must match FD."""
    x = random_spd(4, eigvals=[1.0, 2.0, 4.0, 7.0], seed=2)
    w = torch.randn(4, 4, dtype=torch.float64, generator=_gen(1))

    def loss(a):
        _, u = eig_layer(sym(a))
        return (u.abs() * w).sum()  # |u| removes the sign gauge

    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(xg), xg)
    h, fd = 1e-6, torch.zeros_like(x)
    for i in range(4):
        for j in range(4):
            e = torch.zeros_like(x)
            e[i, j] = h
            fd[i, j] = (loss(x + e) - loss(x - e)) / (2 * h)
    torch.testing.assert_close(g, sym(fd), rtol=1e-6, atol=1e-7)
    # the transposed-K̃ variant would give a different gradient: make sure the test can tell
    lam, u = torch.linalg.eigh(x)
    gu = torch.autograd.functional.vjp(lambda uu: (uu.abs() * w).sum(), u)[1]
    k = 1.0 / (lam.unsqueeze(-1) - lam.unsqueeze(-2)).fill_diagonal_(float("inf"))
    wrong = u @ sym(k * (u.mT @ gu)) @ u.mT  # K̃ instead of K̃ᵀ
    assert (wrong - sym(fd)).abs().max() > 1e-3


def test_eig_eigenvalue_gradient_finite_at_ties():
    x = (3 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    lam, _ = eig_layer(x)
    (g,) = torch.autograd.grad(lam.sum() + (lam**2).sum(), x)
    torch.testing.assert_close(g, 7 * torch.eye(4, dtype=torch.float64))


def _svd_loss(a, w1, w2, w3):
    """Gauge-invariant in the joint sign flips (u_i, v_i) and uses U, S, V."""
    u, s, v = svd_layer(a)
    k = 2
    pu = u[..., :k] @ u[..., :k].mT
    pv = v[..., :k] @ v[..., :k].mT
    return (
        (s**3).sum() + (pu * w1).sum() + (pv * w2).sum() + ((u * s.unsqueeze(-2)) @ v.mT * w3).sum()
    )


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)], ids=["tall", "wide", "square"])
def test_svd_gradcheck_general(shape, device):
    m, n = shape
    gen = _gen(3)
    x = torch.randn(2, m, n, dtype=torch.float64, generator=gen).to(device).requires_grad_()
    w1 = torch.randn(2, m, m, dtype=torch.float64, generator=gen).to(device)
    w2 = torch.randn(2, n, n, dtype=torch.float64, generator=gen).to(device)
    w3 = torch.randn(2, m, n, dtype=torch.float64, generator=gen).to(device)
    assert torch.autograd.gradcheck(lambda a: _svd_loss(a, w1, w2, w3), (x,))


def test_svd_values_and_v_not_vh(device, dtype):
    x = torch.randn(3, 7, 4, dtype=torch.float64, generator=_gen(4)).to(dtype).to(device)
    u, s, v = SVDLayer()(x)
    assert u.shape == (3, 7, 4) and s.shape == (3, 4) and v.shape == (3, 4, 4)
    torch.testing.assert_close((u * s.unsqueeze(-2)) @ v.mT, x, **tol(dtype))
    assert (s[..., :-1] >= s[..., 1:]).all()


def test_svd_paper_pooling_special_case():
    """SPEC §2: with ∂L/∂U = 0, ∂L/∂X = U(2Σ sym(Kᵀ∘(Vᵀ∂L/∂V)) + (∂L/∂Σ)_diag)Vᵀ."""
    gen = _gen(5)
    x = torch.randn(8, 5, dtype=torch.float64, generator=gen).requires_grad_()
    gv = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    gs = torch.randn(5, dtype=torch.float64, generator=gen)
    u, s, v = svd_layer(x)
    (g,) = torch.autograd.grad((v * gv).sum() + (s * gs).sum(), x)
    s_, u_, v_ = s.detach(), u.detach(), v.detach()
    kmat = 1.0 / (s_.unsqueeze(-1) ** 2 - s_.unsqueeze(-2) ** 2).fill_diagonal_(float("inf"))
    paper = u_ @ (2 * torch.diag(s_) @ sym(kmat.mT * (v_.mT @ gv)) + torch.diag(gs)) @ v_.mT
    torch.testing.assert_close(g, paper, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "fn,x,match",
    [
        (eig_layer, torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
        (eig_layer, torch.ones(3), "square"),
        (svd_layer, torch.tensor([[1.0, float("inf")]]), "non-finite"),
        (svd_layer, torch.ones(3), r"\(\.\.\., m, n\)"),
    ],
)
def test_bad_input_raises(fn, x, match):
    with pytest.raises(ValueError, match=match):
        fn(x)
