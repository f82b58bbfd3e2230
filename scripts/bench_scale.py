#!/usr/bin/env python
"""What scaling out costs: DDP overhead per step, and the mid-epoch checkpoint's time and size.

    python scripts/bench_scale.py [--batch-size 32] [--steps 5] [--out outputs/bench/scale.csv]

A thin wrapper of :func:`matbackprop.bench.scale.measure`: the real training step of
``table1_deepo2p_bn`` (``OptimStep``, DeepO2P with descriptor BN, random init, 227×227 crops)
over the same global batch as one ``torchrun`` process with T threads and as 2 gloo processes
with T / 2 threads each (SyncBatchNorm + DDP, as the trainer wraps it; rank 0 writes its
figures to a JSON file read back here), and the DeepO2P-FC ``last.pt`` written with the
trainer's atomic writer (seconds, MiB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from matbackprop.bench import scale
from matbackprop.bench.harness import BENCH_DIR, cli, print_table, write_rows

COLUMNS = [
    ("what", "s"),
    ("threads", "s", "threads/process"),
    ("seconds", ".3f"),
    ("ratio", ".2f", "× 1 process"),
    ("mib", ".0f", "MiB"),
]


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "scale.csv")
    args = parser.parse_args(argv)
    folder = args.out.parent if args.out.parent != Path(".") else BENCH_DIR
    rows = scale.measure(args.batch_size, args.steps, args.threads, folder)
    print_table(rows, COLUMNS)
    path = write_rows(rows, args.out)
    print(f"batch {args.batch_size} (global), {args.steps} steps; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
