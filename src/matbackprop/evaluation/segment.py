"""DeepNCut inference: from non-negative features to multi-scale label maps (SPEC §5).

For each k ("scale"): spectral embedding of ``D^{-1/2} W D^{-1/2}`` with ``W = F Fᵀ`` (the
leading k left singular vectors of ``Z = D^{-1/2} F``, computed from the d × d Gram matrix —
never an m × m matrix), row normalisation, k-means, nearest upsampling to the image size,
4-connected components, and merging of pieces smaller than ``min_size`` pixels into the
neighbour they share the most border with (smallest piece first). Labels are 1..n, uint16, as
the BSDS ``segs`` format wants; :func:`write_segs` writes that format.

Example::

    segs = segment_from_features(feats, (321, 481), ks=(2, 4, 8, 16, 32))
    write_segs("results/segs/2018.mat", segs)
"""

from __future__ import annotations

import heapq
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from skimage.measure import label as cc_label
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from matbackprop.evaluation.covering import load_result_mat
from matbackprop.spectral import spectral_embedding


def embed(features: torch.Tensor | np.ndarray, k: int, eps: float = 1e-6) -> np.ndarray:
    """Row-normalised spectral embedding of the pixels of a feature map.

    Columns beyond min(k, d) are not available (rank ≤ d); rows of norm 0 stay 0.

    Shape: features (h, w, d) ≥ 0 -> (h·w, min(k, d)) float64.
    """
    f = torch.as_tensor(features)
    if f.ndim != 3:
        raise ValueError(f"features must be (h, w, d), got shape {tuple(f.shape)}")
    if not torch.is_floating_point(f):
        f = f.double()
    if not torch.isfinite(f).all() or (f < 0).any():
        raise ValueError("features must be finite and non-negative (ReLU output)")
    h, w, d = f.shape
    z = spectral_embedding(f.reshape(1, h * w, d).double(), min(k, d), eps)[0]  # (m, k')
    v = z.cpu().numpy()
    nrm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, nrm, out=np.zeros_like(v), where=nrm > 0)


def upsample_nearest(
    labels: np.ndarray, out_size: tuple[int, int], index: tuple | None = None
) -> np.ndarray:
    """Nearest-neighbour upsampling with pixel-centre alignment.

    ``index = (rows, cols)``: the grid row / column of each output row / column instead (e.g.
    the trunk's receptive-field cells, ``data.transforms.grid_upsample_index``).

    Shape: labels (h, w) -> (H, W)
    """
    h, w = labels.shape
    rows = np.minimum(((np.arange(out_size[0]) + 0.5) * h / out_size[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(out_size[1]) + 0.5) * w / out_size[1]).astype(int), w - 1)
    if index is not None:
        rows, cols = (np.asarray(i) for i in index)
    return labels[rows[:, None], cols[None, :]]


