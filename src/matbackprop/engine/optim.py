"""SGD with the paper's parameter groups, and per-epoch learning-rate schedules.

Config (``conf/optim/sgd.yaml``): ``lr``, ``momentum``, ``weight_decay``, ``new_lr_mult``,
``bias_lr_mult``, ``schedule`` (step | cosine | constant), ``step_size``, ``gamma``,
``min_lr_mult`` (cosine floor as a fraction of each group's lr).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from matbackprop.models.build import param_groups

SCHEDULES = ("step", "cosine", "constant")


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD with momentum over :func:`~matbackprop.models.build.param_groups`.

    Raises:
        ValueError: ``optim.name`` is not ``sgd`` or ``lr`` is not positive.
    """
    if cfg.get("name", "sgd") != "sgd":
        raise ValueError(f"unknown optim.name {cfg.get('name')!r}; only 'sgd' is implemented")
    lr = float(cfg["lr"])
    if not lr > 0:
        raise ValueError(f"optim.lr must be > 0, got {lr}")
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=float(cfg.get("weight_decay", 5e-4)),
        new_lr_mult=float(cfg.get("new_lr_mult", 10.0)),
        bias_lr_mult=float(cfg.get("bias_lr_mult", 2.0)),
    )
    return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule (``scheduler.step()`` once after each epoch).

    - ``step``: lr × ``gamma`` every ``step_size`` epochs;
    - ``cosine``: from lr to lr × ``min_lr_mult`` over ``epochs``;
    - ``constant``.

    Raises:
        ValueError: unknown ``optim.schedule``.
    """
    kind = cfg.get("schedule", "step")
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(cfg.get("step_size", 10)), gamma=float(cfg.get("gamma", 0.1))
        )
    if kind == "cosine":
        floor = float(cfg.get("min_lr_mult", 0.0))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _Cosine(max(epochs, 1), floor))
    if kind == "constant":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=1.0)
    raise ValueError(f"unknown optim.schedule {kind!r}; expected one of {SCHEDULES}")


class _Cosine:
    """Multiplier ``floor + (1 - floor) (1 + cos(π e / T)) / 2`` at epoch e (a picklable callable)."""

    def __init__(self, epochs: int, floor: float):
        self.epochs, self.floor = epochs, floor

    def __call__(self, epoch: int) -> float:
        t = min(epoch, self.epochs) / self.epochs
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))
