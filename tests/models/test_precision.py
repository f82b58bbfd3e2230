"""Mixed precision: under CPU bf16 autocast the trunks run in bf16, the structured layers in
float32/float64, and the demo pipelines train to finite metrics that differ from float32."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from matbackprop.engine.records import read_csv
from matbackprop.models.build import build_model
from matbackprop.models.deepncut import DeepNCut, ncut_loss_on_grid
from matbackprop.train import CONFIG_DIR, run
from tests.engine.coco_tiny import compose_coco, tiny_overrides
from tests.test_train_bsds import TINY as BSDS_TINY

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
TINY_O2P = dict(arch="deepo2p", trunk="tiny", pretrained=False, tiny_width=8, tiny_out=6)


def _capture_trunk_output(trunk, seen):
    """Record the trunk output's dtype and the dtype of the gradient that reaches it."""

    def hook(_module, _inputs, out):
        seen["out"] = out.dtype
        if out.requires_grad:
            out.register_hook(lambda g: seen.__setitem__("grad", g.dtype))

    return trunk.register_forward_hook(hook)


@pytest.mark.parametrize("arch", ["deepo2p", "deepo2p_fc"])
def test_deepo2p_under_bf16_autocast(arch):
    torch.manual_seed(0)
    cfg = dict(TINY_O2P, arch=arch, head_norm="batchnorm", fc_dim=16)
    model = build_model(cfg, num_classes=4)
    images, masks = torch.randn(4, 3, 32, 32), torch.rand(4, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    ref = F.cross_entropy(model(images, masks), labels)

    seen = {}
    handle = _capture_trunk_output(model.trunk, seen)
    with torch.autocast(**BF16):
        pooled = model.pooled(images, masks)
        logits = model(images, masks)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    handle.remove()
    assert seen == {"out": torch.bfloat16, "grad": torch.bfloat16}  # the trunk ran in bf16
    assert pooled.dtype == torch.float32  # structured layer: cast up, not bf16
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    # same model, bf16 trunk: close to float32 but not identical (autocast did run)
    assert math.isclose(loss.item(), ref.item(), rel_tol=0.05)
    assert loss.item() != ref.item()


def test_deepncut_under_bf16_autocast():
    torch.manual_seed(0)
    model = DeepNCut("tiny", ["out"], hidden=8, out_dim=4, tiny_width=8, tiny_out=6)
    images = torch.randn(2, 3, 48, 64)
    seg = (torch.arange(48 * 64).reshape(48, 64) * 3 // (48 * 64) + 1).expand(2, 48, 64)
    ref = ncut_loss_on_grid(model(images), seg).mean()
    with torch.autocast(**BF16):
        feats = model(images)
        loss = ncut_loss_on_grid(feats, seg).mean()
    assert feats.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert bool(torch.isfinite(loss))
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert math.isclose(loss.item(), ref.item(), rel_tol=0.05) and loss.item() != ref.item()


def _finite_numbers(row: dict, keys) -> dict:
    out = {k: float(row[k]) for k in keys}
    assert all(math.isfinite(v) for v in out.values()), out
    return out


def test_demo_coco_trains_in_bf16(tmp_path):
    keys = ("train_loss", "val_loss", "val_error", "eig_min")
    rows = {}
    for precision in ("32", "bf16"):
        over = tiny_overrides(tmp_path / precision, tmp_path / "data")
        cfg = compose_coco(
            ["experiment=demo_coco_deepo2p", *over, f"trainer.precision={precision}"]
        )
        run(cfg)
        rows[precision] = _finite_numbers(read_csv(tmp_path / precision / "metrics.csv")[0], keys)
    assert rows["bf16"]["train_loss"] != rows["32"]["train_loss"]  # autocast ran
    assert math.isclose(rows["bf16"]["train_loss"], rows["32"]["train_loss"], rel_tol=0.1)


def test_demo_bsds_trains_in_bf16(tmp_path):
    keys = ("train_loss", "train_rank_z", "val_cover_ods")
    rows = {}
    for precision in ("32", "bf16"):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                config_name="bsds",
                overrides=[
                    "experiment=demo_bsds_deepncut",
                    f"output_root={tmp_path / precision}",
                    *BSDS_TINY,
                    "trainer.epochs=1",
                    f"trainer.precision={precision}",
                ],
            )
        res = run(cfg)
        rows[precision] = _finite_numbers(res.last, keys)
        assert Path(cfg.run_dir, "metrics.csv").is_file()
    assert rows["bf16"]["train_loss"] != rows["32"]["train_loss"]  # autocast ran
    assert math.isclose(rows["bf16"]["train_loss"], rows["32"]["train_loss"], rel_tol=0.1)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_deepo2p_training_step_host_syncs(monkeypatch, autocast):
    """A whole DeepO2P step (trunk, masked log-cov pooling, BN head, loss, backward, SGD) reads
    a value on the host once: the structured layer's fused input check."""
    from matbackprop.engine.optim import build_optimizer
    from tests.spectral.test_precision_syncs import count_syncs

    torch.manual_seed(0)
    model = build_model(dict(TINY_O2P, head_norm="batchnorm"), num_classes=4)
    opt = build_optimizer(model, dict(lr=1e-3, momentum=0.9, weight_decay=5e-4))
    images, masks = torch.randn(4, 3, 32, 32), torch.rand(4, 8, 8)
    with count_syncs(monkeypatch) as c:
        with torch.autocast(**BF16, enabled=autocast):
            loss = F.cross_entropy(model(images, masks).float(), torch.arange(4))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(f"host syncs per DeepO2P step: {len(c.calls)} {c.calls}")
    assert len(c.calls) == 1, c.calls
