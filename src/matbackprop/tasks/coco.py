"""MSCOCO region classification (DeepO2P, SPEC §4) as an engine task.

    python -m matbackprop.train experiment=table1_deepo2p data.root=/data/coco

Train on ``instances_train2014`` regions, report top-1 classification error (%) on
``instances_val2014`` regions, per class too, with a confusion matrix and, for log-covariance
models, eigenvalue statistics of the pooled matrices. ``data=coco_synthetic`` generates a
small synthetic set in the same format on first use (demo, tests).

Evaluation cost: after each epoch :meth:`CocoTask.evaluate` scores a fixed, seeded subset of
``eval.monitor_items`` val regions (it picks ``best.pt``); :meth:`CocoTask.final_evaluate`
scores the whole val set once (the trainer calls it on ``last.pt`` and ``best.pt``; the table
reports those). Both are sharded over DDP ranks and gathered, so they cover the set exactly.

Region masks reach the model on the trunk's feature grid, averaged over each unit's cell of
the true receptive-field geometry (``data.mask_grid: receptive``; ``uniform`` = equal cells).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from matbackprop.data import transforms as T
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.region_store import (
    PREPARE_HINT,
    PreparedCocoRegions,
    loader_identity,
    store_status,
)
from matbackprop.data.synthetic import make_synthetic_coco
from matbackprop.engine.distributed import gather, shard
from matbackprop.engine.logging import Confusion, Table
from matbackprop.engine.preemption import poll_evaluation
from matbackprop.errors import ConfigError
from matbackprop.models.backbones import trunk_geometry
from matbackprop.models.build import build_model
from matbackprop.tasks.base import DataError, Task

MASK_GRIDS = ("receptive", "uniform")

HINT = "run `make data-coco` to download MSCOCO 2014, or set data.root=/path/to/coco"


def check_coco_data(root: str | Path, files: Mapping[str, str | Path]) -> None:
    """Raise :class:`DataError` naming the first missing path (``files`` relative to ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"COCO data folder not found: {root} (data.root); {HINT}")
    for what, rel in files.items():
        path = root / rel
        if not path.exists():
            raise DataError(f"COCO {what} not found: {path}; {HINT}")


def region_store_for(
    root: Path, store: str | None, images: str, ann: str, common: Mapping[str, Any]
) -> Path | None:
    """The prepared store folder of one split (``data.store``), or None for on-the-fly crops.

    ``auto``: ``<root>/prepared/<images>`` when complete (else None, with a one-line hint);
    ``none``: None; any other value is a folder holding ``<images>/`` stores (must be complete).
    """
    store = "none" if store is None else str(store)
    if store == "none":
        return None
    if store != "auto":
        return Path(store) / Path(images).name
    path = root / "prepared" / Path(images).name
    why = store_status(path, root / ann, int(common["max_side"]))
    if why is None:
        return path
    if path.exists() or not (root / "synthetic.json").is_file():
        print(f"[coco] on-the-fly crops: {why}; for a faster loader {PREPARE_HINT}")
    return None


def classification_metrics(
    logits: Tensor, labels: Tensor, class_names: list[str]
) -> dict[str, Any]:
    """Top-1 error (%), mean per-class error, per-class table and confusion data.

    Shape: logits (N, K), labels (N,).
    """
    pred = logits.argmax(1)  # (N,)
    wrong = (pred != labels).double()
    k = len(class_names)
    count = torch.bincount(labels, minlength=k).double()  # (K,)
    errors = torch.bincount(labels, weights=wrong, minlength=k)  # (K,)
    present = count > 0
    per_class = torch.where(present, 100.0 * errors / count.clamp_min(1), torch.nan)
    rows = [[class_names[c], int(count[c]), float(per_class[c])] for c in range(k)]
    return {
        "val_error": 100.0 * wrong.mean().item(),
        "val_loss": F.cross_entropy(logits.double(), labels).item(),
        "val_mean_class_error": per_class[present].mean().item(),
        "per_class": Table(["class", "n", "error"], rows),
        "confusion": Confusion(labels.tolist(), pred.tolist(), list(class_names)),
    }


def eigen_stats(logcov: Tensor, eps: float) -> dict[str, float]:
    """Spectrum of C = exp(Y) from log-covariances Y: min, max, eigenvalues within 1% of ε.

    Shape: logcov (B, d, d) -> scalars (``eig_near_eps`` is the mean count per matrix).
    """
    lam = torch.linalg.eigvalsh(logcov.double()).exp()  # (B, d)
    near = ((lam - eps).abs() <= 0.01 * eps).sum(1).double()  # (B,)
    return {
        "eig_min": lam.min().item(),
        "eig_max": lam.max().item(),
        "eig_near_eps": near.mean().item(),
        "eig_near_eps_frac": (near / lam.shape[1]).mean().item(),
    }


