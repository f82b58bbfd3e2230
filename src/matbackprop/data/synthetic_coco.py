"""A small synthetic dataset written in the real MSCOCO 2014 instances format.

``make_synthetic_coco(out_dir)`` writes ``train2014/``, ``val2014/`` (JPEG, quality 95) and
``annotations/instances_{train,val}2014.json``, so that ``CocoRegions`` and the training code
run unchanged on it (tests, ``make demo``).

What the objects are. Every class has the SAME mean colour; classes differ only in their
second-order statistics: an object is a sinusoidal grating ``mu + A * sin(2π <x, n_c> / P + φ) * v_c``
whose orientation ``n_c`` and colour axis ``v_c`` (a luminance part shared by all classes plus
a class-specific chroma direction) depend on the class. Average colour is therefore
uninformative, while the pixel covariance ``(A²/2) v_c v_cᵀ`` (and the orientation structure)
separates the classes -- what second-order (O2P) pooling should pick up. Shapes (ellipses,
rotated rectangles, star-like blobs) and sizes are drawn independently of the class. The
background is isotropic, blurred colour noise around a different colour.

Format coverage, per split: gapped category ids written out of order (e.g. 18, 90, 1, 3);
polygons; one multi-polygon object; one ``iscrowd=1`` region with an uncompressed RLE
``{"counts": [...], "size": [h, w]}``; one degenerate (tiny) annotation. ``n_train``/``n_val``
count the regular objects (what ``CocoRegions`` keeps with ``min_area=64``).

Gratings have periods of ``period`` pixels in the image (default 6-10), so they survive JPEG and
the resize to a ``crop_size=64, max_side=56`` crop (>= 4 px there). JPEGs are saved 4:4:4 (no
chroma subsampling) so that the colour axes survive too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.ndimage import gaussian_filter

_BASE_IDS = (1, 3, 18, 90)
_NAMES = ("stripe", "ripple", "weave", "grain", "wave", "comb", "twill", "ridge")
_OBJ_MEAN = np.array([128.0, 122.0, 116.0])  # shared by every class
_BG_MEAN = np.array([85.0, 105.0, 150.0])


def category_ids(num_classes: int) -> list[int]:
    """Gapped COCO-like category ids, sorted: 1, 3, 18, 90, then 95, 100, ..."""
    extra = [90 + 5 * j for j in range(1, max(0, num_classes - len(_BASE_IDS)) + 1)]
    return list(_BASE_IDS[:num_classes]) + extra


def class_colour_axis(c: int, num_classes: int) -> np.ndarray:
    """Unit RGB axis of class ``c``: shared luminance part + class-specific chroma direction."""
    lum = np.ones(3) / math.sqrt(3)
    e1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    e2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)
    phi = math.pi * c / num_classes  # axes are defined up to sign: spread over 180°
    return 0.6 * lum + 0.8 * (math.cos(phi) * e1 + math.sin(phi) * e2)


def class_orientation(c: int, num_classes: int) -> float:
    """Grating orientation of class ``c`` in radians (spread over 180°)."""
    return math.pi * c / num_classes


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[float]:
    """A random class-independent shape (ellipse, rotated rectangle or blob) of radius ~r."""
    kind = rng.integers(3)
    rot = rng.uniform(0, math.pi)
    if kind == 0:  # ellipse
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        px, py = r * np.cos(t), r * rng.uniform(0.5, 1.0) * np.sin(t)
    elif kind == 1:  # rectangle
        a, b = r * 0.8, r * 0.8 * rng.uniform(0.5, 1.0)
        px, py = np.array([-a, a, a, -a]), np.array([-b, -b, b, b])
    else:  # star-like blob
        t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
        rad = r * rng.uniform(0.7, 1.0, size=t.size)
        px, py = rad * np.cos(t), rad * np.sin(t)
    x = cx + px * math.cos(rot) - py * math.sin(rot)
    y = cy + px * math.sin(rot) + py * math.cos(rot)
    return np.round(np.stack([x, y], 1).ravel(), 2).tolist()


def _rasterize(polys: list[list[float]], h: int, w: int) -> dict:
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths of the column-major mask, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


class _Painter:
    """Draws one split's images; holds the RNG and the texture parameters."""

    def __init__(self, rng, size, num_classes, amplitude, period, mean_jitter):
        self.rng, self.h, self.w = rng, size[0], size[1]
        self.k, self.amp, self.period, self.mean_jitter = (
            num_classes,
            amplitude,
            period,
            mean_jitter,
        )
        self.yy, self.xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)  # (H, W)

    def background(self) -> np.ndarray:
        noise = self.rng.normal(0, 1, (self.h, self.w, 3))
        noise = gaussian_filter(noise, sigma=(3, 3, 0))
        noise *= 25.0 / max(noise.std(), 1e-6)
        mean = _BG_MEAN + self.rng.normal(0, 10, 3)
        return mean + noise  # (H, W, 3) float

    def paint(self, img: np.ndarray, mask: np.ndarray, c: int) -> None:
        """Fill ``mask`` pixels of ``img`` with a class-``c`` grating (in place)."""
        rng = self.rng
        theta, v = class_orientation(c, self.k), class_colour_axis(c, self.k)
        period, phase = rng.uniform(*self.period), rng.uniform(0, 2 * math.pi)
        amp = self.amp * rng.uniform(0.7, 1.3)
        mean = _OBJ_MEAN + rng.normal(0, self.mean_jitter, 3)
        m = mask.astype(bool)
        proj = self.xx[m] * math.cos(theta) + self.yy[m] * math.sin(theta)  # (n,)
        s = np.sin(2 * math.pi * proj / period + phase)
        img[m] = mean + amp * s[:, None] * v[None, :]

    def place(self, taken: list, r: float) -> tuple[float, float] | None:
        """Centre for a shape of radius r inside the image, not overlapping ``taken`` boxes."""
        for _ in range(30):
            cx = self.rng.uniform(r + 1, self.w - r - 1)
            cy = self.rng.uniform(r + 1, self.h - r - 1)
            box = (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2)
            if all(
                box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in taken
            ):
                taken.append(box)
                return cx, cy
        return None


