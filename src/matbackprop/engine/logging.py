"""Experiment logging: Weights & Biases (offline by default) or nothing.

A task's ``evaluate`` returns scalars and, optionally, :class:`Table` / :class:`Confusion` /
:class:`Figure` values; the trainer writes scalars to ``metrics.csv`` and tables to
``tables/<name>.csv``, and hands everything to the logger, which turns them into
``wandb.Table`` / ``wandb.plot.confusion_matrix`` / ``wandb.Image``.

``logger.mode``: ``offline`` (default: no account, no network; ``make sync-wandb`` uploads
later), ``online`` or ``disabled``. The ``WANDB_MODE`` environment variable wins over the
config (tests run with ``WANDB_MODE=disabled``).

Every run groups itself (:func:`run_metadata`): ``group`` = its paper table (``table1``,
``table2``, ``demo``), ``job_type`` = ``train`` / ``eval``, tags for trunk, pretrained /
scratch, head and protocol, ``config.row`` = the paper row, and the config flattened to dot
keys. Steps: every log carries a ``global_step`` field (epoch logs also ``epoch`` = epochs
completed), declared with ``define_metric`` as the x-axes; W&B's own ``step=`` is never
passed, so the stretch a resumed run redoes is kept instead of dropped as "non-increasing".

W&B can never stop training: an online ``wandb.init`` that fails (no API key, no network
after ``logger.init_timeout`` seconds) falls back to offline with one warning; a failing
``log`` or ``finish`` is a warning (:class:`LoggerWarning`), never an exception.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matbackprop.engine import distributed
from matbackprop.errors import ConfigError
from matbackprop.results.paper import DEMO, TABLE_IDS

STEP_KEY = "global_step"  # optimizer steps so far; x-axis of train/* and lr/*
EPOCH_KEY = "epoch"  # x-axis of epoch/*: epochs completed (metrics.csv's `epoch`, counted from 1)
# summary of an epoch metric: best over epochs where that is what a table reports, else last
SUMMARY_MODES = {"epoch/val_error": "min", "epoch/val_cover_ods": "max"}


class LoggerWarning(UserWarning):
    """W&B failed in a way that does not affect training (init fell back, log/finish failed)."""


@dataclass
class Table:
    """A small table (e.g. per-class error), logged as ``wandb.Table`` and saved as CSV."""

    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Confusion:
    """Labels and predictions for a confusion matrix (``wandb.plot.confusion_matrix``)."""

    y_true: list[int]
    y_pred: list[int]
    class_names: list[str]


@dataclass
class Figure:
    """An image file already written by the task (e.g. a PNG of overlays): ``wandb.Image``."""

    path: str


class NullLogger:
    """``logger=none``: accepts everything, does nothing."""

    run_id: str | None = None

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"model.trunk": ..., "optim.lr": ...}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def run_group(cfg: Mapping[str, Any]) -> str:
    """The paper table a run belongs to: ``paper.table``, else from the run name
    (``table1_*`` / ``table2_*`` / ``demo_*``), else the task."""
    paper = cfg.get("paper") or {}
    if paper.get("table"):
        return str(paper["table"])
    name = str(cfg.get("run_name") or "")
    for group in (*TABLE_IDS, DEMO):
        if name.startswith(group):
            return group
    return str(cfg.get("task") or "runs")


def run_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Tags from the model and data config: trunk, pretrained/scratch, head, protocol."""
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    tags = []
    if model.get("trunk"):
        tags.append(f"trunk:{model['trunk']}")
    if "pretrained" in model:
        tags.append("pretrained" if model["pretrained"] else "scratch")
    head = model.get("arch")
    if head == "deepncut" and not model.get("head", True):
        head = "ncut_raw_features"  # the non-finetuned NCut baselines
    if head:
        tags.append(f"head:{head}")
    protocol = data.get("name")
    if protocol == "bsds":
        protocol = f"bsds{data.get('version', 500)}"
    if protocol:
        tags.append(f"protocol:{protocol}")
    return tags


