"""Time the BSDS region benchmark (covering / PRI / VI) on synthetic BSDS-sized data.

Run::

    python scripts/bench_covering.py [--n-images 200] [--nthresh 99] [--humans 5] [--workers 2]

Each synthetic image is 481×321 (every other one portrait) with an ultrametric contour map built
from a random hierarchy over ~400 Voronoi cells (about as many distinct levels as a gPb ucm) and
``--humans`` ground truths (cuts of the same hierarchy with a few cells reassigned). Times
(1) the in-memory evaluator on one process, (2) ``evaluate_dir`` end to end from .mat files
with ``--workers`` processes, and (3) the naive reference (one 8-connected labelling and
pixel-level tables per threshold) on a few images. Prints a table and writes ``OUT/covering.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io as sio
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree

from matbackprop.engine.records import write_csv
from matbackprop.evaluation import covering as C


def synthetic_image(rng: np.random.Generator, h: int, w: int, n_cells: int, n_humans: int):
    """(ucm2 (2h+1, 2w+1), [n_humans × (h, w) uint16]) from a random Voronoi hierarchy."""
    seeds = rng.random((n_cells, 2)) * [h, w]
    yy, xx = np.mgrid[:h, :w]
    lab = cKDTree(seeds).query(np.c_[yy.ravel(), xx.ravel()])[1].reshape(h, w)
    feats = np.c_[seeds / max(h, w), 0.1 * rng.random((n_cells, 3))]  # mostly spatial
    z = linkage(feats, "average")
    level = np.zeros((n_cells, n_cells))  # merge level of two cells (cophenetic), by union
    members = {i: [i] for i in range(n_cells)}
    for k, (a, b, d, _) in enumerate(z):
        ma, mb = members.pop(int(a)), members.pop(int(b))
        level[np.ix_(ma, mb)] = d
        level[np.ix_(mb, ma)] = d
        members[n_cells + k] = ma + mb
    level /= level.max() * 1.001
    u = np.zeros((2 * h + 1, 2 * w + 1))
    u[1::2, 2:-1:2] = level[lab[:, :-1], lab[:, 1:]]
    u[2:-1:2, 1::2] = level[lab[:-1, :], lab[1:, :]]
    v = np.max([u[1:-2:2, 2:-1:2], u[3::2, 2:-1:2], u[2:-1:2, 1:-2:2], u[2:-1:2, 3::2]], axis=0)
    u[2:-1:2, 2:-1:2] = v
    gts = []
    for _ in range(n_humans):  # cuts of the same hierarchy, with 3% of the cells reassigned
        cut = fcluster(z, t=int(rng.integers(4, 40)), criterion="maxclust")
        flip = rng.random(n_cells) < 0.03
        cut[flip] = cut[rng.integers(0, n_cells, flip.sum())]
        gts.append(cut[lab].astype(np.uint16))
    return u, gts


def reference_image(u: np.ndarray, gts, nthresh: int) -> C.ImageEval:
    """Naive path: label every threshold separately, pixel-level tables."""
    return C.evaluate_segs([C.label_ucm(u, t) for t in C.ucm_thresholds(nthresh)], gts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--nthresh", type=int, default=99)
    p.add_argument("--humans", type=int, default=5)
    p.add_argument("--cells", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-reference", type=int, default=5, help="images for the naive path")
    p.add_argument("--out", default="outputs/bench")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    data = []
    for i in range(args.n_images):
        h, w = (481, 321) if i % 2 else (321, 481)
        data.append(synthetic_image(rng, h, w, args.cells, args.humans))
    t_gen = time.perf_counter() - t0
    print(f"generated {args.n_images} images in {t_gen:.1f} s")

    rows = []

    def record(method, n, workers, secs):
        rows.append(dict(method=method, n_images=n, nthresh=args.nthresh, humans=args.humans,
                         workers=workers, seconds=round(secs, 3),
                         s_per_image=round(secs / n, 4)))  # fmt: skip

    t0 = time.perf_counter()
    fast = [C.evaluate_ucm(u, g, args.nthresh, str(i)) for i, (u, g) in enumerate(data)]
    record("evaluate_ucm (in memory)", len(data), 1, time.perf_counter() - t0)

    n_ref = min(args.n_reference, len(data))
    t0 = time.perf_counter()
    ref = [reference_image(u, g, args.nthresh) for u, g in data[:n_ref]]
    record("naive: label every threshold", n_ref, 1, time.perf_counter() - t0)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a.cntR, b.cntR, rtol=1e-10)
        np.testing.assert_allclose(a.voi, b.voi, rtol=1e-10)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "ucm2").mkdir()
        (tmp / "gt").mkdir()
        for i, (u, gts) in enumerate(data):
            cell = np.empty((1, len(gts)), dtype=object)
            for s, g in enumerate(gts):
                cell[0, s] = {"Segmentation": g, "Boundaries": np.zeros(g.shape, np.uint8)}
            sio.savemat(tmp / "ucm2" / f"{i:04d}.mat", {"ucm2": u}, do_compression=True)
            sio.savemat(tmp / "gt" / f"{i:04d}.mat", {"groundTruth": cell}, do_compression=True)
        t0 = time.perf_counter()
        res = C.evaluate_dir(tmp / "ucm2", tmp / "gt", tmp / "out", args.nthresh,
                             workers=args.workers)  # fmt: skip
        record(
            "evaluate_dir (files, end to end)", len(data), args.workers, time.perf_counter() - t0
        )

    print(f"covering ODS {res['cover_ods']:.4f} OIS {res['cover_ois']:.4f} "
          f"Best {res['cover_best']:.4f} | PRI {res['pri_ods']:.4f} | VI {res['vi_ods']:.4f}")  # fmt: skip
    print(f"\n{'method':36s} {'images':>6s} {'workers':>7s} {'seconds':>8s} {'s/image':>8s}")
    for r in rows:
        print(f"{r['method']:36s} {r['n_images']:6d} {r['workers']:7d} "
              f"{r['seconds']:8.2f} {r['s_per_image']:8.4f}")  # fmt: skip
    out = Path(args.out)
    write_csv(out / "covering.csv", rows, list(rows[0]))
    print(f"\nwrote {out / 'covering.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
