"""BSDS500 region benchmark: segmentation covering, PRI and VI, as the official MATLAB code does it.

Reimplements ``bench/benchmarks/{evaluation_reg_image, match_segmentations,
match_segmentations2, collect_eval_reg}.m`` of the BSR package (Arbeláez et al.):

- input per image: a cell ``segs`` of K label maps (thresholds 1..K) or an ultrametric contour
  map ``ucm2`` of size (2H+1, 2W+1), thresholded at ``linspace(1/(n+1), 1-1/(n+1), n)`` with
  ``seg = bwlabel(ucm2 <= t)[1::2, 1::2]`` (8-connectivity);
- covering: ``IoU(R, R') = |R∩R'| / |R∪R'|`` where label-0 pixels are in no region but count in
  the unions; ``cntR(t) = Σ_humans Σ_R |R| max_R' IoU``, ``sumR = Σ_humans Σ_R |R|`` (R over GT
  labels ≥ 1), ``cntP/sumP`` the same from the machine side (max over the GT regions of all
  humans); ``cntR_best`` takes each GT region's best IoU over all thresholds;
- PRI / VI (bits): means over humans of the Rand index and the variation of information of the
  full contingency table (label 0 is a regular label there, as after MATLAB's label shift);
- dataset numbers (``collect``): covering ODS = max_t Σ_i cntR_i / Σ_i sumR_i (first max),
  OIS = Σ_i cntR_i(t_i*) / Σ_i sumR_i (t_i* = LAST per-image maximum), Best =
  Σ_i cntR_best_i / Σ_i sumR_i; PRI/VI ODS = best threshold of the image-mean, OIS = mean of
  per-image optima.

The official pipeline passes every per-image number through a ``'%10g'`` text file before
collecting; :func:`collect` reproduces that rounding by default (``text_roundtrip=True``) so that
tie-breaking between thresholds is identical.

Speed: for a ucm the partition at every threshold is derived from ONE connected-component
labelling (regions at the lowest threshold plus the contour cells above it, merged threshold by
threshold along the 8-neighbour edges, an exact union–find), and all counts come from a
contingency table over those base regions, so the pixel-level work is done once per image.

Example::

    python -m matbackprop.evaluate_segmentation SEGS_DIR GT_DIR --out OUT_DIR
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from matbackprop.matio import cell_items, loadmat, unwrap
from matbackprop.matio import load_groundtruth as load_gt_mat

SUMMARY_KEYS = ("cover_ods", "cover_ois", "cover_best", "pri_ods", "pri_ois", "vi_ods", "vi_ois")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as MATLAB's bwlabel default


@dataclass
class ImageEval:
    """Per-image benchmark counts (the content of the official ``_ev2/_ev3/_ev4.txt`` files).

    Shape: every array is (T,) with T thresholds (``nthresh`` for a ucm, K for K segs).
    """

    thresh: np.ndarray  # (T,) threshold values (1..K for segs)
    cntR: np.ndarray  # (T,) Σ area(GT region) · best IoU with a machine region
    sumR: np.ndarray  # (T,) Σ area(GT region), all humans
    cntP: np.ndarray  # (T,) Σ area(machine region) · best IoU with any human's region
    sumP: np.ndarray  # (T,) Σ area(machine region)
    ri: np.ndarray  # (T,) Rand index, mean over humans
    voi: np.ndarray  # (T,) variation of information (bits), mean over humans
    cntR_best: float  # Σ area(GT region) · best IoU over all thresholds
    image_id: str = ""


# --------------------------------------------------------------------------------------------
# Thresholds and ucm labelling
# --------------------------------------------------------------------------------------------


def matlab_linspace(a: float, b: float, n: int) -> np.ndarray:
    """MATLAB's ``linspace``: ``a + (0:n-1) .* (b - a) ./ (n - 1)`` with exact end points.

    (NumPy multiplies by a precomputed step instead, which can differ in the last bit — and
    ``ucm2 <= t`` is an exact comparison.)

    Shape: -> (n,)
    """
    if n < 1:
        raise ValueError(f"matlab_linspace: n must be >= 1, got {n}")
    if n == 1:
        return np.array([float(b)])
    y = a + (np.arange(n, dtype=np.float64) * (b - a)) / (n - 1)
    y[0], y[-1] = a, b
    return y


def ucm_thresholds(nthresh: int = 99) -> np.ndarray:
    """The benchmark's ucm thresholds ``linspace(1/(n+1), 1 - 1/(n+1), n)``.

    Shape: -> (nthresh,)
    """
    if nthresh < 1:
        raise ValueError(f"nthresh must be >= 1, got {nthresh}")
    return matlab_linspace(1.0 / (nthresh + 1), 1.0 - 1.0 / (nthresh + 1), nthresh)


def label_ucm(ucm2: np.ndarray, t: float) -> np.ndarray:
    """Reference (slow) path: ``bwlabel(ucm2 <= t)`` with 8-connectivity, then ``[1::2, 1::2]``.

    Shape: ucm2 (2H+1, 2W+1) -> (H, W) int labels (0 = pixel not below the threshold).
    """
    labels2, _ = ndi.label(np.asarray(ucm2) <= t, structure=_EIGHT)
    return labels2[1::2, 1::2]


def ucm_partitions(ucm2: np.ndarray, thresh: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """Partitions of the pixels of a ucm at increasing thresholds, from one labelling.

    Yields, for each threshold, ``(col, M)``: ``col`` (P,) maps each *base group* of pixels to
    its region label in 1..M at this threshold (0 = pixel above the threshold), with the base
    groups given by :func:`ucm_base_groups`. Equal (as partitions) to :func:`label_ucm`.

    Shape: ucm2 (2H+1, 2W+1), thresh (T,) ascending.
    """
    yield from _UcmHierarchy(ucm2, thresh).partitions()


def ucm_base_groups(ucm2: np.ndarray, thresh: np.ndarray) -> tuple[np.ndarray, int]:
    """Base pixel groups (regions at the lowest threshold) used by :func:`ucm_partitions`.

    Shape: -> (pixel_group (H, W) int in 0..P-1, P)
    """
    h = _UcmHierarchy(ucm2, thresh)
    return h.pix_group.reshape(h.hw), h.n_groups


class _UcmHierarchy:
    """Union–find over (base regions ∪ contour cells) along 8-neighbour edges, by threshold."""

    def __init__(self, ucm2: np.ndarray, thresh: np.ndarray) -> None:
        u = np.asarray(ucm2, dtype=np.float64)
        if u.ndim != 2 or u.shape[0] % 2 == 0 or u.shape[1] % 2 == 0 or min(u.shape) < 3:
            raise ValueError(f"ucm2 must be a (2H+1, 2W+1) array, got shape {u.shape}")
        self.thresh = np.asarray(thresh, dtype=np.float64)
        if self.thresh.ndim != 1 or np.any(np.diff(self.thresh) < 0):
            raise ValueError("ucm thresholds must be a 1-D ascending array")
        self.hw = ((u.shape[0] - 1) // 2, (u.shape[1] - 1) // 2)
        base = u <= self.thresh[0]
        lab0, n0 = ndi.label(base, structure=_EIGHT)  # (2H+1, 2W+1), labels 1..n0
        # padded copies (border = +inf, no node) so that neighbours are flat-index offsets
        wp = u.shape[1] + 2
        up = np.full((u.shape[0] + 2, wp), np.inf)
        up[1:-1, 1:-1] = u
        nid = np.full(up.shape, -1, dtype=np.int64)  # node id per cell
        above = np.zeros(up.shape, dtype=bool)
        above[1:-1, 1:-1] = ~base
        nid[1:-1, 1:-1][base] = lab0[base] - 1  # base cells: their component
        p = np.flatnonzero(above)  # (nq,) cells above the lowest threshold: one node each
        nid.ravel()[p] = n0 + np.arange(len(p))
        self.n_nodes = n0 + len(p)
        upf, nidf = up.ravel(), nid.ravel()
        self.node_val = np.concatenate([np.full(n0, -np.inf), upf[p]])  # (n_nodes,)
        # 8-neighbour edges touching an above cell, weight max of the two values (pairs of
        # above cells once: backward offsets only towards base cells)
        ea, eb, ew = [], [], []
        for d in (1, wp - 1, wp, wp + 1, -1, -wp - 1, -wp, -wp + 1):
            q = p + d
            m = nidf[q] >= 0
            if d < 0:
                m &= ~above.ravel()[q]
            ea.append(nidf[p[m]])
            eb.append(nidf[q[m]])
            ew.append(np.maximum(upf[p[m]], upf[q[m]]))
        a, b, w = np.concatenate(ea), np.concatenate(eb), np.concatenate(ew)
        k = np.searchsorted(self.thresh, w, side="left")  # first threshold index with t >= w
        keep = k < len(self.thresh)
        k = k[keep].astype(np.int32)
        order = np.argsort(k, kind="stable")
        self.ea, self.eb = a[keep][order], b[keep][order]
        self.bounds = np.searchsorted(k[order], np.arange(len(self.thresh) + 1))
        pix_nodes = nid[2:-1:2, 2:-1:2].ravel()  # (H*W,) node of each pixel cell
        used = np.zeros(self.n_nodes, dtype=bool)
        used[pix_nodes] = True
        self.group_node = np.flatnonzero(used)  # (P,) nodes holding pixels
        remap = np.cumsum(used) - 1
        self.pix_group = remap[pix_nodes]  # (H*W,) in 0..P-1
        self.n_groups = len(self.group_node)

    def partitions(self) -> Iterator[tuple[np.ndarray, int]]:
        label = np.arange(self.n_nodes)  # current component of each node, in 0..n_cur-1
        n_cur = self.n_nodes
        gval = self.node_val[self.group_node]  # (P,)
        for k, t in enumerate(self.thresh):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            if hi > lo:  # union of the components joined by this threshold's edges
                la, lb = label[self.ea[lo:hi]], label[self.eb[lo:hi]]
                g = coo_matrix((np.ones(hi - lo, dtype=np.int32), (la, lb)), shape=(n_cur, n_cur))
                n_cur, cc = connected_components(g, directed=False)
                label = cc[label]
            present = gval <= t
            col = np.zeros(self.n_groups, dtype=np.int64)
            uniq, inv = np.unique(label[self.group_node[present]], return_inverse=True)
            col[present] = inv + 1
            yield col, len(uniq)


# --------------------------------------------------------------------------------------------
# Scoring one partition against the humans
# --------------------------------------------------------------------------------------------


def _as_labels(x: np.ndarray, what: str) -> np.ndarray:
    """Validated non-negative integer label map as int64."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D label map, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{what} must hold integer labels")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{what} must hold integer labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{what} has negative labels (min {a.min()}); labels must be >= 0")
    return a


