"""A fake in-memory Task for fast unit tests of the training loop (no data files, no images).

Regression y = x·w* + noise with a 2-layer MLP (with dropout, so the global RNG matters), 24
items, batches of 4 (6 steps per epoch). ``events`` lets a test act at a given moment:
``events["step"][n]`` / ``events["eval"][n]`` are callables run at the n-th training step /
evaluation item of this task object (e.g. send this process a signal, return a NaN loss).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import TensorDataset

from matbackprop.engine.logging import Table
from matbackprop.engine.preemption import poll_evaluation
from matbackprop.tasks.base import Task

N, D_IN = 24, 5


class FakeTask(Task):
    monitor, monitor_mode = "val_loss", "min"
    loader_kind = "on-the-fly"  # what a real task resolves at run time (tests change it)

    def __init__(self, cfg: DictConfig, events: dict | None = None):
        super().__init__(cfg)
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(N, D_IN, generator=g)
        self.y = self.x @ torch.randn(D_IN, 1, generator=g) + 0.1 * torch.randn(N, 1, generator=g)
        self.events = events or {}
        self.count: dict[str, int] = defaultdict(int)
        self.data_stats = {"train": N, "val": N}
        self.resolved = {"data.loader.train": self.loader_kind}

    def _event(self, kind: str) -> Any:
        self.count[kind] += 1
        action = self.events.get(kind, {}).get(self.count[kind])
        return action() if action else None

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(D_IN, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))

    def train_batches(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(N, generator=self.epoch_generator(epoch)).tolist()
        bs = int(self.cfg.trainer.batch_size)
        return [order[i : i + bs] for i in range(0, N, bs)]

    def train_loader(self, epoch: int, batches: list[list[int]]):
        return self.loader(TensorDataset(self.x, self.y), batches)

    def train_step(self, model: nn.Module, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        override = self._event("step")
        if override is not None:
            loss = loss * override  # e.g. NaN
        return loss, {"count_items": torch.tensor(float(len(x)))}

    def _score(self, model: nn.Module) -> float:
        total = 0.0
        for i in range(0, N, 6):
            poll_evaluation()
            self._event("eval")
            total += float(((model(self.x[i : i + 6]) - self.y[i : i + 6]) ** 2).sum())
        return total / N

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        loss = self._score(model)
        return {"val_loss": loss, "per_item": Table(["k", "v"], [[0, loss]])}

    def final_evaluate(self, model: nn.Module, which: str = "last") -> dict[str, Any]:
        return {"val_loss": self._score(model)}


def fake_cfg(run_dir, **trainer: Any) -> DictConfig:
    cfg = {
        "task": "fake",
        "run_name": "fake",
        "run_dir": str(run_dir),
        "output_root": str(run_dir),
        "data": {"synthetic": {"n": N}, "root": str(run_dir), "max_skipped": 100},
        "optim": {
            "name": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "new_lr_mult": 1.0,
            "bias_lr_mult": 1.0,
            "schedule": "step",
            "step_size": 2,
            "gamma": 0.5,
            "min_lr_mult": 0.0,
        },  # fmt: skip
        "logger": {"name": "none"},
        "trainer": {
            "epochs": 3,
            "batch_size": 4,
            "workers": 0,
            "device": "cpu",
            "seed": 0,
            "log_every": 1,
            "checkpoint_every": None,
            **trainer,
        },  # fmt: skip
    }
    return OmegaConf.create(cfg)
