"""scripts/bench_training.py, bench_deepncut.py, bench_scale.py: thin wrappers; bad options exit 2
with one line (the figures themselves are tested through matbackprop.bench: tests/bench/)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_bad_precision_exits_2_with_one_line():
    """(the other checks of ``check_device`` are tested in-process in tests/bench/)"""
    proc = _run("scripts/bench_training.py", "--precision", "16", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --precision 16 needs CUDA; use bf16 on CPU"