def _sparse_counts(keys: np.ndarray, weights: np.ndarray | None, size: int):
    """Aggregate ``weights`` (1 if None) by integer ``keys`` in [0, size) → (keys, sums)."""
    if size <= max(8 * len(keys), 65536):
        c = np.bincount(keys, weights=weights, minlength=size)
        nz = np.flatnonzero(c)
        return nz, c[nz].astype(np.float64)
    uk, inv = np.unique(keys, return_inverse=True)
    return uk, np.bincount(inv, weights=weights).astype(np.float64)


class _GroundTruth:
    """The humans of one image, stacked: global row = (human s, label 0..G_s)."""

    def __init__(self, gts: Sequence[np.ndarray]) -> None:
        if len(gts) == 0:
            raise ValueError("ground truth has no human segmentation")
        self.shape = np.asarray(gts[0]).shape
        labels = []
        for s, g in enumerate(gts):
            if np.asarray(g).shape != self.shape:
                raise ValueError(
                    f"ground truth #{s + 1} has shape {np.asarray(g).shape}, expected {self.shape}"
                )
            labels.append(_as_labels(g, f"ground truth #{s + 1}").ravel())
        self.n_humans = len(labels)
        self.n_pix = int(np.prod(self.shape))
        nlab = [int(g.max()) for g in labels]  # G_s
        self.offsets = np.cumsum([0] + [n + 1 for n in nlab])  # (S+1,) first row of each human
        # pixel -> global row, per human (S, N)
        self.rows = np.stack([g + o for g, o in zip(labels, self.offsets[:-1])])
        self.n_rows = int(self.offsets[-1])
        self.human = np.repeat(np.arange(self.n_humans), np.diff(self.offsets))  # (n_rows,)
        self.areas = np.bincount(self.rows.ravel(), minlength=self.n_rows).astype(np.float64)
        self.is_label = np.ones(self.n_rows, dtype=bool)
        self.is_label[self.offsets[:-1]] = False  # row of label 0
        self.areas_lab = np.where(self.is_label, self.areas, 0.0)  # regionprops Area, 0 for label 0
        self.sumR = float(self.areas_lab.sum())
        p = self.areas / self.n_pix
        plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
        self.h_gt = -np.bincount(self.human, weights=plogp, minlength=self.n_humans)  # (S,)
        self.sum_a2 = np.bincount(self.human, weights=self.areas**2, minlength=self.n_humans)

    def tables(self, groups: np.ndarray, n_groups: int):
        """Sparse contingency (global row, pixel group, count) of all humans vs pixel groups."""
        keys, cnt = _sparse_counts(
            (self.rows * n_groups + groups[None, :]).ravel(), None, self.n_rows * n_groups
        )
        return keys // n_groups, keys % n_groups, cnt


