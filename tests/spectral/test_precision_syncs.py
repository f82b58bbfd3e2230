"""Autocast and host synchronisation in the structured layers; validation switch."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from matbackprop.spectral import (
    eig_layer,
    log_cov_pool,
    pooling,
    projector,
    set_validation,
    svd_layer,
    sym_logm,
    sym_sqrtm,
    triu_vec,
    validation_enabled,
)
from matbackprop.spectral.pooling import dd_log1p_ratio

from .conftest import cuda, random_spd

# aten ops that wait for the device (or, on CPU, stand in for such a wait)
SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "is_nonzero",
    "_unique2",
    "unique_dim",
}


class SyncCounter(TorchDispatchMode):
    """CPU-side proxy for host syncs: counts the aten ops above, boolean-mask indexing, and
    Python-level tolist/numpy/cpu calls (which read values on the host). Used with the CUDA
    code paths forced on CPU tensors (``pooling.SUBSET_ON_CPU = False``)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for a in args
            if isinstance(a, (list, tuple))
            for i in a
        )
        if name in SYNC_OPS or bool_index:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs(monkeypatch):
    counter = SyncCounter()
    monkeypatch.setattr(pooling, "SUBSET_ON_CPU", False)  # the code path CUDA tensors take
    for meth in ("tolist", "numpy", "cpu"):
        real = getattr(torch.Tensor, meth)

        def wrapped(self, *a, _real=real, _meth=meth, **k):
            counter.calls.append(_meth)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, meth, wrapped)
    with counter:
        yield counter
    monkeypatch.undo()


def test_counter_sees_syncs(monkeypatch):
    x = torch.randn(5)
    with count_syncs(monkeypatch) as c:
        x.sum().item()
        bool((x > 0).any())
        x[x > 0] = 0.0
        x.tolist()
    assert len(c.calls) >= 4, c.calls


