"""A plain, task-agnostic training loop with resumable run folders.

A *task* (``matbackprop.tasks.*``) supplies the data and the task-specific parts::

    class Task(Protocol):
        monitor: str                 # metric that decides the best epoch, e.g. "val_error"
        monitor_mode: str            # "min" or "max"
        def build_model(self) -> nn.Module
        def train_loader(self) -> DataLoader
        def train_step(self, model, batch) -> tuple[Tensor, dict[str, float]]   # (loss, logs)
        def evaluate(self, model, epoch) -> dict[str, Any]   # scalars, Table, Confusion, Figure

The loop (torchvision ``references/classification/train.py`` style) runs SGD over the
model's parameter groups, steps the lr schedule once per epoch, evaluates, and then writes,
in this order: a row of ``metrics.csv``, ``tables/*.csv``, the checkpoint ``last.pt``
(atomically; ``best.pt`` holds the best weights), and ``status.json``.

Run folder life cycle: the same command in the same folder resumes from ``last.pt`` (the
metrics rows of epochs being redone are dropped first); a finished run says so and returns at
once; a checkpoint from a different experiment (model, data, optimiser, ... see
``records.RESUMABLE_KEYS`` for what may change) raises :class:`RunFolderError`.

Determinism: every epoch starts with ``seed_everything(trainer.seed + epoch)``, so data order,
augmentation and dropout of epoch e do not depend on whether the run was interrupted before e
(on CPU, with ``trainer.workers=0`` or a fixed worker count, results are bitwise identical).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from matbackprop.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_json_atomic,
)
from matbackprop.engine.logging import Confusion, Figure, Table, build_logger
from matbackprop.engine.optim import build_optimizer, build_scheduler
from matbackprop.engine.records import (
    append_metrics,
    fingerprint,
    fingerprint_diff,
    read_csv,
    save_config,
    truncate_metrics,
    write_csv,
)
from matbackprop.errors import RunFolderError  # noqa: F401  (re-exported)


class Task(Protocol):
    monitor: str
    monitor_mode: str

    def build_model(self) -> nn.Module: ...

    def train_loader(self) -> torch.utils.data.DataLoader: ...

    def train_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]: ...

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]: ...


@dataclass
class FitResult:
    """What :func:`fit` did: ``epochs_done`` in total, ``resumed_from`` (epochs already done at
    start), ``already_finished``, ``best`` value of ``monitor`` and the ``last`` epoch's row."""

    run_dir: Path
    epochs_done: int
    resumed_from: int
    already_finished: bool
    monitor: str | None
    best: float | None
    last: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available")
    return dev


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in (nested) dicts / lists / tuples to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """``status.json`` of a run folder (``None`` if absent)."""
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _check_compatible(saved: Mapping[str, Any], cfg: DictConfig, run_dir: Path) -> None:
    diff = fingerprint_diff(saved, fingerprint(cfg))
    if diff:
        raise RunFolderError(
            f"run folder {run_dir} holds a checkpoint of a different experiment:\n  "
            + "\n  ".join(diff[:20])
            + "\nUse another run_name=..., or delete the folder to start over."
        )


