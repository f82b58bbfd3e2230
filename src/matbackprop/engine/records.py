"""What a run folder holds besides checkpoints: ``metrics.csv``, ``config.yaml``, tables.

``metrics.csv`` has one row per epoch and one header. It is rewritten atomically on every
append (it is small; unique temp name, see :func:`~matbackprop.engine.checkpoint.atomic_open`),
so a run killed at any point leaves a well-formed file, and a resumed run first drops the rows
of epochs it is about to redo (no duplicates). :func:`read_status` reads ``status.json``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from matbackprop.engine.checkpoint import atomic_open
from matbackprop.engine.schema import fingerprint, flatten  # noqa: F401  (moved there)
from matbackprop.errors import RunFolderError


def _write_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:  # unique temp name: concurrent writers never collide
        fh.write(text)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """``status.json`` of a run folder (``None`` if absent).

    Raises:
        RunFolderError: the file is not valid JSON or not the trainer's status object (names
            the file and the fix).
    """
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return None
    fix = (
        "Delete it (the next `train` resumes from last.pt and writes it again), "
        "or restore it from a copy."
    )
    try:
        status = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise RunFolderError(f"corrupt run status {path}: not valid JSON ({err}). {fix}") from err
    problem = _status_problem(status)
    if problem:
        raise RunFolderError(f"corrupt run status {path}: {problem}. {fix}")
    return status


def _status_problem(status: Any) -> str | None:
    """What is wrong with a parsed ``status.json`` (``None``: the shape the trainer writes)."""
    if not isinstance(status, dict):
        return f"expected a JSON object, found {type(status).__name__}"
    done = status.get("epochs_done")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        return f"'epochs_done' must be an integer >= 0, found {done!r}"
    if not isinstance(status.get("fingerprint"), dict):
        return "'fingerprint' must be an object (the config the run was trained with)"
    for key in ("last",):
        if key in status and not isinstance(status[key], dict):
            return f"{key!r} must be an object, found {type(status[key]).__name__}"
    return None


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (missing values empty) under one header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, buf.getvalue())


def append_metrics(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one epoch's row; a row with new keys widens the header (old rows get blanks)."""
    rows = read_csv(path)
    columns = list(rows[0].keys()) if rows else []
    columns += [k for k in row if k not in columns]
    write_csv(path, [*rows, {k: _fmt(v) for k, v in row.items()}], columns)


def truncate_metrics(path: str | Path, before_epoch: int) -> None:
    """Keep only rows with ``epoch < before_epoch`` (used when resuming)."""
    rows = read_csv(path)
    if not rows:
        return
    kept = [r for r in rows if int(r["epoch"]) < before_epoch]
    if len(kept) != len(rows):
        write_csv(path, kept, list(rows[0].keys()))


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))


def fingerprint_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Human-readable differences ``key: saved != now`` (sorted)."""
    keys = sorted(set(saved) | set(now))
    missing = "<absent>"
    return [
        f"{k}: {saved.get(k, missing)!r} (run folder) != {now.get(k, missing)!r} (now)"
        for k in keys
        if saved.get(k, missing) != now.get(k, missing)
    ]
