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


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """A task's metrics -> (scalars as floats, media: Table / Confusion / Figure)."""
    from matbackprop.engine.logging import Confusion, Figure, Table

    scalars, media = {}, {}
    for k, v in metrics.items():
        if isinstance(v, (Table, Confusion, Figure)):
            media[k] = v
        elif hasattr(v, "numel") and v.numel() == 1:  # a one-element tensor
            scalars[k] = float(v)
        elif isinstance(v, (int, float)):
            scalars[k] = float(v)
    return scalars, media


def media_tables(media: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """The :class:`~matbackprop.engine.logging.Table` entries of ``media`` as (columns, rows),
    and each :class:`~matbackprop.engine.logging.Confusion` as counts (actual, predicted, n)."""
    from collections import Counter

    from matbackprop.engine.logging import Confusion, Table

    out = {k: (list(v.columns), list(v.rows)) for k, v in media.items() if isinstance(v, Table)}
    for k, v in media.items():
        if isinstance(v, Confusion):
            pairs = Counter(zip(v.y_true, v.y_pred))
            rows = [[v.class_names[a], v.class_names[p], n] for (a, p), n in sorted(pairs.items())]
            out[k] = (["actual", "predicted", "n"], rows)
    return out


def write_media(run_dir: Path, media: Mapping[str, Any], epoch: int, prefix: str = "") -> None:
    """Tables: the latest as ``tables/<prefix><name>.csv``, and every epoch's rows appended to
    ``tables/<prefix><name>_by_epoch.csv`` (with an ``epoch`` column). For one-shot writers
    (``evaluate``); the training loop keeps its tables in :class:`RunRecords`."""
    for name, (columns, rows) in media_tables(media).items():
        dicts = [dict(zip(columns, r)) for r in rows]
        write_csv(run_dir / "tables" / f"{prefix}{name}.csv", dicts, columns)
        history = run_dir / "tables" / f"{prefix}{name}_by_epoch.csv"
        old = read_csv(history)
        write_csv(history, [*old, *({"epoch": epoch, **r} for r in dicts)], ["epoch", *columns])


class RunRecords:
    """A run folder's records, kept in memory and written from there (rank 0 only):
    ``status.json``, ``metrics.csv`` (one row per epoch, ``epoch`` counted from 1),
    ``train_steps.csv`` (every ``trainer.log_every`` steps) and ``tables/*.csv``. What a resumed
    run had written is read once, at the start."""

    def __init__(self, run_dir: str | Path, main: bool = True) -> None:
        self.run_dir, self.main = Path(run_dir), main
        self.status: dict[str, Any] = dict(read_status(self.run_dir) or {})
        self.rows: list[dict[str, Any]] = read_csv(self.run_dir / "metrics.csv")
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.steps: list[dict[str, Any]] = []  # train_steps.csv (see keep_steps)
        self.steps_dirty = False  # rows added since train_steps.csv was last written

    def keep_epochs(self, done: int) -> None:
        """Drop the rows of epochs after the first ``done`` (about to be redone), in
        ``metrics.csv`` and every ``tables/*_by_epoch.csv``."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= done]
        for path in sorted((self.run_dir / "tables").glob("*_by_epoch.csv")):
            self.tables[path.name] = [r for r in read_csv(path) if int(r["epoch"]) <= done]
        if self.main:
            _write_rows(self.run_dir / "metrics.csv", self.rows)
            for name, rows in self.tables.items():
                path = self.run_dir / "tables" / name
                write_csv(path, rows, list(rows[0].keys()) if rows else ["epoch"])

    def keep_steps(self, global_step: int) -> None:
        """Drop the ``train_steps.csv`` rows after ``global_step`` (about to be redone)."""
        path = self.run_dir / "train_steps.csv"
        self.steps = [r for r in read_csv(path) if int(r["global_step"]) <= global_step]
        if self.main and path.is_file():
            _write_rows(path, self.steps)

    def add_step(self, values: Mapping[str, Any]) -> None:
        """One ``trainer.log_every`` row of ``train_steps.csv``: ``global_step``, the step's
        loss, gradient norm, task logs and every parameter group's lr (as logged to W&B).
        Kept in memory; written with the next ``status.json`` (a checkpoint or an epoch end),
        so the hot path does no file I/O and the file never runs ahead of ``last.pt``."""
        self.steps.append({k: _fmt(v) for k, v in values.items()})
        self.steps_dirty = True

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Append one epoch's row; new keys widen the header (old rows get blanks)."""
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        if self.main:
            _write_rows(self.run_dir / "metrics.csv", self.rows)

    def add_tables(self, tables: Mapping[str, tuple[list[str], list[list[Any]]]], epoch: int):
        """``tables/<name>.csv`` (the latest) and ``tables/<name>_by_epoch.csv`` (every epoch's
        rows with an ``epoch`` column) for each ``name -> (columns, rows)``."""
        for name, (columns, rows) in tables.items():
            dicts = [dict(zip(columns, r)) for r in rows]
            history = self.tables.setdefault(f"{name}_by_epoch.csv", [])
            history += [{"epoch": epoch, **r} for r in dicts]
            if self.main:
                write_csv(self.run_dir / "tables" / f"{name}.csv", dicts, columns)
                write_csv(self.run_dir / "tables" / f"{name}_by_epoch.csv", history,
                          ["epoch", *columns])  # fmt: skip

    def write_status(self, **fields: Any) -> None:
        """Update the in-memory status with ``fields`` and write ``status.json``."""
        self.status.update(fields)
        if not self.main:
            return
        if self.steps_dirty:
            _write_rows(self.run_dir / "train_steps.csv", self.steps)
            self.steps_dirty = False
        from matbackprop.engine.checkpoint import write_json_atomic

        write_json_atomic(self.status, self.run_dir / "status.json")


def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows under one header that is the union of their keys, in first-seen order."""
    if not rows:
        return
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    write_csv(path, rows, columns)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))


def _read_run(folder: Path) -> dict[str, Any] | None:
    """One run folder (``None`` when it has no metrics rows yet); RunFolderError names a
    corrupt ``config.yaml`` / ``metrics.csv`` / ``final.json``."""
    metrics_path, cfg_path, final_path = (
        folder / "metrics.csv",
        folder / "config.yaml",
        folder / "final.json",
    )
    try:
        rows = read_csv(metrics_path)
    except (csv.Error, UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(f"corrupt {metrics_path}: {err}") from err
    if not rows:
        return None
    bad = next((r for r in rows if not str(r.get("epoch") or "").lstrip("-").isdigit()), None)
    if bad is not None:
        raise RunFolderError(f"corrupt {metrics_path}: row without an integer 'epoch': {bad}")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) or {}
    except Exception as err:  # noqa: BLE001 - yaml / omegaconf errors have no common base
        raise RunFolderError(f"corrupt {cfg_path}: {type(err).__name__}: {err}") from err
    if not isinstance(cfg, dict):
        raise RunFolderError(f"corrupt {cfg_path}: not a mapping")
    final = None
    if final_path.is_file():
        try:
            final = json.loads(final_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise RunFolderError(f"corrupt {final_path}: not valid JSON ({err})") from err
        if not isinstance(final, dict):
            raise RunFolderError(f"corrupt {final_path}: expected a JSON object")
    epochs_total = (cfg.get("trainer") or {}).get("epochs")
    return {"dir": folder, "cfg": cfg, "rows": rows, "epochs_total": epochs_total, "final": final}


def find_runs(root: str | Path, on_corrupt=None) -> list[dict[str, Any]]:
    """Every run folder under ``root`` (``config.yaml`` + a non-empty ``metrics.csv``), sorted:
    ``{"dir", "cfg", "rows" (metrics.csv), "epochs_total", "final" (final.json or None)}``.

    A corrupt folder raises RunFolderError, or, with ``on_corrupt(folder, message)``, is
    reported through it and skipped (``make tables`` tables the rest).
    """
    runs = []
    for cfg_path in sorted(Path(root).rglob("config.yaml")):
        folder = cfg_path.parent
        if ".hydra" in cfg_path.parts or not (folder / "metrics.csv").is_file():
            continue
        try:
            run = _read_run(folder)
        except RunFolderError as err:
            if on_corrupt is None:
                raise
            on_corrupt(folder, str(err))
            continue
        if run is not None:
            runs.append(run)
    return runs
