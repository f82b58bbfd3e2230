"""The objects of one training run, built once: task (rank 0 first), model (DDP-wrapped under
torchrun), optimizer, :class:`~matbackprop.engine.step.OptimStep`, ``last.pt`` restored with
the allowed changes applied (:mod:`~matbackprop.engine.resume`), records, logger, stop policy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from matbackprop.engine import distributed as D
from matbackprop.engine import schema
from matbackprop.engine.checkpoint import seed_everything
from matbackprop.engine.logging import build_logger
from matbackprop.engine.optim import build_optimizer, build_scheduler
from matbackprop.engine.preemption import StopPolicy
from matbackprop.engine.records import RunRecords
from matbackprop.engine.resume import (
    change_record,
    check_compatible,
    check_resolved,
    replan,
    resolved_keys,
)
from matbackprop.engine.state import Checkpointer, TrainState
from matbackprop.engine.step import OptimStep

if TYPE_CHECKING:
    from matbackprop.tasks.base import Task


@dataclass
class Loop:
    """The objects of one :func:`fit` call (built once, never added to)."""

    cfg: DictConfig
    task: Task
    run_dir: Path
    device: torch.device
    module: nn.Module  # the bare model (evaluation, state dicts)
    model: nn.Module  # what trains (DDP-wrapped under torchrun)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: OptimStep
    checkpoint: Checkpointer
    state: TrainState
    records: RunRecords
    policy: StopPolicy
    logger: Any
    rng_by_rank: list | None  # the saved RNG state of each rank (resume inside an epoch)


def build(cfg: DictConfig, make_task, run_dir: Path, device: torch.device) -> Loop:
    """Task, model, optimizer, step, checkpoint and records, resumed from ``last.pt`` if any."""
    t = cfg.trainer
    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark)
    seed_everything(int(t.seed))
    task = D.rank0_first(make_task, cfg)
    seed_everything(int(t.seed))  # the model's initialisation does not depend on the task's setup
    module = task.build_model().to(device)
    if t.channels_last:  # NHWC convolutions (faster with cuDNN / tensor cores)
        module = module.to(memory_format=torch.channels_last)
    module, model = D.wrap_model(module, device, bool(t.find_unused_parameters))
    optimizer = build_optimizer(module, cfg.optim)
    step = OptimStep.from_config(module, optimizer, device, t)
    fingerprint = {**schema.fingerprint(cfg), **resolved_keys(task)}
    ckpt = Checkpointer(run_dir / "last.pt", fingerprint, model=module, optimizer=optimizer,
                        scaler=step.scaler)  # fmt: skip
    saved = ckpt.load()
    init = init_weights(cfg, module) if saved is None else None
    state, rng_by_rank = TrainState(epochs=int(t.epochs)), None
    scheduler = build_scheduler(optimizer, cfg.optim, int(t.epochs))
    if saved is not None:
        check_resolved(saved["fingerprint"], resolved_keys(task), run_dir)
        changes = check_compatible(saved["fingerprint"], cfg, run_dir)
        old_fp = "trainer.epochs" not in saved["fingerprint"]  # written before the schema
        if old_fp and saved.get("epochs") is not None and int(saved["epochs"]) != int(t.epochs):
            changes["trainer.epochs"] = (int(saved["epochs"]), int(t.epochs))
        state = ckpt.restore(saved)
        state.epochs = int(t.epochs)
        if state.step_in_epoch is None:  # the checkpoint's epoch is finished
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        same_world = int(saved["world_size"]) == D.world_size()
        rng_by_rank = saved["rng"] if same_world else None
        if not same_world and D.is_main():
            print(f"[train] the checkpoint was written by {saved['world_size']} process(es), "
                  f"this run has {D.world_size()}: dropout randomness will differ from an "
                  "uninterrupted run")  # fmt: skip
        if changes:
            entry, state.pending_note = change_record(changes, state.epoch, state.step_in_epoch,
                                                      state.global_step)  # fmt: skip
            state.changes.append(entry)
            if D.is_main():
                print(f"[train] resumed with changed settings: {state.pending_note}")
        scheduler = replan(scheduler, cfg, changes, state.epoch, saved["scheduler"], D.is_main())
        if D.is_main():
            at = state.step_in_epoch
            where = (
                f"epoch {state.epoch + 1}, step {at}"
                if at
                else f"the start of epoch {state.epoch + 1}"
            )
            print(f"[train] {run_dir}: resuming at {where} (global step {state.global_step})")
    records = RunRecords(run_dir, D.is_main())
    if init is not None:
        records.status["init_from"] = init
    records.keep_epochs(state.epoch)  # rows of epochs about to be redone are dropped
    records.keep_steps(state.global_step)
    state.wandb_id = D.broadcast_object(state.wandb_id or _new_wandb_id())
    plain = OmegaConf.to_container(cfg, resolve=True)
    logger = build_logger(cfg.get("logger") if D.is_main() else None, run_dir, plain,
                          run_id=state.wandb_id)  # fmt: skip
    policy = StopPolicy(t.checkpoint_every, t.max_steps)
    return Loop(cfg, task, run_dir, device, module, model, optimizer, scheduler, step, ckpt,
                state, records, policy, logger, rng_by_rank)  # fmt: skip


def init_weights(cfg: DictConfig, module: nn.Module) -> dict[str, Any] | None:
    """``model.init_from`` (a run folder or ``.pt``): a new run starts from those weights
    (strict about keys and shapes); returns what was loaded (-> ``status.json``)."""
    source = OmegaConf.select(cfg, "model.init_from", default=None)
    if not source:
        return None
    from matbackprop.weights import load_model_weights

    info = load_model_weights(module, str(source))
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in info.items()}
    if D.is_main():
        print(f"[train] weights initialised from {info['path']} (trained {info['epoch']} epochs)")
    return info


def _new_wandb_id() -> str:
    import random
    import string

    rng = random.Random(time.time_ns() ^ os.getpid())  # independent of the seeded global RNG
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
