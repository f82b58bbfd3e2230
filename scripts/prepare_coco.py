#!/usr/bin/env python
"""Prepare the fast MSCOCO region store (once), so training reads small patches, not images.

    python scripts/prepare_coco.py --root data/coco [--splits train2014 val2014] [--workers N]

For every non-crowd, non-degenerate instance of ``<root>/annotations/instances_<split>.json``
it writes the box-resized patch (largest side ``--max-side``, 200 as in SPEC §4) and its soft
mask into ``<root>/prepared/<split>/`` (format and trade-offs:
``matbackprop.data.region_store``). Each image is decoded once for all its regions; chunks of
``--chunk-images`` images are written in parallel over ``--workers`` processes (default: all
cores). Resumable: interrupt it at any moment and run it again; finished chunks are verified
(SHA-256) and kept. Training uses the store automatically (``data.store=auto``) once its
``manifest.json`` exists.

Exit codes: 0 done, 2 data problem (message names the file), 130 / 143 interrupted by SIGINT /
SIGTERM (its temporary files removed; rerun to go on).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from matbackprop.data.coco_regions import DATA_HINT, INVALID_HINT
from matbackprop.data.region_store import StoreSpec, prepare_store
from matbackprop.errors import EXIT_USER_ERROR, UserError

HINT = (
    "run `make data-coco`, or point this script at your copy: `--root DIR` "
    '(`make prepare-coco PREPARE_ARGS="--root DIR"`)'
)

INVALID_FIX = (
    "fix or re-download the annotation file (`make check-data` lists every problem); no store "
    "is prepared from an invalid file"
)


class Interrupted(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (temporary files are removed on the way out)."""


def _on_sigterm(signum, frame):
    raise Interrupted(signum)


def prepare_split(args, split: str) -> dict:
    root = Path(args.root)
    spec = StoreSpec(
        root,
        f"annotations/instances_{split}.json",
        root / split,
        Path(args.out or root / "prepared") / split,
        max_side=args.max_side,
        fmt=args.format,
        quality=args.quality,
        chunk_images=args.chunk_images,
    )
    bar = tqdm(total=len(spec.chunks), desc=f"prepare {split}", unit="chunk", disable=None)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    man = prepare_store(spec, workers=args.workers, verify=not args.no_verify, progress=progress)
    bar.close()
    size = sum(f.stat().st_size for f in spec.out.glob("chunk-*.bin"))
    print(
        f"[prepare] {split}: {man['regions']} regions in {man['chunks']} chunks "
        f"({man['done_now']} written now, {time.perf_counter() - t0:.1f} s), "
        f"{size / 2**20:.1f} MiB -> {spec.out}"
    )
    return man


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="data/coco", help="COCO root (annotations/, train2014/ ...)")
    p.add_argument("--splits", nargs="+", default=["train2014", "val2014"])
    p.add_argument("--out", default=None, help="store parent folder (default <root>/prepared)")
    p.add_argument("--max-side", type=int, default=200, help="= data.max_side")
    p.add_argument("--format", choices=["jpeg", "raw"], default="jpeg")
    p.add_argument("--quality", type=int, default=97, help="JPEG quality (4:4:4)")
    p.add_argument("--chunk-images", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing finished chunks")
    args = p.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for split in args.splits:
            prepare_split(args, split)
    except (UserError, FileNotFoundError) as err:
        msg = str(err).replace(DATA_HINT, HINT).replace(INVALID_HINT, INVALID_FIX)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal does not cut the cleanup
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(err, Interrupted) else 130
    finally:
        if signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_IGN):
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
