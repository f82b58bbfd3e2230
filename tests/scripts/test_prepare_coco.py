"""scripts/prepare_coco.py end to end: interrupt it, rerun it, it finishes without redoing work;
SIGTERM / SIGINT leave no temporary files (a real subprocess); its hint names its own options."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tests.conftest import ROOT, load_script

from matbackprop.data import region_store as rs
from matbackprop.data.synthetic_coco import make_synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
prep = load_script("prepare_coco")


def test_interrupt_then_rerun_finishes_both_splits(tmp_path, monkeypatch, capsys):
    root = make_synthetic_coco(tmp_path / "coco", n_train=10, n_val=6, image_size=(96, 128))["root"]
    args = ["--root", str(root), "--max-side", "48", "--chunk-images", "1", "--workers", "1"]
    real, calls = rs.prepare_chunk, []

    def flaky(spec, c):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of train2014
        calls.append((spec.out.name, c))
        return real(spec, c)

    monkeypatch.setattr(rs, "prepare_chunk", flaky)
    assert prep.main(args) == 130
    assert "run the same command again" in capsys.readouterr().err
    train = root / "prepared" / "train2014"
    assert not (train / "manifest.json").exists() and len(list(train.glob("*.json"))) == 4
    calls.clear()
    monkeypatch.setattr(
        rs, "prepare_chunk", lambda s, c: calls.append((s.out.name, c)) or real(s, c)
    )
    assert prep.main(args) == 0
    out = capsys.readouterr().out
    n_train = json.loads((train / "manifest.json").read_text())["chunks"]
    assert ("train2014", 0) not in calls and ("train2014", 2) not in calls  # kept, not redone
    assert [c for s, c in calls if s == "train2014"] == list(range(3, n_train))
    assert (root / "prepared" / "val2014" / "manifest.json").is_file()
    assert "written now" in out
    assert prep.main(args + ["--workers", "2"]) == 0  # nothing left: both splits verified


def test_parallel_equals_sequential_and_errors_exit_2(tmp_path, capsys):
    root = make_synthetic_coco(tmp_path / "coco", n_train=4, n_val=8, image_size=(96, 128))["root"]
    base = ["--root", str(root), "--max-side", "48", "--chunk-images", "2", "--splits", "val2014"]
    assert prep.main(base + ["--workers", "1", "--out", str(tmp_path / "a")]) == 0
    assert prep.main(base + ["--workers", "2", "--out", str(tmp_path / "b")]) == 0
    for f in sorted((tmp_path / "a" / "val2014").glob("chunk-*")):
        assert f.read_bytes() == (tmp_path / "b" / "val2014" / f.name).read_bytes(), f.name
    shutil.rmtree(root / "val2014")
    assert prep.main(base + ["--out", str(tmp_path / "c")]) == 2
    assert "val2014" in capsys.readouterr().err


_STALL = """
import os, sys, time
from pathlib import Path
from tests.conftest import ROOT, load_script
from matbackprop.data import region_store as rs

ready, real = Path(sys.argv[1]), rs._atomic_write

def stalled_write(path, data):  # a chunk's .bin half written, then the signal arrives
    if path.suffix == ".bin":
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data[: len(data) // 2])
        ready.write_text(str(os.getpid()))
        while True:
            time.sleep(0.01)
    return real(path, data)

rs._atomic_write = stalled_write
sys.exit(load_script("prepare_coco").main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "sig, workers, rc",
    [("SIGTERM", 1, 143), ("SIGTERM", 2, 143), ("SIGINT", 2, 130), ("SIGKILL", 1, -9)],
)
def test_a_signal_leaves_no_temp_files(tmp_path, sig, workers, rc):
    root = make_synthetic_coco(tmp_path / "coco", n_train=2, n_val=6, image_size=(64, 64))["root"]
    (tmp_path / "stall.py").write_text(_STALL)
    ready = tmp_path / "ready"
    args = ["--root", str(root), "--max-side", "32", "--chunk-images", "1", "--splits", "val2014"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "stall.py"), str(ready), *args, "--workers", str(workers)],
        env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _signal_and_check(proc, ready, root, args, sig, rc)
    finally:  # never leave a stalled writer behind, whatever failed
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _signal_and_check(proc, ready, root, args, sig, rc):
    deadline = time.monotonic() + 120
    while not ready.exists():  # synchronise on the stalled writer's file, not on a delay
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    store = root / "prepared" / "val2014"
    assert list(store.glob("chunk-*.bin.*.tmp"))  # the half-written chunk is there
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == rc, err
    left = list(store.glob("*.tmp"))
    if sig == "SIGKILL":  # nothing can clean up after kill -9: the next run does
        assert left
        assert prep.main(args + ["--workers", "1"]) == 0
        assert not list(store.glob("*.tmp")) and (store / "manifest.json").is_file()
        return
    assert not left, left
    assert err.strip().splitlines() == ["interrupted: run the same command again to continue"]


def test_hint_names_its_own_options_and_a_rerun_repairs_an_edited_index(tmp_path, capsys):
    assert prep.main(["--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--root DIR" in err and 'PREPARE_ARGS="--root DIR"' in err
    assert "data.root" not in err and "ann_file" not in err
    root = make_synthetic_coco(tmp_path / "coco", n_train=2, n_val=6, image_size=(64, 64))["root"]
    args = ["--root", str(root), "--max-side", "32", "--splits", "val2014", "--workers", "1"]
    assert prep.main(args) == 0
    npy = root / "prepared/val2014/chunk-00000.npy"
    good = npy.read_bytes()
    rows = np.load(npy)
    rows["ann_id"][[0, 1]] = rows["ann_id"][[1, 0]]  # "0 written now" kept this index before
    np.save(npy, rows)
    capsys.readouterr()
    assert prep.main(args) == 0
    assert "(1 written now" in capsys.readouterr().out and npy.read_bytes() == good
