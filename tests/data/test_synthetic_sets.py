"""Synthetic sets: generated once under a file lock (a local sweep's jobs share one set), and a
set with other parameters never replaces (deletes) the one another job may be reading."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from matbackprop.data.synthetic import ensure_generated


def _slow_make(folder: Path, n: int) -> None:
    time.sleep(0.5)  # long enough for the other process to arrive while this one generates
    (Path(folder) / "items.json").write_text(json.dumps(list(range(n))))


def _job(root: str, n: int, out) -> None:
    try:
        out.put(str(ensure_generated(root, {"n": n}, _slow_make)))
    except Exception as err:  # reported to the test
        out.put(f"error: {type(err).__name__}: {err}")


def test_two_jobs_generating_the_same_set_at_once_share_it(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    jobs = [ctx.Process(target=_job, args=(str(tmp_path / "syn"), 3, out)) for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
    got = sorted(out.get(timeout=5) for _ in jobs)
    assert got == [str(tmp_path / "syn")] * 2  # no "Directory not empty", one set
    assert json.loads((tmp_path / "syn" / "items.json").read_text()) == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_other_parameters_never_delete_the_existing_set(tmp_path):
    first = ensure_generated(tmp_path / "syn", {"n": 2}, _slow_make)
    second = ensure_generated(tmp_path / "syn", {"n": 4}, _slow_make)
    assert first == tmp_path / "syn" and second != first and second.name.startswith("syn-")
    assert json.loads((first / "items.json").read_text()) == [0, 1]  # still there
    assert json.loads((second / "items.json").read_text()) == [0, 1, 2, 3]
    assert ensure_generated(tmp_path / "syn", {"n": 4}, _slow_make) == second  # reused
    assert ensure_generated(tmp_path / "syn", {"n": 2}, _slow_make) == first


def test_a_folder_that_is_not_a_generated_set_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a generated synthetic set"):
        ensure_generated(tmp_path / "mine", {"n": 1}, _slow_make)