def run_metadata(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``group``, ``tags``, ``name`` and the flat ``config`` (with ``row``) of a run's config."""
    paper = cfg.get("paper") or {}
    row = str(paper.get("row") or cfg.get("run_name") or "")
    return {
        "group": run_group(cfg),
        "tags": run_tags(cfg),
        "name": row or None,
        "config": {"row": row, **flatten_config(cfg)},
    }


class WandbLogger:
    """One W&B run per training run, stored under the run folder (``dir=run_dir``).

    Args:
        run_dir: the run folder (W&B writes ``run_dir/wandb/``).
        config: the config to attach to the run (logged flat, with dot keys).
        run_id: W&B run id; pass the same id when resuming (``resume="allow"``).
        project, entity, name, group, job_type, tags, mode: as ``wandb.init``.
        init_timeout: seconds an online ``wandb.init`` may take before falling back to offline.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any],
        run_id: str | None = None,
        project: str = "matbackprop",
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        tags: Sequence[str] | None = None,
        mode: str = "offline",
        init_timeout: float = 30.0,
    ):
        import wandb

        self._wandb = wandb
        self._log_failures = 0
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or mode
        kwargs = dict(
            project=project,
            entity=entity,
            name=name,
            group=group,
            job_type=job_type,
            tags=list(tags or []),
            dir=str(run_dir),
            config=dict(config),
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run = None
        try:
            self.run = self._init(kwargs, mode, init_timeout)
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            if mode == "offline":
                _warn(f"W&B init failed ({type(err).__name__}: {err}); not logging to W&B.")
            else:
                _warn(
                    f"W&B {mode} init failed ({type(err).__name__}: {err}); logging offline "
                    f"under {run_dir}/wandb instead (upload later with `make sync-wandb`; "
                    "check `wandb login` and the network, or raise logger.init_timeout)."
                )
                try:
                    mode = "offline"
                    wandb.teardown()  # the failed init leaves its run id registered in-process
                    self.run = self._init(kwargs, mode, init_timeout)
                except Exception as err2:  # noqa: BLE001
                    _warn(f"W&B offline init failed too ({err2}); not logging to W&B.")
        self.mode = mode
        self.run_id = run_id if mode == "disabled" else getattr(self.run, "id", run_id)

    def _init(self, kwargs: dict[str, Any], mode: str, init_timeout: float):
        wandb = self._wandb
        settings = wandb.Settings(init_timeout=float(init_timeout))
        # create_new: a run left open in this process (e.g. a failed finish) is not touched
        run = wandb.init(**kwargs, mode=mode, settings=settings, reinit="create_new")
        run.define_metric(STEP_KEY, hidden=True)
        run.define_metric(EPOCH_KEY, hidden=True)
        for prefix in ("train/*", "lr/*"):
            run.define_metric(prefix, step_metric=STEP_KEY)
        for key, summary in SUMMARY_MODES.items():
            run.define_metric(key, step_metric=EPOCH_KEY, summary=summary)
        run.define_metric("epoch/*", step_metric=EPOCH_KEY)
        return run

    def _convert(self, data: Mapping[str, Any], step: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Table):
                out[key] = self._wandb.Table(columns=value.columns, data=value.rows)
            elif isinstance(value, Figure):
                out[key] = self._wandb.Image(value.path)
            elif isinstance(value, Confusion):
                out[key] = self._wandb.plot.confusion_matrix(
                    y_true=value.y_true, preds=value.y_pred, class_names=value.class_names
                )
            elif key == f"epoch/{EPOCH_KEY}":
                out[EPOCH_KEY] = int(value)  # counted from 1, as in metrics.csv
            else:
                out[key] = value
        if step is not None:
            out[STEP_KEY] = int(step)
        return out

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``data`` with ``global_step=step`` as a field (a redone step is kept).

        A failure is a :class:`LoggerWarning` (the first one; later ones are counted and
        reported by :meth:`finish`), never an exception.
        """
        if self.run is None:
            return
        try:
            self.run.log(self._convert(data, step))
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            self._log_failures += 1
            if self._log_failures == 1:
                _warn(f"W&B log failed at step {step} ({type(err).__name__}: {err}); going on.")

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a failure is a warning, so it never masks the error that ended
        training (``finish`` is called from the trainer's ``finally``)."""
        if self._log_failures > 1:
            _warn(f"W&B log failed {self._log_failures} times in this run.")
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            _warn(f"W&B finish failed ({type(err).__name__}: {err}).")
        self.run = None


def _warn(message: str) -> None:
    warnings.warn(message, LoggerWarning, stacklevel=3)


def build_logger(
    cfg: Mapping[str, Any] | None,
    run_dir: str | Path,
    config: Mapping[str, Any],
    run_id: str | None = None,
    job_type: str = "train",
) -> NullLogger | WandbLogger:
    """Logger from a ``logger`` config section (``name: wandb | none``); a no-op logger on
    ranks other than 0.

    ``group`` / ``run_name`` / ``tags`` left null (the default) come from :func:`run_metadata`
    of ``config``; explicit values win (``tags`` are added to the derived ones).

    Args:
        cfg: the ``logger`` config section.
        run_dir: the run folder.
        config: the whole resolved config (plain dict).
        run_id: W&B run id (the same on resume).
        job_type: ``train`` or ``eval``.

    Raises:
        ConfigError: unknown ``logger.name`` or ``logger.mode`` (a ``ValueError``).
    """
    if cfg is None or cfg.get("name", "none") == "none" or not distributed.is_main():
        return NullLogger()  # under DDP only rank 0 logs (one W&B run per training)
    if cfg["name"] != "wandb":
        raise ConfigError(f"unknown logger.name {cfg['name']!r}; expected 'wandb' or 'none'")
    if cfg.get("mode", "offline") not in ("offline", "online", "disabled"):
        raise ConfigError(
            f"unknown logger.mode {cfg['mode']!r}; expected offline, online or disabled"
        )
    meta = run_metadata(config)
    return WandbLogger(
        run_dir,
        meta["config"],
        run_id=run_id,
        project=cfg.get("project", "matbackprop"),
        entity=cfg.get("entity"),
        name=cfg.get("run_name") or meta["name"],
        group=cfg.get("group") or meta["group"],
        job_type=job_type,
        tags=[*meta["tags"], *(cfg.get("tags") or [])],
        mode=cfg.get("mode", "offline"),
        init_timeout=float(cfg.get("init_timeout", 30)),
    )


def offline_runs(root: str | Path) -> dict[str, list[Path]]:
    """W&B offline run folders under ``root``, per run id, oldest first.

    A resumed run leaves one ``offline-run-<YYYYMMDD_HHMMSS>-<id>[-n]`` folder per session,
    all with the same id: they are fragments of one run and are uploaded together, in this
    order (``wandb sync --id <id> <folders...>``, what ``make sync-wandb`` runs).
    """
    found: dict[str, list[tuple[float, str, Path]]] = {}
    for folder in Path(root).rglob("offline-run-*"):
        logs = list(folder.glob("*.wandb")) if folder.is_dir() else []
        run = next((r.run for r in _records(logs[0]) if r.HasField("run")), None) if logs else None
        if run is not None:
            start = run.start_time.seconds + run.start_time.nanos * 1e-9
            found.setdefault(run.run_id, []).append((start, folder.name, folder))
    return {k: [f for *_, f in sorted(v)] for k, v in sorted(found.items())}


def _records(path: Path):
    """The ``Record`` protobufs of a ``*.wandb`` transaction log: a 7-byte header, then
    LevelDB log framing (32 KiB blocks of crc32/length/type-framed chunks)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    buf, pos, block, parts = Path(path).read_bytes(), 7, 32768, b""
    if buf[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log (header {buf[:7]!r})")
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        data, pos = buf[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (2, 3):  # FIRST / MIDDLE chunk
            parts = (b"" if kind == 2 else parts) + data
        elif kind in (1, 4):  # FULL / LAST chunk
            yield pb.Record.FromString(parts + data if kind == 4 else data)


def read_offline_run(folder: str | Path) -> dict[str, Any]:
    """What a local W&B run folder holds: ``id``, ``group``, ``job_type``, ``tags``,
    ``config`` (flat dict), ``history`` (one dict per ``log`` call, W&B's ``_step`` etc.
    included) and ``metrics`` (the ``define_metric`` records)."""
    import json

    (path,) = Path(folder).glob("*.wandb")
    out: dict[str, Any] = {"config": {}, "history": [], "metrics": []}
    for record in _records(path):
        which = record.WhichOneof("record_type")
        if which == "run":
            r = record.run
            out.update(id=r.run_id, group=r.run_group, job_type=r.job_type, tags=list(r.tags))
            for item in record.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif which == "history":
            items = record.history.item
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
            )
        elif which == "metric":
            m = record.metric
            summary = [f.name for f, v in m.summary.ListFields() if v]
            out["metrics"].append(
                {"name": m.name or m.glob_name, "step_metric": m.step_metric, "summary": summary}
            )
    return out
