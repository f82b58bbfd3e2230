"""Trainer options that must not change the numbers: channels-last layout, max_steps."""

import pytest

from matbackprop.engine.records import read_csv
from matbackprop.train import run
from tests.engine.coco_tiny import compose_coco, tiny_overrides


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("opts") / "coco_tiny"


def _train(run_dir, data_root, *extra):
    cfg = compose_coco(
        ["experiment=demo_coco_deepo2p", *tiny_overrides(run_dir, data_root), *extra]
    )
    return run(cfg), read_csv(run_dir / "metrics.csv")


def test_channels_last_trains_to_the_same_numbers(tmp_path, data_root):
    _, ref = _train(tmp_path / "nchw", data_root)
    _, nhwc = _train(tmp_path / "nhwc", data_root, "trainer.channels_last=true")
    for a, b in zip(ref, nhwc):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
        assert float(b["val_loss"]) == pytest.approx(float(a["val_loss"]), rel=1e-4)


def test_max_steps_stops_inside_the_epoch(tmp_path, data_root):
    result, rows = _train(tmp_path, data_root, "trainer.max_steps=1", "trainer.epochs=2")
    assert result.stopped_at_max_steps and result.epochs_done == 0 and rows == []


def test_resume_inside_an_epoch_restores_the_dropout_randomness(tmp_path, data_root):
    """With dropout in the model, a resume at a step is bitwise only if the global RNG state of
    that step comes back from the checkpoint."""
    import torch

    from matbackprop.engine.checkpoint import load_checkpoint

    extra = ("model.dropout=0.5", "trainer.epochs=2", "data.synthetic.n_train=32")
    _train(tmp_path / "ref", data_root, *extra)
    cut, _ = _train(tmp_path / "cut", data_root, *extra, "trainer.max_steps=3")
    assert cut.stopped_at_max_steps
    _train(tmp_path / "cut", data_root, *extra)
    a = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
