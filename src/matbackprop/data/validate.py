"""Validation of data set files, run once when a data set is indexed: the entries of a COCO
instances JSON (:func:`coco_problems`) and the labels of a BSDS segmentation
(:func:`check_labels`). The datasets and ``check-data`` call the same functions.

COCO rules (each broken rule is one line ``<file>: image id I | annotation A: `field` ...``):

- the file's structure (refused whatever ``data.on_error``, ``fatal``): every image has an
  integer ``id`` and ``file_name``/``height``/``width``; every annotation has an integer ``id``,
  ``image_id``, ``category_id``, ``bbox`` (and ``segmentation`` unless crowd) and refers to a
  listed image and category; image ids unique; annotation ids unique (a duplicate would bind
  an annotation to the wrong file or patch);
- one image (its annotations are bad items): ``height``/``width`` integers in
  ``1..MAX_SIDE`` with ``height * width <= MAX_PIXELS`` (checked before any pycocotools
  call, which crashes past 2**32 pixels); ``file_name`` a relative path without ``..`` (it
  never leaves the image folder; symlinks inside the data root are the user's business);
- one non-crowd annotation (a bad item): ``bbox`` four finite numbers; polygon coordinates
  finite numbers within one image size of the image; an RLE's ``size`` equal to the image's
  and its run lengths non-negative, summing to ``height * width``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

MAX_SIDE = 32768  # largest accepted image height / width
MAX_PIXELS = 2**28  # largest accepted height * width (PIL refuses ~1.8e8 pixels anyway)
MAX_LABEL = 65535  # BSDS labels are stored as uint16


@dataclass
class Problems:
    """What :func:`coco_problems` found: every line, and which entries they concern."""

    lines: list[str] = field(default_factory=list)
    fatal: bool = False  # the file's structure is broken: refused in every mode
    bad_images: set[int] = field(default_factory=set)  # image ids
    bad_anns: set[int] = field(default_factory=set)  # annotation ids (incl. of bad images)

    def add(self, line: str, fatal: bool = False) -> None:
        self.lines.append(line)
        self.fatal |= fatal


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _file_name_problem(name) -> str | None:
    if not isinstance(name, str) or not name or "\0" in name:
        return f"`file_name` {name!r} is not a file name"
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("\\"):
        return f"`file_name` {name!r} is not a relative path inside the image folder"
    return None


def _size_problem(h, w) -> str | None:
    for key, v in (("height", h), ("width", w)):
        if not _is_int(v) or not 1 <= v <= MAX_SIDE:
            return f"`{key}` = {v!r} is not an integer in 1..{MAX_SIDE}"
    if h * w > MAX_PIXELS:
        return f"`height` x `width` = {h}x{w} is more than {MAX_PIXELS} pixels"
    return None


def rle_string_counts(s: str | bytes) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, in Python),
    or None if the string is malformed."""
    s = s.encode("ascii", "replace") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                return None
            c = s[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _segmentation_problem(segm, h: int, w: int) -> str | None:
    if isinstance(segm, list):
        lo, hi = -max(h, w), 2 * max(h, w)
        for poly in segm:
            try:  # sum / min / max run in C; a non-number raises TypeError
                if not isinstance(poly, list) or len(poly) % 2:
                    raise TypeError
                ok = not poly or (math.isfinite(sum(poly)) and lo <= min(poly) and max(poly) <= hi)
            except TypeError:
                return "`segmentation` has a polygon that is not a list of x, y numbers"
            if not ok:
                return f"`segmentation` has a polygon coordinate that is not finite in {lo}..{hi}"
        return None
    if not isinstance(segm, dict) or "counts" not in segm:
        return f"`segmentation` is a {type(segm).__name__}, not polygons or an RLE"
    if list(segm.get("size", ())) != [h, w]:
        return f"RLE `size` {segm.get('size')!r} is not the image's [{h}, {w}]"
    counts = segm["counts"]
    if isinstance(counts, list):
        runs = counts if all(map(_is_int, counts)) else None
    elif isinstance(counts, (str, bytes)):
        runs = rle_string_counts(counts)
    else:
        runs = None
    if runs is None:
        return "RLE `counts` is malformed"
    if min(runs, default=0) < 0 or sum(runs) != h * w:
        return f"RLE `counts` cover {sum(runs)} pixels (runs >= 0 must sum to {h}x{w} = {h * w})"
    return None


def coco_problems(data: dict, path, cat_ids) -> Problems:
    """Every broken rule of the instances file ``data`` (read from ``path``); see the module."""
    out = Problems()
    images: dict[int, dict] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "height", "width"} <= im.keys():
            out.add(f"{path}: an entry of 'images' lacks id/file_name/height/width ({im!r})", True)
            continue
        iid = im["id"]
        if not _is_int(iid):
            out.add(f"{path}: images[{k}]: `id` {iid!r} is not an integer", True)
        elif iid in images:
            out.add(f"{path}: image id {iid}: `id` is listed twice in 'images'", True)
        else:
            images[iid] = im
            why = _size_problem(im["height"], im["width"]) or _file_name_problem(im["file_name"])
            if why:
                out.add(f"{path}: image id {iid}: {why}")
                out.bad_images.add(iid)
    seen: set[int] = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            out.add(f"{path}: an annotation is a {type(ann).__name__}, not an object", True)
            continue
        aid = ann.get("id")
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in ann]
        if "segmentation" not in ann and not ann.get("iscrowd", 0):
            missing.append("segmentation")
        if missing:
            out.add(
                f"{path}: annotation {aid} has no {'/'.join(missing)}; the file is not a "
                "complete COCO instances file",
                True,
            )
            continue
        if not _is_int(aid):
            out.add(f"{path}: annotation {aid!r}: `id` is not an integer", True)
            continue
        if aid in seen:
            out.add(f"{path}: annotation {aid}: `id` is listed twice in 'annotations'", True)
            continue
        seen.add(aid)
        im = images.get(ann["image_id"])
        if im is None or ann["category_id"] not in cat_ids:
            out.add(
                f"{path}: annotation {aid} refers to an unknown image {ann['image_id']} or "
                f"category {ann['category_id']}",
                True,
            )
            continue
        if ann.get("iscrowd", 0):
            continue  # crowd regions are never decoded
        if im["id"] in out.bad_images:
            out.bad_anns.add(aid)
            continue
        bbox = ann["bbox"]
        why = None
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_num, bbox)):
            why = f"`bbox` {bbox!r} is not four numbers"
        elif not all(map(math.isfinite, bbox)):
            why = f"`bbox` {bbox!r} is not finite"
        else:
            why = _segmentation_problem(ann["segmentation"], im["height"], im["width"])
        if why:
            out.add(f"{path}: annotation {aid} (image id {im['id']}): {why}")
            out.bad_anns.add(aid)
    return out


def check_labels(seg: np.ndarray) -> str | None:
    """Why a BSDS ``Segmentation`` array is unusable (None if fine): labels must be finite
    integers in ``0..MAX_LABEL`` (uint16, no wrap-around), not all zero."""
    if seg.dtype.kind not in "biuf" or seg.size == 0:
        return f"labels of dtype {seg.dtype} / size {seg.size} are not an integer image"
    if seg.dtype.kind == "f":
        if not np.isfinite(seg).all():
            return "labels contain NaN or infinity"
        if (seg != np.round(seg)).any():
            return "labels are not integers"
    lo, hi = seg.min(), seg.max()
    if lo < 0 or hi > MAX_LABEL:
        return f"labels span {lo:g}..{hi:g}, outside 0..{MAX_LABEL} (uint16)"
    if hi == 0:
        return "labels are all zero (no segment)"
    return None
