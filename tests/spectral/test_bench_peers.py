"""scripts/bench_peers.py's yardsticks are right: the Fréchet-block oracle against float64
finite differences, and the Newton–Schulz baseline against SciPy (no timing here)."""

import numpy as np
import pytest
import scipy.linalg as sla
import torch

from matbackprop.spectral import sym

from ..conftest import load_script

bench = load_script("bench_peers")


@pytest.mark.parametrize("op", ["logm", "sqrtm"])
@pytest.mark.parametrize("kind", ["generic", "tie", "gap=1e-6"])
def test_frechet_oracle_equals_finite_differences(op, kind):
    x = bench.spd_batch(1, 8, kind, torch.float64, "cpu", seed=0)[0].numpy()
    e = sym(torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    e = e.numpy()
    fn = {"logm": sla.logm, "sqrtm": sla.sqrtm}[op]
    h = 1e-5
    fd = (np.real(fn(x + h * e)) - np.real(fn(x - h * e))) / (2 * h)
    got = bench.frechet(op, x, e)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)


def test_reference_grad_for_pooling_matches_autograd_through_scipy_free_route():
    x = bench.features(1, 8, torch.float64, "cpu", seed=2)[:, :, :2, :2]  # N = 4 < d = 8
    g = torch.randn(1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = bench.reference_grad("pool", x, g)
    xx = x.clone().requires_grad_()
    f = xx.flatten(2)
    c = f @ f.mT / f.shape[-1] + bench.EPS * torch.eye(8, dtype=torch.float64)
    lam, u = torch.linalg.eigh(c)  # distinct eigenvalues here: autograd is exact
    ((u * lam.log().unsqueeze(-2)) @ u.mT * g).sum().backward()
    torch.testing.assert_close(ref, xx.grad[0], rtol=1e-7, atol=1e-9)


def test_newton_schulz_is_a_square_root_when_well_conditioned():
    x = bench.spd_batch(2, 8, "tie", torch.float64, "cpu", seed=4)  # eigenvalues 0.5 … 7
    y = bench.newton_schulz_sqrt(x / 7 + 0.5 * torch.eye(8, dtype=torch.float64), iters=20)
    torch.testing.assert_close(y @ y, x / 7 + 0.5 * torch.eye(8, dtype=torch.float64))
