#!/usr/bin/env python
"""Training-step cost of DeepO2P against plain AlexNet (the structured layer's overhead).

    python scripts/bench_training.py --device cpu [--batch-size 100] [--steps 3] [--precision bf16]

A thin wrapper of :func:`matbackprop.bench.training.measure`: each model's real training step
(``OptimStep`` with the row's clip and the non-finite check, the COCO task's ``train_step``) on
a batch of 227×227 synthetic crops with region masks, 80 classes, random init (no download);
median over ``--steps`` after ``--warmup``. ``--models AlexNet DeepO2P DeepO2P-FC`` adds the
FC head. Prints a table with the ratio to AlexNet (target: DeepO2P ≤ 1.3×) and writes
``outputs/bench/training.csv``.
"""

from __future__ import annotations

import argparse

from matbackprop.bench import training
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
    add_common_args(parser, steps=3, warmup=1, out="training.csv")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--pool-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument(
        "--models", nargs="+", default=["AlexNet", "DeepO2P"], choices=list(training.MODELS)
    )
    args = parser.parse_args(argv)
    device = check_device(args.device, args.precision)
    print(
        f"[bench] real training step (OptimStep), batch {args.batch_size} at 227x227, "
        f"{describe(device)}, structured layer in {args.pool_dtype}, precision {args.precision}"
    )
    rows = training.measure(
        args.models,
        device,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        precision=args.precision,
        pool_dtype=args.pool_dtype,
    )
    print()
    print_table(rows, training.COLUMNS)
    print("target: DeepO2P ≤ 1.3× AlexNet")
    print(f"[bench] wrote {write_rows(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
