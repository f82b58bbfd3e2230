"""log_cov_pool / LogCovPool / triu_vec: values vs SciPy, both routes, gradients, float32, errors."""

import itertools
import math

import mpmath
import numpy as np
import pytest
import scipy.linalg as sla
import torch

from matbackprop.spectral import LogCovPool, log_cov_pool, pooling, sym_logm, triu_vec
from matbackprop.spectral.pooling import dd_log1p_ratio, dd_log1p_ratio_sorted

from ..conftest import tol


def _features(b=2, d=12, h=3, w=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(b, d, h, w, generator=gen, dtype=torch.float64)).to(dtype)


def _reference(x, mask=None, eps=1e-3, centered=False):
    """Dense NumPy/SciPy: C = Σ w f fᵀ / Σ w (+ centring) + εI, then scipy.linalg.logm."""
    out = []
    for i, xi in enumerate(x.double().numpy()):
        f = xi.reshape(xi.shape[0], -1)  # (d, N)
        w = np.ones(f.shape[1]) if mask is None else mask[i].double().numpy().ravel()
        w = w / w.sum()
        if centered:
            f = f - (f * w).sum(1, keepdims=True)
        c = (f * w) @ f.T + eps * np.eye(f.shape[0])
        out.append(np.real(sla.logm(c)))
    return np.stack(out)


@pytest.mark.parametrize("method", ["gram", "eig", "auto"])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_values_against_scipy(method, centered, masked, device, dtype):
    x = _features(d=12, h=3, w=3, dtype=dtype)  # N = 9 < d: rank-deficient, ≥ 3 eigenvalues at ε
    mask = None
    if masked:
        mask = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        mask[0, 0] = 0.0  # a position outside the region
    y = log_cov_pool(
        x.to(device), None if mask is None else mask.to(device), centered=centered, method=method
    )
    want = torch.from_numpy(_reference(x, mask, centered=centered)).to(dtype)
    torch.testing.assert_close(y.cpu(), want, **tol(dtype, "grad"))