class CocoTask(Task):
    """Region classification on MSCOCO (or the synthetic set); see the module docstring."""

    monitor = "val_error"
    monitor_mode = "min"
    hint = HINT

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        d = cfg.data
        files = {
            "train annotations": d.train_ann,
            "val annotations": d.val_ann,
            "train images": d.train_images,
            "val images": d.val_images,
        }
        root = self.data_root(make_synthetic_coco, lambda r: check_coco_data(r, files),
                              tuples=("image_size", "objects_per_image"))  # fmt: skip
        common = dict(
            crop_size=int(d.crop_size),
            max_side=int(d.max_side),
            jitter=int(d.jitter),
            hflip=d.get("hflip"),
            mean_fill=bool(d.get("mean_fill", False)),
            mask_size=int(d.mask_size),
            seed=int(d.get("subset_seed", 0)),
            aug_seed=int(cfg.trainer.seed),
            on_error=str(d.get("on_error", "raise")),
        )
        # min_area filters training only; validation keeps every non-degenerate instance
        splits = {
            "train": (d.train_ann, d.train_images, True, int(d.min_area), "max_train_items"),
            "val": (d.val_ann, d.val_images, False, 0, "max_val_items"),
        }
        with self.data_errors():
            for name, (ann, images, train, min_area, limit) in splits.items():
                store = region_store_for(root, d.get("store", "auto"), images, ann, common)
                args = (root, ann, train)
                kwargs = dict(
                    common, image_dir=root / images, min_area=min_area, max_items=d.get(limit)
                )
                ds = PreparedCocoRegions(store, *args, **kwargs) if store else None
                setattr(self, f"{name}_set", ds or CocoRegions(*args, **kwargs))
                # which loader data.store picked is part of the run's identity (resume)
                self.resolved[f"data.loader.{name}"] = loader_identity(getattr(self, f"{name}_set"))
        if self.train_set.class_names != self.val_set.class_names:
            raise DataError(f"train and val annotation files of {root} list different categories")
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise DataError(
                f"no usable regions in {root} (train {len(self.train_set)}, val {len(self.val_set)})"
            )
        self.data_stats = {"train": self.train_set.stats, "val": self.val_set.stats,
                           "class_names": list(self.train_set.class_names)}  # fmt: skip
        self._init_grid()
        self.num_classes = self.train_set.num_classes
        self.class_names = list(self.train_set.class_names)
        print(
            f"[coco] {root}: {len(self.train_set)} train / {len(self.val_set)} val regions, "
            f"{self.num_classes} classes; skipped train {self.train_set.skipped}, "
            f"val {self.val_set.skipped} (min_area={int(d.min_area)} filters training only)"
        )

    # ------------------------------------------------------------------ feature grid
    def _init_grid(self) -> None:
        d, m = self.cfg.data, self.cfg.model
        self.mask_grid = str(d.get("mask_grid", "receptive"))
        if self.mask_grid not in MASK_GRIDS:
            raise ConfigError(f"data.mask_grid must be one of {MASK_GRIDS}, got {self.mask_grid!r}")
        crop = int(d.crop_size)
        tiny = dict(width=int(m.get("tiny_width", 32)), out_channels=int(m.get("tiny_out", 32)))
        self.geometry = trunk_geometry(m.get("trunk", "alexnet"), (crop, crop), **tiny)
        self._grid_ops: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def grid_mask(self, mask: Tensor) -> Tensor:
        """Region masks at any resolution -> coverage of each feature-grid unit's cell.

        ``receptive``: cells around the trunk's unit centres (``offset + i·stride``, scaled to
        the mask's resolution; exact at ``data.mask_size = data.crop_size``); ``uniform``:
        equal cells. Shape: (B, s, s) -> (B, H, W), the trunk's grid.
        """
        s, (h, w) = mask.shape[-1], self.geometry.size
        key = (s, str(mask.device))
        if key not in self._grid_ops:
            ops = []
            for n_out in (h, w):
                if self.mask_grid == "receptive":
                    scale = s / int(self.cfg.data.crop_size)
                    stride, offset = self.geometry.stride * scale, self.geometry.offset * scale
                else:
                    stride, offset = T.uniform_grid(s, n_out)
                a = T.cell_matrix(T.grid_cells(s, n_out, stride, offset), s)  # (n_out, s)
                ops.append(torch.from_numpy(a).float().to(mask.device))
            self._grid_ops[key] = (ops[0], ops[1])
        a_h, a_w = self._grid_ops[key]
        return a_h @ mask.float() @ a_w.T  # (B, H, W)

    # ------------------------------------------------------------------ engine hooks
    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, self.num_classes)

    def train_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches: a permutation seeded by (trainer.seed, epoch) alone, cut
        into ``trainer.batch_size`` pieces (the last, smaller one dropped when there are several:
        no size-1 batch for BatchNorm)."""
        n, bs = len(self.train_set), int(self.cfg.trainer.batch_size)
        order = torch.randperm(n, generator=self.epoch_generator(epoch)).tolist()
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if len(batches) > 1 and len(batches[-1]) < bs:
            batches.pop()
        return batches

    def train_loader(self, epoch: int, batches: list[list[int]]) -> DataLoader:
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        return self.loader(self.train_set, batches)

    def train_step(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["image"], self.grid_mask(batch["mask"]))  # (B, K)
        loss = F.cross_entropy(logits.float(), batch["label"])
        error = (logits.argmax(1) != batch["label"]).float().mean().detach() * 100.0  # read by
        # the trainer together with the loss: one host sync per step
        bad = self.bad_items.add("train", self.train_set.epoch, batch.get("bad", 0))
        return loss, {"error": error, "count_bad_items": bad}

    def monitor_indices(self) -> list[int]:
        """The fixed val subset scored after each epoch: ``eval.monitor_items`` regions drawn
        with ``eval.monitor_seed`` (sorted), or all of them when that is null or larger."""
        ev, n = self.cfg.get("eval", {}), len(self.val_set)
        k = ev.get("monitor_items")
        if k is None or int(k) >= n:
            return list(range(n))
        rng = np.random.default_rng(int(ev.get("monitor_seed", 0)))
        return sorted(rng.choice(n, size=int(k), replace=False).tolist())

    @torch.no_grad()
    def predict(self, model: nn.Module, indices: list[int]) -> tuple[Tensor, Tensor, int]:
        """Logits and labels of val regions ``indices``, sharded over ranks and gathered, and
        how many of them were bad items replaced (``data.on_error=skip``).

        Shape: -> (len(indices), K) float32, (len(indices),) int64, in ``indices`` order.
        """
        device = next(model.parameters()).device
        mine = [indices[i] for i in shard(len(indices))]
        local = []
        loader = self.loader(torch.utils.data.Subset(self.val_set, mine))
        for batch in loader:
            poll_evaluation()  # a stop signal is answered within one batch
            mask = self.grid_mask(batch["mask"].to(device))
            out = model(batch["image"].to(device), mask).float().cpu()  # (B, K)
            bad = batch.get("bad", torch.zeros(len(out), dtype=torch.int64))
            local += [(o, int(y), int(b)) for o, y, b in zip(out, batch["label"], bad)]
        both = gather(local, len(indices))
        logits, labels = torch.stack([o for o, _, _ in both]), torch.tensor([y for _, y, _ in both])
        return logits, labels, sum(b for _, _, b in both)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Scores on the monitor subset (:meth:`monitor_indices`), with tables and spectra."""
        indices = self.monitor_indices()
        logits, labels, bad = self.predict(model, indices)
        self.bad_items.reset("val", epoch)
        metrics_bad = self.bad_items.add("val", epoch, bad)
        metrics = classification_metrics(logits, labels, self.class_names)
        metrics["val_items"] = len(indices)
        metrics["val_bad_items"] = metrics_bad
        n_eig = int(self.cfg.get("eval", {}).get("eig_samples", 8))
        net = getattr(model, "module", model)  # DDP-wrapped or not
        if n_eig > 0 and hasattr(net, "pooled"):
            device = next(model.parameters()).device
            items = [self.val_set[i] for i in indices[:n_eig]]
            images = torch.stack([it["image"] for it in items]).to(device)  # (n, 3, S, S)
            masks = self.grid_mask(torch.stack([it["mask"] for it in items]).to(device))
            metrics.update(eigen_stats(net.pooled(images, masks), net.pool.eps))
        return metrics

    @torch.no_grad()
    def final_evaluate(self, model: nn.Module, which: str = "last") -> dict[str, Any]:
        """Scalars on the whole val set (every kept region), for ``final.json``."""
        logits, labels, bad = self.predict(model, list(range(len(self.val_set))))
        metrics = classification_metrics(logits, labels, self.class_names)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        return {**scalars, "val_items": len(labels), "val_bad_items": bad}


def build_task(cfg: DictConfig) -> CocoTask:
    """Entry used by the engine (``task: coco``)."""
    return CocoTask(cfg)
