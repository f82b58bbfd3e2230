"""BSDS full-image segmentation with DeepNCut (SPEC §5–§6) as an engine task.

    python -m matbackprop.train --config-name bsds experiment=table2_deepncut_alexnet data.root=data/bsds

Train: each step takes a batch of training images (grouped by orientation), one human
segmentation per image chosen at random (``data.human: random``, or ``first``), downsamples
it to the feature grid and minimises ``ncut_alignment_loss`` (mean over the batch); the
numerical rank of Z is logged (the paper monitors it).
Evaluate: features → spectral embedding → k-means for each k in ``eval.ks`` (one scale per k)
→ upsampling, connected components, small-piece merge → ``segs/<id>.mat`` in the official
format → the BSDS region benchmark (covering ODS / OIS / Best, PRI, VI) over all humans.

No model selection on test: a training run holds out ``data.holdout`` (a fraction, seeded by
``data.holdout_seed``) of the training images; :meth:`BsdsTask.evaluate` scores them after
each epoch (they pick ``best.pt``) and :meth:`BsdsTask.final_evaluate` scores the test split
(``data.val_split``) once per checkpoint. Without training (``trainer.epochs=0``, the
not-fine-tuned rows) nothing is selected and ``evaluate`` scores the test split. Both shard the
images over DDP ranks (each rank writes its own ``segs``) and run the benchmark once on the
gathered per-image results.

Grid alignment (``data.label_grid: receptive``): ground truth is sampled onto the feature grid
at the trunk's unit centres, and segment labels go back to full resolution through the same
cells (``uniform``: equal cells).
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matbackprop.data import transforms as T
from matbackprop.data.bad_items import (
    SKIP_HINT,
    check_on_error,
    fetch,
    item_generator,
)
from matbackprop.data.bsds import BSDS
from matbackprop.data.synthetic import make_synthetic_bsds
from matbackprop.data.transforms import normalize
from matbackprop.engine.distributed import gather, is_main, shard
from matbackprop.engine.logging import Figure, Table
from matbackprop.engine.preemption import poll_evaluation
from matbackprop.errors import ConfigError
from matbackprop.evaluation.covering import collect, evaluate_segs
from matbackprop.evaluation.segment import segment_from_features, write_segs
from matbackprop.models.backbones import trunk_geometry
from matbackprop.models.build import build_model
from matbackprop.models.deepncut import ncut_loss_on_grid, tap_table
from matbackprop.tasks.base import DataError, Task

LABEL_GRIDS = ("receptive", "uniform")

HINT = "run `make data-bsds` to download BSDS500, or set data.root=/path/to/bsds"
SUMMARY = ("cover_ods", "cover_ois", "cover_best", "pri_ods", "pri_ois", "vi_ods", "vi_ois")


def to_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) -> ImageNet-normalised float32 (3, H, W)."""
    return torch.from_numpy(normalize(image))


class TrainImages(Dataset):
    """BSDS items as training pairs: normalised image and one human segmentation.

    The human (``human="random"``) and the flip of item ``i`` in epoch ``e`` (``set_epoch``)
    are drawn from a generator seeded from ``(seed, e, i)``
    (:func:`matbackprop.data.bad_items.item_seed`), so they do not depend on ranks, DataLoader
    workers or the resume point. ``on_error="skip"`` replaces a bad image by the next one of
    the same size that loads (an image whose header is unreadable takes the size of the next
    readable one, which then replaces it).

    Item: dict(image (3, H, W) float32, seg (H, W) int64 labels ≥ 1, id str, bad int).
    """

    def __init__(
        self,
        bsds: BSDS,
        human: str = "random",
        hflip: bool = True,
        seed: int = 0,
        on_error: str = "raise",
    ) -> None:
        if human not in ("random", "first"):
            raise ValueError(f"data.human must be 'random' or 'first', got {human!r}")
        self.bsds, self.human, self.hflip = bsds, human, hflip
        self.seed, self.on_error, self.epoch = int(seed), check_on_error(on_error), 0
        sizes: list[tuple[int, int] | None] = []  # (H, W) per item from the JPEG header
        for iid, img, _ in bsds.items:
            try:
                with Image.open(img) as im:
                    sizes.append((im.height, im.width))
            except (OSError, SyntaxError, ValueError) as e:
                if on_error == "raise":
                    raise DataError(
                        f"cannot read BSDS image {img} (image id {iid}): {e}; the file is "
                        f"truncated or corrupt: {HINT}; {SKIP_HINT}"
                    ) from e
                sizes.append(None)
        good = [k for k, sz in enumerate(sizes) if sz is not None]
        if sizes and not good:
            raise DataError(f"no readable training image in {bsds.data_dir}; {HINT}")
        n = len(sizes)
        self.sizes = [
            sz or sizes[min(good, key=lambda j: (j - k) % n)] for k, sz in enumerate(sizes)
        ]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose human/flip draws ``ds[i]`` uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.bsds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        same_size = lambda j: self.sizes[j] == self.sizes[i]  # noqa: E731  (batches need it)
        item = fetch(self.bsds.load, i, len(self), self.on_error, accept=same_size)
        gts, g = item["gts"], item_generator(self.seed, self.epoch, i)
        s = int(torch.randint(len(gts), (), generator=g)) if self.human == "random" else 0
        image, seg = to_tensor(item["image"]), torch.from_numpy(gts[s].astype(np.int64))
        if self.hflip and bool(torch.rand((), generator=g) < 0.5):
            image, seg = image.flip(-1), seg.flip(-1)
        return {"image": image, "seg": seg, "id": item["id"], "bad": item["bad"]}