def _score(gt: _GroundTruth, tables, col: np.ndarray, m: int, group_size: np.ndarray):
    """Covering / RI / VOI of the partition ``col`` (group → label 0..m) against all humans.

    Returns (cntR, cntP, sumP, ri, voi, matchesGT (n_rows,), 0 on label-0 rows).
    """
    if m == 0:
        raise ValueError("segmentation has no pixel with a label >= 1")
    rows, grp, cnt = tables
    n = float(gt.n_pix)
    seg_area = np.bincount(col, weights=group_size, minlength=m + 1)  # (m+1,)
    keys, w = _sparse_counts(rows * (m + 1) + col[grp], cnt, gt.n_rows * (m + 1))
    r, c = keys // (m + 1), keys % (m + 1)  # (nnz,) global GT row, machine label
    # covering: IoU over labelled pairs; unions include label-0 pixels
    lab = (c > 0) & gt.is_label[r]
    rr, cc, ww = r[lab], c[lab], w[lab]
    iou = ww / (gt.areas[rr] + seg_area[cc] - ww)
    matches_gt = np.zeros(gt.n_rows)  # best IoU of each GT region (MATLAB max, NaN-free here)
    np.maximum.at(matches_gt, rr, iou)
    matches_seg = np.zeros(m + 1)  # best IoU of each machine region over all humans' regions
    np.maximum.at(matches_seg, cc, iou)
    cnt_r = float(np.sum(gt.areas_lab * matches_gt))
    cnt_p = float(np.sum(seg_area[1:] * matches_seg[1:]))
    # Rand index and VOI (bits) on each human's full table, then the mean over humans
    hum = gt.human[r]
    sum_w2 = np.bincount(hum, weights=w**2, minlength=gt.n_humans)
    ri = 1.0 - (gt.sum_a2 / 2 + np.sum(seg_area**2) / 2 - sum_w2) / (n * (n - 1) / 2)
    pv = seg_area[seg_area > 0] / n
    h_seg = -np.sum(pv * np.log2(pv))
    p = w / n
    mi = np.bincount(
        hum, weights=p * np.log2(p / ((gt.areas[r] / n) * (seg_area[c] / n))), minlength=gt.n_humans
    )
    voi = gt.h_gt + h_seg - 2 * mi
    return cnt_r, cnt_p, float(seg_area[1:].sum()), float(ri.mean()), float(voi.mean()), matches_gt


