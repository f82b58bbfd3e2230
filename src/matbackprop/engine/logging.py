"""Experiment logging: Weights & Biases (offline by default) or nothing.

A task's ``evaluate`` returns scalars and, optionally, :class:`Table` / :class:`Confusion` /
:class:`Figure` values; the trainer writes scalars to ``metrics.csv`` and tables to
``tables/<name>.csv``, and hands everything to the logger, which turns them into
``wandb.Table`` / ``wandb.plot.confusion_matrix`` / ``wandb.Image``.

``logger.mode``: ``offline`` (default: no account, no network; ``make sync-wandb`` uploads
later), ``online`` or ``disabled``. The ``WANDB_MODE`` environment variable wins over the
config (tests run with ``WANDB_MODE=disabled``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


class WandbLogger:
    """One W&B run per training run, stored under the run folder (``dir=run_dir``).

    Args:
        run_dir: the run folder (W&B writes ``run_dir/wandb/``).
        config: the resolved config (plain dict) to attach to the run.
        run_id: W&B run id; pass the same id when resuming (``resume="allow"``).
        project, entity, name, group, tags, mode: as ``wandb.init``.
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
        tags: Sequence[str] | None = None,
        mode: str = "offline",
    ):
        import wandb

        self._wandb = wandb
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or mode
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            group=group,
            tags=list(tags or []),
            dir=str(run_dir),
            config=dict(config),
            id=run_id,
            resume="allow" if run_id else None,
            mode=mode,
        )
        self.run_id = run_id if mode == "disabled" else getattr(self.run, "id", run_id)

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
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
            else:
                out[key] = value
        self.run.log(out, step=step)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def build_logger(
    cfg: Mapping[str, Any] | None,
    run_dir: str | Path,
    config: Mapping[str, Any],
    run_id: str | None = None,
) -> NullLogger | WandbLogger:
    """Logger from a ``logger`` config section (``name: wandb | none``).

    Raises:
        ValueError: unknown ``logger.name``.
    """
    if cfg is None or cfg.get("name", "none") == "none":
        return NullLogger()
    if cfg["name"] != "wandb":
        raise ValueError(f"unknown logger.name {cfg['name']!r}; expected 'wandb' or 'none'")
    return WandbLogger(
        run_dir,
        config,
        run_id=run_id,
        project=cfg.get("project", "matbackprop"),
        entity=cfg.get("entity"),
        name=cfg.get("run_name"),
        group=cfg.get("group"),
        tags=cfg.get("tags"),
        mode=cfg.get("mode", "offline"),
    )
