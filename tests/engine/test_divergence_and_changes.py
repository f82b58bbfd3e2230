"""Non-finite values never reach a checkpoint; divergence is reported as such; lr / schedule /
clip / epochs may change when a run folder is resumed (issue: never lose a run)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from matbackprop.engine.checkpoint import load_checkpoint
from matbackprop.engine.loop import fit
from matbackprop.engine.records import read_csv
from matbackprop.errors import DivergedError, RunFolderError
from matbackprop.tasks import task_factory
from matbackprop.train import run
from tests.engine.coco_tiny import compose_coco, tiny_overrides


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("div") / "coco_tiny"


def cfg(run_dir, data_root, *extra):
    return compose_coco(
        ["experiment=demo_coco_deepo2p", *tiny_overrides(run_dir, data_root), *extra]
    )


def nan_gradient_at(steps: set[int]):
    """A task whose loss stays finite but whose gradient is NaN at the given global steps."""
    make, count = task_factory("coco"), {"n": 0}

    def build(c):
        task = make(c)
        step = task.train_step

        def poisoned(model, batch):
            loss, logs = step(model, batch)
            count["n"] += 1
            if count["n"] in steps:
                w = next(p for p in model.parameters() if p.requires_grad)
                loss = loss + (0.0 * w.sum()).sqrt()  # value 0, gradient 0 * inf = NaN
            return loss, logs

        task.train_step = poisoned
        return task

    return build


def steps_per_epoch(c) -> int:
    return len(task_factory("coco")(c).train_batches(0))


def test_nan_gradient_with_finite_loss_at_an_epochs_last_step(tmp_path, data_root):
    c = cfg(tmp_path, data_root, "trainer.epochs=2")
    n = steps_per_epoch(c)
    with pytest.raises(DivergedError, match=r"non-finite gradient norm nan.*optim\.lr") as err:
        fit(c, nan_gradient_at({2 * n}), tmp_path)  # the last step of epoch 2
    assert "epoch 2" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "last.pt")  # epoch 1's, untouched and finite
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] is None  # epochs counted from 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1  # counted from 1
    assert len(read_csv(tmp_path / "metrics.csv")) == 1  # no row with nan for epoch 2
    # the advice can be followed in the same folder: a lower lr resumes from epoch 1's checkpoint
    result = run(cfg(tmp_path, data_root, "trainer.epochs=2", "optim.lr=0.001"))
    assert result.resumed_from == 1 and result.epochs_done == 2


def test_skip_step_policy_skips_counts_and_caps(tmp_path, data_root):
    c = cfg(tmp_path / "skip", data_root, "trainer.epochs=1", "trainer.on_nonfinite=skip_step")
    fit(c, nan_gradient_at({2}), tmp_path / "skip")
    row = read_csv(tmp_path / "skip" / "metrics.csv")[0]
    assert float(row["train_nonfinite_steps"]) == 1
    ckpt = load_checkpoint(tmp_path / "skip" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

    capped = cfg(
        tmp_path / "cap", data_root, "trainer.on_nonfinite=skip_step", "trainer.max_nonfinite=1"
    )
    with pytest.raises(DivergedError, match="max_nonfinite=1"):
        fit(capped, nan_gradient_at({1, 2}), tmp_path / "cap")


def test_a_diverging_deepo2p_run_is_reported_as_divergence(tmp_path, data_root):
    with pytest.raises(DivergedError, match=r"(?i)diverged.*optim\.lr.*trainer\.clip"):
        run(cfg(tmp_path, data_root, "optim.lr=1e6"))
    assert not (tmp_path / "last.pt").exists()  # nothing was checkpointed


def test_lr_change_on_resume_is_applied_and_recorded(tmp_path, data_root):
    run(cfg(tmp_path, data_root, "trainer.epochs=1"))  # cosine over 1 epoch, lr 0.01
    run(cfg(tmp_path, data_root, "trainer.epochs=3", "optim.lr=0.001"))
    rows = read_csv(tmp_path / "metrics.csv")
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [
            0.01,
            0.001 * 0.5 * (1 + math.cos(math.pi / 3)),
            0.001 * 0.5 * (1 + math.cos(2 * math.pi / 3)),
        ],
        rel=1e-5,
    )
    assert "optim.lr 0.01 -> 0.001" in rows[1]["changed"]
    assert "trainer.epochs 1 -> 3" in rows[1]["changed"]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["finished"] and status["changes"][0]["changes"]["optim.lr"] == [0.01, 0.001]
    # per-layer multipliers kept: every group's lr / lr_mult is the same base lr
    opt = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    bases = {round(g["initial_lr"] / g.get("lr_mult", 1.0), 12) for g in opt}
    assert bases == {0.001}


def test_extending_a_finished_cosine_run_replans_the_schedule(tmp_path, data_root):
    run(cfg(tmp_path, data_root, "trainer.epochs=2"))
    run(cfg(tmp_path, data_root, "trainer.epochs=4"))
    lrs = [float(r["lr"]) for r in read_csv(tmp_path / "metrics.csv")]
    # epochs 3-4 follow a cosine over 4 epochs (not lr 0 as the 2-epoch plan would give)
    assert lrs[2:] == pytest.approx(
        [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in (2, 3)], rel=1e-5
    )
    assert min(lrs[2:]) > 0


def test_other_changes_are_still_refused(tmp_path, data_root):
    run(cfg(tmp_path, data_root))
    with pytest.raises(RunFolderError, match="optim.momentum"):
        run(cfg(tmp_path, data_root, "trainer.epochs=2", "optim.momentum=0.5"))


def test_a_layer_rejecting_its_input_values_is_reported_as_divergence(tmp_path, data_root):
    """What a blown-up DeepO2P looks like to the log layer (not positive definite)."""
    from matbackprop.spectral import sym_logm

    make = task_factory("coco")

    def build(c):
        task = make(c)
        task.train_step = lambda model, batch: (sym_logm(-torch.eye(3, dtype=torch.float64)), {})
        return task

    with pytest.raises(DivergedError, match=r"structured layer's input became invalid.*optim\.lr"):
        fit(cfg(tmp_path, data_root), build, tmp_path)
    assert not (tmp_path / "last.pt").exists()