def _finish(gt: _GroundTruth, thresh, rows, image_id) -> ImageEval:
    cnt_r, cnt_p, sum_p, ri, voi, mgt = zip(*rows)
    best = np.max(np.stack(mgt), axis=0)  # (n_rows,)
    t = len(thresh)
    return ImageEval(
        thresh=np.asarray(thresh, dtype=np.float64),
        cntR=np.asarray(cnt_r), sumR=np.full(t, gt.sumR),
        cntP=np.asarray(cnt_p), sumP=np.asarray(sum_p),
        ri=np.asarray(ri), voi=np.asarray(voi),
        cntR_best=float(np.sum(gt.areas_lab * best)), image_id=image_id,
    )  # fmt: skip


def evaluate_segs(
    segs: Sequence[np.ndarray], gts: Sequence[np.ndarray], image_id: str = ""
) -> ImageEval:
    """Benchmark K machine segmentations (thresholds 1..K) of one image.

    Shape: segs K × (H, W) integer labels (0 = unlabelled), gts S × (H, W).
    """
    if len(segs) == 0:
        raise ValueError(f"{image_id or 'image'}: segs is empty")
    gt = _GroundTruth(gts)
    rows = []
    for k, s in enumerate(segs):
        seg = _as_labels(s, f"segs #{k + 1}")
        if seg.shape != gt.shape:
            raise ValueError(f"segs #{k + 1} has shape {seg.shape}, ground truth {gt.shape}")
        uniq, inv = np.unique(seg.ravel(), return_inverse=True)  # pixel groups = labels
        ones = np.bincount(inv).astype(np.float64)
        rows.append(_score(gt, gt.tables(inv, len(uniq)), uniq, int(uniq.max()), ones))
    return _finish(gt, np.arange(1, len(segs) + 1), rows, image_id)


