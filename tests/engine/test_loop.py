"""The training loop on a fake in-memory task (tests/engine/fake_task.py): resume rules and
allowed changes, the non-finite policy, stop-policy polling in training and in evaluation,
checkpoint contents, records written from memory. Fast: no data files, one process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import matbackprop.engine.records as records
from matbackprop.engine.checkpoint import load_checkpoint
from matbackprop.engine.loop import fit
from matbackprop.engine.preemption import EXIT_INTERRUPTED, Preempted, StopPolicy
from matbackprop.engine.records import read_csv
from matbackprop.engine.state import TrainState
from matbackprop.errors import EXIT_PREEMPTED, DivergedError, RunFolderError
from tests.engine.fake_task import FakeTask, fake_cfg


def run(run_dir: Path, events: dict | None = None, **trainer):
    return fit(fake_cfg(run_dir, **trainer), lambda cfg: FakeTask(cfg, events), run_dir)


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("time_s") and k != "changed"}
            for r in read_csv(run_dir / "metrics.csv")]  # fmt: skip


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.pt")["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_self(sig: signal.Signals = signal.SIGTERM):
    return lambda: os.kill(os.getpid(), sig)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    res = run(run_dir)
    assert res.epochs_done == 3 and not res.already_finished
    return run_dir


def test_records_count_epochs_from_one_and_status_is_complete(reference):
    assert [r["epoch"] for r in read_csv(reference / "metrics.csv")] == ["1", "2", "3"]
    status = json.loads((reference / "status.json").read_text())
    assert status["finished"] and status["epochs_done"] == 3 and status["step_in_epoch"] is None
    assert status["data"] == {"train": 24, "val": 24} and status["monitor"] == "val_loss"
    final = json.loads((reference / "final.json").read_text())
    assert final["last"]["epoch"] == 3 and 1 <= final["best"]["epoch"] <= 3
    by_epoch = read_csv(reference / "tables" / "per_item_by_epoch.csv")
    assert [r["epoch"] for r in by_epoch] == ["1", "2", "3"]
    steps = read_csv(reference / "train_steps.csv")  # every log_every=1 step, written by now
    assert [int(r["global_step"]) for r in steps] == list(range(1, 19))
    assert {"train/loss", "train/grad_norm", "epoch"} <= set(steps[0])
    # the epoch's summed count over 6 steps of 4 items
    assert all(float(r["train_count_items"]) == 24 for r in read_csv(reference / "metrics.csv"))


def test_checkpoint_holds_state_per_rank(reference):
    ckpt = load_checkpoint(reference / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["step_in_epoch"] is None and ckpt["global_step"] == 18
    assert {"model", "optimizer", "scaler", "scheduler", "rng", "sums", "fingerprint"} <= set(ckpt)
    assert len(ckpt["rng"]) == len(ckpt["sums"]) == ckpt["world_size"] == 1
    assert ckpt["fingerprint"]["trainer.epochs"] == 3  # may_change keys are in the fingerprint


def test_signal_inside_an_epoch_checkpoints_at_the_step_and_resume_is_bitwise(tmp_path, reference):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted) as err:
        run(run_dir, {"step": {9: kill_self()}})  # step 3 of epoch 2
    assert err.value.exit_code == EXIT_PREEMPTED
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (2, 3)
    status = json.loads((run_dir / "status.json").read_text())
    assert not status["finished"] and status["step_in_epoch"] == 3
    run(run_dir)
    assert same_weights(reference, run_dir) and rows(reference) == rows(run_dir)


def test_sigint_behaves_like_sigterm_with_exit_130(tmp_path, reference):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted) as err:
        run(run_dir, {"step": {2: kill_self(signal.SIGINT)}})
    assert err.value.exit_code == EXIT_INTERRUPTED == 130
    assert load_checkpoint(run_dir / "last.pt")["step_in_epoch"] == 2
    run(run_dir)
    assert same_weights(reference, run_dir) and rows(reference) == rows(run_dir)


def test_signal_during_evaluation_stops_within_an_item_and_the_rerun_evaluates(tmp_path, reference):
    run_dir = tmp_path / "run"
    task_events = {"eval": {6: kill_self()}}  # 4 items per evaluation: epoch 2's 2nd item
    with pytest.raises(Preempted, match="before its evaluation"):
        run(run_dir, task_events)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (2, 6)  # all steps done, evaluation not
    assert len(read_csv(run_dir / "metrics.csv")) == 1
    run(run_dir)
    assert same_weights(reference, run_dir) and rows(reference) == rows(run_dir)


def test_signal_during_final_evaluation_exits_75_and_rerun_finishes_it(tmp_path, reference):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted, match="final evaluation"):
        run(run_dir, {"eval": {14: kill_self()}})  # 3 evaluations of 4 items, then the final
    assert not (run_dir / "final.json").exists()
    assert not json.loads((run_dir / "status.json").read_text())["finished"]
    res = run(run_dir)
    assert not res.already_finished and (run_dir / "final.json").is_file()
    assert json.loads((run_dir / "final.json").read_text()) == json.loads(
        (reference / "final.json").read_text()
    )


def test_nonfinite_loss_raises_or_skips(tmp_path):
    nan = {"step": {4: lambda: float("nan")}}
    with pytest.raises(DivergedError, match="non-finite loss"):
        run(tmp_path / "a", nan)
    assert not (tmp_path / "a" / "last.pt").exists()  # nothing non-finite is checkpointed
    res = run(tmp_path / "b", nan, on_nonfinite="skip_step")
    assert res.epochs_done == 3
    first = read_csv(tmp_path / "b" / "metrics.csv")[0]
    assert float(first["train_nonfinite_steps"]) == 1 and float(first["train_count_items"]) == 20
    many = {"step": {k: (lambda: float("nan")) for k in (1, 2, 3)}}
    with pytest.raises(DivergedError, match="max_nonfinite=2"):
        run(tmp_path / "c", many, on_nonfinite="skip_step", max_nonfinite=2)


def test_identity_change_is_refused_naming_keys_and_ways_out(tmp_path, reference):
    run_dir = tmp_path / "run"
    run(run_dir, epochs=1)
    with pytest.raises(RunFolderError) as err:
        run(run_dir, batch_size=6)
    text = str(err.value)
    assert "trainer.batch_size" in text and "run_name=" in text and "optim.lr" in text


def test_may_change_keys_extend_and_are_recorded(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(run_dir, epochs=2)
    capsys.readouterr()
    res = run(run_dir, epochs=3)  # extend a finished run
    assert res.resumed_from == 2 and res.epochs_done == 3
    status = json.loads((run_dir / "status.json").read_text())
    assert status["changes"][-1]["changes"] == {"trainer.epochs": [2, 3]}
    assert status["changes"][-1]["epoch"] == 3  # the first epoch trained with the change
    assert read_csv(run_dir / "metrics.csv")[-1]["changed"] == "trainer.epochs 2 -> 3"
    capsys.readouterr()
    cfg = fake_cfg(run_dir)
    cfg.optim.lr = 0.01  # a may_change key on a finished run: said, not silent
    res = fit(cfg, lambda c: FakeTask(c), run_dir)
    out = capsys.readouterr().out
    assert res.already_finished and "nothing to do" in out and "optim.lr 0.05 -> 0.01" in out
    assert "Raise trainer.epochs" in out


def test_records_are_written_from_memory(tmp_path, monkeypatch):
    calls = {"status": 0, "csv": 0}
    real_status, real_csv = records.read_status, records.read_csv

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(records, "read_status", count("status", real_status))
    monkeypatch.setattr(records, "read_csv", count("csv", real_csv))
    run(tmp_path / "run")
    assert calls == {"status": 1, "csv": 2}  # metrics.csv, train_steps.csv: at the start only


def test_stop_policy_decisions():
    p = StopPolicy(checkpoint_every=3, max_steps=7)
    names = [p.poll(k, last_step=(k == 6)).value for k in range(1, 8)]
    assert names == ["continue", "continue", "checkpoint", "continue", "continue", "continue",
                     "stop"]  # fmt: skip
    assert p.poll(2, agreed_code=1.0).value == "stop" and p.signalled == "SIGTERM"


@pytest.mark.parametrize("world_from,world_to", [(2, 1), (1, 2), (2, 2), (2, 4)])
def test_partial_sums_keep_the_epoch_means_across_world_sizes(world_from, world_to, monkeypatch):
    # per-rank sums after k=3 steps: loss (a mean) and count_items (summed)
    saved = [({"loss": 3.0 + r, "count_items": 12.0}, 3) for r in range(world_from)]
    k = 3
    mean_before = sum(s["loss"] for s, _ in saved) / world_from / k
    count_before = sum(s["count_items"] for s, _ in saved)
    restored = [TrainState.sums_for(saved, r, world_to) for r in range(world_to)]
    total_loss = sum(s.get("loss", 0.0) for s, _ in restored)
    total_n = sum(n for _, n in restored)
    assert total_loss / world_to / (total_n / world_to) == pytest.approx(mean_before)
    assert sum(s.get("count_items", 0.0) for s, _ in restored) == count_before


def test_progress_lines_off_a_terminal(tmp_path, capsys):
    # stdout is not a TTY under pytest's capture: a line every progress_every_s seconds
    run(tmp_path / "run", epochs=1, progress_every_s=1e-9)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ", step " in ln]
    assert len(lines) == 6 and lines[0].startswith("[train] epoch 1/1, step 1/6 (17%): ")
    assert "items/s, loss " in lines[-1] and "ETA 0m00s" in lines[-1]
    run(tmp_path / "quiet", epochs=1, progress_every_s=0)
    assert ", step " not in capsys.readouterr().out


def test_a_resume_never_switches_the_loader_silently(tmp_path, monkeypatch):
    # data.store=auto: the store prepared between a run and its resume would switch loaders
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted):
        run(run_dir, {"step": {3: kill_self()}})
    monkeypatch.setattr(FakeTask, "loader_kind", "store")
    with pytest.raises(RunFolderError, match=r"data.loader.train: 'on-the-fly' \(run folder\) "
                       r"!= 'store' \(now\)[\s\S]*data.store=none"):  # fmt: skip
        run(run_dir)
    monkeypatch.setattr(FakeTask, "loader_kind", "on-the-fly")
    assert run(run_dir).epochs_done == 3


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, reference):
    from omegaconf import OmegaConf

    from matbackprop.errors import CheckpointError

    cfg = fake_cfg(tmp_path / "b", epochs=1)
    cfg.optim.lr, cfg.optim.momentum = 1e-12, 0.0  # (lr must be > 0): the weights barely move
    OmegaConf.update(cfg, "model.init_from", str(reference), force_add=True)  # its best.pt
    fit(cfg, lambda c: FakeTask(c), tmp_path / "b")
    best = load_checkpoint(reference / "best.pt")["model"]
    for k, v in weights(tmp_path / "b").items():
        assert torch.allclose(v, best[k], atol=1e-8), k
    status = json.loads((tmp_path / "b" / "status.json").read_text())
    assert status["init_from"]["path"] == str(reference / "best.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"0.weight": torch.zeros(3, 3)}}, bad)
    OmegaConf.update(cfg, "model.init_from", str(bad))
    with pytest.raises(CheckpointError, match=r"bad.pt.*0.weight"):
        fit(cfg, lambda c: FakeTask(c), tmp_path / "c")


def test_pool_device_auto_is_same_on_a_cpu_host_and_recorded(tmp_path):
    # a DeepO2P model (pool_device: auto) trained on the CPU: auto means same, in status.json
    from matbackprop.train import run
    from tests.engine.coco_tiny import compose_coco, tiny_overrides

    cfg = compose_coco(["experiment=demo_coco_deepo2p", *tiny_overrides(tmp_path / "run",
                        tmp_path / "data"), "trainer.epochs=1"])  # fmt: skip
    assert cfg.model.pool_device == "auto"
    run(cfg)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["pool_device"]["choice"] == "same" and status["pool_device"]["timings_s"] is None
