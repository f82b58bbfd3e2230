"""model.pool_device: where DeepO2P's structured layer runs; `cpu` equals `same` exactly."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

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
