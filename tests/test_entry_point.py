"""``python -m matbackprop.train`` for real: Hydra's own errors and an experiment of the other
task exit 2 with one ``error:`` line (no traceback), and a BSDS experiment trains without
``--config-name bsds``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.bsds_tiny import BSDS_TINY

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")}


def _train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "matbackprop.train", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "override, needles",
    [
        (
            "experiment=nonexistent",
            ["experiment=nonexistent: no such experiment", "demo_bsds_deepncut, demo_coco_avgpool"],
        ),
        (
            "optim.lrr=0.1",
            ["optim.lrr=0.1: no such config key", "did you mean optim.lr?", "+optim.lrr=0.1"],
        ),
        ("data=foo", ["data=foo: no such data option 'foo'", "bsds, bsds300, bsds_synthetic"]),
    ],
)
def test_hydra_errors_exit_2_with_one_line(tmp_path, override, needles):
    proc = _train(override, f"output_root={tmp_path}", "logger=none", "trainer.device=cpu")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert not list(tmp_path.iterdir())  # nothing created


def test_experiment_with_a_group_of_the_other_task_exits_2(tmp_path):
    proc = _train("experiment=demo_bsds_deepncut", "data=coco_synthetic", f"output_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert "data.task='coco': the data group (data.name=coco_synthetic)" in proc.stderr
    assert "bsds run" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bsds_experiment_trains_without_config_name(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train(
        "experiment=demo_bsds_deepncut",
        *BSDS_TINY,
        f"data.root={tmp_path / 'data'}",
        "trainer.epochs=1",
        "trainer.max_steps=1",
        f"run_dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["fingerprint"]["task"] == "bsds"
    assert (run_dir / "config.yaml").read_text().count("arch: deepncut") == 1
