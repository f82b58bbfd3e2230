"""The adversarial cases of issue 17: each gives the right answer (against an oracle that
shares no code with the layer) or raises InvalidValuesError / ValueError saying what is
wrong — never a NaN or a wrong number without an error."""

import math

import mpmath
import pytest
import torch

from matbackprop.spectral import (
    InvalidValuesError,
    log_cov_pool,
    svd_layer,
    sym_expm,
    sym_powm,
    sym_sqrtm,
)

from ..conftest import tol

# ----------------------------------------------------------------------------- svd_layer scales


def _svd_loss(a, c):
    """Scale-invariant (L(c X) = L(X) at c = scale), gauge-invariant, uses U, S and V."""
    u, s, v = svd_layer(a)
    pu = u[..., :2] @ u[..., :2].mT
    pv = v[..., :2] @ v[..., :2].mT
    w = torch.arange(float(pv.numel()), dtype=a.dtype, device=a.device).reshape(pv.shape)
    return 0.3 * pu.sum() + (pv * w).sum() + (s / c).sum() + (s[..., 0] / s[..., 1]).sum()


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)], ids=["tall", "wide"])
@pytest.mark.parametrize(
    "dt,scale",
    [
        (torch.float32, 1e19),
        (torch.float32, 1e30),
        (torch.float32, 1e-20),
        (torch.float32, 1e-25),
        (torch.float64, 1e155),
        (torch.float64, 1e-160),
        (torch.float64, 1e300),
    ],
)
def test_svd_gradient_at_extreme_scales(device, shape, dt, scale):
    """∇L(cX) = ∇L(X)/c: against the float64 gradient of the rescaled problem (c = 1).
    Before the scale-aware gaps: NaN (σ² over/underflowed) or 58 % off (σ² rounded to 0)."""
    m, n = shape
    x0 = torch.randn(m, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xr = x0.clone().to(device).requires_grad_()
    (ref,) = torch.autograd.grad(_svd_loss(xr, 1.0), xr)
    x = (x0.to(dt) * scale).to(device).requires_grad_()
    (got,) = torch.autograd.grad(_svd_loss(x, scale), x)
    assert torch.isfinite(got).all()
    rel = ((got.double() * scale - ref).norm() / ref.norm()).item()
    assert rel < (1e-4 if dt == torch.float32 else 1e-10), rel


# ----------------------------------------------------------------------------- log_cov_pool scales


def _mp_logcov_grad(x, mask, g, eps):
    """Oracle in mpmath: log(Σ w f fᵀ/Σw + εI) via mp.eigsy, and its gradient by central
    differences (step 1e-40 relative) — no code shared with the layer, no float rounding."""
    d, npos = x.shape
    span = float(x.abs().max()) ** 2 / eps  # eigenvalues span ε … |x|²
    mpmath.mp.dps = 80 + int(abs(math.log10(span)))
    xs = [[mpmath.mpf(float(v)) for v in row] for row in x.tolist()]
    w = [mpmath.mpf(float(v)) for v in mask.tolist()]
    wsum = sum(w)
    gm = mpmath.matrix(g.tolist())

    def loss(xx):
        c = mpmath.matrix(d, d)
        for i in range(d):
            for j in range(d):
                c[i, j] = sum(w[p] * xx[i][p] * xx[j][p] for p in range(npos)) / wsum
            c[i, i] += eps
        e, q = mpmath.eigsy(c)
        logc = q * mpmath.diag([mpmath.log(t) for t in e]) * q.T
        return logc, sum(logc[i, j] * gm[i, j] for i in range(d) for j in range(d))

    y, _ = loss(xs)
    scale = max(abs(v) for row in xs for v in row)
    h = scale * mpmath.mpf(10) ** -40
    grad = torch.zeros(d, npos, dtype=torch.float64)
    for i in range(d):
        for p in range(npos):
            xp = [r[:] for r in xs]
            xm = [r[:] for r in xs]
            xp[i][p] += h
            xm[i][p] -= h
            grad[i, p] = float((loss(xp)[1] - loss(xm)[1]) / (2 * h))
    ys = [[float(y[i, j]) for j in range(d)] for i in range(d)]
    return torch.tensor(ys, dtype=torch.float64), grad


@pytest.mark.parametrize(
    "dt,scale",
    [
        (torch.float32, 1.0),
        (torch.float32, 1e19),
        (torch.float32, 1e30),
        (torch.float32, 1e-20),
        (torch.float64, 1e60),
    ],
)
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask-with-zero"])
def test_log_cov_pool_gram_route_at_extreme_scales(device, dt, scale, masked):
    """Gram route (N = 3 < d = 5): value and gradient against the mpmath oracle. Before: float32
    features × 1e19 gave a finite forward and a NaN gradient."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(1, 5, 1, 3, generator=gen, dtype=torch.float64) + 0.1).to(dt) * scale
    mask = torch.tensor([[[1.0, 0.0 if masked else 0.5, 2.0]]], dtype=torch.float64)
    g = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    y_ref, g_ref = _mp_logcov_grad(x[0, :, 0].double(), mask[0, 0], g, 1e-3)
    xx = x.to(device).requires_grad_()
    y = log_cov_pool(xx, mask.to(dt).to(device), eps=1e-3, method="gram")
    (got,) = torch.autograd.grad((y * g.to(dt).to(device)).sum(), xx)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(y[0].double().cpu(), y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max())
    rel = ((got[0, :, 0].double().cpu() - g_ref).norm() / g_ref.norm()).item()
    assert rel < (1e-4 if dt == torch.float32 else 1e-8), rel


def test_log_cov_pool_scale_beyond_the_compute_dtype_raises():
    x = torch.rand(1, 5, 1, 3, dtype=torch.float64) * 1e100  # (λ/ε)² overflows float64
    with pytest.raises(InvalidValuesError, match="overflows the compute dtype float64"):
        log_cov_pool(x)
    x32 = torch.rand(1, 5, 1, 3) * 1e10
    with pytest.raises(InvalidValuesError, match="compute dtype float32"):
        log_cov_pool(x32, compute_dtype=torch.float32)


def test_log_cov_pool_no_positions_is_a_value_error():
    """Before: ZeroDivisionError from 1/(H·W)."""
    with pytest.raises(ValueError, match="no spatial positions") as err:
        log_cov_pool(torch.rand(2, 4, 0, 0))
    assert not isinstance(err.value, InvalidValuesError)
    with pytest.raises(ValueError, match="no spatial positions"):
        log_cov_pool(torch.rand(2, 4, 3, 0))


# ----------------------------------------------------------------------------- matrix functions


def test_sqrtm_at_a_zero_eigenvalue(device, dtype):
    """Forward right; backward refused with InvalidValuesError (before: an all-NaN gradient
    while the docs said '∞ along a zero eigenvalue')."""
    x = torch.diag(torch.tensor([4.0, 0.0, 9.0], dtype=dtype, device=device)).requires_grad_()
    y = sym_sqrtm(x)
    torch.testing.assert_close(
        y.diagonal(), torch.tensor([2.0, 0.0, 3.0], dtype=dtype, device=device), **tol(dtype)
    )
    with pytest.raises(InvalidValuesError, match="not differentiable at a singular matrix"):
        y.sum().backward()
    # the same at a zero eigenvalue for λ^p, 0 < p < 1; p ≥ 1 is differentiable there
    with pytest.raises(InvalidValuesError, match="singular"):
        sym_powm(x, 0.3).sum().backward()
    x.grad = None
    sym_powm(x, 2.0).trace().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), **tol(dtype))


def test_sqrtm_near_singular_but_definite_gradient_is_right(device):
    x = torch.diag(torch.tensor([1e-8, 1.0, 4.0], dtype=torch.float64, device=device))
    x.requires_grad_()
    sym_sqrtm(x).trace().backward()
    want = torch.diag(0.5 / torch.tensor([1e-8, 1.0, 4.0], dtype=torch.float64).sqrt())
    torch.testing.assert_close(x.grad.cpu(), want, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    "dt,lam", [(torch.float32, 1e3), (torch.float32, 89.0), (torch.float64, 710.0)]
)
def test_expm_overflow_raises(device, dt, lam):
    """Before: sym_expm(1e3·I) returned inf silently."""
    with pytest.raises(InvalidValuesError, match="overflows"):
        sym_expm(lam * torch.eye(3, dtype=dt, device=device))


def test_expm_just_below_overflow_is_right(device, dtype):
    lam = 88.0 if dtype == torch.float32 else 709.0
    x = (lam * torch.eye(2, dtype=dtype, device=device)).requires_grad_()
    y = sym_expm(x)
    want = torch.tensor(lam, dtype=torch.float64).exp()
    torch.testing.assert_close(y.diagonal().double().cpu(), want.expand(2), **tol(dtype))
    y.trace().backward()
    torch.testing.assert_close(x.grad.diagonal().double().cpu(), want.expand(2), **tol(dtype))


def test_powm_gradient_overflow_raises_in_float32_and_is_right_in_float64(device):
    """Before: sym_powm(1e-30·I, -0.5) in float32 gave an inf gradient without an error."""
    x32 = (1e-30 * torch.eye(3, device=device)).requires_grad_()
    y = sym_powm(x32, -0.5)  # the forward (1e15) is representable
    torch.testing.assert_close(y.diagonal().cpu(), torch.full((3,), 1e15), rtol=1e-5, atol=0)
    with pytest.raises(InvalidValuesError, match="gradient overflows float32"):
        y.sum().backward()
    x64 = (1e-30 * torch.eye(3, dtype=torch.float64, device=device)).requires_grad_()
    sym_powm(x64, -0.5).sum().backward()
    want = torch.full((3,), -0.5 * 1e45, dtype=torch.float64)
    torch.testing.assert_close(x64.grad.diagonal().cpu(), want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_log_cov_pool_gram_route_float32_deepo2p_size_large_features(device, scale):
    """The issue's case: d = 256, 13 × 13 (N < d), float32 features × 1e19: the forward was
    finite and the gradient NaN (F Ḡ Fᵀ overflowed float32). Against the float64 features."""
    gen = torch.Generator().manual_seed(2)
    x = torch.relu(torch.randn(2, 256, 13, 13, generator=gen)) * scale
    g = torch.randn(2, 256, 256, generator=gen)
    grads = []
    for dt in (torch.float32, torch.float64):
        xx = x.to(dt).to(device).requires_grad_()
        (gx,) = torch.autograd.grad((log_cov_pool(xx) * g.to(dt).to(device)).sum(), xx)
        grads.append(gx.double().cpu())
    assert torch.isfinite(grads[0]).all()
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() < 1e-5
