"""sym_matfun / sym_logm / sym_sqrtm / sym_powm / sym_expm: smoke, errors, values, gradients."""

import itertools

import mpmath
import numpy as np
import pytest
import scipy.linalg as sla
import torch

from matbackprop.spectral import (
    SymLogm,
    SymPowm,
    eig_layer,
    sym,
    sym_expm,
    sym_logm,
    sym_matfun,
    sym_powm,
    sym_sqrtm,
)
from matbackprop.spectral.matfun import dd_exp, dd_log, dd_pow, dd_sqrt, loewner_log_sorted

from ..conftest import tol
from .conftest import random_spd

OPS = {
    "logm": (sym_logm, sla.logm),
    "sqrtm": (sym_sqrtm, sla.sqrtm),
    "expm": (sym_expm, sla.expm),
    "powm": (lambda x: sym_powm(x, -0.7), lambda a: sla.fractional_matrix_power(a, -0.7)),
}


def test_smoke_modules():
    x = random_spd(5, (2,))
    assert torch.allclose(SymLogm()(x), sym_logm(x))
    assert torch.allclose(SymPowm(0.5)(x), sym_sqrtm(x))
    assert "p=0.5" in repr(SymPowm(0.5))


@pytest.mark.parametrize("name", OPS)
def test_values_against_scipy(name, device, dtype):
    ours, ref = OPS[name]
    x = random_spd(6, (3, 2), dtype=dtype, cond=50.0, seed=1)
    if name == "expm":
        x = x / 10  # keep e^λ moderate: float32 eigenvector error is amplified by e^λ
    y = ours(x.to(device))
    assert y.shape == x.shape and y.dtype == dtype and y.device.type == device.type
    want = np.stack([np.real(ref(a)) for a in x.double().reshape(-1, 6, 6).numpy()])
    want = torch.from_numpy(want).to(dtype).reshape(x.shape)
    torch.testing.assert_close(y.cpu(), want, **tol(dtype))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize(
    "eigvals",
    [None, [1.0, 1.0, 1.0, 2.0, 3.0], [2.0] * 5, [0.5, 0.5 + 1e-9, 4.0, 4.0, 4.0]],
    ids=["distinct", "triple-tie", "scalar", "near-and-exact-ties"],
)
def test_gradcheck(name, eigvals, device):
    ours, _ = OPS[name]
    x = random_spd(5, (2,), eigvals=eigvals, seed=2).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ours(sym(a)), (x,), eps=1e-6, atol=1e-6)


