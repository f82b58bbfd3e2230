"""BSDS region benchmark from the command line (segmentation covering, PRI, VI).

Run::

    python -m matbackprop.evaluate_segmentation SEGS_DIR GT_DIR --out OUT_DIR \\
        [--nthresh 99] [--kind auto|segs|ucm2] [--workers 2]

``SEGS_DIR`` holds one ``<id>.mat`` per image with a variable ``segs`` (a cell of label maps) or
``ucm2`` (an ultrametric contour map, thresholded at ``nthresh`` levels); ``GT_DIR`` holds the
BSDS ``groundTruth`` files with the same names. Writes the official ``eval_cover.txt`` and
``eval_RI_VOI.txt`` (plus per-image / per-threshold files) and ``summary.json`` into ``OUT_DIR``.
Exit codes: 0 done, 2 a missing folder or an unreadable / inconsistent input file (message, no
traceback; :mod:`matbackprop.cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matbackprop.cli import call_cli
from matbackprop.errors import DataError
from matbackprop.evaluation.covering import evaluate_dir, load_result_mat


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m matbackprop.evaluate_segmentation",
        description="BSDS500 region benchmark: segmentation covering (ODS/OIS/Best), PRI, VI.",
    )
    p.add_argument("segs_dir", help="folder of <id>.mat results (variable 'segs' or 'ucm2')")
    p.add_argument("gt_dir", help="folder of <id>.mat BSDS ground truth (variable 'groundTruth')")
    p.add_argument("--out", required=True, help="output folder for the benchmark files")
    p.add_argument("--nthresh", type=int, default=99, help="ucm thresholds (default 99)")
    p.add_argument("--kind", choices=("auto", "segs", "ucm2"), default="auto")
    p.add_argument("--workers", type=int, default=None, help="processes (default min(2, cpus))")
    p.add_argument("--no-per-image", action="store_true", help="skip the <id>_ev*.txt files")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on a bad input (message on stderr)."""
    return call_cli(_main, build_parser().parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    try:
        res = evaluate_dir(
            args.segs_dir, args.gt_dir, args.out, nthresh=args.nthresh, kind=args.kind,
            workers=args.workers, per_image_files=not args.no_per_image,
        )  # fmt: skip
    except ValueError as e:  # covering.py checks its inputs with ValueError, naming the file
        raise DataError(str(e)) from e
    print(f"region benchmark, {res['n_images']} images -> {args.out}")
    print(f"{'':10s} {'ODS':>8s} {'OIS':>8s} {'Best':>8s}  {_at_ods(args.segs_dir, args.kind)}")
    print(f"{'cover':10s} {res['cover_ods']:8.4f} {res['cover_ois']:8.4f} "
          f"{res['cover_best']:8.4f}  {res['cover_ods_t']:g}")  # fmt: skip
    print(f"{'PRI':10s} {res['pri_ods']:8.4f} {res['pri_ois']:8.4f} {'':8s}  {res['pri_ods_t']:g}")
    print(
        f"{'VI (bits)':10s} {res['vi_ods']:8.4f} {res['vi_ois']:8.4f} {'':8s}  {res['vi_ods_t']:g}"
    )
    return 0


def _at_ods(segs_dir: str, kind: str) -> str:
    """The last column's label: the ucm threshold at ODS, or for ``segs`` files the index
    (1..K) of the segmentation chosen at ODS."""
    if kind == "auto":
        first = min(Path(segs_dir).glob("*.mat"))
        kind = load_result_mat(first)[0]
    return "segs index(ODS)" if kind == "segs" else "threshold(ODS)"


if __name__ == "__main__":
    raise SystemExit(main())