def _o2p_step(validate_globally: bool, monkeypatch):
    """One DeepO2P-like step: log_cov_pool + triu_vec + linear + backward."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 16, 3, 3)).requires_grad_()  # N = 9 < d = 16: gram route
    mask = torch.rand(4, 3, 3)
    lin = torch.nn.Linear(16 * 17 // 2, 3)
    old = set_validation(validate_globally)
    try:
        with count_syncs(monkeypatch) as c:
            loss = F.cross_entropy(lin(triu_vec(log_cov_pool(x, mask))), torch.tensor([0, 1, 2, 0]))
            loss.backward()
    finally:
        set_validation(old)
    assert bool(torch.isfinite(x.grad).all())
    return c.calls


def test_deepo2p_step_syncs_only_to_validate(monkeypatch):
    calls = _o2p_step(True, monkeypatch)
    assert len(calls) == 1, calls  # one fused check of x and the mask
    assert _o2p_step(False, monkeypatch) == []  # validation off: no host sync at all


def test_eig_route_and_matfun_have_no_sync_beyond_validation(monkeypatch):
    x = torch.relu(torch.randn(2, 4, 5, 5, dtype=torch.float64)).requires_grad_()  # eig route
    with count_syncs(monkeypatch) as c:
        log_cov_pool(x, method="eig").sum().backward()
    assert len(c.calls) == 1, c.calls
    a = random_spd(5, (3,)).requires_grad_()
    with count_syncs(monkeypatch) as c:
        sym_logm(a).sum().backward()
    assert len(c.calls) == 2, c.calls  # symmetry/finiteness + the domain (λ > 0) check
    with count_syncs(monkeypatch) as c:
        sym_logm(a, validate=False).sum().backward()
        eig_layer(a, validate=False)[1].sum().backward()
    assert c.calls == []


def test_dd_log1p_ratio_cpu_subset_equals_device_path(monkeypatch):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 40, generator=g, dtype=torch.float64)
    lam = torch.cat([torch.zeros(3, 5), torch.linalg.eigvalsh(a @ a.mT)], -1) / 1e-3  # ties at 0
    x, y = lam.unsqueeze(-1), lam.unsqueeze(-2)
    subset = dd_log1p_ratio(x, y)
    monkeypatch.setattr(pooling, "SUBSET_ON_CPU", False)
    assert torch.equal(dd_log1p_ratio(x, y), subset)


def test_dd_log1p_ratio_where_matches_elementwise_reference(monkeypatch):
    monkeypatch.setattr(pooling, "SUBSET_ON_CPU", False)
    """The torch.where rewrite agrees with a float64 quotient of float128-free references."""
    x = torch.tensor([0.0, 1e-5, 1e-3, 0.5, 1.0, 1.0 + 1e-9, 3.0, 1e3], dtype=torch.float64)
    got = dd_log1p_ratio(x.unsqueeze(-1), x.unsqueeze(-2))

    def phi(v):
        return torch.where(v == 0, 1.0, torch.log1p(v) / torch.where(v == 0, 1.0, v))

    # independent reference: centred finite difference on the diagonal, quotient elsewhere
    a, b = x.unsqueeze(-1).expand(8, 8), x.unsqueeze(-2).expand(8, 8)
    far = (a - b).abs() > 1e-2 * torch.maximum(a, b).clamp_min(1e-2)
    ref = (phi(a) - phi(b)) / torch.where(far, a - b, 1.0)
    torch.testing.assert_close(got[far], ref[far], rtol=1e-9, atol=1e-12)
    h = 1e-6 * x.clamp_min(1.0)
    deriv = (phi(x + h) - phi((x - h).clamp_min(0))) / (x + h - (x - h).clamp_min(0))
    torch.testing.assert_close(got.diagonal(), deriv, rtol=1e-5, atol=1e-8)


def _spd(batch=2, n=4):
    return random_spd(n, (batch,), dtype=torch.float32)


@pytest.mark.parametrize(
    "op,make",
    [
        (log_cov_pool, lambda: torch.relu(torch.randn(2, 4, 5, 5))),
        (sym_logm, _spd),
        (sym_sqrtm, _spd),
        (lambda x: eig_layer(x)[1], _spd),
        (lambda x: svd_layer(x)[2], lambda: torch.randn(2, 5, 3)),
        (projector, lambda: torch.randn(2, 5, 3)),
    ],
    ids=["log_cov_pool", "sym_logm", "sym_sqrtm", "eig_layer", "svd_layer", "projector"],
)
def test_ops_under_bf16_autocast_run_in_float32(op, make):
    torch.manual_seed(0)
    x16 = make().bfloat16().requires_grad_()  # as a trunk's output under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = op(x16)
    assert y.dtype == torch.float32
    ref = op(x16.detach().float())  # the same input cast up by hand, no autocast
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert x16.grad.dtype == torch.bfloat16 and bool(torch.isfinite(x16.grad).all())
    assert x16.grad.abs().sum() > 0


def test_set_validation_switch():
    bad = torch.full((1, 2, 3, 3), float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        log_cov_pool(bad)
    assert validation_enabled()
    old = set_validation(False)
    try:
        assert old is True and not validation_enabled()
        assert torch.isnan(log_cov_pool(bad)).all()  # no check, no error: NaN out
    finally:
        set_validation(old)
    assert torch.isnan(log_cov_pool(bad, validate=False)).all()
    with pytest.raises(ValueError, match="zero total weight for batch items \\[1\\]"):
        log_cov_pool(torch.rand(2, 2, 3, 3), torch.stack([torch.ones(3, 3), torch.zeros(3, 3)]))
    with pytest.raises(ValueError, match="non-negative"):
        log_cov_pool(torch.rand(1, 2, 3, 3), -torch.ones(1, 3, 3))


@cuda
def test_cuda_sync_debug_mode_deepo2p_step():
    """With CUDA: syncs flagged by PyTorch during one log_cov_pool + triu_vec + linear step.
    Allowed: the one validation check, plus PyTorch's own eigh error (info) check."""
    import warnings

    x = torch.relu(torch.randn(8, 16, 3, 3, device="cuda")).requires_grad_()
    mask = torch.rand(8, 3, 3, device="cuda")
    lin = torch.nn.Linear(136, 3).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lin(triu_vec(log_cov_pool(x, mask))).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    print(f"CUDA syncs per step: {len(syncs)}")
    assert len(syncs) <= 2, [str(w.message) for w in syncs]
