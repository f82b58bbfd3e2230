"""The training loop: :func:`fit` over epochs and :func:`train_one_epoch` over steps
(torchvision ``references/classification/train.py`` style). Everything else has one owner:

- :mod:`~matbackprop.engine.step` — one optimizer step (autocast, clip, scaler, non-finite policy);
- :mod:`~matbackprop.engine.state` — the counters and ``last.pt``;
- :mod:`~matbackprop.engine.resume` — whether a folder fits the config, changes, lr re-plan;
- :mod:`~matbackprop.engine.preemption` — signals and when to checkpoint or stop;
- :mod:`~matbackprop.engine.records` — ``status.json``, ``metrics.csv``, ``tables/``;
- :mod:`~matbackprop.engine.distributed` — device, DDP, batch shards.

A task (:class:`matbackprop.tasks.base.Task`) supplies data, model, step loss and scores.
After each epoch: evaluate (every ``trainer.eval_every``), step the lr schedule, then write a
``metrics.csv`` row, ``tables/*.csv``, ``best.pt``, ``last.pt`` and ``status.json`` in that
order; at the end score the full set on the last and best weights (``final.json``). Epochs
are counted from 1 in everything a user reads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from matbackprop.engine import distributed as D
from matbackprop.engine import schema
from matbackprop.engine.checkpoint import (
    load_checkpoint,
    seed_everything,
    set_rng_state,
    write_json_atomic,
)
from matbackprop.engine.preemption import Decision, EvaluationInterrupted, Preempted
from matbackprop.engine.progress import Progress
from matbackprop.engine.records import media_tables, save_config, split_metrics
from matbackprop.engine.resume import (
    FitResult,
    finished_run,
)
from matbackprop.engine.runlock import RunLock
from matbackprop.engine.setup import Loop, build
from matbackprop.engine.state import save_best, weights_finite
from matbackprop.engine.step import autocast_context, to_device
from matbackprop.errors import ConfigError
from matbackprop.models.o2p import pool_device_decision

if TYPE_CHECKING:
    from collections.abc import Callable

    from matbackprop.tasks.base import Task

_RANK_SEED = 1_000_003  # rank r's global RNG is seeded with seed + epoch + r * _RANK_SEED


def fit(cfg: DictConfig, make_task: Callable[[DictConfig], Task], run_dir: str | Path) -> FitResult:
    """Train ``make_task(cfg)``'s model as configured, in (and resuming from) ``run_dir``.

    Raises:
        RunFolderError: ``run_dir`` holds a run of another experiment (or is in use).
        DivergedError: non-finite loss / gradient (policy ``trainer.on_nonfinite``).
        Preempted: SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT; ``last.pt`` holds the step reached.
        ConfigError: bad values, or no GPU for real data with ``trainer.device=auto``.
    """
    run_dir = Path(run_dir)
    schema.validate(cfg)  # every key's type and range, before any data is read
    cfg = schema.complete(cfg)  # every default filled in: keys are read directly below
    real_data = cfg.get("data", {}).get("synthetic") is None
    try:
        device = D.resolve_device(str(cfg.trainer.device), real_data=real_data)
    except ConfigError as err:  # say what else is missing, so one rerun is not followed by another
        root = Path(str(OmegaConf.select(cfg, "data.root", default="")))
        if not real_data or root.is_dir():
            raise
        raise ConfigError(
            f"{err}\nAlso, the data folder {root} (data.root) does not exist: run "
            f"`make data-{cfg.task}` to download it, or set data.root=/path/to/it."
        ) from err
    autocast_context(device, str(cfg.trainer.precision))  # validates precision for this device
    with RunLock(run_dir):  # one command per run folder (rank 0 holds it for all ranks)
        joined = D.init_distributed(device.type)
        try:
            if D.world_size() > 1 and int(cfg.trainer.batch_size) < D.world_size():
                raise ConfigError(
                    f"trainer.batch_size={cfg.trainer.batch_size} is the global batch: it must "
                    f"be at least the number of processes ({D.world_size()})"
                )
            done = finished_run(run_dir, cfg)
            if done is not None:
                return done
            loop = build(cfg, make_task, run_dir, device)  # engine/setup.py
            with loop.policy.installed():
                return train(loop)
        finally:
            if joined:
                D.destroy()


def train(L: Loop) -> FitResult:
    """Epochs ``state.epoch ..`` then the final evaluation; returns what was done."""
    cfg, task, state, records = L.cfg, L.task, L.state, L.records
    epochs, start = int(cfg.trainer.epochs), state.epoch
    runtime = D.runtime_info(L.device, str(cfg.trainer.precision))
    if D.is_main():
        save_config(cfg, L.run_dir / "config.yaml")
        gpus = f", GPUs {runtime['gpus']}" if "gpus" in runtime else ""
        print(f"[train] {L.run_dir}: {runtime['device']} x {runtime['world_size']} process(es)"
              f"{gpus}, precision {runtime['precision']}, torch {runtime['torch']} (CUDA "
              f"{runtime['cuda']})", flush=True)  # fmt: skip
        print(f"[train] data: { {k: v for k, v in task.data_stats.items() if k != 'class_names'} }")
    records.status.update(runtime=runtime, data=task.data_stats, monitor=task.monitor,
                          monitor_mode=task.monitor_mode, epochs_total=epochs,
                          fingerprint=L.checkpoint.fingerprint)  # fmt: skip
    write_status(L, finished=False, epochs_done=start)
    exit_code, stopped, last = 1, False, dict(records.status.get("last", {}))
    logger_open = True
    try:
        for epoch in range(start, epochs):
            t0 = time.time()
            g0 = L.optimizer.param_groups[0]
            base_lr = g0["lr"] / g0.get("lr_mult", 1.0)  # the base lr this epoch runs with
            start_step = state.step_in_epoch if epoch == start else 0
            if not train_one_epoch(L, epoch, start_step or 0):
                stopped = True  # trainer.max_steps inside the epoch
                break
            row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in state.epoch_means().items()},
                   "lr": base_lr}  # fmt: skip
            if state.pending_note:
                row["changed"], state.pending_note = state.pending_note, ""
            train_time, media = time.time() - t0, {}
            if (epoch + 1) % int(cfg.trainer.eval_every) == 0 or epoch + 1 == epochs:
                scalars, media = evaluate_or_checkpoint(L, epoch)
                row.update(scalars)
            L.scheduler.step()
            row.update(time_s=time.time() - t0, train_time_s=train_time)
            last = end_epoch(L, epoch, row, media)
            if L.policy.signalled:
                raise Preempted(L.policy.signalled, L.run_dir, epoch + 1, 0)
            if (
                L.policy.max_steps
                and state.global_step >= L.policy.max_steps
                and epoch + 1 < epochs
            ):
                stopped = True  # trainer.max_steps at an epoch's end
                break
        if not stopped and (start < epochs or not (L.run_dir / "final.json").is_file()):
            final = final_evaluate(L)
            write_status(L, finished=True, last=last, final=final)
        elif not stopped:
            write_status(L, finished=True)
        exit_code = 0
    except Preempted:
        L.logger.finish(exit_code=0)
        logger_open = False
        L.policy.restore()
        L.policy.chain()  # e.g. submitit's requeue on SLURM (exits there)
        raise
    finally:
        if logger_open:
            L.logger.finish(exit_code=exit_code)
    done = max(start, state.epoch)
    return FitResult(L.run_dir, done, start, False, task.monitor, state.best, last, stopped)


def train_one_epoch(L: Loop, epoch: int, start_step: int) -> bool:
    """Steps ``start_step..`` of ``epoch``; False if ``trainer.max_steps`` ended it early.
    Raises :class:`Preempted` after a signal-triggered checkpoint inside the epoch."""
    t, state = L.cfg.trainer, L.state
    batches = D.shard_batches(L.task.train_batches(epoch), D.rank(), D.world_size())
    if start_step == 0:
        seed_everything(int(t.seed) + epoch + _RANK_SEED * D.rank())
        state.start_epoch(epoch)
    loader = L.task.train_loader(epoch, [b for b, _ in batches[start_step:]])
    it = iter(loader)  # (draws a DataLoader seed from the global RNG, before it is restored)
    if start_step and L.rng_by_rank is not None:
        set_rng_state(L.rng_by_rank[D.rank()])
    L.model.train()
    bar = Progress(it, len(batches), start_step, f"epoch {epoch + 1}/{state.epochs}",
                   int(t.batch_size), float(t.progress_every_s), D.is_main())  # fmt: skip
    for k, batch in enumerate(bar, start=start_step):
        batch = to_device(batch, L.device, bool(t.channels_last))
        where = f"epoch {epoch + 1}, step {k} (global {state.global_step})"
        result = L.step(lambda b=batch: L.task.train_step(L.model, b), batches[k][1],
                        lambda: [L.policy.local_code()], where, state.nonfinite_steps)  # fmt: skip
        if result.skipped:
            state.skip()
            if D.is_main():
                print(f"[train] skipped step {k} of epoch {epoch + 1}: non-finite {result.what}")
        else:
            state.add(result.loss, result.logs)
        state.global_step, state.step_in_epoch = state.global_step + 1, k + 1
        bar.step(result.loss)
        if state.global_step % int(t.log_every) == 0 and not result.skipped:
            log_step(L, result)
        last_step = k + 1 == len(batches)
        decision = L.policy.poll(state.global_step, result.flags[0], last_step)
        if decision is Decision.CHECKPOINT or (decision is Decision.STOP and not last_step):
            checkpoint_inside_epoch(L, len(batches))
        if decision is Decision.STOP:
            if L.policy.signalled and not last_step:
                raise Preempted(L.policy.signalled, L.run_dir, epoch, k + 1)
            return last_step or bool(L.policy.signalled)
    return True


def log_step(L: Loop, result) -> None:
    lrs = {f"lr/{g.get('name', j)}": g["lr"] for j, g in enumerate(L.optimizer.param_groups)}
    logs = {f"train/{key}": float(v) for key, v in result.logs.items()}
    values = {"train/loss": result.loss, "train/grad_norm": result.grad_norm, **lrs, **logs}
    L.logger.log(values, step=L.state.global_step)
    L.records.add_step({"global_step": L.state.global_step, "epoch": L.state.epoch + 1, **values})


def checkpoint_inside_epoch(L: Loop, n_steps: int) -> None:
    """``last.pt`` and ``status.json`` at the step reached (``step_in_epoch``)."""
    t0, state = time.time(), L.state
    L.checkpoint.save(state, scheduler=L.scheduler)
    write_status(L, finished=False, epochs_done=state.epoch)
    if D.is_main():
        print(f"[train] checkpoint: epoch {state.epoch + 1}, step {state.step_in_epoch}/{n_steps} "
              f"({time.time() - t0:.1f}s)", flush=True)  # fmt: skip


def evaluate_or_checkpoint(L: Loop, epoch: int) -> tuple[dict[str, float], dict[str, Any]]:
    """``task.evaluate`` after the epoch's steps; a stop signal during it writes ``last.pt``
    at the epoch's last step (the rerun evaluates again) and raises :class:`Preempted`."""
    L.module.eval()
    try:
        with torch.no_grad():
            return split_metrics(L.task.evaluate(L.module, epoch))
    except EvaluationInterrupted as stop:
        L.checkpoint.save(L.state, scheduler=L.scheduler)
        write_status(L, finished=False, epochs_done=epoch)
        raise Preempted(stop.signame, L.run_dir, epoch, L.state.step_in_epoch or 0,
                        what=f"the end of epoch {epoch + 1}, before its evaluation") from None  # fmt: skip


