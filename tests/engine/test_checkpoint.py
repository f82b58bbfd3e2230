"""Atomic checkpoints and RNG state round trips."""

import random

import numpy as np
import pytest
import torch

from matbackprop.engine import checkpoint as ck


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
