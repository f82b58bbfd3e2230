"""model.pool_device: where DeepO2P's structured layer runs; `cpu` equals `same` exactly."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from matbackprop.models import o2p
from matbackprop.models.build import build_model
from matbackprop.models.o2p import POOL_DEVICE_AUTO, POOL_DEVICES
from matbackprop.train import CONFIG_DIR

TINY_O2P = dict(arch="deepo2p", trunk="tiny", pretrained=False, tiny_width=8, tiny_out=6)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _step(pool_device: str, device: str, autocast: bool = False):
    torch.manual_seed(0)
    model = build_model(dict(TINY_O2P, pool_device=pool_device), num_classes=4).to(device)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=g).to(device)
    masks = torch.rand(4, 8, 8, generator=g).to(device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        pooled = model.pooled(images, masks)
        logits = model(images, masks)
    F.cross_entropy(logits.float(), torch.arange(4, device=device)).backward()
    grads = {n: p.grad.cpu() for n, p in model.named_parameters()}
    return pooled.detach(), logits.detach().cpu(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_cpu_pool_equals_same(device, autocast):
    pooled_s, logits_s, grads_s = _step("same", device, autocast)
    pooled_c, logits_c, grads_c = _step("cpu", device, autocast)
    assert pooled_c.device == pooled_s.device  # the result comes back to the model's device
    # CPU vs GPU eigh differ in rounding; on one device the two paths are the same computation
    exact = dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled_c, pooled_s, **exact)
    torch.testing.assert_close(logits_c, logits_s, **exact)
    assert grads_c.keys() == grads_s.keys()
    for name in grads_s:
        torch.testing.assert_close(grads_c[name], grads_s[name], **exact, msg=name)


def test_config_key_and_bad_value():
    cfg = OmegaConf.load(f"{CONFIG_DIR}/model/deepo2p.yaml")
    assert cfg.pool_device in POOL_DEVICES and POOL_DEVICE_AUTO in ("same", "cpu")
    assert build_model(dict(TINY_O2P), 4).pool_device == "auto"
    with pytest.raises(ValueError, match="pool_device"):
        build_model(dict(TINY_O2P, pool_device="gpu"), 4)


@pytest.fixture
def fresh_decisions(monkeypatch):
    """pool_device=auto's per-process cache, emptied for the test."""
    monkeypatch.setattr(o2p, "_DECISIONS", {})
    monkeypatch.setattr(o2p, "_LAST_DECISION", None)


def test_auto_on_a_cpu_host_is_same_and_recorded(fresh_decisions, capsys):
    assert o2p.pool_device_decision() is None
    pooled_a, logits_a, grads_a = _step("auto", "cpu")
    pooled_s, logits_s, grads_s = _step("same", "cpu")
    torch.testing.assert_close(pooled_a, pooled_s, rtol=0, atol=0)
    for name in grads_s:
        torch.testing.assert_close(grads_a[name], grads_s[name], rtol=0, atol=0)
    decision = o2p.pool_device_decision()
    assert decision["choice"] == "same" and decision["timings_s"] is None
    assert decision["key"]["device"] == "cpu" and decision["key"]["masked"] is True
    _step("auto", "cpu")  # the same shape again: cached
    assert "pool_device=auto" not in capsys.readouterr().err  # nothing measured: nothing printed
    assert len(o2p.pool_device_decisions()) == 1


def test_auto_measures_both_choices_keeps_the_faster_and_caches(
    fresh_decisions, monkeypatch, capsys
):
    """The measuring path (forced on the CPU, where both choices are one computation): both
    timed on the batch, the smaller median chosen, and one decision per shape."""
    pool = o2p.LogCovPool()
    x = torch.relu(torch.randn(2, 12, 3, 3))
    mask = torch.rand(2, 3, 3)
    calls = []
    fake = {"same": 0.2, "cpu": 0.1}

    def timed(pool_, where, x_, mask_, g):
        calls.append(where)
        assert g.shape == (x_.shape[0], 12, 12)
        return fake[where]

    monkeypatch.setattr(o2p, "_time_choice", timed)
    assert o2p.decide_pool_device(pool, x, mask, runs=2, measure=True) == "cpu"
    assert sorted(calls) == ["cpu"] * 3 + ["same"] * 3  # one warm-up + 2 runs each
    d = o2p.pool_device_decision()
    assert d["timings_s"] == fake and d["key"]["shape"] == (2, 12, 3, 3)
    assert o2p.decide_pool_device(pool, x, mask, runs=2, measure=True) == "cpu"
    assert len(calls) == 6  # cached
    printed = [line for line in capsys.readouterr().err.splitlines() if "pool_device=auto" in line]
    assert len(printed) == 1 and "cpu" in printed[0] and "0.1 s" in printed[0], printed
    fake.update(same=0.05)
    x2 = torch.relu(torch.randn(4, 12, 3, 3))  # another batch shape: measured anew
    assert (
        o2p.decide_pool_device(pool, x2, mask[:1].expand(4, 3, 3), runs=1, measure=True) == "same"
    )
    assert len(o2p.pool_device_decisions()) == 2


def test_auto_real_timing_runs(fresh_decisions):
    """The real timer on a real batch: finite positive timings, no gradient left on x."""
    pool = o2p.LogCovPool()
    x = torch.relu(torch.randn(2, 12, 3, 3)).requires_grad_()
    choice = o2p.decide_pool_device(pool, x, None, runs=1, measure=True)
    d = o2p.pool_device_decision()
    assert choice == d["choice"] and all(t > 0 for t in d["timings_s"].values())
    assert x.grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_decides_and_matches_same(fresh_decisions):
    pooled_a, _, _ = _step("auto", "cuda")
    pooled_s, _, _ = _step("same", "cuda")
    torch.testing.assert_close(pooled_a, pooled_s, rtol=1e-5, atol=1e-6)
    d = o2p.pool_device_decision()
    assert d["choice"] in ("same", "cpu") and set(d["timings_s"]) == {"same", "cpu"}


def test_auto_measuring_leaves_the_global_rng_alone(fresh_decisions):
    """A resumed run must replay bitwise: deciding may not draw from the global generator."""
    x = torch.rand(2, 12, 3, 3)
    state = torch.get_rng_state()
    o2p.decide_pool_device(o2p.LogCovPool(), x, None, runs=1, measure=True)
    assert torch.equal(torch.get_rng_state(), state)
