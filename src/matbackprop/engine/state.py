"""What a checkpoint holds: the :class:`TrainState` counters and a :class:`Checkpointer` over named
stateful objects (in the spirit of DINO's ``restart_from_checkpoint(path, run_variables,
**stateful)``).

    ckpt = Checkpointer(run_dir / "last.pt", model=module, optimizer=opt, scaler=scaler)
    ckpt.save(state, scheduler=sched)           # collective: every rank's RNG and partial sums
    saved = ckpt.load()                         # None when there is no last.pt
    state = ckpt.restore(saved)                 # loads model / optimizer / scaler in place

``last.pt`` holds ``epoch``, the epoch it was written in counted from 1 as everywhere a user
reads epochs (``format: 2``; files without ``format`` counted from 0 and are read as such),
``step_in_epoch`` the steps done in it (``None``: the epoch is finished), one RNG state and one
set of partial epoch sums per rank,
so a resume with the same world size is exact, and one with another world size gives the same
epoch means (:meth:`TrainState.sums_for`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from matbackprop.engine import distributed as D
from matbackprop.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint
from matbackprop.errors import DivergedError, RunFolderError

CHECKPOINT_FORMAT = 2  # 2: last.pt's ``epoch`` counted from 1


@dataclass
class TrainState:
    """The loop's counters; everything here goes into ``last.pt``."""

    epochs: int  # trainer.epochs the run is planned with
    epoch: int = 0  # 0-based index of the epoch in progress
    step_in_epoch: int | None = 0  # steps done in it (None: finished)
    global_step: int = 0
    best: float | None = None  # best value of the task's monitor so far
    sums: dict[str, float] = field(default_factory=dict)  # this rank's partial epoch sums
    n_steps: int = 0  # steps summed into ``sums`` (this rank)
    nonfinite_steps: int = 0  # steps skipped this epoch (the same on every rank)
    wandb_id: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    pending_note: str = ""  # a resume's changes, for the next metrics row

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, 0
        self.sums, self.n_steps, self.nonfinite_steps = {}, 0, 0

    def add(self, loss: float, logs: dict[str, float]) -> None:
        """Add one finished step's loss and task logs to the epoch sums."""
        self.n_steps += 1
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss
        for key, v in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(v)

    def skip(self) -> None:
        self.nonfinite_steps += 1
        self.sums["nonfinite_steps"] = self.sums.get("nonfinite_steps", 0.0) + 1

    def epoch_means(self) -> dict[str, float]:
        """Mean of each train log over the epoch's steps and ranks (``count_*``: summed)."""
        world = D.world_size()
        keys = sorted(self.sums)
        local = [self.sums[k] for k in keys] + [float(self.n_steps)]
        totals = [sum(col) for col in zip(*D.all_gather_objects(local))] if world > 1 else local
        n = max(totals[-1] / world, 1.0)  # steps per rank
        out = {}
        for k, v in zip(keys, totals[:-1]):
            if k.startswith("count_"):
                out[k] = v  # summed over the steps of every rank
            elif k == "nonfinite_steps":
                out[k] = v / world  # the same steps are skipped on every rank
            else:
                out[k] = v / world / n  # the mean over steps and ranks
        return out

    @staticmethod
    def sums_for(saved: list[tuple[dict[str, float], int]], rank: int, world: int):
        """This rank's (sums, n_steps) from every saved rank's partial sums: its own when the
        world size is unchanged; else rank 0 takes them all, scaled so that
        :meth:`epoch_means` over the new ranks gives the same means (others start empty)."""
        if len(saved) == world:
            sums, n = saved[rank]
            return dict(sums), int(n)
        if rank != 0:
            return {}, 0
        keys = {k for s, _ in saved for k in s}
        out = {}
        for k in keys:
            vals = [s.get(k, 0.0) for s, _ in saved]
            out[k] = sum(vals) if k.startswith("count_") else sum(vals) / len(saved) * world
        return out, int(saved[0][1]) * world


def weights_finite(module: nn.Module) -> bool:
    flags = [torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def save_best(path: Path, module: nn.Module, epoch: int, monitor: str, value: float) -> None:
    """``best.pt``: the weights of the best epoch (``epoch`` counted from 1) and its score."""
    save_checkpoint({"model": module.state_dict(), "epoch": epoch, monitor: value}, path)


class Checkpointer:
    """``last.pt`` of a run folder over named stateful objects (``state_dict``/``load_state_dict``)."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], **stateful: Any) -> None:
        self.path, self.fingerprint, self.stateful = Path(path), fingerprint, stateful

    def save(self, state: TrainState, **more: Any) -> None:
        """Write ``last.pt`` (rank 0; collective: gathers every rank's RNG and partial sums).

        Raises:
            DivergedError: the weights are non-finite (``last.pt`` is left as it was).
        """
        if not weights_finite(self.stateful["model"]):
            raise DivergedError(
                f"the weights became non-finite by step {state.global_step}; last.pt is left "
                "as it was. Lower optim.lr or set trainer.clip."
            )
        rngs = D.all_gather_objects(rng_state())
        partial = D.all_gather_objects((dict(state.sums), state.n_steps))
        objects = {**self.stateful, **more}
        fields = {k: v for k, v in asdict(state).items() if k not in ("sums", "n_steps")}
        fields.pop("pending_note")
        fields["epoch"] = state.epoch + 1  # counted from 1 in the file
        blob = {
            "format": CHECKPOINT_FORMAT,
            **{name: obj.state_dict() for name, obj in objects.items()},
            **fields,
            "sums": partial,  # [(sums, n_steps)] per rank
            "rng": rngs,  # one state per rank
            "world_size": D.world_size(),
            "fingerprint": self.fingerprint,
        }
        if D.is_main():
            save_checkpoint(blob, self.path)
        D.barrier()

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint, or ``None`` when there is none.

        Raises:
            RunFolderError: the file is unreadable (names it and the fix).
        """
        if not self.path.is_file():
            return None
        try:
            return load_checkpoint(self.path, map_location="cpu")
        except ValueError as err:
            raise RunFolderError(f"{err}\nDelete {self.path} to restart this run.") from err

    def restore(self, ckpt: dict[str, Any], skip: tuple[str, ...] = ()) -> TrainState:
        """Load the named objects (except ``skip``) in place and return the saved state."""
        for name, obj in self.stateful.items():
            if name not in skip:
                obj.load_state_dict(ckpt[name])
        state = TrainState(
            epochs=int(ckpt.get("epochs") or 0),
            epoch=int(ckpt["epoch"]) - (1 if ckpt.get("format", 1) >= 2 else 0),
            step_in_epoch=ckpt.get("step_in_epoch"),
            global_step=int(ckpt["global_step"]),
            best=ckpt.get("best"),
            nonfinite_steps=int(ckpt.get("nonfinite_steps", 0)),
            wandb_id=ckpt.get("wandb_id"),
            changes=list(ckpt.get("changes", [])),
        )
        if state.step_in_epoch is not None:
            saved = ckpt.get("sums", [])
            if isinstance(saved, dict):  # written before sums were saved per rank
                saved = [(saved, int(ckpt.get("n_steps", 0)))] * int(ckpt["world_size"])
            state.sums, state.n_steps = TrainState.sums_for(saved, D.rank(), D.world_size())
        return state
