"""Double backward (create_graph=True) through every structured layer is refused with a clear
NotImplementedError — never a silently wrong second derivative. Before, gradgradcheck failed
for all of them and a Hessian-vector product of sym_logm was 119 % off without an error."""

import pytest
import torch

from matbackprop.spectral import (
    eig_layer,
    log_cov_pool,
    ncut_alignment_loss,
    projector,
    svd_layer,
    sym,
    sym_expm,
    sym_logm,
    sym_powm,
    sym_sqrtm,
)

from .conftest import random_spd


def _spd(eigvals):
    return lambda: random_spd(4, (2,), eigvals=eigvals, seed=3)


_LABELS = torch.randint(0, 3, (2, 12), generator=torch.Generator().manual_seed(0))
OPS = {
    "sym_logm": (lambda a: sym_logm(sym(a)), _spd(None)),
    "sym_logm-tie": (lambda a: sym_logm(sym(a)), _spd([2.0, 2.0, 2.0, 5.0])),
    "sym_sqrtm": (lambda a: sym_sqrtm(sym(a)), _spd(None)),
    "sym_expm-tie": (lambda a: sym_expm(sym(a)), _spd([1.0, 1.0, 3.0, 3.0])),
    "sym_powm": (lambda a: sym_powm(sym(a), -0.5), _spd(None)),
    "eig_layer": (lambda a: eig_layer(sym(a))[0], _spd(None)),
    "svd_layer": (lambda a: svd_layer(a)[1], lambda: torch.randn(2, 5, 3, dtype=torch.float64)),
    "projector": (projector, lambda: torch.randn(2, 5, 3, dtype=torch.float64)),
    "log_cov_pool-gram": (
        lambda a: log_cov_pool(a, method="gram"),
        lambda: torch.rand(2, 5, 2, 1, dtype=torch.float64),
    ),
    "log_cov_pool-eig": (
        lambda a: log_cov_pool(a, method="eig"),
        lambda: torch.rand(2, 3, 2, 2, dtype=torch.float64),
    ),
    "ncut_alignment_loss": (
        lambda a: ncut_alignment_loss(a, _LABELS),
        lambda: torch.rand(2, 12, 3, dtype=torch.float64),
    ),
}


@pytest.mark.parametrize("name", OPS)
def test_gradgradcheck_is_refused(name):
    op, make = OPS[name]
    x = make().requires_grad_()
    assert torch.autograd.gradcheck(op, (x,))  # the first derivative is exact
    op_name = name.split("-")[0]
    with pytest.raises(NotImplementedError, match=f"{op_name}: double backward"):
        torch.autograd.gradgradcheck(op, (x,))


def test_hessian_vector_product_with_a_constant_cotangent_is_refused():
    """The silent case: G constant, so the cotangent reaching the layer needs no grad; the
    missing d(U, Λ)/dX terms would have dropped out of the HVP without a trace."""
    x = random_spd(4, seed=1).requires_grad_()
    g = torch.randn(4, 4, dtype=torch.float64)
    loss = (sym_logm(x) * g).sum() + x.square().sum()
    with pytest.raises(NotImplementedError, match="create_graph=True"):
        torch.autograd.grad(loss, x, create_graph=True)
    (gx,) = torch.autograd.grad(loss, x)  # without a graph: the exact gradient, as ever
    assert torch.isfinite(gx).all()
