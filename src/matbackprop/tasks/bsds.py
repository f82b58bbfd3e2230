"""BSDS full-image segmentation with DeepNCut (SPEC §5–§6) as an engine task.

    python -m matbackprop.train --config-name bsds experiment=table2_deepncut_alexnet data.root=data/bsds

Train: each step takes a batch of training images (grouped by orientation), one human
segmentation per image chosen at random (``data.human: random``, or ``first``), downsamples
it to the feature grid and minimises ``ncut_alignment_loss`` (mean over the batch); the
numerical rank of Z is logged (the paper monitors it).
Evaluate: features → spectral embedding → k-means for each k in ``eval.ks`` (one scale per k)
→ upsampling, connected components, small-piece merge → ``segs/<id>.mat`` in the official
format → the BSDS region benchmark (covering ODS / OIS / Best, PRI, VI) over all humans.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matbackprop.data.bad_items import (
    SKIP_HINT,
    BadItemCounter,
    check_on_error,
    fetch,
    item_generator,
)
from matbackprop.data.bsds import BSDS
from matbackprop.data.synthetic import ensure_generated, make_synthetic_bsds
from matbackprop.data.transforms import normalize
from matbackprop.engine.checkpoint import epoch_seed, seed_worker
from matbackprop.engine.logging import Figure, Table
from matbackprop.errors import UserError
from matbackprop.evaluation.covering import collect, evaluate_segs
from matbackprop.evaluation.segment import segment_from_features, write_segs
from matbackprop.models.deepncut import DeepNCut, ncut_loss_on_grid
from matbackprop.tasks import DataError

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


def build_deepncut(cfg: DictConfig) -> nn.Module:
    """DeepNCut from a ``model`` config section (``head: false`` = raw trunk features)."""
    return DeepNCut(
        trunk=cfg.get("trunk", "alexnet"),
        taps=list(cfg.get("taps", ["relu5"])),
        pretrained=bool(cfg.get("pretrained", False)),
        hidden=int(cfg.get("hidden", 256)),
        out_dim=int(cfg.get("out_dim", 64)),
        dropout=float(cfg.get("dropout", 0.5)),
        freeze_through=cfg.get("freeze_through"),
        head=bool(cfg.get("head", True)),
        tiny_width=int(cfg.get("tiny_width", 32)),
        tiny_out=int(cfg.get("tiny_out", 32)),
    )


class BsdsTask:
    """DeepNCut on BSDS (or the synthetic set); see the module docstring."""

    monitor = "val_cover_ods"
    monitor_mode = "max"

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        d = cfg.data
        if d.get("synthetic") is not None:
            params = OmegaConf.to_container(d.synthetic, resolve=True)
            params["size"] = tuple(params["size"])
            try:
                root = ensure_generated(d.root, params, make_synthetic_bsds)
            except FileExistsError as err:
                raise DataError(str(err)) from err
        else:
            root = Path(d.root)
            if not root.is_dir():
                raise DataError(f"BSDS data folder not found: {root} (data.root); {HINT}")
        version = int(d.get("version", 500))
        on_error = str(d.get("on_error", "raise"))
        try:
            self.bad_items = BadItemCounter(int(d.get("max_skipped", 100)))
            self.train_set = BSDS(root, d.train_split, version=version, on_error=on_error)
            self.val_set = BSDS(root, d.val_split, version=version, on_error=on_error)
        except UserError:  # DataError / ConfigError: already say what to fix
            raise
        except (FileNotFoundError, ValueError) as err:
            msg = str(err) if "make data-bsds" in str(err) else f"{err}; {HINT}"
            raise DataError(msg) from err
        for name in ("train", "val"):
            limit = d.get(f"max_{name}_images")
            ds = getattr(self, f"{name}_set")
            if limit is not None:
                ds.items = ds.items[: int(limit)]
        self.train_items = TrainImages(
            self.train_set,
            d.get("human", "random"),
            bool(d.get("hflip", True)),
            seed=int(cfg.trainer.get("seed", 0)),
            on_error=on_error,
        )
        self.run_dir = Path(cfg.run_dir)
        print(
            f"[bsds] {root}: BSDS{version} {d.train_split} {len(self.train_set)} / "
            f"{d.val_split} {len(self.val_set)} images"
        )

    # ------------------------------------------------------------------ engine hooks
    def build_model(self) -> nn.Module:
        return build_deepncut(self.cfg.model)

    def train_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches (one image size each), seeded by (trainer.seed, epoch)."""
        t = self.cfg.trainer
        g = torch.Generator().manual_seed(epoch_seed(int(t.get("seed", 0)), epoch))
        return SameSizeBatches(self.train_items.sizes, int(t.batch_size), generator=g)._batches()

    def train_loader(self, epoch: int, batches: list[list[int]]) -> DataLoader:
        items = self.train_items  # built once in __init__ (seed, on_error)
        items.set_epoch(epoch)  # per-item randomness: (seed, epoch, index)
        workers = int(self.cfg.trainer.get("workers", 0))
        return DataLoader(
            items,
            batch_sampler=batches,
            num_workers=workers,
            worker_init_fn=seed_worker if workers else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_step(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        feats = model(batch["image"])  # (B, d, h, w) ≥ 0
        loss, rank = ncut_loss_on_grid(
            feats.float(),
            batch["seg"],
            eps=float(self.cfg.model.get("ncut_eps", 1e-6)),
            return_rank=True,
        )
        bad = self.bad_items.add("train", self.train_items.epoch, batch.get("bad", 0))
        return loss.mean(), {"rank_z": rank.double().mean().item(), "count_bad_items": bad}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        ev = self.cfg.get("eval", {})
        ks = [int(k) for k in ev.get("ks", [2, 4, 8, 16, 32])]
        min_size, n_overlays = int(ev.get("min_size", 1024)), int(ev.get("overlays", 4))
        eps = float(self.cfg.model.get("ncut_eps", 1e-6))
        device = next(model.parameters()).device
        seg_dir = self.run_dir / "segs"
        results, losses, ranks, overlays = [], [], [], []
        self.bad_items.reset("val", epoch)
        for i in range(len(self.val_set)):
            item = self.val_set[i]
            self.bad_items.add("val", epoch, item["bad"])
            image = to_tensor(item["image"]).unsqueeze(0).to(device)
            feats = model(image).float()  # (1, d, h, w)
            seg0 = torch.from_numpy(item["gts"][0].astype(np.int64)).unsqueeze(0).to(device)
            loss, rank = ncut_loss_on_grid(feats, seg0, eps=eps, return_rank=True)
            losses.append(loss.item())
            ranks.append(rank.item())
            h, w = item["image"].shape[:2]
            segs = segment_from_features(
                feats[0].permute(1, 2, 0).cpu(), (h, w), ks=ks, min_size=min_size, eps=eps, seed=0
            )
            write_segs(seg_dir / f"{item['id']}.mat", segs)
            results.append(evaluate_segs(segs, item["gts"], image_id=item["id"]))
            if len(overlays) < n_overlays:
                overlays.append((item, segs))
        summary = collect(results)
        metrics: dict[str, Any] = {f"val_{k}": float(summary[k]) for k in SUMMARY}
        metrics["val_cover_ods_k"] = ks[int(np.argmax(summary["cover_curve"]))]
        metrics["val_loss"] = float(np.mean(losses))
        metrics["val_rank_z"] = float(np.mean(ranks))
        metrics["val_bad_items"] = self.bad_items.counts.get(("val", epoch), 0)
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
                self.run_dir / "overlays" / f"epoch{epoch:03d}.png",
            )
            metrics["overlays"] = Figure(str(path))
        return metrics


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
