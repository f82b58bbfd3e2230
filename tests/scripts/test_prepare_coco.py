"""scripts/prepare_coco.py end to end: interrupt it, rerun it, it finishes without redoing work."""

import json
import shutil

import pytest
from tests.conftest import load_script

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
