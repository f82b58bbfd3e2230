"""A plain, task-agnostic training loop: resumable to the step, distributed, preemption-safe.

A *task* (``matbackprop.tasks.*``) supplies the data and the task-specific parts::

    class Task(Protocol):
        monitor: str                 # metric that decides the best epoch, e.g. "val_error"
        monitor_mode: str            # "min" or "max"
        def build_model(self) -> nn.Module
        def train_batches(self, epoch) -> list[list[int]]    # the epoch's global batches, seeded
        def train_loader(self, epoch, batches) -> DataLoader # yields exactly these batches
        def train_step(self, model, batch) -> tuple[Tensor, dict]   # (loss, logs)
        def evaluate(self, model, epoch) -> dict[str, Any]   # scalars, Table, Confusion, Figure
        # optional: final_evaluate(model) -> dict (full val / test set, once at the end for the
        # last and the best weights -> final.json); data_stats: dict (-> status.json)

The loop (torchvision ``references/classification/train.py`` style) runs SGD over the
model's parameter groups, steps the lr schedule once per epoch, evaluates, and then writes,
in this order: a row of ``metrics.csv``, ``tables/*.csv``, the checkpoint ``last.pt``
(atomically; ``best.pt`` holds the best weights), and ``status.json``. Every
``trainer.checkpoint_every`` steps, and when SIGTERM / SIGUSR1 / SIGUSR2 arrives, ``last.pt``
is also written inside the epoch, with the step reached.

Run folder life cycle: the same command in the same folder resumes from ``last.pt`` — at the
step it holds, without decoding the batches already done (the epoch's batches are a seeded
function of (seed, epoch), and the loader starts at an offset); the metrics rows of epochs
being redone are dropped first. A finished run says so and returns at once. A checkpoint from
a different experiment raises :class:`RunFolderError` — except ``optim.lr``, the schedule
(``optim.schedule``, ``step_size``, ``gamma``, ``min_lr_mult``), ``trainer.clip`` and
``trainer.epochs``, which may change on resume: the change is printed, recorded in
``status.json`` (``changes``) and in the next ``metrics.csv`` row (``changed``), and the lr
schedule is re-planned from the new values (keeping each parameter group's multiplier).

Distributed: under ``torchrun`` every rank runs this same loop on its share of each global
batch (``trainer.batch_size`` stays the global batch), BatchNorm becomes a synchronised
BatchNorm, the model is wrapped in ``DistributedDataParallel``; only rank 0 writes files and
W&B; ``task.evaluate`` shards and gathers (``engine.distributed``) so metrics cover the whole
set.

Determinism: each sample's augmentation is a function of (seed, epoch, index), the epoch's
order of (seed, epoch), and the global RNG (dropout) is seeded per (seed, epoch, rank) and
saved in every checkpoint, so on CPU a run resumed at any step — after ``kill -9`` too — is
bitwise identical to an uninterrupted one (same world size).

Exit paths: :class:`Preempted` after a signal-triggered checkpoint (entry points exit
``EXIT_PREEMPTED`` = 75; rerun or requeue continues), :class:`DivergedError` for a non-finite
loss / gradient (exit 3; nothing non-finite is ever checkpointed).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import platform
import signal
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from matbackprop.engine import distributed as D
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
    read_status,
    save_config,
    truncate_metrics,
    write_csv,
)
from matbackprop.engine.runlock import RunLock
from matbackprop.engine.sync_bn import convert_sync_batchnorm
from matbackprop.engine.validate import validate_config
from matbackprop.errors import (  # noqa: F401  (RunFolderError re-exported)
    ConfigError,
    DivergedError,
    RunFolderError,
    Stopped,
    UserError,
)
from matbackprop.spectral import InvalidValuesError


class Task(Protocol):
    monitor: str
    monitor_mode: str

    def build_model(self) -> nn.Module: ...

    def train_batches(self, epoch: int) -> list[list[int]]: ...

    def train_loader(self, epoch: int, batches: list[list[int]]) -> torch.utils.data.DataLoader: ...

    def train_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]: ...

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]: ...


class Preempted(Stopped):
    """A stop signal arrived; ``last.pt`` holds the step reached. Rerun to continue."""

    def __init__(self, signame: str, run_dir: Path, epoch: int, step: int):
        super().__init__(
            f"{signame}: checkpoint written at epoch {epoch + 1}, step {step} in {run_dir}; "
            "the same command continues from there"
        )
        self.signame = signame


# Keys that may change when a run is resumed (besides records.RESUMABLE_KEYS). The first are
# applied and recorded (and the lr schedule re-planned for the optim.* and epochs keys); the
# operational ones are simply applied.
CHANGEABLE_KEYS = (
    "optim.lr",
    "optim.schedule",
    "optim.step_size",
    "optim.gamma",
    "optim.min_lr_mult",
    "trainer.clip",
    "trainer.epochs",
    "trainer.precision",
    "trainer.on_nonfinite",
)
OPERATIONAL_KEYS = (
    "trainer.checkpoint_every",
    "trainer.max_steps",
    "trainer.max_nonfinite",
    "trainer.find_unused_parameters",
    "trainer.cudnn_benchmark",
    "trainer.channels_last",
    "model.pool_device",
)
_SCHEDULE_KEYS = {k for k in CHANGEABLE_KEYS if k.startswith("optim.")} | {"trainer.epochs"}
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
_RANK_SEED = 1_000_003  # rank r's global RNG is seeded with seed + epoch + r * _RANK_SEED


@dataclass
class FitResult:
    """What :func:`fit` did: ``epochs_done`` in total, ``resumed_from`` (epochs already done at
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


TORCH_HINT = (
    "install a CUDA build of torch matching your driver, e.g. "
    '`make install TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 '
    "--index-url https://download.pytorch.org/whl/cu126\"` (see the Makefile's TORCH_SPEC), "
    "or pass trainer.device=cpu to train on the CPU on purpose"
)


def resolve_device(name: str, real_data: bool = False) -> torch.device:
    """``auto`` -> cuda (this rank's GPU under torchrun) if available, else cpu — but with
    ``real_data`` a missing GPU is an error (a multi-day CPU run is never what was meant).

    Raises:
        ConfigError: CUDA asked for (or ``auto`` on real data) but not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", D.local_rank() if D.env_world_size() > 1 else 0)
        if real_data:
            raise ConfigError(
                "trainer.device=auto: CUDA is not available (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); {TORCH_HINT}"
            )
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name!r} but CUDA is not available; {TORCH_HINT}")
        if D.env_world_size() > 1 and dev.index is None:
            dev = torch.device("cuda", D.local_rank())
    return dev


def runtime_info(device: torch.device, precision: str) -> dict[str, Any]:
    """Where this run executes: recorded in ``status.json`` and printed at start."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "device": str(device),
        "world_size": D.world_size(),
        "precision": precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpus"] = D.all_gather_objects(torch.cuda.get_device_name(device))
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors in (nested) dicts / lists / tuples to ``device`` (4-d float tensors, i.e.
    image batches, in channels-last layout when asked)."""
    if isinstance(batch, Tensor):
        out = batch.to(device, non_blocking=True)
        if channels_last and out.dim() == 4 and out.is_floating_point():
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


PRECISIONS = ("32", "bf16", "16")  # trainer.precision ("fp16", "fp32", "float32" are aliases)


def autocast_context(device: torch.device, precision: str):
    """``trainer.precision``: ``"32"`` (no autocast), ``bf16`` (CUDA and CPU autocast) or
    ``"16"`` / ``fp16`` (CUDA only, with a GradScaler). The structured layers leave autocast
    themselves and run in float32/float64 (``matbackprop.spectral``)."""
    if precision in ("32", "fp32", "float32"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16, "fp16": torch.float16}[precision]
    if device.type != "cuda" and dtype == torch.float16:
        raise ConfigError("trainer.precision=16 needs CUDA; use bf16 on CPU")
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


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[tuple[list[int], float]]:
    """This rank's contiguous part of each global batch, with the loss weight that makes the
    DDP gradient average equal the mean over the global batch (``n_r · N / n``; 1 when even).
    Global batches smaller than the world size are dropped (a rank would get nothing)."""
    if world == 1:
        return [(b, 1.0) for b in batches]
    out = []
    for b in batches:
        n = len(b)
        if n < world:
            continue
        lo, hi = rank * n // world, (rank + 1) * n // world
        out.append((b[lo:hi], (hi - lo) * world / n))
    return out


class _StopSignals:
    """SIGTERM / SIGUSR1 / SIGUSR2 set a flag; the loop checkpoints at the next step boundary.

    A previous Python handler (e.g. submitit's requeue on SLURM) is called after the checkpoint.
    """

    def __init__(self, names=STOP_SIGNALS):
        self.received: str | None = None
        self.previous: dict[int, Any] = {}
        for name in names:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): no handler
                pass

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            print(f"[train] {self.received} received: checkpointing at the next step", flush=True)

    def chain(self) -> None:
        """Call the handler that was installed before ours for the received signal (if any)."""
        if self.received is None:
            return
        prev = self.previous.get(getattr(signal, self.received))
        if callable(prev) and prev not in (signal.default_int_handler,):
            prev(getattr(signal, self.received), None)

    def restore(self) -> None:
        for sig, prev in self.previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev)


class _Run:
    """One call of :func:`fit`: the training objects and the state that a checkpoint holds."""

    def __init__(self, cfg: DictConfig, task: Task, run_dir: Path, device: torch.device):
        tcfg = cfg.trainer
        self.cfg, self.task, self.run_dir, self.device = cfg, task, run_dir, device
        self.epochs, self.seed = int(tcfg.epochs), int(tcfg.get("seed", 0))
        self.precision = str(tcfg.get("precision", "32"))
        self.clip = tcfg.get("clip")
        self.log_every = int(tcfg.get("log_every", 20))
        self.eval_every = int(tcfg.get("eval_every", 1))
        every = tcfg.get("checkpoint_every")
        self.checkpoint_every = int(every) if every else 0
        self.max_steps = int(tcfg["max_steps"]) if tcfg.get("max_steps") else 0
        self.on_nonfinite = str(tcfg.get("on_nonfinite", "raise"))
        self.max_nonfinite = int(tcfg.get("max_nonfinite", 20))
        self.rank, self.world = D.rank(), D.world_size()
        self.main = self.rank == 0
        self.comm_device = device if device.type == "cuda" else "cpu"  # NCCL needs CUDA tensors
        self.stop_after_epoch = False

        self.module = task.build_model().to(device)  # the bare model (evaluate, state dicts)
        self.channels_last = bool(tcfg.get("channels_last", False))
        if self.channels_last:  # NHWC convolutions (faster with cuDNN / tensor cores)
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.module
        if self.world > 1:
            self.module = convert_sync_batchnorm(self.module, device)
            self.model = nn.parallel.DistributedDataParallel(
                self.module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=bool(tcfg.get("find_unused_parameters", False)),
            )
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.epochs)
        use_scaler = device.type == "cuda" and self.precision in ("16", "fp16")
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.params = [p for p in self.module.parameters() if p.requires_grad]

        # what a checkpoint holds besides the objects above
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best: float | None = None
        self.sums: dict[str, float] = {}
        self.n_steps = 0
        self.nonfinite_steps = 0
        self.wandb_id: str | None = None
        self.rng_by_rank: list[Any] | None = None
        self.changes: list[dict[str, Any]] = []
        self.pending_note = ""

    # ------------------------------------------------------------------ checkpoints
    def state(self, step_in_epoch: int | None) -> dict[str, Any]:
        rngs = D.all_gather_objects(rng_state())
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "epochs": self.epochs,
            "step_in_epoch": step_in_epoch,  # None: epoch finished
            "sums": dict(self.sums),
            "n_steps": self.n_steps,
            "nonfinite_steps": self.nonfinite_steps,
            "global_step": self.global_step,
            "best": self.best,
            "rng": rngs,  # one state per rank
            "world_size": self.world,
            "fingerprint": fingerprint(self.cfg),
            "wandb_id": self.wandb_id,
            "changes": self.changes,
        }

    def weights_finite(self) -> bool:
        flags = [
            torch.isfinite(t).all()
            for t in self.module.state_dict().values()
            if t.is_floating_point()
        ]
        return bool(torch.stack(flags).all()) if flags else True

    def save_last(self, step_in_epoch: int | None) -> float:
        """Write ``last.pt`` (rank 0); returns seconds spent. Never writes non-finite weights."""
        t0 = time.time()
        if not self.weights_finite():
            raise DivergedError(
                f"the weights became non-finite by step {self.global_step}; last.pt is left "
                f"as it was. {_ADVICE}"
            )
        state = self.state(step_in_epoch)  # collective (RNG of every rank)
        if self.main:
            save_checkpoint(state, self.run_dir / "last.pt")
        D.barrier()
        return time.time() - t0

    def resume(self) -> tuple[int, int]:
        """Load ``last.pt`` if present; returns (start epoch, start step within it)."""
        path = self.run_dir / "last.pt"
        if not path.is_file():
            return 0, 0
        try:
            ckpt = load_checkpoint(path, map_location="cpu")
        except ValueError as err:
            raise RunFolderError(f"{err}\nDelete {path} to restart this run.") from err
        changed = _check_compatible(ckpt["fingerprint"], self.cfg, self.run_dir)
        if ckpt.get("epochs") is not None and int(ckpt["epochs"]) != self.epochs:
            changed["trainer.epochs"] = (int(ckpt["epochs"]), self.epochs)
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best, self.global_step = ckpt["best"], ckpt["global_step"]
        self.wandb_id, self.changes = ckpt.get("wandb_id"), list(ckpt.get("changes", []))
        step = ckpt.get("step_in_epoch")
        if step is None:  # the checkpoint's epoch is finished
            start, step = ckpt["epoch"] + 1, 0
        else:
            start = ckpt["epoch"]
            self.sums, self.n_steps = dict(ckpt.get("sums", {})), int(ckpt.get("n_steps", 0))
            self.nonfinite_steps = int(ckpt.get("nonfinite_steps", 0))
        saved_world = int(ckpt["world_size"])
        self.rng_by_rank = ckpt["rng"] if saved_world == self.world else None  # one per rank
        if self.rng_by_rank is None and self.main:
            print(
                f"[train] the checkpoint was written by {saved_world} process(es), this run has "
                f"{self.world}: dropout randomness will differ from an uninterrupted run"
            )
        self.saved_scheduler = ckpt["scheduler"]
        if changed:
            self.apply_changes(changed, start, step)
        else:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        where = f"epoch {start + 1}, step {step}" if step else f"the start of epoch {start + 1}"
        if self.main:
            print(f"[train] {self.run_dir}: resuming at {where} (global step {self.global_step})")
        return start, step

    def apply_changes(self, changed: dict[str, tuple[Any, Any]], start: int, step: int) -> None:
        """Resume with a new lr / schedule / clip / length: re-plan the lr schedule from the
        new values (each group keeps its multiplier) and record the change."""
        note = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        self.changes.append(
            {
                "epoch": start,
                "step": step,
                "global_step": self.global_step,
                "changes": {k: [a, b] for k, (a, b) in changed.items()},
            }
        )
        self.pending_note = note
        if self.main:
            print(f"[train] resumed with changed settings: {note}")
        if not set(changed) & _SCHEDULE_KEYS:
            self.scheduler.load_state_dict(self.saved_scheduler)
            return
        base = float(self.cfg.optim.lr)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = base * g.get("lr_mult", 1.0)
            g["lr"] = g["initial_lr"]
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optim, self.epochs)
        with warnings.catch_warnings():  # fast-forward: no optimizer step is missing here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start):
                self.scheduler.step()
        g0 = self.optimizer.param_groups[0]
        lr_now = g0["lr"] / g0.get("lr_mult", 1.0)
        if self.main:
            print(f"[train] lr schedule re-planned: base lr {lr_now:.4g} for epoch {start + 1}")
            if self.epochs <= start and "trainer.epochs" in changed:
                print("[train] trainer.epochs is not above the epochs done: nothing to train")


_ADVICE = (
    "Training diverged: lower optim.lr (e.g. by 10x) or set trainer.clip (e.g. 10); "
    "both may change when resuming the same run folder from its last finite checkpoint. "
    "trainer.on_nonfinite=skip_step skips such steps instead (up to trainer.max_nonfinite)."
)


def _check_compatible(
    saved: Mapping[str, Any], cfg: DictConfig, run_dir: Path
) -> dict[str, tuple[Any, Any]]:
    """Raise unless only :data:`CHANGEABLE_KEYS` differ; returns those changes."""
    now = fingerprint(cfg)
    changeable = lambda k: k in CHANGEABLE_KEYS or k in OPERATIONAL_KEYS  # noqa: E731
    fixed = fingerprint_diff(
        {k: v for k, v in saved.items() if not changeable(k)},
        {k: v for k, v in now.items() if not changeable(k)},
    )
    if fixed:
        raise RunFolderError(
            f"run folder {run_dir} holds a checkpoint of a different experiment:\n  "
            + "\n  ".join(fixed[:20])
            + "\nUse another run_name=..., or delete the folder to start over. (These may "
            "change on resume: " + ", ".join(CHANGEABLE_KEYS + OPERATIONAL_KEYS) + ".)"
        )
    missing = object()
    out = {}
    for k in CHANGEABLE_KEYS:
        a, b = saved.get(k, missing), now.get(k, missing)
        if a is not missing and b is not missing and a != b:
            out[k] = (a, b)
    return out


def _step_values(loss: Tensor, gnorm: Tensor, logs: Mapping[str, Any]) -> tuple[float, float, dict]:
    """The one host synchronisation of a step: the loss, the gradient norm (both checked for
    non-finite values before the optimizer steps) and the task's tensor logs, read together."""
    keys = [k for k, v in logs.items() if isinstance(v, Tensor)]
    vals = torch.stack(
        [
            loss.detach().float().reshape(()),
            gnorm.detach().float().reshape(()),
            *(logs[k].detach().float().reshape(()).to(loss.device) for k in keys),
        ]
    ).tolist()
    out = {k: float(v) for k, v in logs.items() if not isinstance(v, Tensor)}
    out.update(zip(keys, vals[2:]))
    return vals[0], vals[1], out


def _train_epoch(run: _Run, epoch: int, start_step: int, logger, stop: _StopSignals) -> bool:
    """Steps ``start_step..`` of ``epoch``; returns False if training must end early
    (``trainer.max_steps``). Raises :class:`Preempted` after a signal-triggered checkpoint."""
    batches = shard_batches(run.task.train_batches(epoch), run.rank, run.world)
    if start_step == 0:
        seed_everything(run.seed + epoch + _RANK_SEED * run.rank)
        run.sums, run.n_steps, run.nonfinite_steps = {}, 0, 0
    loader = run.task.train_loader(epoch, [b for b, _ in batches[start_step:]])
    it = iter(loader)  # (draws a DataLoader seed from the global RNG, before it is restored)
    if start_step and run.rng_by_rank is not None:
        set_rng_state(run.rng_by_rank[run.rank])
    run.model.train()
    clip = float(run.clip) if run.clip else math.inf
    bar = tqdm(
        it,
        total=len(batches),
        initial=start_step,
        disable=None if run.main else True,
        desc=f"epoch {epoch + 1}/{run.epochs}",
        leave=False,
    )
    for k, batch in enumerate(bar, start=start_step):
        batch = to_device(batch, run.device, run.channels_last)
        try:
            with autocast_context(run.device, run.precision):
                loss, logs = run.task.train_step(run.model, batch)
        except InvalidValuesError as err:  # the structured layer's input blew up
            raise DivergedError(
                f"epoch {epoch + 1}, step {k} (global {run.global_step}): the structured "
                f"layer's input became invalid ({err}). {_ADVICE}"
            ) from err
        weight = batches[k][1]
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        run.scaler.unscale_(run.optimizer)
        gnorm = nn.utils.clip_grad_norm_(run.params, clip) if run.params else loss.new_zeros(())
        value, gvalue, logs = _step_values(loss, gnorm, logs)
        bad_loss = not math.isfinite(value)
        bad_grad = not math.isfinite(gvalue) and not run.scaler.is_enabled()
        code = STOP_SIGNALS.index(stop.received) + 1 if stop.received in STOP_SIGNALS else 0
        flag_bad, flag_sig = D.all_reduce_max(
            [float(bad_loss or bad_grad), float(code)], run.comm_device
        )
        nonfinite = flag_bad > 0
        signame = STOP_SIGNALS[int(flag_sig) - 1] if flag_sig > 0 else None
        if nonfinite:
            what = f"loss {value}" if bad_loss else f"gradient norm {gvalue} (loss {value:.4g})"
            if run.on_nonfinite != "skip_step" or run.nonfinite_steps >= run.max_nonfinite:
                cap = (
                    f" (more than trainer.max_nonfinite={run.max_nonfinite} skipped this epoch)"
                    if run.on_nonfinite == "skip_step"
                    else ""
                )
                raise DivergedError(
                    f"non-finite {what} at epoch {epoch + 1}, step {k} (global "
                    f"{run.global_step}){cap}; no checkpoint was written from it. {_ADVICE}"
                )
            run.nonfinite_steps += 1
            run.optimizer.zero_grad(set_to_none=True)
            if run.main:
                print(f"[train] skipped step {k} of epoch {epoch + 1}: non-finite {what}")
            run.sums["nonfinite_steps"] = run.sums.get("nonfinite_steps", 0.0) + 1
        else:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.n_steps += 1
            run.sums["loss"] = run.sums.get("loss", 0.0) + value
            for key, v in logs.items():
                run.sums[key] = run.sums.get(key, 0.0) + float(v)
        run.global_step += 1
        if run.main:
            bar.set_postfix(loss=f"{value:.4f}")
        if run.global_step % run.log_every == 0 and not nonfinite:
            lrs = {
                f"lr/{g.get('name', j)}": g["lr"] for j, g in enumerate(run.optimizer.param_groups)
            }
            step_logs = {f"train/{key}": float(v) for key, v in logs.items()}
            logger.log(
                {"train/loss": value, "train/grad_norm": gvalue, **lrs, **step_logs},
                step=run.global_step,
            )
        at_max = bool(run.max_steps) and run.global_step >= run.max_steps
        due = bool(run.checkpoint_every) and run.global_step % run.checkpoint_every == 0
        last_step = k + 1 == len(batches)
        if (signame or at_max or due) and not last_step:
            seconds = run.save_last(k + 1)
            _write_status(run, finished=False, step_in_epoch=k + 1)
            if run.main:
                print(
                    f"[train] checkpoint: epoch {epoch + 1}, step {k + 1}/{len(batches)} "
                    f"({seconds:.1f}s)",
                    flush=True,
                )
        if signame:
            if last_step:  # the epoch's end writes the checkpoint; stop right after it
                stop.received = signame
                return True
            raise Preempted(signame, run.run_dir, epoch, k + 1)
        if at_max:
            if last_step:  # finish this epoch (checkpoint, metrics), then stop
                run.stop_after_epoch = True
                return True
            return False
    return True


def _epoch_means(run: _Run) -> dict[str, float]:
    """Mean of each train log over the epoch's steps (``count_*`` logs: summed), over all ranks."""
    keys = sorted(run.sums)
    local = [run.sums[k] for k in keys] + [float(run.n_steps)]
    totals = [sum(col) for col in zip(*D.all_gather_objects(local))] if run.world > 1 else local
    n = max(totals[-1] / run.world, 1.0)  # steps per rank
    out = {}
    for k, v in zip(keys, totals[:-1]):
        if k.startswith("count_"):
            out[k] = v  # summed over the steps of every rank
        elif k == "nonfinite_steps":
            out[k] = v / run.world  # the same steps are skipped on every rank
        else:
            out[k] = v / run.world / n  # the mean over steps and ranks
    return out


def _write_status(
    run: _Run, finished: bool, step_in_epoch: int | None, epochs_done: int | None = None, **extra
) -> None:
    if not run.main:
        return
    path = run.run_dir / "status.json"
    old = read_status(run.run_dir) or {}
    if epochs_done is None:
        epochs_done = run.epoch + (0 if step_in_epoch is not None else 1)
    status = {
        **{k: v for k, v in old.items() if k in ("last", "final")},
        "epochs_done": epochs_done,
        "epochs_total": run.epochs,
        "step_in_epoch": step_in_epoch,
        "global_step": run.global_step,
        "finished": finished,
        "monitor": run.task.monitor,
        "best": run.best,
        "fingerprint": fingerprint(run.cfg),
        "runtime": getattr(run, "runtime", {}),
        "changes": run.changes,
        **extra,
    }
    if hasattr(run.task, "data_stats"):
        status["data"] = run.task.data_stats
    write_json_atomic(status, path)


def _final_evaluate(run: _Run) -> dict[str, Any]:
    """``task.final_evaluate`` on the last and the best weights -> ``final.json``."""
    out: dict[str, Any] = {}
    takes_which = "which" in inspect.signature(run.task.final_evaluate).parameters

    def score(which: str) -> dict[str, float]:
        kw = {"which": which} if takes_which else {}
        with torch.no_grad():
            return split_metrics(run.task.final_evaluate(run.module, **kw))[0]

    run.module.eval()
    scalars = score("last")
    out["last"] = {"epoch": run.epoch, **scalars}
    best_path = run.run_dir / "best.pt"
    if best_path.is_file():
        last_state = {k: v.clone() for k, v in run.module.state_dict().items()}
        best = load_checkpoint(best_path, map_location="cpu")
        run.module.load_state_dict(best["model"])
        scalars = score("best")
        out["best"] = {"epoch": int(best["epoch"]), **scalars}
        run.module.load_state_dict(last_state)
    if run.main:
        write_json_atomic(out, run.run_dir / "final.json")
        shown = ", ".join(
            f"{w} (epoch {v['epoch'] + 1}) {run.task.monitor}={v.get(run.task.monitor, float('nan')):.4g}"
            for w, v in out.items()
        )
        print(f"[train] final evaluation on the full set: {shown}")
    return out


def _make_task(make_task: Callable[[DictConfig], Task], cfg: DictConfig) -> Task:
    """Rank 0 builds the task first (generating synthetic data once), then the others."""
    if D.world_size() == 1:
        return make_task(cfg)
    if D.is_main():
        try:
            task = make_task(cfg)
        except Exception as err:
            D.broadcast_object(f"{type(err).__name__}: {err}")
            raise
        D.broadcast_object(None)
        return task
    failed = D.broadcast_object(None)
    if failed:
        raise UserError(f"rank 0 could not set up the task: {failed}")
    return make_task(cfg)


def fit(cfg: DictConfig, make_task: Callable[[DictConfig], Task], run_dir: str | Path) -> FitResult:
    """Train ``make_task(cfg)``'s model as configured, in (and resuming from) ``run_dir``.

    ``make_task`` is only called when there is work to do, so a finished run exits quickly.
    Under torchrun, joins the process group (and leaves it at the end).

    Raises:
        RunFolderError: ``run_dir`` holds a checkpoint of another experiment.
        DivergedError: non-finite loss / gradient (policy ``trainer.on_nonfinite``).
        Preempted: SIGTERM / SIGUSR1 / SIGUSR2; ``last.pt`` holds the step reached.
        ConfigError: bad values, or no GPU for real data with ``trainer.device=auto``.
    """
    run_dir, tcfg = Path(run_dir), cfg.trainer
    validate_config(cfg)  # every key's type and range, before any data is read
    real_data = cfg.get("data", {}).get("synthetic") is None
    device = resolve_device(str(tcfg.get("device", "auto")), real_data=real_data)
    precision = str(tcfg.get("precision", "32"))
    autocast_context(device, precision)  # validates precision for this device
    with RunLock(run_dir):  # one command per run folder (rank 0 holds it for all ranks)
        joined = D.init_distributed(device.type)
        try:
            return _fit(cfg, make_task, run_dir, device, precision)
        finally:
            if joined:
                D.destroy()


def _fit(cfg, make_task, run_dir: Path, device: torch.device, precision: str) -> FitResult:
    tcfg = cfg.trainer
    epochs, seed = int(tcfg.epochs), int(tcfg.get("seed", 0))
    if D.world_size() > 1 and int(tcfg.batch_size) < D.world_size():
        raise ConfigError(
            f"trainer.batch_size={tcfg.batch_size} is the global batch: it must be at least the "
            f"number of processes ({D.world_size()})"
        )
    status, ckpt_path = read_status(run_dir), run_dir / "last.pt"
    if status is not None and ckpt_path.is_file():
        _check_compatible(status["fingerprint"], cfg, run_dir)
        done = status["epochs_done"]
        if done >= epochs and status.get("finished", True) and status.get("step_in_epoch") is None:
            if D.is_main():
                print(
                    f"[train] {run_dir}: finished already ({done}/{epochs} epochs, best "
                    f"{status.get('monitor')} = {status.get('best')}); nothing to do."
                )
            best, last = status.get("best"), status.get("last", {})
            return FitResult(run_dir, done, done, True, status.get("monitor"), best, last)

    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(tcfg.get("cudnn_benchmark", True))
    seed_everything(seed)
    task = _make_task(make_task, cfg)
    seed_everything(seed)  # the model's initialisation does not depend on the task's setup
    run = _Run(cfg, task, run_dir, device)
    run.runtime = runtime_info(device, precision)
    start, start_step = run.resume()
    if run.main:
        for csv_path in [run_dir / "metrics.csv", *(run_dir / "tables").glob("*_by_epoch.csv")]:
            truncate_metrics(csv_path, start)  # rows of epochs about to be redone
        save_config(cfg, run_dir / "config.yaml")
        info = run.runtime
        gpus = f", GPUs {info['gpus']}" if "gpus" in info else ""
        print(
            f"[train] {run_dir}: {info['device']} x {info['world_size']} process(es){gpus}, "
            f"precision {precision}, torch {info['torch']} (CUDA {info['cuda']})",
            flush=True,
        )
        if hasattr(task, "data_stats"):
            print(f"[train] data: {json.dumps(task.data_stats)}")
    run.wandb_id = D.broadcast_object(run.wandb_id or _new_wandb_id())
    monitor, mode = task.monitor, task.monitor_mode

    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    logger_cfg = cfg.get("logger") if run.main else None
    logger = build_logger(logger_cfg, run_dir, plain_cfg, run_id=run.wandb_id)
    stop = _StopSignals()
    last: dict[str, Any] = {}
    exit_code, stopped = 1, False
    try:
        if run.main:
            _write_status(run, finished=False, step_in_epoch=start_step or None, epochs_done=start)
        for epoch in range(start, epochs):
            run.epoch = epoch
            t0 = time.time()
            g0 = run.optimizer.param_groups[0]
            base_lr = g0["lr"] / g0.get("lr_mult", 1.0)  # the base lr this epoch runs with
            go_on = _train_epoch(run, epoch, start_step if epoch == start else 0, logger, stop)
            if not go_on:
                stopped = True
                break
            run.scheduler.step()
            train = _epoch_means(run)
            row: dict[str, Any] = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in train.items()},
                "lr": base_lr,
            }
            if run.pending_note:
                row["changed"], run.pending_note = run.pending_note, ""
            train_time, media = time.time() - t0, {}
            if (epoch + 1) % run.eval_every == 0 or epoch + 1 == epochs:
                run.module.eval()
                with torch.no_grad():
                    scalars, media = split_metrics(task.evaluate(run.module, epoch))
                row.update(scalars)
            row.update(time_s=time.time() - t0, train_time_s=train_time)
            value = row.get(monitor)
            improved = (
                value is not None
                and math.isfinite(value)
                and (run.best is None or (value < run.best if mode == "min" else value > run.best))
            )
            run.best = float(value) if improved else run.best
            # order matters for resuming: metrics row, tables, checkpoint, then status
            if run.main:
                append_metrics(run_dir / "metrics.csv", row)
                write_media(run_dir, media, epoch)
                logger.log(
                    {**{f"epoch/{k}": v for k, v in row.items() if k != "changed"}, **media},
                    step=run.global_step,
                )
            if improved and tcfg.get("save_best", True) and run.weights_finite() and run.main:
                best_state = {"model": run.module.state_dict(), "epoch": epoch, monitor: run.best}
                save_checkpoint(best_state, run_dir / "best.pt")
            run.save_last(None)
            last = {k: v for k, v in row.items() if isinstance(v, (int, float))}
            final_pending = epoch + 1 >= epochs and hasattr(task, "final_evaluate")
            _write_status(
                run,
                finished=epoch + 1 >= epochs and not final_pending,
                step_in_epoch=None,
                last=last,
            )
            if run.main:
                shown = {k: v for k, v in last.items() if k != "epoch" and not k.endswith("time_s")}
                msg = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
                print(
                    f"[train] epoch {epoch + 1}/{epochs}: {msg} ({row['time_s']:.1f}s)", flush=True
                )
            if stop.received:
                raise Preempted(stop.received, run_dir, epoch + 1, 0)
            if run.stop_after_epoch and epoch + 1 < epochs:
                stopped = True
                break
        if not stopped:
            trained_now = start < epochs
            if hasattr(task, "final_evaluate") and (
                trained_now or not (run_dir / "final.json").is_file()
            ):
                run.epoch = max(run.epoch, epochs - 1)
                final = _final_evaluate(run)
                status_last = last or (read_status(run_dir) or {}).get("last", {})
                _write_status(run, finished=True, step_in_epoch=None, last=status_last, final=final)
            elif not trained_now:
                status_last = (read_status(run_dir) or {}).get("last", {})
                _write_status(run, finished=True, step_in_epoch=None, last=status_last)
        exit_code = 0
    except Preempted:
        exit_code = 0
        stop.restore()
        logger.finish(exit_code=0)
        logger = None
        stop.chain()  # e.g. submitit's requeue on SLURM (exits there)
        raise
    finally:
        stop.restore()
        if logger is not None:
            logger.finish(exit_code=exit_code)
    if start >= epochs:
        done = start
    else:
        done = run.epoch + (1 if not stopped or run.stop_after_epoch else 0)
    return FitResult(run_dir, done, start, False, monitor, run.best, last, stopped)


def _new_wandb_id() -> str:
    import random
    import string

    rng = random.Random(time.time_ns() ^ os.getpid())  # independent of the seeded global RNG
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
