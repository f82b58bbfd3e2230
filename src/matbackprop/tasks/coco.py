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
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from matbackprop.data import transforms as T
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.synthetic import ensure_generated, make_synthetic_coco
from matbackprop.engine.checkpoint import seed_worker
from matbackprop.engine.distributed import gather, shard
from matbackprop.engine.logging import Confusion, Table
from matbackprop.errors import ConfigError
from matbackprop.models.backbones import trunk_geometry
from matbackprop.models.build import build_model
from matbackprop.tasks import DataError

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


def ensure_synthetic(root: str | Path, params: Mapping[str, Any]) -> Path:
    """Generate the synthetic COCO set under ``root`` once (see :func:`ensure_generated`)."""
    kwargs = dict(params)
    for key in ("image_size", "objects_per_image"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    try:
        return ensure_generated(root, kwargs, make_synthetic_coco)
    except FileExistsError as err:
        raise DataError(str(err)) from err


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


class CocoTask:
    """Region classification on MSCOCO (or the synthetic set); see the module docstring."""

    monitor = "val_error"
    monitor_mode = "min"

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        d = cfg.data
        if d.get("synthetic") is not None:
            root = ensure_synthetic(d.root, OmegaConf.to_container(d.synthetic, resolve=True))
        else:
            root = Path(d.root)
            check_coco_data(
                root,
                {
                    "train annotations": d.train_ann,
                    "val annotations": d.val_ann,
                    "train images": d.train_images,
                    "val images": d.val_images,
                },
            )
        common = dict(
            crop_size=int(d.crop_size),
            max_side=int(d.max_side),
            jitter=int(d.jitter),
            hflip=d.get("hflip"),
            mean_fill=bool(d.get("mean_fill", False)),
            mask_size=int(d.mask_size),
            min_area=int(d.min_area),
            seed=int(d.get("subset_seed", 0)),
        )
        try:
            self.train_set = CocoRegions(
                root,
                d.train_ann,
                train=True,
                image_dir=root / d.train_images,
                max_items=d.get("max_train_items"),
                **common,
            )
            self.val_set = CocoRegions(
                root,
                d.val_ann,
                train=False,
                image_dir=root / d.val_images,
                max_items=d.get("max_val_items"),
                **common,
            )
        except (FileNotFoundError, ValueError) as err:
            msg = str(err) if "make data-coco" in str(err) else f"{err}; {HINT}"
            raise DataError(msg) from err
        if self.train_set.class_names != self.val_set.class_names:
            raise DataError(f"train and val annotation files of {root} list different categories")
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise DataError(
                f"no usable regions in {root} (train {len(self.train_set)}, val {len(self.val_set)})"
            )
        self._init_grid()
        self.num_classes = self.train_set.num_classes
        self.class_names = list(self.train_set.class_names)
        print(
            f"[coco] {root}: {len(self.train_set)} train / {len(self.val_set)} val regions, "
            f"{self.num_classes} classes; skipped train {self.train_set.skipped}, "
            f"val {self.val_set.skipped}"
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

    def _loader(self, dataset, train: bool) -> DataLoader:
        t = self.cfg.trainer
        bs = int(t.batch_size) if train else int(t.get("eval_batch_size") or t.batch_size)
        workers = int(t.get("workers", 0))
        return DataLoader(
            dataset,
            batch_size=bs,
            shuffle=train,
            drop_last=train and len(dataset) > bs,  # no size-1 last batch for BatchNorm
            num_workers=workers,
            worker_init_fn=seed_worker if workers else None,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def train_loader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def train_step(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["image"], self.grid_mask(batch["mask"]))  # (B, K)
        loss = F.cross_entropy(logits.float(), batch["label"])
        error = (logits.argmax(1) != batch["label"]).float().mean().item() * 100.0
        return loss, {"error": error}

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
    def predict(self, model: nn.Module, indices: list[int]) -> tuple[Tensor, Tensor]:
        """Logits and labels of val regions ``indices``, sharded over ranks and gathered.

        Shape: -> (len(indices), K) float32, (len(indices),) int64, in ``indices`` order.
        """
        device = next(model.parameters()).device
        mine = [indices[i] for i in shard(len(indices))]
        local = []
        loader = self._loader(torch.utils.data.Subset(self.val_set, mine), train=False)
        for batch in loader:
            mask = self.grid_mask(batch["mask"].to(device))
            out = model(batch["image"].to(device), mask).float().cpu()  # (B, K)
            local += [(o, int(y)) for o, y in zip(out, batch["label"])]
        both = gather(local, len(indices))
        return torch.stack([o for o, _ in both]), torch.tensor([y for _, y in both])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Scores on the monitor subset (:meth:`monitor_indices`), with tables and spectra."""
        indices = self.monitor_indices()
        logits, labels = self.predict(model, indices)
        metrics = classification_metrics(logits, labels, self.class_names)
        metrics["val_items"] = len(indices)
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
    def final_evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Scalars on the whole val set (every kept region), for ``final.json``."""
        logits, labels = self.predict(model, list(range(len(self.val_set))))
        metrics = classification_metrics(logits, labels, self.class_names)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        return {**scalars, "val_items": len(labels)}


def build_task(cfg: DictConfig) -> CocoTask:
    """Entry used by the engine (``task: coco``)."""
    return CocoTask(cfg)