def merge_small_regions(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Split into 4-connected pieces, then merge pieces < ``min_size`` px into neighbours.

    Each small piece (smallest first, re-queued while still small) joins the neighbour with
    which it shares the most 4-adjacent pixel pairs (ties: the larger neighbour, then the lower
    id). A piece without neighbours is kept. Returns labels 1..n numbered in raster order of
    first appearance.

    Shape: labels (H, W) int -> (H, W) int64
    """
    lab = np.asarray(labels, dtype=np.int64)
    comp = cc_label(lab - lab.min() + 1, connectivity=1, background=0) - 1  # (H, W) 0..n-1
    n = int(comp.max()) + 1
    size = np.bincount(comp.ravel(), minlength=n)
    # shared border lengths between 4-adjacent different pieces
    pairs = [np.c_[comp[:, :-1].ravel(), comp[:, 1:].ravel()],
             np.c_[comp[:-1, :].ravel(), comp[1:, :].ravel()]]  # fmt: skip
    pairs = np.concatenate(pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.sort(pairs, axis=1)
    uniq, cnt = np.unique(pairs, axis=0, return_counts=True)
    adj: list[dict[int, int]] = [dict() for _ in range(n)]
    for (a, b), c in zip(uniq.tolist(), cnt.tolist()):
        adj[a][b] = c
        adj[b][a] = c
    parent = np.arange(n)
    heap = [(int(s), i) for i, s in enumerate(size) if s < min_size]
    heapq.heapify(heap)
    while heap:
        s, i = heapq.heappop(heap)
        if parent[i] != i or s != size[i] or size[i] >= min_size or not adj[i]:
            continue  # stale entry, already big enough, or isolated
        j = max(adj[i], key=lambda x: (adj[i][x], size[x], -x))
        # merge i into j
        parent[i] = j
        size[j] += size[i]
        for x, c in adj[i].items():
            if x == j:
                continue
            adj[x].pop(i)
            adj[x][j] = adj[x].get(j, 0) + c
            adj[j][x] = adj[j].get(x, 0) + c
        adj[j].pop(i)
        adj[i] = {}
        if size[j] < min_size:
            heapq.heappush(heap, (int(size[j]), j))
    # resolve merge chains, then renumber 1..n in raster order
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    merged = root[comp]
    roots, first = np.unique(merged.ravel(), return_index=True)
    lut = np.zeros(n, dtype=np.int64)
    lut[roots] = np.argsort(np.argsort(first)) + 1  # rank of each root by first appearance
    return lut[merged]


def segment_from_features(
    features: torch.Tensor | np.ndarray,
    out_size: tuple[int, int],
    ks: Sequence[int] = (2, 4, 8, 16, 32),
    min_size: int = 1024,
    eps: float = 1e-6,
    seed: int = 0,
    n_init: int = 4,
    index: tuple | None = None,
) -> list[np.ndarray]:
    """Multi-scale segmentation of one image from its DeepNCut features.

    For each k: k-means (``n_init`` restarts, seeded) on the first min(k, d) columns of the
    row-normalised spectral embedding, nearest upsampling to ``out_size``, connected pieces,
    small-piece merging (:func:`merge_small_regions`). ``index``: see :func:`upsample_nearest`.

    Shape: features (h, w, d) ≥ 0 -> list of len(ks) arrays (H, W) uint16 with labels 1..n.
    """
    if len(ks) == 0 or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of positive ints, got {ks!r}")
    if len(out_size) != 2 or min(out_size) < 1:
        raise ValueError(f"out_size must be (H, W) with positive sizes, got {out_size!r}")
    h, w = int(features.shape[0]), int(features.shape[1])
    emb = embed(features, max(ks), eps)  # (h·w, min(kmax, d))
    n_distinct = len(np.unique(np.round(emb, 12), axis=0))
    segs = []
    for k in ks:
        kk = min(int(k), n_distinct)
        # one thread: sklearn's OpenMP pool otherwise fights torch's spinning threads (~20× slower)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=kk, n_init=n_init, random_state=seed)
            lab = km.fit_predict(emb[:, : min(int(k), emb.shape[1])]).reshape(h, w)
        full = merge_small_regions(upsample_nearest(lab, out_size, index), min_size)
        if full.max() > np.iinfo(np.uint16).max:
            raise ValueError(f"k={k}: {full.max()} segments do not fit in uint16")
        segs.append(full.astype(np.uint16))
    return segs


def write_segs(path: str | os.PathLike, segs: Sequence[np.ndarray]) -> Path:
    """Write the BSDS ``segs`` format: variable ``segs``, a 1×K cell of uint16 label maps."""
    path = Path(path)
    cell = np.empty((1, len(segs)), dtype=object)
    for i, s in enumerate(segs):
        s = np.asarray(s)
        if s.ndim != 2 or s.min() < 0 or s.max() > np.iinfo(np.uint16).max:
            raise ValueError(f"segs[{i}] must be a 2-D label map in 0..65535, got shape {s.shape}")
        cell[0, i] = s.astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(str(path), {"segs": cell}, do_compression=True)
    return path


def read_segs(path: str | os.PathLike) -> list[np.ndarray]:
    """Read a ``segs`` .mat (1×K or K×1 cell) → list of (H, W) label maps."""
    return load_result_mat(path, kind="segs")[1]