class SameSizeBatches(torch.utils.data.Sampler):
    """Shuffled batches of images of one size (landscape and portrait are never mixed).

    The order is drawn from ``generator`` (a seeded ``torch.Generator``; default: the global RNG).
    """

    def __init__(
        self,
        sizes: list[tuple[int, int]],
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ):
        self.sizes, self.batch_size, self.shuffle = sizes, batch_size, shuffle
        self.generator = generator

    def _batches(self) -> list[list[int]]:
        g = self.generator
        n = len(self.sizes)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else range(n)
        groups: dict[tuple[int, int], list[int]] = {}
        for i in order:
            groups.setdefault(self.sizes[i], []).append(i)
        batches = [
            g_[j : j + self.batch_size]
            for g_ in groups.values()
            for j in range(0, len(g_), self.batch_size)
        ]
        if self.shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:  # from the group sizes: no shuffling, no draw from the RNG
        return sum(-(-n // self.batch_size) for n in Counter(self.sizes).values())


def check_bsds_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"BSDS data folder not found: {root} (data.root); {HINT}")


class BsdsTask(Task):
    """DeepNCut on BSDS (or the synthetic set); see the module docstring."""

    monitor = "val_cover_ods"
    monitor_mode = "max"
    hint = HINT

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        d = cfg.data
        root = self.data_root(make_synthetic_bsds, check_bsds_root, tuples=("size",))
        version = int(d.get("version", 500))
        on_error = str(d.get("on_error", "raise"))
        with self.data_errors():
            self.train_set = BSDS(root, d.train_split, version=version, on_error=on_error)
            self.val_set = BSDS(root, d.val_split, version=version, on_error=on_error)
        for name in ("train", "val"):
            limit = d.get(f"max_{name}_images")
            ds = getattr(self, f"{name}_set")
            if limit is not None:
                ds.items = ds.items[: int(limit)]
        self.holdout_set = split_holdout(self.train_set, d, training=int(cfg.trainer.epochs) > 0)
        self.train_items = TrainImages(
            self.train_set,
            d.get("human", "random"),
            bool(d.get("hflip", True)),
            seed=int(cfg.trainer.seed),
            on_error=on_error,
        )
        self.run_dir = Path(cfg.run_dir)
        self._init_grid()
        held_n = len(self.holdout_set) if self.holdout_set else 0
        self.data_stats = {"train_images": len(self.train_set), "holdout_images": held_n,
                           "val_images": len(self.val_set)}  # fmt: skip
        held = f" (+ {len(self.holdout_set)} held out for selection)" if self.holdout_set else ""
        print(
            f"[bsds] {root}: BSDS{version} {d.train_split} {len(self.train_set)}{held} / "
            f"{d.val_split} {len(self.val_set)} images"
        )

    # ------------------------------------------------------------------ feature grid
    def _init_grid(self) -> None:
        self.label_grid = str(self.cfg.data.get("label_grid", "receptive"))
        if self.label_grid not in LABEL_GRIDS:
            raise ConfigError(
                f"data.label_grid must be one of {LABEL_GRIDS}, got {self.label_grid!r}"
            )
        m = self.cfg.model
        trunk, tiny_out = m.get("trunk", "alexnet"), int(m.get("tiny_out", 32))
        index, _ = tap_table(trunk, tiny_out)
        depth = (
            index[list(m.get("taps", ["relu5"]))[0]] + 1
        )  # features live on the first tap's grid
        tiny = dict(width=int(m.get("tiny_width", 32)), out_channels=tiny_out)
        g = trunk_geometry(trunk, (64, 64), depth=depth, **tiny)
        self.stride, self.offset = float(g.stride), float(g.offset)

    def _axis(self, n_in: int, n_out: int) -> tuple[float, float]:
        if self.label_grid == "receptive":
            return self.stride, self.offset
        return T.uniform_grid(n_in, n_out)

    def grid_labels(self, seg: Tensor, size: tuple[int, int]) -> Tensor:
        """Label maps sampled onto the feature grid at the units' centres.

        Shape: seg (B, H, W) -> (B, h, w) int64.
        """
        (h_in, w_in), (h, w) = seg.shape[-2:], size
        rows = torch.from_numpy(T.grid_sample_index(h_in, h, *self._axis(h_in, h)))
        cols = torch.from_numpy(T.grid_sample_index(w_in, w, *self._axis(w_in, w)))
        return seg[:, rows.to(seg.device)][:, :, cols.to(seg.device)].long()

    def upsample_index(self, grid: tuple[int, int], full: tuple[int, int]) -> tuple:
        """(rows, cols): the grid row / column of each full-resolution row / column."""
        return tuple(
            T.grid_upsample_index(n_in, n_out, *self._axis(n_in, n_out))
            for n_in, n_out in zip(full, grid)
        )

    # ------------------------------------------------------------------ engine hooks
    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model)

    def train_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches (one image size each), seeded by (trainer.seed, epoch)."""
        bs, g = int(self.cfg.trainer.batch_size), self.epoch_generator(epoch)
        return SameSizeBatches(self.train_items.sizes, bs, generator=g)._batches()

    def train_loader(self, epoch: int, batches: list[list[int]]) -> DataLoader:
        items = self.train_items  # built once in __init__ (seed, on_error)
        items.set_epoch(epoch)  # per-item randomness: (seed, epoch, index)
        return self.loader(items, batches)

    def train_step(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        feats = model(batch["image"])  # (B, d, h, w) ≥ 0
        loss, rank = ncut_loss_on_grid(
            feats.float(),
            self.grid_labels(batch["seg"], feats.shape[-2:]),  # (B, h, w)
            eps=float(self.cfg.model.get("ncut_eps", 1e-6)),
            return_rank=True,
        )
        bad = self.bad_items.add("train", self.train_items.epoch, batch.get("bad", 0))
        rank_z = rank.double().mean().detach()  # a tensor: read with the loss, one sync per step
        return loss.mean(), {"rank_z": rank_z, "count_bad_items": bad}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """The region benchmark on the held-out training images (the test split when nothing
        is held out); writes ``segs/`` only when it scores the test split."""
        if self.holdout_set is not None:
            return self.benchmark(model, self.holdout_set, epoch, seg_dir=None)
        return self.benchmark(model, self.val_set, epoch, seg_dir=self.run_dir / "segs")

    @torch.no_grad()
    def final_evaluate(self, model: nn.Module, which: str | None = None) -> dict[str, Any]:
        """Scalars of the region benchmark on the test split (``data.val_split``), for
        ``final.json``; ``segs/`` (``segs_<which>/`` when given) holds the segmentations."""
        seg_dir = self.run_dir / ("segs" if which is None else f"segs_{which}")
        metrics = self.benchmark(model, self.val_set, None, seg_dir=seg_dir)
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    def benchmark(
        self, model: nn.Module, dataset: BSDS, epoch: int | None, seg_dir: Path | None
    ) -> dict[str, Any]:
        """Segment every image of ``dataset`` (sharded over ranks) and score them together."""
        ev = self.cfg.get("eval", {})
        ks = [int(k) for k in ev.get("ks", [2, 4, 8, 16, 32])]
        min_size, n_overlays = int(ev.get("min_size", 1024)), int(ev.get("overlays", 4))
        eps = float(self.cfg.model.get("ncut_eps", 1e-6))
        device = next(model.parameters()).device
        local, overlays = [], []
        for i in shard(len(dataset)):
            poll_evaluation()  # a stop signal is answered within one image
            item = dataset[i]
            image = to_tensor(item["image"]).unsqueeze(0).to(device)
            feats = model(image).float()  # (1, d, h, w)
            seg0 = torch.from_numpy(item["gts"][0].astype(np.int64)).unsqueeze(0).to(device)
            seg0 = self.grid_labels(seg0, feats.shape[-2:])  # (1, h, w)
            loss, rank = ncut_loss_on_grid(feats, seg0, eps=eps, return_rank=True)
            h, w = item["image"].shape[:2]
            segs = segment_from_features(
                feats[0].permute(1, 2, 0).cpu(),
                (h, w),
                ks=ks,
                min_size=min_size,
                eps=eps,
                seed=0,
                index=self.upsample_index(feats.shape[-2:], (h, w)),
            )
            if seg_dir is not None:
                write_segs(seg_dir / f"{item['id']}.mat", segs)
            result = evaluate_segs(segs, item["gts"], image_id=item["id"])
            local.append((result, loss.item(), rank.item(), int(item.get("bad", 0))))
            if is_main() and len(overlays) < n_overlays:
                overlays.append((item, segs))
        everything = gather(local, len(dataset))
        if epoch is not None:  # the cap on replaced items applies per evaluation
            self.bad_items.reset("val", epoch)
            self.bad_items.add("val", epoch, sum(int(x[3]) for x in everything))
        summary = collect([x[0] for x in everything])
        metrics: dict[str, Any] = {f"val_{k}": float(summary[k]) for k in SUMMARY}
        metrics["val_cover_ods_k"] = ks[int(np.argmax(summary["cover_curve"]))]
        metrics["val_loss"] = float(np.mean([x[1] for x in everything]))
        metrics["val_rank_z"] = float(np.mean([x[2] for x in everything]))
        metrics["val_images"] = len(dataset)
        metrics["val_bad_items"] = sum(int(item_bad) for *_, item_bad in everything)
        if epoch is None:
            return metrics
        metrics["per_scale"] = Table(
            ["k", "cover", "pri", "vi"],
            [
                [k, float(c), float(r), float(v)]
                for k, c, r, v in zip(
                    ks, summary["cover_curve"], summary["ri_curve"], summary["voi_curve"]
                )
            ],
        )
        if overlays:
            path = save_overlays(
                overlays,
                int(np.argmax(summary["cover_curve"])),
                self.run_dir / "overlays" / f"epoch{epoch + 1:03d}.png",  # counted from 1
            )
            metrics["overlays"] = Figure(str(path))
        return metrics


def split_holdout(train: BSDS, d: DictConfig, training: bool = True) -> BSDS | None:
    """Move ``data.holdout`` (fraction, at least one image) of ``train``'s images, drawn with
    ``data.holdout_seed``, into a new held-out set (returned; ``None`` for 0 or no training).

    The held-out images pick ``best.pt`` and the epochs: the test split is never used for that.
    """
    frac = float(d.get("holdout", 0.0) or 0.0)
    if not training or frac <= 0:
        return None
    if not frac < 1:
        raise ConfigError(f"data.holdout must be a fraction in [0, 1), got {frac}")
    n = len(train.items)
    k = max(1, round(frac * n))
    if k >= n:
        raise DataError(f"data.holdout={frac} leaves no training images out of {n}")
    rng = np.random.default_rng(int(d.get("holdout_seed", 0)))
    pick = set(rng.choice(n, size=k, replace=False).tolist())
    held = copy.copy(train)
    held.items = [it for i, it in enumerate(train.items) if i in pick]
    train.items = [it for i, it in enumerate(train.items) if i not in pick]
    return held


def save_overlays(items: list, scale: int, path: Path) -> Path:
    """Figure rows of image | first human | our segmentation at the ODS scale (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import mark_boundaries

    fig, axes = plt.subplots(len(items), 3, figsize=(9, 2.6 * len(items)), squeeze=False)
    for row, (item, segs) in zip(axes, items):
        img = item["image"]
        panels = [
            (img, item["id"]),
            (mark_boundaries(img, item["gts"][0]), "human 1"),
            (mark_boundaries(img, segs[scale]), f"ours ({segs[scale].max()} segments)"),
        ]
        for ax, (im, title) in zip(row, panels):
            ax.imshow(im)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def build_task(cfg: DictConfig) -> BsdsTask:
    """Entry used by the engine (``task: bsds``)."""
    return BsdsTask(cfg)