def _ann(ann_id, image_id, cat_id, segm, rle, iscrowd=0) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "segmentation": segm,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": iscrowd,
    }


def _write_split(out_dir, split, n_objects, rng, cfg, id_base) -> Path:
    h, w = cfg["image_size"]
    ids, k = cfg["cat_ids"], cfg["num_classes"]
    painter = _Painter(rng, (h, w), k, cfg["amplitude"], cfg["period"], cfg["mean_jitter"])
    img_dir = out_dir / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    lo, hi = cfg["objects_per_image"]
    r_lo, r_hi = (f * min(h, w) for f in cfg["object_radius"])

    def new_image():
        image_id = id_base + len(images) + 1
        name = f"COCO_{split}_{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "height": h, "width": w, "license": 1})
        return image_id, name, painter.background(), []

    def save(name, img):
        pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        pil.save(img_dir / name, quality=95, subsampling=0)

    def add(image_id, segm, rle, c, iscrowd=0):
        anns.append(_ann(id_base + len(anns) + 1, image_id, ids[c], segm, rle, iscrowd))

    made, failures = 0, 0
    while made < n_objects:
        if failures > 50:
            raise ValueError(f"cannot fit objects of >= {2 * cfg['min_area']} px in {h}x{w} images")
        image_id, name, img, taken = new_image()
        n_here = min(int(rng.integers(lo, hi + 1)), n_objects - made)
        for _ in range(n_here):
            c = int(rng.integers(k))
            r = rng.uniform(r_lo, r_hi)
            centre = painter.place(taken, r)
            if centre is None:
                break
            cx, cy = centre
            if made == 0:  # multi-polygon object: two lobes with a gap
                segm = [
                    _polygon(rng, cx - 0.5 * r, cy, 0.42 * r),
                    _polygon(rng, cx + 0.5 * r, cy, 0.42 * r),
                ]
            else:
                segm = [_polygon(rng, cx, cy, r)]
            rle = _rasterize(segm, h, w)
            if mask_utils.area(rle) < 2 * cfg["min_area"]:
                failures += 1
                continue  # too small to count as a regular object
            painter.paint(img, mask_utils.decode(rle), c)
            add(image_id, segm, rle, c)
            made, failures = made + 1, 0
        save(name, img)

    # one extra image: a crowd region (uncompressed RLE) and a degenerate tiny object
    image_id, name, img, _ = new_image()
    crowd = np.zeros((h, w), np.uint8)
    for j in range(4):
        cx, cy = w * (0.15 + 0.12 * j), h * (0.25 + 0.05 * j)
        crowd |= mask_utils.decode(_rasterize([_polygon(rng, cx, cy, 0.06 * min(h, w))], h, w))
    painter.paint(img, crowd, 0)
    segm = _uncompressed_rle(crowd)
    add(image_id, segm, mask_utils.frPyObjects(segm, h, w), 0, iscrowd=1)
    x0, y0 = 0.7 * w, 0.7 * h
    tiny = [[x0, y0, x0 + 3, y0, x0 + 3, y0 + 2, x0, y0 + 2]]  # 6 px < min_area
    rle = _rasterize(tiny, h, w)
    painter.paint(img, mask_utils.decode(rle), k - 1)
    add(image_id, tiny, rle, k - 1)
    save(name, img)

    cats = [{"id": i, "name": _name(j), "supercategory": "texture"} for j, i in enumerate(ids)]
    cats = cats[2:] + cats[:2]  # written out of id order on purpose
    data = {
        "info": {
            "description": "matbackprop synthetic COCO (second-order texture classes)",
            "version": "1.0",
            "year": 2014,
            "contributor": "matbackprop",
            "date_created": "2014-01-01",
            "seed": cfg["seed"],
        },
        "licenses": [
            {"id": 1, "name": "CC0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
        ],
        "images": images,
        "annotations": anns,
        "categories": cats,
    }
    ann_path = out_dir / "annotations" / f"instances_{split}.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(data))
    return ann_path


def _name(j: int) -> str:
    return _NAMES[j] if j < len(_NAMES) else f"texture{j}"


def make_synthetic_coco(
    out_dir: str | Path,
    n_train: int = 400,
    n_val: int = 100,
    image_size: tuple[int, int] = (160, 160),
    num_classes: int = 4,
    objects_per_image: tuple[int, int] = (1, 3),
    seed: int = 0,
    amplitude: float = 40.0,
    period: tuple[float, float] = (6.0, 10.0),
    mean_jitter: float = 8.0,
    min_area: int = 64,
    object_radius: tuple[float, float] = (0.12, 0.25),
) -> dict:
    """Write a synthetic MSCOCO-2014-format dataset and return its paths.

    Args:
        out_dir: output folder (created); gets ``train2014/``, ``val2014/``, ``annotations/``.
        n_train, n_val: regular objects per split (plus one crowd and one degenerate each).
        image_size: ``(height, width)`` of every image.
        num_classes: number of categories (gapped ids 1, 3, 18, 90, 95, ...).
        objects_per_image: inclusive range of objects per image (fewer when they do not fit).
        seed: everything is a deterministic function of the arguments.
        amplitude: grating amplitude (0-255 scale), scaled per object by U(0.7, 1.3).
        period: range of grating periods in image pixels.
        mean_jitter: per-object std of the mean colour (same for every class).
        min_area: regular objects are drawn with at least ``2 * min_area`` pixels.
        object_radius: range of object radii as fractions of the image's short side (smaller
            values fit more objects per image, e.g. ``(0.05, 0.12)`` for 3-8 per 640x480).

    Returns:
        ``{"root": Path, "train_ann": Path, "val_ann": Path}``.
    """
    if num_classes < 1 or n_train < 1 or n_val < 1:
        raise ValueError(
            f"need num_classes, n_train, n_val >= 1, got {num_classes}, {n_train}, {n_val}"
        )
    lo, hi = objects_per_image
    if not 1 <= lo <= hi:
        raise ValueError(f"objects_per_image must satisfy 1 <= lo <= hi, got {objects_per_image}")
    if not 0 < object_radius[0] <= object_radius[1] < 0.5:
        raise ValueError(f"object_radius must satisfy 0 < lo <= hi < 0.5, got {object_radius}")
    if min(image_size) < 32:
        raise ValueError(f"image_size must be at least 32x32, got {image_size}")
    out_dir = Path(out_dir)
    cfg = {
        "image_size": tuple(image_size),
        "num_classes": num_classes,
        "cat_ids": category_ids(num_classes),
        "objects_per_image": (lo, hi),
        "amplitude": amplitude,
        "period": tuple(period),
        "mean_jitter": mean_jitter,
        "min_area": min_area,
        "object_radius": tuple(object_radius),
        "seed": seed,
    }
    train_rng, val_rng = (np.random.default_rng([seed, s]) for s in (0, 1))
    train_ann = _write_split(out_dir, "train2014", n_train, train_rng, cfg, id_base=0)
    val_ann = _write_split(out_dir, "val2014", n_val, val_rng, cfg, id_base=1_000_000)
    return {"root": out_dir, "train_ann": train_ann, "val_ann": val_ann}
