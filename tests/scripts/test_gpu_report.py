"""scripts/gpu_report.py: skips cleanly without CUDA; report files; pieces get numbers back."""

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matbackprop.bench import gpu_report

ROOT = Path(__file__).resolve().parents[2]


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


def test_pieces_get_numbers_back_from_the_bench_functions(tmp_path, monkeypatch):
    """The loader and training pieces take the figures the bench functions return (no stdout
    parsing); a piece that raises becomes one ``failed`` row with its traceback logged."""
    args = argparse.Namespace(out_dir=tmp_path, logs=tmp_path, quick=True, device="cpu")
    fake = dict(speedup=4.25, cpu={}, wall={}, many={}, regions=1, wall_speedup=1.0)
    monkeypatch.setattr(gpu_report.bench_loader, "measure", lambda *a, **k: fake)
    [row] = gpu_report.loader(args, sys.executable)
    assert row["section"] == "loader" and row["value"] == 4.25 and row["unit"] == "×"

    got = [dict(model="AlexNet", batch_size=4, median_s=2.0, ratio_vs_alexnet=1.0)]
    got.append(dict(model="DeepO2P", batch_size=4, median_s=2.5, ratio_vs_alexnet=1.25))
    monkeypatch.setattr(gpu_report.bench_training, "measure", lambda *a, **k: got)
    rows = gpu_report.training(args, sys.executable)
    assert ("DeepO2P step, batch 4, bf16: × AlexNet", 1.25) in [
        (r["figure"], r["value"]) for r in rows
    ]

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_report.bench_loader, "measure", boom)
    [row] = gpu_report.loader(args, sys.executable)
    assert row["figure"] == "failed" and row["value"] == "RuntimeError"
    assert "CUDA out of memory" in (tmp_path / "loader.log").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_report_on_cuda(tmp_path):
    assert gpu_report.main(["--quick", "--only", "eigh", "--out-dir", str(tmp_path)]) == 0
    assert "pool_device measured fastest" in (tmp_path / "gpu_report.md").read_text()
