"""The real training step of an experiment (a paper row) on synthetic data of its real input size.

    cfg = compose_row("table1_deepo2p", batch_size=8)       # Hydra compose of conf/, synthetic data
    step = build_step(cfg, torch.device("cuda"))
    result = step()                                          # one OptimStep -> StepResult

What is timed is what the trainer runs per step: the batch moved to the device
(``to_device``, channels-last when configured), ``task.train_step`` (the real task code: region
masks onto the trunk grid, the ncut loss on the grid labels, ...) inside
:class:`~matbackprop.engine.step.OptimStep` (autocast, backward, ``trainer.clip``, GradScaler,
the one host sync and the non-finite check), with the experiment's own model, optimizer and
trainer settings. The batch is the first one of the task's real train loader (data loading is
not timed). Differences from a real run, on purpose: ``model.pretrained=false`` (no download;
the same compute), W&B off, ``trainer.workers=0``, and the data is synthetic at the real size:

- COCO (Table 1): crops of ``data.crop_size`` (227) from 640×480 synthetic images with 80
  classes, the real data config's ``max_side`` / ``jitter`` / ``mask_size`` / ``mean_fill``;
- BSDS (Table 2): full-resolution 481×321 synthetic images (``data.holdout=0``: nothing to select).

Experiments whose data is synthetic already (the demos) keep their own sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from matbackprop.engine.optim import build_optimizer
from matbackprop.engine.step import OptimStep, StepResult, to_device
from matbackprop.tasks import task_factory
from matbackprop.train import CONFIG_DIR

WORK = Path("outputs/bench/data")  # synthetic sets, generated once per size and reused
COCO_IMAGE = (480, 640)  # (H, W) of the synthetic COCO images (COCO's typical 640×480)
COCO_CLASSES = 80
BSDS_SIZE = (321, 481)  # (H, W): BSDS500 landscape images (every third synthetic one portrait)


def config_name(experiment: str) -> str:
    """``bsds`` for Table 2 / BSDS experiments, else ``coco`` (the entry config they need)."""
    return "bsds" if experiment.startswith(("table2", "demo_bsds")) else "coco"


def compose_config(name: str, overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def synthetic_overrides(real: DictConfig, batch: int, work: Path) -> list[str]:
    """Overrides that replace the real data of ``real`` (a composed config) by a synthetic set
    of the same input size holding at least one training batch of ``batch``."""
    d = real.data
    if real.task == "coco":
        n = batch + 8  # regular objects; a few spare for min_area
        h, w = COCO_IMAGE
        return [
            "data=coco_synthetic",
            f"data.root={work / f'coco_{d.crop_size}_n{n}'}",
            f"data.synthetic.n_train={n}",
            "data.synthetic.n_val=2",
            f"data.synthetic.image_size=[{h},{w}]",
            f"data.synthetic.num_classes={COCO_CLASSES}",
            *(f"data.{k}={d[k]}" for k in ("crop_size", "max_side", "jitter", "mask_size")),
            *(f"data.{k}={d[k]}" for k in ("min_area", "mean_fill", "mask_grid")),
            "data.store=none",
        ]
    n = 2 * batch + 1  # every third image is portrait: >= batch landscape ones
    h, w = BSDS_SIZE
    return [
        "data=bsds_synthetic",
        f"data.root={work / f'bsds_{h}x{w}_n{n}'}",
        f"data.synthetic.n_train={n}",
        "data.synthetic.n_val=1",
        "data.synthetic.n_test=1",
        f"data.synthetic.size=[{h},{w}]",
        f"data.label_grid={d.label_grid}",
        "data.holdout=0",
    ]


def compose_row(
    experiment: str,
    overrides: Sequence[str] = (),
    batch_size: int | None = None,
    work: str | Path = WORK,
) -> DictConfig:
    """The experiment's config for timing: synthetic data of its real input size (unless its
    data is synthetic already), ``batch_size`` (default: the experiment's) and the module
    docstring's differences. ``overrides`` go last (e.g. ``trainer.precision=bf16``)."""
    name, work = config_name(experiment), Path(work).resolve()
    head = [f"experiment={experiment}", *overrides]
    real = compose_config(name, head)
    batch = int(batch_size or real.trainer.batch_size)
    data = [] if real.data.get("synthetic") is not None else synthetic_overrides(real, batch, work)
    fixed = [f"output_root={work}", "logger=none", "trainer.workers=0", "model.pretrained=false"]
    return compose_config(name, [*head, *data, *fixed, f"trainer.batch_size={batch}", *overrides])


@dataclass
class RealStep:
    """One call = one real training step on the same host batch (see the module docstring)."""

    cfg: DictConfig
    task: Any
    module: nn.Module  # the bare model (what the optimizer and clipping see)
    model: nn.Module  # what the step calls: ``module`` or its DistributedDataParallel wrapper
    optim_step: OptimStep
    batch: Any  # on the host, as the loader gives it
    device: torch.device
    channels_last: bool = False
    weight: float = 1.0  # this rank's share of the global batch × world size (DDP)

    def __call__(self) -> StepResult:
        batch = to_device(self.batch, self.device, self.channels_last)
        return self.optim_step(
            lambda: self.task.train_step(self.model, batch), weight=self.weight, where="bench step"
        )

    @property
    def batch_size(self) -> int:
        key = "image" if isinstance(self.batch, dict) else 0
        return int(self.batch[key].shape[0])


def first_batch(task: Any, indices: list[int] | None = None) -> Any:
    """The first training batch of epoch 0 from the task's own loader (or the items
    ``indices`` of it, e.g. one rank's share)."""
    batches = task.train_batches(0)
    return next(iter(task.train_loader(0, [indices if indices is not None else batches[0]])))


def build_task(cfg: DictConfig) -> Any:
    """The experiment's task (``task_factory(cfg.task)``), generating the synthetic data once."""
    return task_factory(cfg.task)(cfg)


def build_step(
    cfg: DictConfig, device: torch.device, wrap=None, indices=None, task=None
) -> RealStep:
    """The task (unless given), model, optimizer and :class:`OptimStep` of ``cfg`` on
    ``device``. ``wrap(module) -> (module, model)`` (e.g. SyncBatchNorm + DDP) and ``indices``
    (this rank's items of the first batch) are for distributed timing."""
    task = task if task is not None else build_task(cfg)
    module = task.build_model().to(device).train()
    channels_last = bool(cfg.trainer.get("channels_last", False))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module, model = wrap(module) if wrap else (module, module)
    optimizer = build_optimizer(module, cfg.optim)
    step = OptimStep.from_config(module, optimizer, device, cfg.trainer)
    batch = first_batch(task, indices)
    return RealStep(cfg, task, module, model, step, batch, device, channels_last)