def evaluate_ucm(
    ucm2: np.ndarray, gts: Sequence[np.ndarray], nthresh: int = 99, image_id: str = ""
) -> ImageEval:
    """Benchmark an ultrametric contour map at the official thresholds.

    Shape: ucm2 (2H+1, 2W+1) float, gts S × (H, W).
    """
    gt = _GroundTruth(gts)
    u = np.asarray(ucm2, dtype=np.float64)
    want = (2 * gt.shape[0] + 1, 2 * gt.shape[1] + 1)
    if u.shape != want:
        raise ValueError(f"{image_id or 'ucm2'}: ucm2 has shape {u.shape}, expected {want}")
    thresh = ucm_thresholds(nthresh)
    h = _UcmHierarchy(u, thresh)
    size = np.bincount(h.pix_group, minlength=h.n_groups).astype(np.float64)
    tables = gt.tables(h.pix_group, h.n_groups)
    rows = [_score(gt, tables, col, m, size) for col, m in h.partitions()]
    return _finish(gt, thresh, rows, image_id)


def evaluate_image(
    seg_or_ucm, gts: Sequence[np.ndarray], nthresh: int = 99, image_id: str = ""
) -> ImageEval:
    """Dispatch: a sequence of label maps → :func:`evaluate_segs`; a 2-D array of shape
    (2H+1, 2W+1) → :func:`evaluate_ucm`; a single (H, W) label map → one segmentation.
    """
    if isinstance(seg_or_ucm, (list, tuple)):
        return evaluate_segs(seg_or_ucm, gts, image_id)
    a = np.asarray(seg_or_ucm)
    h, w = np.asarray(gts[0]).shape
    if a.shape == (2 * h + 1, 2 * w + 1):
        return evaluate_ucm(a, gts, nthresh, image_id)
    return evaluate_segs([a], gts, image_id)


# --------------------------------------------------------------------------------------------
# Collection over images (collect_eval_reg.m)
# --------------------------------------------------------------------------------------------


def g10(x):
    """Round like MATLAB's ``fprintf('%10g')`` followed by ``dlmread`` (6 significant digits)."""
    return np.vectorize(lambda v: float(f"{v:g}"), otypes=[np.float64])(
        np.asarray(x, dtype=np.float64)
    )


def _last_argmax(x: np.ndarray) -> int:
    return int(np.flatnonzero(x == np.max(x))[-1])