def end_epoch(L: Loop, epoch: int, row: dict[str, Any], media: dict[str, Any]) -> dict:
    """Best value, then the records of the epoch, in the order that makes a resume exact:
    metrics row, tables, ``best.pt``, ``last.pt``, ``status.json``. Returns the row's numbers."""
    task, state, mode = L.task, L.state, L.task.monitor_mode
    value = row.get(task.monitor)
    improved = (value is not None and math.isfinite(value)
                and (state.best is None or (value < state.best if mode == "min" else value > state.best)))  # fmt: skip
    state.best = float(value) if improved else state.best
    L.records.add_row(row)
    L.records.add_tables(media_tables(media), epoch + 1)
    if D.is_main():
        L.logger.log({**{f"epoch/{k}": v for k, v in row.items() if k != "changed"}, **media},
                     step=state.global_step)  # fmt: skip
    if improved and L.cfg.trainer.save_best and D.is_main() and weights_finite(L.module):
        save_best(L.run_dir / "best.pt", L.module, epoch + 1, task.monitor, state.best)
    state.step_in_epoch = None
    L.checkpoint.save(state, scheduler=L.scheduler)
    last = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    decision = pool_device_decision()  # what model.pool_device=auto chose (None: not used)
    if decision is not None:
        L.records.status["pool_device"] = decision
    write_status(L, finished=False, epochs_done=epoch + 1, last=last)
    if D.is_main():
        shown = {k: v for k, v in last.items() if k != "epoch" and not k.endswith("time_s")}
        msg = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
        print(f"[train] epoch {epoch + 1}/{state.epochs}: {msg} ({row['time_s']:.1f}s)", flush=True)
    state.epoch, state.step_in_epoch = epoch + 1, 0
    return last


