"""Atomic checkpoints, RNG state and seeding.

Every file here is written to a unique temporary file in the same folder
(``<name>.<random>.tmp``), fsynced and moved into place with ``os.replace`` (atomic on POSIX),
so a run killed mid-write leaves the previous file intact and two writers of one path never
collide (each replace installs one complete file). Everything in it is a tensor or a plain Python value, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from matbackprop.errors import CheckpointError

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and put back: temp files get the permissions a plain open() gives


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the path (a :class:`CheckpointError` and a FileNotFoundError)."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a unique temp file next to ``path``; on success fsync it and ``os.replace`` it
    onto ``path``; on any exception remove it and leave ``path`` as it was.

    ``mode`` is ``"wb"`` or ``"w"``. The parent folder is created if needed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as err:
        raise unwritable(path, err) from err
    try:
        with open(fd, mode) as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            raise unwritable(path, err) from err
        raise
    _fsync_dir(path.parent)


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def unwritable(path: Path, err: OSError) -> Exception:
    """A write refused by the disk (full, quota, read-only, permissions) as a user error that
    names the folder and the fix; what was at ``path`` is left as it was."""
    from matbackprop.errors import RunFolderError

    if err.errno not in DISK_ERRNOS:
        return err
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only"}.get(err.errno, "permission denied")  # fmt: skip
    return RunFolderError(
        f"cannot write {path}: {why} ({err.strerror}). Nothing was lost: {path.name} is as it "
        f"was. Free space in (or fix the permissions of) {path.parent}, or write elsewhere "
        "with output_root=<folder>; then rerun the same command to continue."
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (unique tmp file + fsync + ``os.replace``)."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        MissingCheckpointError: no file at ``path`` (also a FileNotFoundError).
        CheckpointError: the file is not a readable checkpoint (names the path; also a
            ValueError).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated / foreign file
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_short_reason(err)} (the file is truncated or not "
            "a checkpoint of this project; delete it, or restore it from a copy)"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"cannot read checkpoint {path}: holds a {type(state).__name__}, not a dict "
            "(not a checkpoint of this project)"
        )
    return state


def _short_reason(err: Exception) -> str:
    """torch.load's error without its advice to retry with ``weights_only=False`` (unsafe)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    kept = [ln for ln in lines if "weights_only" not in ln and not ln.startswith("Check the doc")]
    text = " ".join(kept or lines[:1] or [type(err).__name__])
    return text.split(". ")[0] if len(text) > 160 else text  # first sentence of a long one


def write_json_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (unique tmp file)."""
    text = json.dumps(obj, indent=2, default=str) + "\n"  # serialise before touching disk
    with atomic_open(path, "w") as fh:
        fh.write(text)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order: a fixed mix of (seed, epoch), independent of
    the global RNG, the number of processes and the resume point."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % 2**63


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed NumPy/Python from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and CUDA) as checkpoint-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