def collect(results: Sequence[ImageEval], text_roundtrip: bool = True) -> dict:
    """Dataset numbers from per-image counts, as ``collect_eval_reg.m``.

    Returns a dict with the :data:`SUMMARY_KEYS` plus thresholds (``cover_ods_t``, ``pri_ods_t``,
    ``vi_ods_t``), precision-side numbers (``cover_p_at_ods``, ``cover_p_ois``) and curves
    (``thresh``, ``cover_curve``, ``ri_curve``, ``voi_curve``, ``per_image``).
    """
    if len(results) == 0:
        raise ValueError("collect: no image results")
    nt = len(results[0].thresh)
    for r in results:
        if len(r.thresh) != nt:
            raise ValueError(
                f"collect: image {r.image_id!r} has {len(r.thresh)} thresholds, expected {nt}"
            )
    rnd = g10 if text_roundtrip else (lambda x: np.asarray(x, dtype=np.float64))
    cnt_r_tot, sum_r_tot = np.zeros(nt), np.zeros(nt)
    cnt_p_tot, sum_p_tot = np.zeros(nt), np.zeros(nt)
    cnt_r_ois = sum_r_ois = cnt_p_ois = sum_p_ois = cnt_r_best_tot = 0.0
    g_ri, g_voi = np.zeros(nt), np.zeros(nt)
    ri_best = voi_best = 0.0
    per_image = []
    for i, r in enumerate(results):
        thresh = rnd(r.thresh)
        cnt_r, sum_r, cnt_p, sum_p = rnd(r.cntR), rnd(r.sumR), rnd(r.cntP), rnd(r.sumP)
        ri, voi = rnd(r.ri), rnd(r.voi)
        rr = cnt_r / (sum_r + (sum_r == 0))
        pp = cnt_p / (sum_p + (sum_p == 0))
        first = int(np.argmax(rr))
        per_image.append((i + 1, thresh[first], rr[first], pp[first], r.image_id))
        cnt_r_tot += cnt_r
        sum_r_tot += sum_r
        cnt_p_tot += cnt_p
        sum_p_tot += sum_p
        last = _last_argmax(rr)  # ff(end)
        cnt_r_ois += cnt_r[last]
        sum_r_ois += sum_r[last]
        cnt_p_ois += cnt_p[last]
        sum_p_ois += sum_p[last]
        cnt_r_best_tot += float(rnd(r.cntR_best))
        g_ri += ri
        g_voi += voi
        ri_best += ri.max()
        voi_best += voi.min()
    n = len(results)
    cover = cnt_r_tot / (sum_r_tot + (sum_r_tot == 0))
    prec = cnt_p_tot / (sum_p_tot + (sum_p_tot == 0))
    ods = int(np.argmax(cover))  # first max
    g_ri, g_voi = g_ri / n, g_voi / n
    i_ri, i_voi = int(np.argmax(g_ri)), int(np.argmin(g_voi))
    return {
        "cover_ods": float(cover[ods]),
        "cover_ois": float(cnt_r_ois / (sum_r_ois + (sum_r_ois == 0))),
        "cover_best": float(cnt_r_best_tot / sum_r_tot[0]),
        "pri_ods": float(g_ri[i_ri]),
        "pri_ois": float(ri_best / n),
        "vi_ods": float(g_voi[i_voi]),
        "vi_ois": float(voi_best / n),
        "cover_ods_t": float(thresh[ods]),
        "pri_ods_t": float(thresh[i_ri]),
        "vi_ods_t": float(thresh[i_voi]),
        "cover_p_at_ods": float(prec[ods]),
        "cover_p_ois": float(cnt_p_ois / (sum_p_ois + (sum_p_ois == 0))),
        "thresh": thresh,
        "cover_curve": cover,
        "ri_curve": g_ri,
        "voi_curve": g_voi,
        "per_image": per_image,
        "n_images": n,
    }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def load_result_mat(path: str | os.PathLike, kind: str = "auto"):
    """Machine result from a .mat: ``('segs', [K label maps])`` or ``('ucm2', array)``."""
    path = Path(path)
    if kind not in ("auto", "segs", "ucm2"):
        raise ValueError(f"kind must be 'auto', 'segs' or 'ucm2', got {kind!r}")
    d = loadmat(path)
    found = sorted(k for k in d if not k.startswith("__"))
    if kind in ("auto", "ucm2") and "ucm2" in d:
        return "ucm2", np.asarray(d["ucm2"], dtype=np.float64)
    if kind in ("auto", "segs") and "segs" in d:
        return "segs", [np.asarray(unwrap(s)) for s in cell_items(d["segs"])]
    want = "'ucm2' or 'segs'" if kind == "auto" else repr(kind)
    raise ValueError(f"{path}: no variable {want} (found {found})")


def _line(*values, first: str = "%10g") -> str:
    """One line as MATLAB's ``fprintf(fid, '%10g %10g ...\\n', values)`` writes it."""
    fmts = [first] + ["%10g"] * (len(values) - 1)
    return " ".join(f % v for f, v in zip(fmts, values)) + "\n"


def write_image_files(out_dir: Path, r: ImageEval) -> None:
    """Official per-image files ``<id>_ev2.txt`` (thresh cntR sumR cntP sumP), ``_ev3.txt``
    (cntR_best) and ``_ev4.txt`` (thresh RI VOI)."""
    rows2 = zip(r.thresh, r.cntR, r.sumR, r.cntP, r.sumP)
    (out_dir / f"{r.image_id}_ev2.txt").write_text("".join(_line(*row) for row in rows2))
    (out_dir / f"{r.image_id}_ev3.txt").write_text(_line(r.cntR_best))
    rows4 = zip(r.thresh, r.ri, r.voi)
    (out_dir / f"{r.image_id}_ev4.txt").write_text("".join(_line(*row) for row in rows4))


