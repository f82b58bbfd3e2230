#!/usr/bin/env python
"""DeepNCut training throughput at full BSDS resolution (481×321), images per second.

    python scripts/bench_deepncut.py --device cpu [--steps 4] [--precision bf16] [--settings 0 1]

A thin wrapper of :func:`matbackprop.bench.deepncut.measure`: the real training step of
``table2_deepncut_alexnet`` (``OptimStep`` with ``trainer.clip`` and the non-finite check, the
BSDS task's ``train_step``: trunk + two new conv pairs + ``ncut_alignment_loss`` against a
ground truth on the feature grid) on synthetic 481×321 images, random init (no download);
settings: end to end and conv1–2 frozen, at 1 and 4 images per step. The paper reports about
2–3 images/s on a Titan Z GPU. Prints a table and writes ``outputs/bench/deepncut.csv``.
"""

from __future__ import annotations

import argparse

from matbackprop.bench import deepncut
from matbackprop.bench.harness import (
    add_common_args,
    check_device,
    cli,
    describe,
    print_table,
    write_rows,
)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    add_common_args(parser, steps=4, warmup=1, out="deepncut.csv")
    parser.add_argument(
        "--settings",
        type=int,
        nargs="+",
        default=None,
        choices=range(len(deepncut.SETTINGS)),
        help="indices into SETTINGS (default all)",
    )
    args = parser.parse_args(argv)
    device = check_device(args.device, args.precision)
    print(
        f"[bench] DeepNCut real training step at 481x321, {describe(device)}, "
        f"median of {args.steps} steps, precision {args.precision}"
    )
    rows = deepncut.measure(args.settings, device, args.steps, args.warmup, args.precision)
    print()
    print_table(rows, deepncut.COLUMNS)
    print("paper: about 2-3 images/s on a Titan Z GPU")
    print(f"[bench] wrote {write_rows(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
