#!/usr/bin/env python
"""Reproduce a paper table on real data, one training run after another.

    python scripts/reproduce.py coco [--data-root data/coco] [-- extra Hydra overrides]
    python scripts/reproduce.py coco --dry-run          # print the commands only

``coco``: the six deep rows of Table 1 (``conf/experiment/table1_*.yaml``) in sequence, each as
``python -m matbackprop.train experiment=<name> data.root=<root>``. Finished runs are skipped,
partial ones resume (the trainer resumes from the run folder's last checkpoint); the first
failing run stops the script with its exit code. Missing data stops it at once (exit 2) with a
message naming ``make data-coco``. Then ``make tables``.

``bsds``: not implemented yet (exit 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = [
    "table1_alexnet",
    "table1_alexnet_s",
    "table1_deepo2p",
    "table1_deepo2p_s",
    "table1_deepo2p_fc",
    "table1_deepo2p_fc_s",
]
COCO_FILES = (
    "annotations/instances_train2014.json",
    "annotations/instances_val2014.json",
    "train2014",
    "val2014",
)


def missing_coco(root: Path) -> list[Path]:
    """Paths the COCO runs need that are not there."""
    if not root.is_dir():
        return [root]
    return [root / rel for rel in COCO_FILES if not (root / rel).exists()]


def is_finished(run_dir: Path) -> bool:
    status = run_dir / "status.json"
    return status.is_file() and bool(json.loads(status.read_text()).get("finished"))


def reproduce_coco(data_root: Path, extra: list[str], output_root: Path, dry_run: bool) -> int:
    missing = missing_coco(data_root)
    if missing:
        print(
            "error: MSCOCO 2014 data not found: "
            + ", ".join(str(p) for p in missing)
            + "\nRun `make data-coco` (downloads into data/coco) or pass --data-root /path/to/coco.",
            file=sys.stderr,
        )
        return 2
    for i, name in enumerate(TABLE1, 1):
        run_dir = output_root / "coco" / name
        cmd = [
            sys.executable,
            "-m",
            "matbackprop.train",
            f"experiment={name}",
            f"data.root={data_root}",
            f"output_root={output_root}",
            *extra,
        ]
        if is_finished(run_dir) and not extra:
            print(f"[reproduce] {i}/{len(TABLE1)} {name}: finished already ({run_dir}), skipped")
            continue
        print(f"[reproduce] {i}/{len(TABLE1)} {name}: {' '.join(cmd[1:])}", flush=True)
        if dry_run:
            continue
        code = subprocess.call(cmd, cwd=ROOT)
        if code != 0:
            print(f"[reproduce] {name} failed with exit code {code}; stopping", file=sys.stderr)
            return code
    print("[reproduce] Table 1 runs done; `make tables` writes outputs/tables/table1.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=["coco", "bsds"], help="which paper table")
    parser.add_argument("--data-root", type=Path, default=None, help="default: data/<table>")
    parser.add_argument("--output-root", type=Path, default=Path("outputs"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    if args.table == "bsds":
        print("BSDS reproduction: not implemented yet", file=sys.stderr)
        return 2
    data_root = (args.data_root or Path("data/coco")).resolve()
    return reproduce_coco(data_root, args.overrides, args.output_root.resolve(), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