def final_evaluate(L: Loop) -> dict[str, Any]:
    """``task.final_evaluate`` on the last and the best weights -> ``final.json`` (epochs
    counted from 1). A stop signal during it raises :class:`Preempted`; the rerun redoes it."""
    out: dict[str, Any] = {}
    L.module.eval()

    def score(which: str) -> dict[str, float]:
        with torch.no_grad():
            return split_metrics(L.task.final_evaluate(L.module, which=which))[0]

    try:
        out["last"] = {"epoch": int(L.cfg.trainer.epochs), **score("last")}
        best_path = L.run_dir / "best.pt"
        if best_path.is_file():
            kept = {k: v.clone() for k, v in L.module.state_dict().items()}
            best = load_checkpoint(best_path, map_location="cpu")
            L.module.load_state_dict(best["model"])
            out["best"] = {"epoch": int(best["epoch"]), **score("best")}
            L.module.load_state_dict(kept)
    except EvaluationInterrupted as stop:
        raise Preempted(stop.signame, L.run_dir, 0, 0, what="the end of training, before "
                        "the final evaluation (the rerun does it)") from None  # fmt: skip
    if D.is_main():
        write_json_atomic(out, L.run_dir / "final.json")
        mon = L.task.monitor
        shown = ", ".join(f"{w} (epoch {v['epoch']}) {mon}={v.get(mon, float('nan')):.4g}"
                          for w, v in out.items())  # fmt: skip
        print(f"[train] final evaluation on the full set: {shown}")
    return out


def write_status(L: Loop, finished: bool, epochs_done: int | None = None, **fields: Any) -> None:
    """``status.json`` from the in-memory state (rank 0)."""
    s = L.state
    done = s.epoch if epochs_done is None else epochs_done
    L.records.write_status(epochs_done=done, step_in_epoch=s.step_in_epoch or None,
                           global_step=s.global_step, finished=finished, best=s.best,
                           changes=s.changes, **fields)  # fmt: skip
