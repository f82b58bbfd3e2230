"""A tiny synthetic BSDS500 tree in the exact official layout (for tests and demos, no download).

``make_synthetic_bsds(out)`` writes ``out/BSR/BSDS500/data/images/{train,val,test}/<id>.jpg`` and
``.../groundTruth/<split>/<id>.mat`` (variable ``groundTruth``: a 1×K cell of structs with
``Segmentation`` uint16 labels from 1 and ``Boundaries`` uint8). Each image is a few Voronoi
regions, each with its own colour and oriented sinusoidal texture (so regions differ in texture
statistics, not only in mean colour). The "humans" differ slightly: human 1 is the true
partition, the others see jittered region seeds (wiggled boundaries), and human 3 (if any)
merges two adjacent regions. Every third image (index 1, 4, ...) of a split is portrait.

Example::

    root = make_synthetic_bsds("/tmp/bsds")      # then BSDS(root, "train")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

_SPLIT_BASE = {"train": 1000, "val": 2000, "test": 3000}  # image ids: 1000, 1001, ...


def _voronoi(seeds: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-seed labels 0..n-1. Shape: seeds (n, 2) -> (h, w)."""
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return np.argmin(d, axis=-1)


def _relabel(lab: np.ndarray) -> np.ndarray:
    """Consecutive labels from 1 (uint16)."""
    _, inv = np.unique(lab, return_inverse=True)
    return (inv.reshape(lab.shape) + 1).astype(np.uint16)


def _boundaries(seg: np.ndarray) -> np.ndarray:
    """1 where a pixel's right or lower neighbour has another label (uint8)."""
    b = np.zeros(seg.shape, dtype=np.uint8)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1, :] |= seg[:-1, :] != seg[1:, :]
    return b


def synthetic_image(rng: np.random.Generator, h: int, w: int, n_humans: int):
    """One textured image and its human segmentations.

    Shape: -> image (h, w, 3) uint8, K × (h, w) uint16
    """
    n_reg = int(rng.integers(3, 6))
    seeds = rng.random((n_reg, 2)) * [h, w]
    truth = _voronoi(seeds, h, w)  # (h, w)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for r in range(n_reg):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
        wave = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6.3))
        amp = rng.uniform(20, 60)
        colour = rng.uniform(40, 215, 3)
        m = truth == r
        img[m] = colour + amp * wave[m, None] * rng.uniform(0.5, 1.0, 3)
    img += rng.normal(0, 6, img.shape)
    image = np.clip(img, 0, 255).astype(np.uint8)
    gts = [_relabel(truth)]
    for s in range(1, n_humans):
        jitter = seeds + rng.normal(0, 0.02 * min(h, w), seeds.shape)
        seg = _voronoi(jitter, h, w)
        if s == 2 and n_reg > 2:  # this human merges region 1 into its nearest other region
            other = np.argsort(((seeds - seeds[1]) ** 2).sum(1))[1]
            seg = np.where(seg == 1, other, seg)
        gts.append(_relabel(seg))
    return image, gts


def write_groundtruth(path: str | os.PathLike, gts: list[np.ndarray]) -> None:
    """Write a BSDS ``groundTruth`` .mat: 1×K cell of structs (Segmentation, Boundaries)."""
    cell = np.empty((1, len(gts)), dtype=object)
    for s, g in enumerate(gts):
        g = np.asarray(g, dtype=np.uint16)
        cell[0, s] = {"Segmentation": g, "Boundaries": _boundaries(g)}
    sio.savemat(str(path), {"groundTruth": cell}, do_compression=True)


def make_synthetic_bsds(
    out_dir: str | os.PathLike,
    n_train: int = 8,
    n_val: int = 4,
    n_test: int = 4,
    size: tuple[int, int] = (96, 144),
    n_humans: int = 3,
    seed: int = 0,
) -> Path:
    """Write a small BSDS500-format tree and return ``out_dir`` (the root for :class:`BSDS`).

    Deterministic for a seed: image i of a split depends only on (seed, split, i). ``size`` is
    (H, W) of landscape images; portrait ones are (W, H).
    """
    if n_humans < 1:
        raise ValueError(f"n_humans must be >= 1, got {n_humans}")
    if min(size) < 8:
        raise ValueError(f"size must be at least 8×8, got {size}")
    out = Path(out_dir)
    data = out / "BSR" / "BSDS500" / "data"
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        (data / "images" / split).mkdir(parents=True, exist_ok=True)
        (data / "groundTruth" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, _SPLIT_BASE[split], i])
            h, w = (size[1], size[0]) if i % 3 == 1 else size
            image, gts = synthetic_image(rng, h, w, n_humans)
            iid = str(_SPLIT_BASE[split] + i)
            Image.fromarray(image).save(data / "images" / split / f"{iid}.jpg", quality=95)
            write_groundtruth(data / "groundTruth" / split / f"{iid}.mat", gts)
    return out
