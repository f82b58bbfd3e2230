"""Atomic checkpoints (unique temp names, concurrent writers) and RNG state round trips."""

import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from matbackprop.engine import checkpoint as ck
from matbackprop.errors import CheckpointError


def test_save_load_roundtrip_and_no_tmp_left(tmp_path):
    path = tmp_path / "run" / "last.pt"
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "best": None}
    ck.save_checkpoint(state, path)
    back = ck.load_checkpoint(path)
    assert back["epoch"] == 3 and back["best"] is None
    assert torch.equal(back["model"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, fh):
        fh.write(b"partial garbage")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        ck.load_checkpoint(bad)


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    ck.seed_everything(123)
    ck.save_checkpoint({"rng": ck.rng_state()}, tmp_path / "s.pt")
    first = (random.random(), np.random.rand(), torch.rand(3))
    ck.seed_everything(999)  # scramble
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "s.pt")["rng"])
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


def _hammer(write, read, path, n_writers=2, n_writes=30):
    """``n_writers`` threads each write ``path`` ``n_writes`` times and read it back after every
    write; returns the exceptions seen (an empty list: no write failed, every read worked)."""
    errors, start = [], threading.Barrier(n_writers)

    def work(k):
        start.wait()
        for i in range(n_writes):
            try:
                write(k, i)
                read()
            except Exception as err:  # noqa: BLE001 (collected and asserted on)
                errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_checkpoint_writers_never_collide(tmp_path):
    """Two writers of one checkpoint path (the issue: a shared ``last.pt.tmp`` name made 7 of
    30 saves fail with FileNotFoundError and once left an unreadable last.pt)."""
    path = tmp_path / "last.pt"
    big = torch.randn(256, 1024)  # 1 MB: writes take long enough to interleave

    def write(k, i):
        ck.save_checkpoint({"model": {"w": big + k}, "writer": k, "i": i}, path)

    def read():
        state = ck.load_checkpoint(path)
        assert torch.equal(state["model"]["w"], big + state["writer"])  # one whole write

    assert _hammer(write, read, path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_concurrent_json_writers_never_collide(tmp_path):
    path = tmp_path / "status.json"
    payload = {"rows": list(range(20000))}

    def write(k, i):
        ck.write_json_atomic({**payload, "writer": k, "i": i}, path)

    def read():
        assert json.loads(path.read_text())["rows"] == payload["rows"]

    assert _hammer(write, read, path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_temp_names_are_unique_and_permissions_normal(tmp_path, monkeypatch):
    seen = []
    real_replace = ck.os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", spy)
    ck.write_json_atomic({"a": 1}, tmp_path / "x.json")
    ck.write_json_atomic({"a": 2}, tmp_path / "x.json")
    assert len(set(seen)) == 2 and all(s.startswith("x.json.") and s.endswith(".tmp") for s in seen)
    mode = (tmp_path / "x.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as a plain open() would create it, not mkstemp's 0600


def test_load_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt") as info:
        ck.load_checkpoint(tmp_path / "missing.pt")
    assert isinstance(info.value, FileNotFoundError)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad.pt.*delete it"):
        ck.load_checkpoint(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        ck.load_checkpoint(tmp_path / "list.pt")


def test_disk_full_keeps_the_old_checkpoint_and_is_a_user_error(tmp_path, monkeypatch):
    import errno as errno_mod

    from matbackprop.errors import RunFolderError

    path = tmp_path / "last.pt"
    ck.save_checkpoint({"epoch": 1}, path)
    real_save = torch.save

    def full(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        raise OSError(errno_mod.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunFolderError, match=r"disk is full[\s\S]*Nothing was lost.*output_root"):
        ck.save_checkpoint({"epoch": 2}, path)
    assert ck.load_checkpoint(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == [
        "last.pt"
    ]  # no temp file left


def test_read_only_folder_is_a_user_error_naming_it(tmp_path, monkeypatch):
    import errno as errno_mod
    import tempfile

    from matbackprop.errors import RunFolderError

    def read_only(*a, **k):  # as root, chmod does not stop writes: the file system's answer
        raise OSError(errno_mod.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(RunFolderError, match=f"read-only.*{tmp_path}"):
        ck.write_json_atomic({"a": 1}, tmp_path / "status.json")
