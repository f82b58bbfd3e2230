"""MSCOCO 2014 instance regions for region classification (SPEC §4, DeepO2P).

One item per (non-crowd, non-degenerate) instance annotation: its bounding box is resampled so
the largest side is ``max_side``, placed on a ``crop_size`` canvas (random jitter and flip when
training), normalised with ImageNet statistics, and returned with the instance mask averaged
onto a ``mask_size`` grid for masked pooling. Category ids (1..90 with gaps for COCO) map to
labels 0..K-1 in sorted id order.

Quick look (after ``make data-coco``)::

    ds = CocoRegions("data/coco", "annotations/instances_val2014.json", train=False)
    item = ds[0]  # image (3, 227, 227), label (), mask (13, 13), ann_id, bad

Augmentation randomness (jitter, flip) of item ``i`` is drawn from a ``torch.Generator`` seeded
from ``(aug_seed, epoch, i)`` (``set_epoch``; see :func:`matbackprop.data.bad_items.item_seed`),
never from the global RNG: an item is identical whatever the number of ranks, DataLoader
workers or the resume point. A :class:`~matbackprop.errors.DataError` names the file, the image
and annotation id; ``on_error="skip"`` replaces a bad item by the next one that loads.
:class:`matbackprop.data.region_store.PreparedCocoRegions` reads the same items from a store
written once by ``scripts/prepare_coco.py``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from matbackprop.data import transforms as T
from matbackprop.data.bad_items import bad_file, check_on_error, fetch, item_generator, read_rgb
from matbackprop.data.validate import coco_problems
from matbackprop.errors import DataError

log = logging.getLogger(__name__)

DATA_HINT = "run `make data-coco` (or point data.root / ann_file at your copy)"
INVALID_HINT = (
    "fix or re-download the annotation file, or set data.on_error=skip to leave out its invalid "
    "images / annotations (counted as `invalid`)"
)


def segmentation_to_rle(segm, height: int, width: int) -> dict | None:
    """Compressed RLE of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE).

    Polygons with fewer than 3 points are dropped (pycocotools would misread a 4-number
    polygon as a box); returns ``None`` when nothing drawable is left.
    """
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, height, width)
    if isinstance(segm, dict) and "counts" in segm:
        counts = segm["counts"]
        counts = counts.encode("ascii") if isinstance(counts, str) else counts
        return {"size": list(segm["size"]), "counts": counts}
    raise ValueError(f"unknown segmentation format: {type(segm).__name__}")


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"corrupt COCO annotation file {path}: {e}; {DATA_HINT}") from e
    if not isinstance(data, dict):
        raise DataError(
            f"{path} is not a COCO instances file: its JSON is a {type(data).__name__}, not an "
            f"object with images/annotations/categories; {DATA_HINT}"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DataError(
            f"{path} is not a COCO instances file (missing keys {missing}); {DATA_HINT}"
        )
    return data


class CocoRegions(torch.utils.data.Dataset):
    """MSCOCO instance regions, one item per kept annotation.

    Args:
        root: folder with the image folders (``train2014/``, ``val2014/``) and ``annotations/``.
        ann_file: instances JSON, absolute or relative to ``root``.
        train: random jitter and flip (else deterministic centred placement, no flip).
        image_dir: image folder; default ``root/<split>`` from ``instances_<split>.json``.
        crop_size: side of the square output canvas (227 for AlexNet).
        max_side: the box is resampled so that its largest side has this many pixels.
        jitter: training shift of the patch on the canvas, uniform in ``[-jitter, jitter]``
            pixels per axis (parts pushed past the canvas edge are cut off).
        hflip: random horizontal flip when training; default ``train``.
        mean_fill: replace pixels outside the instance mask by the mean colour (0 after
            normalisation), SDS-style.
        mask_size: side of the returned pooling mask.
        min_area: instances whose decoded mask has fewer pixels are skipped as ``small``;
            default 64 when ``train``, else 0 (every non-degenerate instance is evaluated).
            Boxes with w or h < 1 and empty segmentations are always skipped (``degenerate``).
        max_items: keep a random subset (drawn with ``seed``, kept in file order) of this size.
        seed: seed of the ``max_items`` subset.
        aug_seed: training augmentation of item ``i`` in epoch ``e`` (``set_epoch``) draws from
            a generator seeded from ``(aug_seed, e, i)``.
        on_error: ``raise`` (a :class:`DataError` naming the file and ids) or ``skip`` (replace
            the item by the next index that loads; the item's ``bad`` is 1). Entries that break
            a rule of :mod:`matbackprop.data.validate` are refused at indexing with ``raise``;
            with ``skip`` an invalid image or annotation entry is left out (counted as
            ``skipped["invalid"]``), while a broken file structure (duplicate ids, missing keys)
            is refused in both modes.

    Shape:
        ``ds[i]`` is a dict: ``image`` float32 ``(3, crop_size, crop_size)`` (ImageNet-normalised,
        padding 0), ``label`` int64 ``()``, ``mask`` float32 ``(mask_size, mask_size)`` (fraction
        of each canvas cell covered by the instance, aligned with the image), ``ann_id`` int,
        ``bad`` int (1 if a bad item was replaced).

    Attributes:
        num_classes, class_names (label order), cat_id_to_label, skipped
        ``{"crowd", "degenerate", "small", "invalid"}``, stats (``skipped`` plus ``kept``),
        epoch, problems (the :class:`~matbackprop.data.validate.Problems` found at indexing).

    The index holds only numpy arrays and one packed byte buffer of RLE masks (cheap to pickle
    and to share with forked ``DataLoader`` workers); images and masks are decoded per item.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        train: bool,
        image_dir: str | Path | None = None,
        crop_size: int = 227,
        max_side: int = 200,
        jitter: int = 16,
        hflip: bool | None = None,
        mean_fill: bool = False,
        mask_size: int = 13,
        min_area: int | None = None,
        max_items: int | None = None,
        seed: int = 0,
        aug_seed: int = 0,
        on_error: str = "raise",
    ):
        if max_side > crop_size:
            raise ValueError(f"max_side ({max_side}) must be <= crop_size ({crop_size})")
        if jitter < 0 or mask_size < 1:
            raise ValueError(f"need jitter >= 0 and mask_size >= 1, got {jitter}, {mask_size}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO root {self.root} does not exist; {DATA_HINT}")
        self.ann_file = self._resolve_ann_file(ann_file)
        self.image_dir = self._resolve_image_dir(image_dir)
        self.train, self.crop_size, self.max_side = bool(train), crop_size, max_side
        self.jitter = jitter if self.train else 0
        self.hflip = self.train and (hflip is None or bool(hflip))
        self.min_area = (64 if self.train else 0) if min_area is None else int(min_area)
        self.mean_fill, self.mask_size = mean_fill, mask_size
        self.aug_seed, self.on_error, self.epoch = int(aug_seed), check_on_error(on_error), 0

        data = _load_json(self.ann_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_id_to_label = {c["id"]: i for i, c in enumerate(cats)}
        self.class_names = [c["name"] for c in cats]
        self.num_classes = len(cats)
        self._index(data, max_items, seed)
        log.info(
            "CocoRegions(%s): %d regions, %d classes; skipped crowd=%d degenerate=%d small=%d "
            "invalid=%d",
            self.ann_file.name,
            len(self),
            self.num_classes,
            self.skipped["crowd"],
            self.skipped["degenerate"],
            self.skipped["small"],
            self.skipped["invalid"],
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation ``ds[i]`` draws (see the class docstring)."""
        self.epoch = int(epoch)

    @property
    def stats(self) -> dict[str, int]:
        """Kept and skipped region counts: ``{"kept", "crowd", "degenerate", "small", "invalid"}``."""
        return {"kept": len(self), **self.skipped}

    # ---------------------------------------------------------------- paths
    def _resolve_ann_file(self, ann_file) -> Path:
        p = Path(ann_file)
        for cand in [p] if p.is_absolute() else [self.root / p, p]:
            if cand.is_file():
                return cand
        shown = p if p.is_absolute() else self.root / p
        raise FileNotFoundError(f"COCO annotation file {shown} not found; {DATA_HINT}")

    def _resolve_image_dir(self, image_dir) -> Path:
        if image_dir is None:
            m = re.fullmatch(r"instances_(\w+)\.json", self.ann_file.name)
            if m is None:
                raise ValueError(
                    f"cannot infer image_dir from {self.ann_file.name} "
                    "(expected instances_<split>.json); pass image_dir"
                )
            image_dir = self.root / m.group(1)
        d = Path(image_dir)
        d = d if d.is_absolute() or d.is_dir() else self.root / d
        if not d.is_dir():
            raise FileNotFoundError(f"COCO image folder {d} not found; {DATA_HINT}")
        return d

    # ---------------------------------------------------------------- index
    def _index(self, data: dict, max_items: int | None, seed: int) -> None:
        f = self.ann_file
        self.problems = coco_problems(data, f, self.cat_id_to_label)
        lines = self.problems.lines
        if self.problems.fatal or (lines and self.on_error == "raise"):
            more = f" (and {len(lines) - 1} more problems: `make check-data` lists them)"
            fix = "" if self.problems.fatal else f"; {INVALID_HINT}"
            err = DataError(f"{lines[0]}{more if len(lines) > 1 else ''}{fix}")
            err.problems = lines
            raise err
        if lines:
            log.warning(
                "%s: leaving out %d invalid annotations (data.on_error=skip), e.g. %s",
                f.name, len(self.problems.bad_anns), lines[0],
            )  # fmt: skip
        bad_images, bad_anns = self.problems.bad_images, self.problems.bad_anns
        images = {im["id"]: im for im in data["images"]}
        img_ids = sorted(images)
        self._hw = np.array(
            [[0, 0] if i in bad_images else [images[i]["height"], images[i]["width"]]
             for i in img_ids], np.int64,
        ).reshape(-1, 2)  # fmt: skip
        self._files = [images[i]["file_name"] for i in img_ids]
        img_pos = {iid: k for k, iid in enumerate(img_ids)}
        self._image_ids = np.array(img_ids, dtype=np.int64)

        skipped = {"crowd": 0, "degenerate": 0, "small": 0, "invalid": 0}
        rows, rles = [], []  # rows: (image pos, label, ann_id, x, y, w, h)
        anns = data["annotations"]
        for ann in tqdm(anns, desc=f"index {self.ann_file.name}", disable=None, leave=False):
            aid = ann["id"]
            if ann.get("iscrowd", 0):
                skipped["crowd"] += 1
                continue
            if aid in bad_anns:
                skipped["invalid"] += 1
                continue
            k = img_pos[ann["image_id"]]
            h, w = (int(v) for v in self._hw[k])
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            rle = segmentation_to_rle(ann["segmentation"], h, w)
            # clip the box to the image; degenerate if < 1 px wide/high or an empty mask
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            area = 0 if rle is None else int(mask_utils.area(rle))
            if x1 - x0 < 1 or y1 - y0 < 1 or area < 1:
                skipped["degenerate"] += 1
                continue
            if area < self.min_area:
                skipped["small"] += 1
                continue
            label = self.cat_id_to_label[ann["category_id"]]
            rows.append((k, label, aid, x0, y0, x1 - x0, y1 - y0))
            rles.append(rle["counts"])
        self.skipped = skipped

        keep = np.arange(len(rows))
        if max_items is not None and max_items < len(rows):
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(len(rows), size=max_items, replace=False))
        table = np.array(rows, dtype=np.float64).reshape(-1, 7)[keep]
        self._img = table[:, 0].astype(np.int64)  # (N,)
        self._label = table[:, 1].astype(np.int64)  # (N,)
        self._ann_id = table[:, 2].astype(np.int64)  # (N,)
        self._box = table[:, 3:7].copy()  # (N, 4) x, y, w, h (clipped)
        kept = [rles[i] for i in keep]
        self._rle_off = np.cumsum([0] + [len(c) for c in kept]).astype(np.int64)  # (N + 1,)
        self._rle_buf = np.frombuffer(b"".join(kept), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._label)

    # ---------------------------------------------------------------- items
    def _rle(self, i: int) -> dict:
        h, w = (int(v) for v in self._hw[self._img[i]])
        counts = self._rle_buf[self._rle_off[i] : self._rle_off[i + 1]].tobytes()
        return {"size": [h, w], "counts": counts}

    def describe(self, i: int) -> str:
        """``"<file> (image id I, annotation A)"`` of item ``i``, for error messages."""
        k = self._img[i]
        return (
            f"{self.image_dir / self._files[k]} (image id {self._image_ids[k]}, "
            f"annotation {self._ann_id[i]})"
        )

    def _load_image(self, i: int) -> np.ndarray:
        k = self._img[i]
        path = self.image_dir / self._files[k]
        if not path.is_file():
            raise bad_file(f"COCO image {self.describe(i)} not found; {DATA_HINT}", path)
        rgb = read_rgb(  # (H, W, 3) uint8
            path, f"COCO image {self.describe(i)}", "re-download it (`make data-coco`)"
        )
        if rgb.shape[:2] != tuple(self._hw[k]):
            raise bad_file(
                f"COCO image {self.describe(i)} is {rgb.shape[1]}x{rgb.shape[0]} but "
                f"{self.ann_file.name} says {self._hw[k][1]}x{self._hw[k][0]}; the image or the "
                "annotation file is from another release: re-download it (`make data-coco`)",
                path,
            )
        return rgb

    def _patch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The box of region ``i`` resampled to largest side ``max_side``: image and soft mask.

        Shape: -> ``(h', w', 3)`` uint8, ``(h', w')`` float32 in [0, 1].
        """
        return crop_region(
            self._load_image(i), mask_utils.decode(self._rle(i)), self._box[i], self.max_side
        )

    def _finish(self, i: int, rgb: np.ndarray, mpatch: np.ndarray, index: int) -> dict:
        """Normalise, place, (jitter, flip), mean-fill and downsample a region's patch.

        Randomness comes from the generator of ``(aug_seed, epoch, index)``.
        """
        h, w = mpatch.shape
        ox, oy = T.centered_offset(self.crop_size, (w, h))
        flip = False
        if self.jitter or self.hflip:
            g = item_generator(self.aug_seed, self.epoch, index)
            dx, dy = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=g).tolist()
            ox, oy = ox + dx, oy + dy
            flip = self.hflip and bool(torch.rand((), generator=g) < 0.5)
        if flip:  # mirror the small patch and its offset: == flipping the pasted canvas
            rgb, mpatch, ox = rgb[:, ::-1], mpatch[:, ::-1], self.crop_size - ox - w
        # == T.paste(T.normalize(rgb), ...) bit for bit, in one pass
        image = T.normalize_paste(rgb, self.crop_size, (ox, oy))  # (3, S, S)
        canvas = np.clip(T.paste(mpatch[None], self.crop_size, (ox, oy))[0], 0.0, 1.0)  # (S, S)
        if self.mean_fill:
            image = T.mean_fill(image, canvas, 0.0)
        mask = T.area_downsample(canvas, self.mask_size)  # (mask_size, mask_size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.tensor(self._label[i], dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "ann_id": int(self._ann_id[i]),
        }

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} regions")
        i = i % len(self)
        return fetch(lambda j: self._finish(j, *self._patch(j), i), i, len(self), self.on_error)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.ann_file}, n={len(self)}, classes={self.num_classes}, "
            f"train={self.train}, crop={self.crop_size}, max_side={self.max_side})"
        )


def crop_region(
    rgb: np.ndarray, inst: np.ndarray, box: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the float box ``(x, y, w, h)`` of an image and its instance mask so that the
    box's largest side is ``max_side`` (what the prepared store holds per region).

    Shape: rgb ``(H, W, 3)`` uint8, inst ``(H, W)`` -> ``(h', w', 3)`` uint8, ``(h', w')``
    float32 soft coverage.
    """
    x, y, w, h = (float(v) for v in box)
    corners = (x, y, x + w, y + h)
    size = T.resized_size(w, h, max_side)  # (w', h')
    return T.crop_resize(rgb, corners, size), T.crop_resize(inst, corners, size)
