"""COCO evaluation protocol: a fixed seeded monitor subset each epoch, the whole val set once at
the end (final_evaluate), both sharded over ranks and exact, masks on the receptive grid."""

import numpy as np
import pytest
import torch

import matbackprop.tasks.coco as coco_mod
from tests.engine.coco_tiny import compose_coco, tiny_overrides


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    data_root = tmp_path_factory.getbasetemp() / "coco_tiny"
    run_dir = tmp_path_factory.mktemp("final")
    over = [*tiny_overrides(run_dir, data_root), "eval.monitor_items=3", "data.mask_size=32"]
    return coco_mod.CocoTask(compose_coco(["experiment=demo_coco_deepo2p", *over]))


@pytest.fixture(scope="module")
def model(task):
    torch.manual_seed(0)
    return task.build_model().eval()


def _by_hand(task, model, indices):
    """Top-1 error (%) of val regions ``indices``, one item at a time (no loader, no shard)."""
    wrong = 0
    for i in indices:
        item = task.val_set[i]
        mask = task.grid_mask(item["mask"][None])
        wrong += int(model(item["image"][None], mask).argmax(1).item() != int(item["label"]))
    return 100.0 * wrong / len(indices)


def test_final_evaluate_scores_the_whole_val_set(task, model):
    n = len(task.val_set)
    final = task.final_evaluate(model)
    assert final["val_items"] == n
    assert final["val_error"] == pytest.approx(_by_hand(task, model, range(n)))
    assert all(isinstance(v, (int, float)) for v in final.values())


def test_monitor_subset_is_fixed_seeded_and_scored(task, model):
    idx = task.monitor_indices()
    assert len(idx) == 3 and idx == sorted(set(idx)) and idx == task.monitor_indices()
    expected = sorted(np.random.default_rng(0).choice(len(task.val_set), 3, replace=False))
    assert idx == expected
    metrics = task.evaluate(model, 0)
    assert metrics["val_items"] == 3
    assert metrics["val_error"] == pytest.approx(_by_hand(task, model, idx))


def test_sharded_prediction_equals_single_process(task, model, monkeypatch):
    indices = list(range(len(task.val_set)))
    logits, labels, _ = task.predict(model, indices)
    parts = {}
    for r in (0, 1):  # two "ranks", strided shards
        monkeypatch.setattr(coco_mod, "shard", lambda n, r=r: list(range(r, n, 2)))
        monkeypatch.setattr(coco_mod, "gather", lambda local, n, r=r: parts.setdefault(r, local))
        task.predict(model, indices)
    merged = [None] * len(indices)
    for r, local in parts.items():
        merged[r::2] = local
    monkeypatch.setattr(coco_mod, "shard", lambda n: [])
    monkeypatch.setattr(coco_mod, "gather", lambda local, n: merged)
    logits2, labels2, _ = task.predict(model, indices)
    torch.testing.assert_close(logits2, logits)
    assert torch.equal(labels2, labels)


def test_grid_mask_receptive_and_uniform(task):
    """Tiny trunk at 32 px: stride 4, unit i centred at 1.5 + 4 i (not 2 + 4 i)."""
    g = task.geometry
    assert (g.stride, g.offset, g.size) == (4, 1.5, (8, 8))
    mask = torch.zeros(1, 32, 32)
    mask[0, 8:12, 12:16] = 1.0
    # receptive cells have half-pixel edges: rows [7.5, 11.5) | [11.5, 15.5) get 3.5 and 0.5 of
    # the block's 4 pixels, columns [11.5, 15.5) | [15.5, 19.5) the same (by hand)
    rec = task.grid_mask(mask)[0]
    expected = torch.zeros(8, 8)
    expected[2:4, 3:5] = torch.outer(torch.tensor([0.875, 0.125]), torch.tensor([0.875, 0.125]))
    torch.testing.assert_close(rec, expected)
    task.mask_grid, task._grid_ops = "uniform", {}
    try:
        uni = task.grid_mask(mask)[0]
    finally:
        task.mask_grid, task._grid_ops = "receptive", {}
    assert uni[2, 3] == 1.0 and uni.sum() == 1.0  # uniform 4-px cells hold it exactly