def write_summary(out_dir: Path, res: dict) -> None:
    """Official collected files + ``summary.json`` (keys :data:`SUMMARY_KEYS`).

    ``eval_cover.txt``: bestT, covering ODS, OIS, Best (the official 4 columns);
    ``eval_RI_VOI.txt``: bestT_RI, PRI ODS, PRI OIS, bestT_VI, VI ODS, VI OIS. Not official:
    ``eval_cover_extended.txt`` adds the precision side (cntP/sumP) with a header.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    r = res
    files = {
        "eval_cover.txt": _line(r["cover_ods_t"], r["cover_ods"], r["cover_ois"], r["cover_best"]),
        "eval_RI_VOI.txt": _line(
            r["pri_ods_t"], r["pri_ods"], r["pri_ois"], r["vi_ods_t"], r["vi_ods"], r["vi_ois"]
        ),
        "eval_cover_img.txt": "".join(_line(*row[:4], first="%10d") for row in r["per_image"]),
        "eval_cover_th.txt": "".join(_line(*row) for row in zip(r["thresh"], r["cover_curve"])),
        "eval_RI_VOI_thr.txt": "".join(
            _line(*row) for row in zip(r["thresh"], r["ri_curve"], r["voi_curve"])
        ),
        "eval_cover_extended.txt": "# bestT R_ODS P_at_ODS R_OIS P_OIS R_best\n"
        + _line(
            r["cover_ods_t"],
            r["cover_ods"],
            r["cover_p_at_ods"],
            r["cover_ois"],
            r["cover_p_ois"],
            r["cover_best"],
        ),  # fmt: skip
    }
    for name, text in files.items():
        (out_dir / name).write_text(text)
    summary = {k: r[k] for k in SUMMARY_KEYS}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _evaluate_file(job: tuple[str, Path, Path, int, str]) -> ImageEval:
    iid, res_path, gt_path, nthresh, kind = job
    k, data = load_result_mat(res_path, kind)
    gts = load_gt_mat(gt_path)
    try:
        if k == "ucm2":
            return evaluate_ucm(data, gts, nthresh, iid)
        return evaluate_segs(data, gts, iid)
    except ValueError as e:
        raise ValueError(f"{res_path}: {e}") from e


def evaluate_dir(
    segs_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    nthresh: int = 99,
    kind: str = "auto",
    workers: int | None = None,
    per_image_files: bool = True,
    text_roundtrip: bool = True,
) -> dict:
    """Benchmark every ``<id>.mat`` in ``segs_dir`` against ``gt_dir/<id>.mat``; write the files.

    Writes ``eval_cover.txt`` (bestT, ODS, OIS, Best), ``eval_RI_VOI.txt`` (bestT_RI, PRI ODS,
    PRI OIS, bestT_VI, VI ODS, VI OIS), the official per-threshold/per-image files and
    ``summary.json``; returns the :func:`collect` dict.
    """
    segs_dir, gt_dir, out_dir = Path(segs_dir), Path(gt_dir), Path(out_dir)
    for d, what in ((segs_dir, "results"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} directory not found: {d}")
    if kind not in ("auto", "segs", "ucm2"):
        raise ValueError(f"kind must be 'auto', 'segs' or 'ucm2', got {kind!r}")
    files = sorted(segs_dir.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"no .mat files in results directory {segs_dir}")
    jobs = []
    for f in files:
        g = gt_dir / f.name
        if not g.is_file():
            raise FileNotFoundError(f"no ground truth for image {f.stem!r}: {g} does not exist")
        jobs.append((f.stem, f, g, nthresh, kind))
    workers = min(os.cpu_count() or 1, 2) if workers is None else workers
    bar = dict(total=len(jobs), desc="region benchmark", disable=None)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(tqdm(ex.map(_evaluate_file, jobs, chunksize=4), **bar))
    else:
        results = [_evaluate_file(j) for j in tqdm(jobs, **bar)]
    out_dir.mkdir(parents=True, exist_ok=True)
    if per_image_files:
        for r in results:
            write_image_files(out_dir, r)
    res = collect(results, text_roundtrip=text_roundtrip)
    write_summary(out_dir, res)
    return res
