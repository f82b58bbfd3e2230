"""The Task protocol the training loop drives, and the skeleton COCO and BSDS share: data-root
resolution (synthetic sets generated once), the bad-item counter, seeded epoch orders, loaders,
and data errors mapped by exception type.

    class MyTask(Task):
        monitor, monitor_mode = "val_error", "min"
        def build_model(self) -> nn.Module
        def train_batches(self, epoch) -> list[list[int]]     # the epoch's global batches, seeded
        def train_loader(self, epoch, batches) -> DataLoader  # yields exactly these batches
        def train_step(self, model, batch) -> (loss, logs)    # logs: tensors read in one sync
        def evaluate(self, model, epoch) -> dict              # scalars, Table, Confusion, Figure
        def final_evaluate(self, model, which) -> dict        # the full val / test set, once
                                                              # per checkpoint ("last", "best")
        data_stats: dict                                      # -> status.json ("data")
        resolved: dict                                        # run-time choices (identity)

Evaluation loops call :func:`matbackprop.engine.preemption.poll_evaluation` once per item so
that a stop signal is answered within one item.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matbackprop.data.bad_items import BadItemCounter
from matbackprop.data.synthetic import ensure_generated
from matbackprop.engine.checkpoint import epoch_seed, seed_worker
from matbackprop.errors import DataError, UserError


class Task(abc.ABC):
    """What to train on and how to score it (see the module docstring)."""

    monitor: str  # the metric that picks best.pt, e.g. "val_error"
    monitor_mode: str  # "min" or "max"
    hint: str = ""  # how to get the data (appended to data errors)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.bad_items = BadItemCounter(int(cfg.data.get("max_skipped", 100)))
        self.data_stats: dict[str, Any] = {}
        # what the task decided at run time that is part of the run's identity (e.g. which
        # loader ``data.store=auto`` picked): a resume that would decide otherwise is refused
        self.resolved: dict[str, Any] = {}

    # ------------------------------------------------------------------ the protocol
    @abc.abstractmethod
    def build_model(self) -> nn.Module: ...

    @abc.abstractmethod
    def train_batches(self, epoch: int) -> list[list[int]]: ...

    @abc.abstractmethod
    def train_loader(self, epoch: int, batches: list[list[int]]) -> DataLoader: ...

    @abc.abstractmethod
    def train_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]: ...

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def final_evaluate(self, model: nn.Module, which: str = "last") -> dict[str, Any]: ...

    # ------------------------------------------------------------------ shared skeleton
    def data_root(self, make_synthetic: Callable[..., Any], check: Callable[[Path], None],
                  tuples: tuple[str, ...] = ()) -> Path:  # fmt: skip
        """``data.root``: generated once from ``data.synthetic`` (keys in ``tuples`` become
        tuples) when that is set, else checked with ``check`` (raises DataError)."""
        d = self.cfg.data
        if d.get("synthetic") is None:
            root = Path(d.root)
            check(root)
            return root
        params = OmegaConf.to_container(d.synthetic, resolve=True)
        for key in tuples:
            if key in params:
                params[key] = tuple(params[key])
        try:
            return ensure_generated(d.root, params, make_synthetic)
        except FileExistsError as err:
            raise DataError(str(err)) from err

    @contextlib.contextmanager
    def data_errors(self) -> Iterator[None]:
        """Map a missing file or bad value while indexing the data to :class:`DataError`
        with this task's hint (user errors pass through unchanged)."""
        try:
            yield
        except UserError:  # DataError / ConfigError: already say what to fix
            raise
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"{err}; {self.hint}" if self.hint else str(err)) from err

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator of epoch ``epoch``'s order: seeded by (trainer.seed, epoch) alone."""
        return torch.Generator().manual_seed(epoch_seed(int(self.cfg.trainer.seed), epoch))

    def loader(self, dataset: Dataset, batches: list[list[int]] | None = None) -> DataLoader:
        """Training loader over exactly ``batches``, or the evaluation loader (in order,
        ``trainer.eval_batch_size``, default ``trainer.batch_size``)."""
        t = self.cfg.trainer
        workers = int(t.workers)
        common: Mapping[str, Any] = dict(
            num_workers=workers,
            worker_init_fn=seed_worker if workers else None,
            pin_memory=torch.cuda.is_available(),
        )
        if batches is not None:
            return DataLoader(dataset, batch_sampler=batches, **common)
        bs = int(t.eval_batch_size or t.batch_size)
        return DataLoader(dataset, batch_size=bs, shuffle=False, **common)
