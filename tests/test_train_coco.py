"""The COCO pipeline end to end: resume = uninterrupted, finished runs, bad folders, bad data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import matbackprop.engine.setup as loop_mod
import matbackprop.engine.state as trainer_mod
from matbackprop.engine.checkpoint import load_checkpoint
from matbackprop.engine.logging import NullLogger
from matbackprop.engine.loop import fit
from matbackprop.engine.records import read_csv
from matbackprop.errors import RunFolderError
from matbackprop.tasks import DataError, task_factory
from matbackprop.tasks.coco import classification_metrics, eigen_stats
from matbackprop.train import run
from tests.conftest import load_script
from tests.engine.coco_tiny import compose_coco, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "coco_tiny"


def _cfg(run_dir, data_root, *extra):
    over = tiny_overrides(run_dir, data_root)
    return compose_coco(["experiment=demo_coco_deepo2p", *over, "trainer.epochs=3", *extra])


def _comparable_rows(run_dir):
    return [
        {k: v for k, v in r.items() if not k.endswith("time_s")}
        for r in read_csv(run_dir / "metrics.csv")
    ]


class Killed(Exception):
    pass


def _kill_at(monkeypatch, nth: int, before_write: bool):
    """Make the nth write of last.pt 'kill' the run, before or after the file is written."""
    real, calls = trainer_mod.save_checkpoint, {"n": 0}

    def save(state, path):
        if Path(path).name == "last.pt":
            calls["n"] += 1
            if calls["n"] == nth and before_write:
                raise Killed
            real(state, path)
            if calls["n"] == nth:
                raise Killed
        else:
            real(state, path)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)


@pytest.mark.parametrize("before_write", [False, True], ids=["after-checkpoint", "mid-epoch"])
def test_resume_equals_uninterrupted(tmp_path, data_root, monkeypatch, before_write):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    run(_cfg(ref_dir, data_root))

    _kill_at(monkeypatch, nth=2, before_write=before_write)
    with pytest.raises(Killed):
        run(_cfg(cut_dir, data_root))
    monkeypatch.undo()
    # killed mid-epoch: metrics.csv already has the row of the epoch being checkpointed
    assert len(read_csv(cut_dir / "metrics.csv")) == 2
    result = run(_cfg(cut_dir, data_root))
    assert result.resumed_from == (1 if before_write else 2)

    ref, cut = load_checkpoint(ref_dir / "last.pt"), load_checkpoint(cut_dir / "last.pt")
    assert ref["epoch"] == cut["epoch"] == 3  # last.pt counts epochs from 1
    for key, value in ref["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert _comparable_rows(ref_dir) == _comparable_rows(cut_dir)  # no duplicate rows
    assert [r["epoch"] for r in read_csv(cut_dir / "metrics.csv")] == [
        "1",
        "2",
        "3",
    ]  # epochs counted from 1
    assert ref["best"] == cut["best"]


def test_finished_run_exits_quickly_and_extends(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, "trainer.epochs=1")
    run(cfg)

    def must_not_build(cfg):
        raise AssertionError("a finished run must not load data")

    again = fit(cfg, must_not_build, tmp_path)
    assert again.already_finished and again.epochs_done == 1
    # more epochs = a longer run, resumed from the same folder
    longer = run(_cfg(tmp_path, data_root, "trainer.epochs=2"))
    assert longer.resumed_from == 1 and longer.epochs_done == 2
    assert len(read_csv(tmp_path / "metrics.csv")) == 2


def test_incompatible_run_folder_is_refused(tmp_path, data_root):
    run(_cfg(tmp_path, data_root, "trainer.epochs=1"))
    other = _cfg(tmp_path, data_root, "trainer.epochs=1", "model.pool_eps=0.01")
    with pytest.raises(RunFolderError, match="model.pool_eps") as err:
        run(other)
    assert str(tmp_path) in str(err.value)


def test_outputs_of_a_deepo2p_run(tmp_path, data_root):
    run(_cfg(tmp_path, data_root, "trainer.epochs=1"))
    row = read_csv(tmp_path / "metrics.csv")[0]
    for key in ("val_error", "val_mean_class_error", "eig_min", "eig_max", "eig_near_eps", "lr"):
        assert key in row and row[key] != "", key
    assert float(row["eig_min"]) >= 1e-3 * (1 - 1e-6)  # C = ... + εI
    per_class = read_csv(tmp_path / "tables" / "per_class.csv")
    assert [r["class"] for r in per_class] == ["stripe", "ripple", "weave", "grain"]
    assert (
        sum(int(r["n"]) for r in per_class) == 9
    )  # + the 6-px val instance (min_area: train only)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["finished"] and status["best"] == pytest.approx(float(row["val_error"]), rel=1e-5)


def test_logger_finished_with_exit_code_on_failure(tmp_path, data_root, monkeypatch):
    seen = {}

    class Recorder(NullLogger):
        def finish(self, exit_code=0):
            seen["exit_code"] = exit_code

    monkeypatch.setattr(loop_mod, "build_logger", lambda *a, **k: Recorder())
    make = task_factory("coco")

    def broken_task(cfg):
        task = make(cfg)
        task.train_step = lambda model, batch: (torch.tensor(float("nan"), requires_grad=True), {})
        return task

    with pytest.raises(FloatingPointError, match="non-finite"):
        fit(_cfg(tmp_path, data_root), broken_task, tmp_path)
    assert seen == {"exit_code": 1}


def test_missing_and_corrupt_data(tmp_path):
    missing = tmp_path / "nowhere"
    cfg = compose_coco(
        [f"data.root={missing}", f"run_dir={tmp_path / 'run'}", "logger=none", "trainer.device=cpu"]
    )
    with pytest.raises(DataError, match="make data-coco") as err:
        run(cfg)
    assert str(missing) in str(err.value)

    root = tmp_path / "coco"
    for sub in ("annotations", "train2014", "val2014"):
        (root / sub).mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text("{}")
    cfg = compose_coco(
        [f"data.root={root}", f"run_dir={tmp_path / 'run'}", "logger=none", "trainer.device=cpu"]
    )
    with pytest.raises(DataError, match="instances_train2014.json"):
        run(cfg)
    (root / "annotations" / "instances_train2014.json").write_text('{"images": [tru')
    with pytest.raises(DataError, match="corrupt.*instances_train2014.json"):
        run(cfg)


def test_cli_missing_data_exits_2_with_message(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matbackprop.train",
            f"data.root={tmp_path / 'nope'}",
            f"output_root={tmp_path}",
            "logger=none",
            "trainer.device=cpu",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "make data-coco" in proc.stderr and str(tmp_path / "nope") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_classification_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 0])  # predictions 0, 1, 0, 2: two wrong
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["val_error"] == pytest.approx(50.0)
    assert m["per_class"].rows == [
        ["a", 2, 50.0],
        ["b", 2, 50.0],
        ["c", 0, pytest.approx(float("nan"), nan_ok=True)],
    ]
    assert m["val_mean_class_error"] == pytest.approx(50.0)  # classes without samples left out
    assert m["confusion"].y_pred == [0, 1, 0, 2]
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert m["val_loss"] == pytest.approx(ce)


def test_eigen_stats_by_hand():
    eps = 1e-3
    lam = torch.tensor([[eps, eps * 1.005, 0.5, 2.0], [eps * 1.02, 0.1, 0.2, 0.3]])
    logcov = torch.diag_embed(lam.log())  # Y = log C for diagonal C
    s = eigen_stats(logcov, eps)
    assert s["eig_min"] == pytest.approx(eps) and s["eig_max"] == pytest.approx(2.0)
    assert s["eig_near_eps"] == pytest.approx(1.0)  # 2 in the first matrix, 0 in the second
    assert s["eig_near_eps_frac"] == pytest.approx(0.25)


def test_make_tables_puts_our_number_next_to_the_paper(tmp_path, data_root):
    runs = tmp_path / "outputs"
    cfg = compose_coco(
        ["experiment=table1_deepo2p_s", *tiny_overrides(runs / "coco" / "x", data_root)]
    )
    run(cfg)
    ours = float(read_csv(runs / "coco" / "x" / "metrics.csv")[0]["val_error"])
    assert load_script("make_tables").main(["--runs", str(runs), "--out", str(tmp_path / "t")]) == 0
    table = (tmp_path / "t" / "table1.md").read_text()
    line = next(li for li in table.splitlines() if li.startswith("| DeepO2P(S) |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]  # row, paper, ours, checkpoint, epochs
    assert cells[1:3] == ["32.4", f"{ours:.1f}"] and cells[4] == "1/1"
    assert "| AlexNet | 25.3 | — | — | not run |" in table
    assert (tmp_path / "t" / "table1_curves.png").stat().st_size > 1000
    rows = read_csv(tmp_path / "t" / "table1.csv")
    assert [r["row"] for r in rows][:3] == ["SIFT-O2P", "AlexNet", "AlexNet(S)"]


def test_reproduce_stops_without_data(tmp_path, capsys):
    reproduce = load_script("reproduce")
    code = reproduce.main(["coco", "--data-root", str(tmp_path / "none")])  # (--dry-run: 0)
    assert code == 2 and "make data-coco" in capsys.readouterr().err
