"""evaluate never writes into a training run's records; eval.checkpoint=best|last -> eval/<it>/."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matbackprop.engine.records import read_csv
from matbackprop.errors import CheckpointError, ConfigError, RunFolderError
from matbackprop.evaluate import evaluate
from matbackprop.train import run
from tests.engine.coco_tiny import compose_coco, tiny_overrides
from tests.engine.test_runlock import _holder
from tests.test_train_bsds import TINY as BSDS_TINY
from tests.test_train_bsds import _cfg as bsds_cfg

ROOT = Path(__file__).resolve().parents[1]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder except the lock and evaluate's own eval/ folder."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock" and p.relative_to(run_dir).parts[0] != "eval"
    }


def _overrides(run_dir: Path, data_root: Path) -> list[str]:
    return ["experiment=demo_coco_deepo2p", *tiny_overrides(run_dir, data_root), "trainer.epochs=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch tiny COCO run: (run_dir, data_root)."""
    base = tmp_path_factory.mktemp("finished")
    run(compose_coco(_overrides(base / "run", base / "data")))
    return base / "run", base / "data"


def _copy(finished, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir


def test_finished_run_without_checkpoint_is_refused_and_left_identical(finished):
    run_dir, data_root = finished
    before = snapshot(run_dir)
    assert {"metrics.csv", "config.yaml", "status.json", "last.pt", "best.pt"} <= set(before)
    assert any(k.startswith("tables/") for k in before)
    cfg = compose_coco(_overrides(run_dir, data_root))  # eval.checkpoint defaults to none
    with pytest.raises(RunFolderError) as info:
        evaluate(cfg)
    msg = str(info.value)
    assert str(run_dir) in msg and "eval.checkpoint=best" in msg and "eval.checkpoint=last" in msg
    assert snapshot(run_dir) == before
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize("which", ["best", "last"])
def test_checkpoint_evaluation_goes_to_eval_folder(finished, which):
    run_dir, data_root = finished
    before = snapshot(run_dir)
    cfg = compose_coco([*_overrides(run_dir, data_root), f"eval.checkpoint={which}"])
    row = evaluate(cfg)
    assert snapshot(run_dir) == before  # training record byte-identical
    out = run_dir / "eval" / which
    assert (out / "eval.json").is_file() and (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "tables").glob("*.csv"))  # the task's tables
    # the same weights scored by training at that epoch: the same val metrics
    epoch = torch.load(run_dir / f"{which}.pt", weights_only=True)["epoch"]
    logged = next(r for r in read_csv(run_dir / "metrics.csv") if int(r["epoch"]) == epoch)
    assert row["epoch"] == epoch
    assert row["val_error"] == pytest.approx(float(logged["val_error"]), rel=1e-5)


def test_corrupt_or_foreign_checkpoint_is_a_checkpoint_error(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    data_root = finished[1]
    (run_dir / "best.pt").write_bytes(b"\x00garbage")
    cfg = compose_coco([*_overrides(run_dir, data_root), "eval.checkpoint=best"])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*best\.pt"):
        evaluate(cfg)
    wider = compose_coco(
        [*_overrides(run_dir, data_root), "eval.checkpoint=last", "model.tiny_out=7"]
    )
    with pytest.raises(CheckpointError, match=r"last\.pt does not fit the configured model"):
        evaluate(wider)
    (run_dir / "last.pt").unlink()
    last = compose_coco([*_overrides(run_dir, data_root), "eval.checkpoint=last"])
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*last\.pt.*Train this run"):
        evaluate(last)


def test_config_checked_before_data_and_folder_locked(tmp_path):
    cfg = compose_coco([*_overrides(tmp_path / "run", tmp_path / "no_data"), "optim.lr=abc"])
    with pytest.raises(ConfigError, match="optim.lr='abc'"):
        evaluate(cfg)  # not a DataError: the data is never looked at
    assert not (tmp_path / "no_data").exists()
    holder = _holder(tmp_path / "run")
    try:
        cfg = compose_coco(_overrides(tmp_path / "run", tmp_path / "data"))
        with pytest.raises(RunFolderError, match=f"in use by another command: pid {holder.pid}"):
            evaluate(cfg)
    finally:
        holder.kill()
        holder.wait()


def test_cli_on_finished_run_exits_2_without_traceback(finished):
    run_dir, data_root = finished
    before = snapshot(run_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "matbackprop.evaluate", *_overrides(run_dir, data_root)],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: run folder") and "eval.checkpoint=best" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(run_dir) == before


def test_bsds_checkpoint_evaluation_leaves_segs_alone(tmp_path):
    res = run(bsds_cfg(tmp_path, "demo_bsds_deepncut", ["trainer.epochs=1"], tiny=BSDS_TINY))
    run_dir = res.run_dir
    before = snapshot(run_dir)
    assert any(k.startswith("segs/") for k in before)
    row = evaluate(
        bsds_cfg(tmp_path, "demo_bsds_deepncut", ["trainer.epochs=1", "eval.checkpoint=last"])
    )
    assert snapshot(run_dir) == before
    assert len(list((run_dir / "eval" / "last" / "segs").glob("*.mat"))) == 2
    assert row["val_cover_ods"] == pytest.approx(res.last["val_cover_ods"], rel=1e-9)
