"""Whether a run folder fits a config, what may change on resume, and the lr re-plan — all
from the resume rules declared once in :mod:`matbackprop.engine.schema`.

- ``identity`` keys must match the folder's run, else :class:`RunFolderError` (exit 2) names
  the keys and the two ways out (``run_name=...`` for a new run; the ``may_change`` keys to
  extend or resume);
- ``may_change`` keys (lr, schedule, clip, epochs, precision, non-finite policy) are applied,
  printed, recorded in ``status.json`` (``changes``) and in the next ``metrics.csv`` row
  (``changed``); the lr schedule is re-planned from the new values (each parameter group keeps
  its multiplier);
- ``operational`` keys (workers, logging, device, ...) are simply applied.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from matbackprop.engine import distributed as D
from matbackprop.engine import schema
from matbackprop.engine.optim import build_scheduler
from matbackprop.engine.records import read_status
from matbackprop.errors import RunFolderError

SCHEDULE_KEYS = (
    "optim.lr",
    "optim.schedule",
    "optim.step_size",
    "optim.gamma",
    "optim.min_lr_mult",
    "trainer.epochs",
)  # fmt: skip  (a change re-plans the lr)


@dataclass
class FitResult:
    """What ``fit`` did: ``epochs_done`` in total, ``resumed_from`` (epochs already done at
    start), ``already_finished``, ``best`` value of ``monitor``, the ``last`` epoch's row, and
    ``stopped_at_max_steps`` (``trainer.max_steps`` reached before the end)."""

    run_dir: Path
    epochs_done: int
    resumed_from: int
    already_finished: bool
    monitor: str | None
    best: float | None
    last: dict[str, Any] = field(default_factory=dict)
    stopped_at_max_steps: bool = False


RESOLVED = "resolved."  # fingerprint keys of a task's run-time choices (Task.resolved)


def resolved_keys(task: Any) -> dict[str, Any]:
    """A task's run-time choices as fingerprint keys (``resolved.data.loader.train``, ...)."""
    return {RESOLVED + k: v for k, v in task.resolved.items()}


def check_resolved(saved: Mapping[str, Any], now: Mapping[str, Any], run_dir: Path) -> None:
    """A task's run-time choices (e.g. ``data.store=auto`` picking the prepared store or
    on-the-fly crops) are part of the run's identity: a resume never silently switches.

    Raises:
        RunFolderError: names the choice, both values and how to pin it.
    """
    saved = {k: v for k, v in saved.items() if k.startswith(RESOLVED)}
    diff = [f"{k[len(RESOLVED):]}: {saved.get(k)!r} (run folder) != {now.get(k)!r} (now)"
            for k in sorted(set(saved) | set(now)) if saved and saved.get(k) != now.get(k)]  # fmt: skip
    if diff:
        raise RunFolderError(
            f"run folder {run_dir} was trained with other run-time data choices:\n  "
            + "\n  ".join(diff)
            + "\n(the region store was prepared or removed since). Resume with the loader it "
            "used: data.store=none for on-the-fly crops, data.store=auto once the store is "
            "back; or start a new run with run_name=<new name>."
        )


def check_compatible(saved: Mapping[str, Any], cfg: DictConfig, run_dir: Path) -> dict:
    """The ``may_change`` keys that differ (``{key: (saved, now)}``).

    Raises:
        RunFolderError: an ``identity`` key differs.
    """
    saved = {k: v for k, v in saved.items() if not k.startswith(RESOLVED)}
    fixed, changes = schema.compare(saved, cfg)
    if fixed:
        names = ", ".join(line.split(":")[0] for line in fixed[:20])
        raise RunFolderError(
            f"run folder {run_dir} holds a run of a different experiment ({names} differ):\n  "
            + "\n  ".join(fixed[:20])
            + "\nTo start a new run, give it its own folder: run_name=<new name>. To resume or "
            "extend this run, change only the keys that may change on resume ("
            + ", ".join(schema.keys_with_rule(schema.MAY_CHANGE))
            + ") and keep the others as they were (delete the folder to start over)."
        )
    return changes


def finished_run(run_dir: Path, cfg: DictConfig) -> FitResult | None:
    """A finished run in ``run_dir`` that this config has nothing left to do for, or ``None``.

    A ``may_change`` key that differs from the finished run is reported: ``trainer.epochs``
    above the epochs done extends the run (``None`` is returned: there is work); any other
    change does not apply to epochs already trained, which is said instead of a silent exit.
    """
    status, epochs = read_status(run_dir), int(cfg.trainer.epochs)
    if status is None or not (run_dir / "last.pt").is_file():
        return None
    changes = check_compatible(status["fingerprint"], cfg, run_dir)
    done = status["epochs_done"]
    finished = status.get("finished", True) and status.get("step_in_epoch") is None
    if done < epochs or not finished:
        return None
    if not D.is_main():
        pass
    elif changes:
        shown = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        print(
            f"[train] {run_dir}: finished already ({done}/{epochs} epochs); nothing to do: "
            f"the changed settings ({shown}) only apply to epochs still to train. Raise "
            "trainer.epochs to extend this run with them, or give a new run its own folder "
            "(run_name=<new name>)."
        )
    else:
        print(
            f"[train] {run_dir}: finished already ({done}/{epochs} epochs, best "
            f"{status.get('monitor')} = {status.get('best')}); nothing to do."
        )
    best, last = status.get("best"), status.get("last", {})
    return FitResult(run_dir, done, done, True, status.get("monitor"), best, last)


def replan(
    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: DictConfig, changes: Mapping[str, Any],
    start: int, saved_scheduler: dict[str, Any], main: bool = True,
) -> torch.optim.lr_scheduler.LRScheduler:  # fmt: skip
    """The lr schedule to continue with at epoch index ``start``: ``scheduler`` (built before
    the optimizer state was restored) with the saved state, or, when a schedule key changed, a
    new one from the new values fast-forwarded to ``start``."""
    epochs, optimizer = int(cfg.trainer.epochs), scheduler.optimizer
    if not set(changes) & set(SCHEDULE_KEYS):
        scheduler.load_state_dict(saved_scheduler)
        return scheduler
    base = float(cfg.optim.lr)
    for g in optimizer.param_groups:
        g["initial_lr"] = base * g.get("lr_mult", 1.0)
        g["lr"] = g["initial_lr"]
    scheduler = build_scheduler(optimizer, cfg.optim, epochs)
    with warnings.catch_warnings():  # fast-forward: no optimizer step is missing here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            scheduler.step()
    g0 = optimizer.param_groups[0]
    if main:
        lr_now = g0["lr"] / g0.get("lr_mult", 1.0)
        print(f"[train] lr schedule re-planned: base lr {lr_now:.4g} for epoch {start + 1}")
        if epochs <= start and "trainer.epochs" in changes:
            print("[train] trainer.epochs is not above the epochs done: nothing to train")
    return scheduler


def change_record(changes: Mapping[str, tuple[Any, Any]], start: int, step: int,
                  global_step: int) -> tuple[dict[str, Any], str]:  # fmt: skip
    """(the ``status.json`` ``changes`` entry, the one-line note) of a resume's changes;
    ``epoch`` counts from 1 as in every file a user reads."""
    note = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
    entry = {
        "epoch": start + 1,
        "step": step,
        "global_step": global_step,
        "changes": {k: [a, b] for k, (a, b) in changes.items()},
    }
    return entry, note
