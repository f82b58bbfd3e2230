#!/usr/bin/env python
"""Decode every image and ``.mat`` file of the data sets once, in parallel, and list the bad ones.

    python scripts/check_data.py [--coco-root data/coco] [--bsds-root data/bsds] [--workers N]

MSCOCO: each ``annotations/instances_<split>.json`` is parsed (a malformed file, e.g. an
annotation without ``bbox`` or a JSON that is not an object, is listed), then every image it
lists is decoded and its size compared with the annotation file. BSDS: every image and its
``groundTruth`` ``.mat`` are read and their sizes compared. Each bad item is printed with its
file, ids and error. Exit codes: 0 all good, 2 something bad (or no data found).

Training with ``data.on_error=skip`` replaces the bad items listed here by good ones; the
better fix is to re-download the listed files (``make data-coco`` / ``make data-bsds``).
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