def test_log_gradient_at_2I_is_half_sym_g():
    x = (2 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    g = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (gx,) = torch.autograd.grad((sym_logm(x) * g).sum(), x)
    torch.testing.assert_close(gx, sym(g) / 2, rtol=0, atol=1e-15)


def test_paper_route_equals_daleckii_krein_at_large_gaps():
    """Paper: feed ∂L/∂U = 2 sym(G) U f(Σ), ∂L/∂Σ = f′(Σ)(UᵀGU)_diag to the EIG backward."""
    x = random_spd(6, (3,), eigvals=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0], seed=3).requires_grad_()
    g = torch.randn(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam, u = eig_layer(x)
    y_paper = (u * lam.log().unsqueeze(-2)) @ u.mT
    (g_paper,) = torch.autograd.grad((y_paper * g).sum(), x)
    (g_dk,) = torch.autograd.grad((sym_logm(x) * g).sum(), x)
    torch.testing.assert_close(g_paper, g_dk, rtol=1e-10, atol=1e-12)


def test_generic_sym_matfun_matches_builtin_and_handles_ties():
    x = random_spd(5, eigvals=[1.0, 1.0, 2.0, 3.0, 3.0 + 1e-12], seed=4).requires_grad_()
    g = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y1 = sym_matfun(x, torch.log, lambda t: 1 / t, domain="pd")
    (g1,) = torch.autograd.grad((y1 * g).sum(), x)
    (g2,) = torch.autograd.grad((sym_logm(x) * g).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    y3 = sym_matfun(x.detach(), torch.tanh, lambda t: 1 - torch.tanh(t) ** 2)
    lam, u = torch.linalg.eigh(x.detach())
    torch.testing.assert_close(y3, (u * lam.tanh().unsqueeze(-2)) @ u.mT)


@pytest.mark.parametrize(
    "dd,f",
    [
        (dd_log, mpmath.log),
        (dd_sqrt, mpmath.sqrt),
        (dd_exp, mpmath.exp),
        (lambda a, b: dd_pow(a, b, -1.5), lambda t: t**-1.5),
        (lambda a, b: dd_pow(a, b, 2.3), lambda t: t**2.3),
    ],
    ids=["log", "sqrt", "exp", "pow-1.5", "pow2.3"],
)
def test_divided_differences_are_cancellation_free(dd, f, dtype):
    """Against 50-digit arithmetic, at exact ties, near ties and large gaps."""
    mpmath.mp.dps = 50
    # pairs inside every regime, including just below the series switch points
    vals = [1e-6, 1e-3, 1e-3 * (1 + 1e-9), 0.5, 1.0, 1 + 1e-12, 1 + 1e-6, 1 + 1.9e-4, 1.001]
    vals += [1.005, 2.0, 30.0]
    worst = 0.0
    for a, b in itertools.product(vals, vals):
        ta, tb = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
        fa, fb = mpmath.mpf(float(ta)), mpmath.mpf(float(tb))
        ref = mpmath.diff(f, fa) if fa == fb else (f(fa) - f(fb)) / (fa - fb)
        worst = max(worst, abs(float(dd(ta, tb)) - float(ref)) / abs(float(ref)))
    assert worst < (1e-13 if dtype == torch.float64 else 5e-6)


def test_float32_log_backward_in_deepo2p_regime(device):
    """Rank-deficient covariance + εI in float32: finite, and close to the float64 gradient."""
    gen = torch.Generator().manual_seed(5)
    f = torch.relu(torch.randn(4, 20, 40, generator=gen, dtype=torch.float64))
    c = (f.mT @ f / 20 + 1e-3 * torch.eye(40, dtype=torch.float64)).to(device)
    g = torch.randn(4, 40, 40, generator=gen, dtype=torch.float64).to(device)
    x32 = c.float().requires_grad_()
    (g32,) = torch.autograd.grad((sym_logm(x32) * g.float()).sum(), x32)
    x64 = c.clone().requires_grad_()
    (g64,) = torch.autograd.grad((sym_logm(x64) * g).sum(), x64)
    assert torch.isfinite(g32).all()
    rel = (g32.double() - g64).norm() / g64.norm()
    assert rel < 1e-3  # float32 eigh of a 1e-3..1e2 spectrum: ~1e-5..1e-4 expected


@pytest.mark.parametrize(
    "fn,x,match",
    [
        (sym_logm, torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
        (sym_logm, torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), "non-finite"),
        (sym_logm, torch.diag(torch.tensor([1.0, -1.0])), "not positive definite"),
        (sym_logm, torch.diag(torch.tensor([1.0, 0.0])), "not positive definite"),
        (lambda x: sym_powm(x, -0.5), torch.diag(torch.tensor([1.0, 0.0])), "positive definite"),
        (sym_sqrtm, torch.diag(torch.tensor([1.0, -0.5])), "positive semi-definite"),
        (sym_logm, torch.ones(2, 3), "square"),
        (sym_logm, torch.eye(2, dtype=torch.int64), "float32 or float64"),
        (sym_expm, torch.eye(2, dtype=torch.complex64), "float32 or float64"),
    ],
)
def test_bad_input_raises(fn, x, match):
    with pytest.raises(ValueError, match=match):
        fn(x)


def test_sqrt_accepts_psd_and_expm_accepts_indefinite():
    y = sym_sqrtm(torch.diag(torch.tensor([4.0, 0.0], dtype=torch.float64)))
    torch.testing.assert_close(y, torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64)))
    y = sym_expm(torch.diag(torch.tensor([-1.0, 0.0], dtype=torch.float64)))
    torch.testing.assert_close(y.diagonal(), torch.tensor([np.exp(-1.0), 1.0], dtype=torch.float64))


def test_loewner_log_sorted_table_against_mpmath(dtype):
    """sym_logm's backward table from the ascending spectrum vs 50-digit divided differences."""
    mpmath.mp.dps = 50
    vals = [1e-6, 1e-3, 1e-3 * (1 + 1e-9), 0.5, 1.0, 1.0, 1 + 1e-12, 1 + 1e-6, 1 + 1.9e-4]
    vals += [1.001, 1.005, 2.0, 30.0, 1e6]
    lam = torch.tensor(sorted(vals), dtype=dtype)
    table = loewner_log_sorted(lam)
    worst = 0.0
    for i, j in itertools.product(range(len(vals)), repeat=2):
        a, b = mpmath.mpf(float(lam[i])), mpmath.mpf(float(lam[j]))
        ref = 1 / a if a == b else (mpmath.log(a) - mpmath.log(b)) / (a - b)
        worst = max(worst, abs(float(table[i, j]) - float(ref)) / abs(float(ref)))
    assert worst < (1e-14 if dtype == torch.float64 else 5e-7), worst