def _autocast(device: torch.device, precision: str):
    """``trainer.precision``: ``"32"`` (no autocast), ``bf16`` (CUDA and CPU autocast) or
    ``"16"`` / ``fp16`` (CUDA only, with a GradScaler). The structured layers leave autocast
    themselves and run in float32/float64 (``matbackprop.spectral``)."""
    if precision in ("32", "fp32", "float32"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16, "fp16": torch.float16}[precision]
    if device.type != "cuda" and dtype == torch.float16:
        raise ValueError("trainer.precision=16 needs CUDA; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    scalars, media = {}, {}
    for k, v in metrics.items():
        if isinstance(v, (Table, Confusion, Figure)):
            media[k] = v
        elif isinstance(v, Tensor) and v.numel() == 1:
            scalars[k] = float(v)
        elif isinstance(v, (int, float)):
            scalars[k] = float(v)
    return scalars, media


@dataclass
class _Loop:
    """What one epoch of training needs (built once per :func:`fit`)."""

    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str
    clip: float | None
    logger: Any
    log_every: int


def train_one_epoch(
    loop: _Loop, loader, epoch: int, epochs: int, global_step: int
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; returns mean loss / logs and the new global step."""
    loop.model.train()
    sums: dict[str, float] = {"loss": 0.0}
    n_steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=None, leave=False)
    for batch in bar:
        batch = to_device(batch, loop.device)
        with _autocast(loop.device, loop.precision):
            loss, logs = loop.task.train_step(loop.model, batch)
        value = loss.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {value} at epoch {epoch}, step {global_step} "
                "(try a lower optim.lr or trainer.clip)"
            )
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        if loop.clip:
            loop.scaler.unscale_(loop.optimizer)
            nn.utils.clip_grad_norm_(loop.model.parameters(), float(loop.clip))
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        n_steps, global_step = n_steps + 1, global_step + 1
        sums["loss"] += value
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        bar.set_postfix(loss=f"{value:.4f}")
        if global_step % loop.log_every == 0:
            lrs = {
                f"lr/{g.get('name', j)}": g["lr"] for j, g in enumerate(loop.optimizer.param_groups)
            }
            step_logs = {f"train/{k}": float(v) for k, v in logs.items()}
            loop.logger.log({"train/loss": value, **lrs, **step_logs}, step=global_step)
    return {k: v / max(n_steps, 1) for k, v in sums.items()}, global_step


def _resume(ckpt_path: Path, cfg: DictConfig, run_dir: Path, model, optimizer, scheduler, scaler):
    """Load ``last.pt`` into the training objects; returns (start_epoch, best, step, wandb id)."""
    if not ckpt_path.is_file():
        return 0, None, 0, None
    try:
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    except ValueError as err:
        raise RunFolderError(f"{err}\nDelete {ckpt_path} to restart this run.") from err
    _check_compatible(ckpt["fingerprint"], cfg, run_dir)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    print(f"[train] {run_dir}: resuming after epoch {ckpt['epoch'] + 1}")
    return ckpt["epoch"] + 1, ckpt["best"], ckpt["global_step"], ckpt.get("wandb_id")


def write_media(run_dir: Path, media: Mapping[str, Any], epoch: int, prefix: str = "") -> None:
    """Tables: the latest as ``tables/<prefix><name>.csv``, and every epoch's rows appended to
    ``tables/<prefix><name>_by_epoch.csv`` (with an ``epoch`` column; trimmed on resume)."""
    for name, value in media.items():
        if isinstance(value, Table):
            rows = [dict(zip(value.columns, r)) for r in value.rows]
            write_csv(run_dir / "tables" / f"{prefix}{name}.csv", rows, value.columns)
            history = run_dir / "tables" / f"{prefix}{name}_by_epoch.csv"
            old = read_csv(history)
            write_csv(
                history, [*old, *({"epoch": epoch, **r} for r in rows)], ["epoch", *value.columns]
            )


def fit(cfg: DictConfig, make_task: Callable[[DictConfig], Task], run_dir: str | Path) -> FitResult:
    """Train ``make_task(cfg)``'s model as configured, in (and resuming from) ``run_dir``.

    ``make_task`` is only called when there is work to do, so a finished run exits quickly.

    Raises:
        RunFolderError: ``run_dir`` holds a checkpoint of another experiment.
        FloatingPointError: the training loss became non-finite.
    """
    run_dir, tcfg = Path(run_dir), cfg.trainer
    epochs, seed = int(tcfg.epochs), int(tcfg.get("seed", 0))
    status, ckpt_path = read_status(run_dir), run_dir / "last.pt"
    if status is not None and ckpt_path.is_file():
        _check_compatible(status["fingerprint"], cfg, run_dir)
        done = status["epochs_done"]
        if done >= epochs:
            print(
                f"[train] {run_dir}: finished already ({done}/{epochs} epochs, best "
                f"{status.get('monitor')} = {status.get('best')}); nothing to do."
            )
            best, last = status.get("best"), status.get("last", {})
            return FitResult(run_dir, done, done, True, status.get("monitor"), best, last)

    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(tcfg.get("device", "auto")))
    precision = str(tcfg.get("precision", "32"))
    seed_everything(seed)
    task = make_task(cfg)
    model = task.build_model().to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, epochs)
    use_scaler = device.type == "cuda" and precision in ("16", "fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    start, best, global_step, wandb_id = _resume(
        ckpt_path, cfg, run_dir, model, optimizer, scheduler, scaler
    )
    for csv_path in [run_dir / "metrics.csv", *(run_dir / "tables").glob("*_by_epoch.csv")]:
        truncate_metrics(csv_path, start)  # rows of epochs about to be redone
    save_config(cfg, run_dir / "config.yaml")
    wandb_id = wandb_id or _new_wandb_id()
    monitor, mode = task.monitor, task.monitor_mode
    eval_every = int(tcfg.get("eval_every", 1))

    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    logger = build_logger(cfg.get("logger"), run_dir, plain_cfg, run_id=wandb_id)
    loop = _Loop(
        task,
        model,
        optimizer,
        scaler,
        device,
        precision,
        tcfg.get("clip"),
        logger,
        int(tcfg.get("log_every", 20)),
    )
    loader = task.train_loader()
    last: dict[str, Any] = {}
    exit_code = 1
    try:
        for epoch in range(start, epochs):
            seed_everything(seed + epoch)  # epoch e is the same whether or not we resumed
            t0 = time.time()
            g0 = optimizer.param_groups[0]
            base_lr = g0["lr"] / g0.get("lr_mult", 1.0)  # the base lr this epoch runs with
            train, global_step = train_one_epoch(loop, loader, epoch, epochs, global_step)
            scheduler.step()
            row: dict[str, Any] = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in train.items()},
                "lr": base_lr,
            }
            train_time, media = time.time() - t0, {}
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                model.eval()
                with torch.no_grad():
                    scalars, media = split_metrics(task.evaluate(model, epoch))
                row.update(scalars)
            row.update(time_s=time.time() - t0, train_time_s=train_time)
            improved = monitor in row and (
                best is None or (row[monitor] < best if mode == "min" else row[monitor] > best)
            )
            best = float(row[monitor]) if improved else best
            # order matters for resuming: metrics row, tables, checkpoint, then status
            append_metrics(run_dir / "metrics.csv", row)
            write_media(run_dir, media, epoch)
            logger.log({**{f"epoch/{k}": v for k, v in row.items()}, **media}, step=global_step)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "global_step": global_step,
                "best": best,
                "rng": rng_state(),
                "fingerprint": fingerprint(cfg),
                "wandb_id": wandb_id,
            }
            if improved and tcfg.get("save_best", True):
                best_state = {"model": state["model"], "epoch": epoch, monitor: best}
                save_checkpoint(best_state, run_dir / "best.pt")
            save_checkpoint(state, ckpt_path)
            last = {k: v for k, v in row.items() if isinstance(v, (int, float))}
            status = {
                "epochs_done": epoch + 1,
                "epochs_total": epochs,
                "finished": epoch + 1 >= epochs,
                "monitor": monitor,
                "best": best,
                "last": last,
                "fingerprint": state["fingerprint"],
            }
            write_json_atomic(status, run_dir / "status.json")
            shown = {k: v for k, v in last.items() if k != "epoch" and not k.endswith("time_s")}
            msg = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
            print(f"[train] epoch {epoch + 1}/{epochs}: {msg} ({row['time_s']:.1f}s)", flush=True)
        exit_code = 0
    finally:
        logger.finish(exit_code=exit_code)
    return FitResult(run_dir, max(epochs, start), start, False, monitor, best, last)


def _new_wandb_id() -> str:
    import random
    import string

    rng = random.Random(time.time_ns())  # independent of the seeded global RNG
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
