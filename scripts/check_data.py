#!/usr/bin/env python
"""Decode every image and ``.mat`` file of the data sets once, in parallel, and list the bad ones.

    python scripts/check_data.py [--coco-root data/coco] [--bsds-root data/bsds] [--workers N]

MSCOCO: each ``annotations/instances_<split>.json`` is parsed and indexed by the training
code, which lists every broken rule of :mod:`matbackprop.data.validate` (duplicate image or
annotation ids, missing keys, a height/width out of range, a ``file_name`` leaving the image
folder, a non-finite bbox or polygon, an RLE of another size or with overrunning counts), then
every valid image entry is decoded and its size compared with the annotation file (an entry
whose ``file_name`` is refused is never opened). BSDS: every image and its ``groundTruth``
``.mat`` are read, their labels checked (finite integers in 0..65535, not all zero) and their
sizes compared. Each problem is printed with its file, ids and field. Exit codes: 0 all good,
2 something bad (or no data found).

Training with ``data.on_error=skip`` replaces the bad images listed here by good ones and
leaves out the invalid image / annotation entries (a broken file structure, e.g. duplicate
ids, is refused in both modes); the better fix is to re-download the listed files
(``make data-coco`` / ``make data-bsds``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from matbackprop.data.check import check
from matbackprop.errors import EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coco-root", default=None, help="default data/coco if it exists")
    p.add_argument("--bsds-root", default=None, help="default data/bsds if it exists")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    coco, bsds = args.coco_root, args.bsds_root
    if coco is None and bsds is None:
        coco = "data/coco" if Path("data/coco").is_dir() else None
        bsds = "data/bsds" if Path("data/bsds").is_dir() else None
        if coco is None and bsds is None:
            print("error: no data/coco or data/bsds here; pass --coco-root / --bsds-root",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USER_ERROR
    n, bad = check(coco, bsds, args.workers)
    for line in bad:
        print(f"BAD {line}")
    print(f"[check-data] {n} images checked, {len(bad)} bad")
    return EXIT_USER_ERROR if bad else 0


if __name__ == "__main__":
    sys.exit(main())