def test_gram_and_eig_routes_agree_with_gradients(device):
    x = _features(b=3, d=40, h=5, w=5, seed=2).to(device).requires_grad_()
    mask = torch.rand(3, 5, 5, dtype=torch.float64, device=device)
    mask[0, :2] = 0
    g = torch.randn(3, 40, 40, dtype=torch.float64, device=device)
    grads = []
    for method in ("gram", "eig"):
        y = log_cov_pool(x, mask, method=method)
        grads.append(torch.autograd.grad((y * g).sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", ["gram", "eig"])
def test_gradcheck_rank_deficient_with_mask_zeros(method, device):
    x = _features(b=2, d=6, h=2, w=2, seed=3).to(device).requires_grad_()
    mask = torch.tensor([[[1.0, 0.0], [2.0, 0.5]], [[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    mask = mask.to(device)
    assert torch.autograd.gradcheck(lambda a: log_cov_pool(a, mask, eps=0.1, method=method), (x,))


def test_gradcheck_exact_ties_zero_features():
    """All-zero features: C = εI exactly, every eigenvalue tied; gradient of log is still exact."""
    x = torch.zeros(1, 5, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: log_cov_pool(a, method="gram"), (x,))
    assert torch.autograd.gradcheck(lambda a: log_cov_pool(a, method="eig"), (x,))


def test_float32_gradient_matches_float64_reference_deepo2p_size():
    """SPEC target: B = 8, d = 256, 13×13, ReLU features, float32 in, rel. error ≤ 1e-5."""
    x64 = _features(b=8, d=256, h=13, w=13, seed=4)
    g = torch.randn(8, 256, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref_x = x64.clone().requires_grad_()
    c = ref_x.flatten(2) @ ref_x.flatten(2).mT / 169 + 1e-3 * torch.eye(256, dtype=torch.float64)
    (ref,) = torch.autograd.grad((sym_logm(c) * g).sum(), ref_x)  # independent d × d route
    x32 = x64.float().requires_grad_()
    y32 = log_cov_pool(x32)
    assert y32.dtype == torch.float32
    (g32,) = torch.autograd.grad((y32 * g.float()).sum(), x32)
    assert torch.isfinite(g32).all()
    rel = ((g32.double() - ref).norm() / ref.norm()).item()
    assert rel <= 1e-5, rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dd_log1p_ratio_against_mpmath(dtype):
    """φ(x) = log1p(x)/x: series, close and far regimes, at their switch points and at ties."""
    mpmath.mp.dps = 50

    def phi(v):
        return mpmath.log1p(v) / v if v != 0 else mpmath.mpf(1)

    vals = [0.0, 1e-9, 3e-4, 9.9e-4, 1e-3, 1.01e-3, 0.029, 0.031, 0.5, 1.0, 1 + 1e-9, 1 + 1e-5]
    vals += [3.0, 1e2, 1e5, 1e5 * (1 + 1e-7), 1e8]
    worst = 0.0
    for a, b in itertools.product(vals, vals):
        ta, tb = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
        fa, fb = mpmath.mpf(float(ta)), mpmath.mpf(float(tb))
        if fa == fb:
            ref = mpmath.diff(phi, fa) if fa != 0 else mpmath.mpf(-0.5)
        else:
            ref = (phi(fa) - phi(fb)) / (fa - fb)
        got = float(dd_log1p_ratio(ta, tb))
        worst = max(worst, abs(got - float(ref)) / abs(float(ref)))
    # float32: the close regime loses eps/t ≈ 4e-6 just above the series switch (t = 0.03)
    assert worst < (1e-12 if dtype == torch.float64 else 1e-5), worst


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("mode", ["plain", "mask", "centered"])
def test_float32_gradient_accuracy_across_scales_masks_centring(scale, mode, device):
    """Mixed precision (float32 products, float64 spectrum) stays within 1e-5 of float64."""
    gen = torch.Generator().manual_seed(6)
    x = torch.relu(torch.randn(2, 256, 13, 13, generator=gen, dtype=torch.float64)) * scale
    g = torch.randn(2, 256, 256, generator=gen, dtype=torch.float64)
    x, g = x.to(device), g.to(device)
    mask = None
    if mode == "mask":
        mask = (torch.rand(2, 13, 13, generator=gen) > 0.6).double().to(device)
        mask[:, 0, 0] = 1.0
    kw = dict(mask=mask, centered=mode == "centered")
    x64 = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad((log_cov_pool(x64, method="eig", **kw) * g).sum(), x64)
    x32 = x.float().requires_grad_()
    (got,) = torch.autograd.grad((log_cov_pool(x32, **kw) * g.float()).sum(), x32)
    assert ((got.double() - ref).norm() / ref.norm()).item() <= 1e-5


def test_dd_log1p_ratio_table_matches_plain_quotient_where_well_conditioned():
    x = torch.tensor([0.0, 1e-5, 0.3, 2.0, 50.0, 1e4], dtype=torch.float64)
    table = dd_log1p_ratio(x.unsqueeze(-1), x.unsqueeze(-2))
    phi = torch.log1p(x[1:]) / x[1:]
    i, j = 3, 5
    want = (phi[i - 1] - phi[j - 1]) / (x[i] - x[j])
    torch.testing.assert_close(table[i, j], want, rtol=1e-14, atol=0)
    torch.testing.assert_close(table, table.mT)
    assert table[0, 0] == -0.5  # φ′(0)


def test_triu_vec_keeps_frobenius_norm_and_order():
    y = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    v = triu_vec(y)
    s = math.sqrt(2)
    torch.testing.assert_close(v, torch.tensor([1.0, 2 * s, 3 * s, 4.0, 5 * s, 6.0]))
    torch.testing.assert_close(v.norm(), y.norm())
    assert triu_vec(torch.zeros(4, 7, 7)).shape == (4, 28)


def test_module_and_dtype():
    x = _features(dtype=torch.float32)
    pool = LogCovPool(eps=1e-2)
    y = pool(x)
    assert y.shape == (2, 12, 12) and y.dtype == torch.float32
    torch.testing.assert_close(y, log_cov_pool(x, eps=1e-2))
    assert "eps=0.01" in repr(pool)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.ones(2, 3, 4)), r"\(B, d, H, W\)"),
        (dict(x=torch.full((1, 2, 2, 2), float("nan"))), "non-finite"),
        (dict(x=torch.ones(1, 2, 2, 2), eps=0.0), "eps must be > 0"),
        (dict(x=torch.ones(1, 2, 2, 2), mask=torch.ones(1, 3, 3)), "mask must be"),
        (dict(x=torch.ones(1, 2, 2, 2), mask=-torch.ones(1, 2, 2)), "non-negative"),
        (
            dict(x=torch.ones(2, 2, 2, 2), mask=torch.zeros(2, 2, 2)),
            r"zero total weight .*\[0, 1\]",
        ),
        (dict(x=torch.ones(1, 2, 2, 2), method="svd"), "method must be"),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_cov_pool(**kwargs)


def test_dd_log1p_ratio_sorted_table_against_mpmath(dtype, monkeypatch):
    """The backward's table from the ascending spectrum (both the CPU block path and the
    torch.where path) equals 50-digit φ[x_i, x_j] at ties, near ties and in every regime."""
    mpmath.mp.dps = 50

    def phi(v):
        return mpmath.log1p(v) / v if v != 0 else mpmath.mpf(1)

    vals = [0.0, 0.0, 1e-9, 3e-4, 9.9e-4, 1e-3, 1.01e-3, 0.029, 0.031, 0.5, 1.0, 1 + 1e-9]
    vals += [1 + 1e-5, 3.0, 1e2, 1e5, 1e5 * (1 + 1e-7), 1e8]
    x = torch.tensor(sorted(vals), dtype=dtype)
    tables = [dd_log1p_ratio_sorted(x)]
    monkeypatch.setattr(pooling, "SUBSET_ON_CPU", False)
    tables.append(dd_log1p_ratio_sorted(x))
    for table in tables:
        worst = 0.0
        for i, j in itertools.product(range(len(vals)), repeat=2):
            a, b = mpmath.mpf(float(x[i])), mpmath.mpf(float(x[j]))
            if a == b:
                ref = mpmath.diff(phi, a) if a != 0 else mpmath.mpf(-0.5)
            else:
                ref = (phi(a) - phi(b)) / (a - b)
            worst = max(worst, abs(float(table[i, j]) - float(ref)) / abs(float(ref)))
        assert worst < (1e-12 if dtype == torch.float64 else 1e-5), worst
