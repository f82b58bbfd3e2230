"""scripts/gpu_report.py: skips cleanly without CUDA; report files; bench_loader's last line."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
gpu_report = load_script("gpu_report")


def test_without_cuda_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    out_dir = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_report.py", "--out-dir", str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    assert not out_dir.exists()  # nothing measured, nothing written


def test_report_files(tmp_path):
    env = {"device": "Fake GPU", "torch": "2.x", "cuda": "12.x"}
    rows = [
        gpu_report._row("eigh", "eigh (100, 169, 169) float64 on GPU", 0.0123456, "s"),
        gpu_report._row("loader", "not run", "-", "scripts/bench_loader.py does not exist"),
    ]
    md, csv_path = gpu_report.write_report(tmp_path, env, rows)
    text = md.read_text()
    assert (
        "- **device**: Fake GPU" in text
        and "| eigh | eigh (100, 169, 169) float64 on GPU | 0.01235 | s |" in text
    )
    with open(csv_path, newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["figure"] for r in got] == [r["figure"] for r in rows]
    assert got[0]["device"] == "Fake GPU" and float(got[0]["value"]) == pytest.approx(0.0123456)


def test_parse_loader_speedup():
    assert gpu_report.parse_speedup("regions/s ...\nspeedup: 12.34x\n\n") == "12.34"
    assert gpu_report.parse_speedup("speedup: 3.00x\nTraceback ...") is None
    assert gpu_report.parse_speedup("") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_report_on_cuda(tmp_path):
    assert gpu_report.main(["--quick", "--only", "eigh", "--out-dir", str(tmp_path)]) == 0
    assert "pool_device measured fastest" in (tmp_path / "gpu_report.md").read_text()
