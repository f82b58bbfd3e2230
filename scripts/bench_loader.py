#!/usr/bin/env python
"""MSCOCO region loader throughput: on-the-fly crops vs the prepared store (``make prepare-coco``).

    python scripts/bench_loader.py [--regions 300] [--rounds 3] [--gpu-step-ms 150]

Generates (once, under ``--work``) a synthetic MSCOCO-format set of 640×480 JPEGs with 3–8
regions per image (``matbackprop.data.synthetic_coco``) and prepares its JPEG store (the
default ``prepare_coco.py`` settings). Then, with the Table 1 item settings (crop 227, max side
200, jitter 16, flip, 13×13 mask), it measures training items per second:

1. ONE worker (the main process, ``ds[i]`` in a seeded random order), on-the-fly and prepared
   interleaved over ``--rounds`` rounds so that load from other processes hits both alike
   (best round of each). Rates per second of this process's CPU time (``time.process_time``,
   one thread) — on a shared machine wall-clock rates mostly measure the other processes —
   and, for reference, per wall-clock second;
2. all cores: ``DataLoader(num_workers=cores, batch_size=100)`` over the same items;
3. what a GPU needs: a step of ``--gpu-step-ms`` ms at batch 100 consumes 100 / step regions/s.
   The default (150 ms) is an assumed DeepO2P-FC step on one current GPU, not a measurement:
   pass the figure of ``make gpu-report`` on your device.

The last line is ``speedup: X.XXx`` (prepared / on-the-fly, one worker). The figures come
from :func:`matbackprop.bench.loader.measure` (``make gpu-report`` calls it).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from matbackprop.bench.loader import ANN, ITEM, PARAMS, measure  # noqa: F401  (ANN: re-exported)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="outputs/bench/loader", help="synthetic set + store")
    p.add_argument("--regions", type=int, default=300, help="items per round (one worker)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="all-cores run")
    p.add_argument("--gpu-step-ms", type=float, default=150.0, help="assumed step at batch 100")
    args = p.parse_args(argv)
    f = measure(args.work, args.regions, args.rounds, args.workers, PARAMS, ITEM)
    best, wall, many = f["cpu"], f["wall"], f["many"]
    need = 100 / (args.gpu_step_ms / 1000)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; {f['regions']} train-mode regions (640x480 JPEGs)\n"
    )
    print(
        f"| path | regions/s, 1 worker, CPU time (best of {args.rounds}) | same, wall clock | "
        f"regions/s, {args.workers} workers, wall clock |"
    )
    print("|---|---|---|---|")
    for k in best:
        print(f"| {k} | {best[k]:.0f} | {wall[k]:.0f} | {many[k]:.0f} |")
    print(
        f"\nGPU step {args.gpu_step_ms:.0f} ms at batch 100 needs {need:.0f} regions/s: "
        f"{args.workers} workers give {many['prepared']:.0f} prepared "
        f"({many['prepared'] / need:.2f}x of it), {many['on-the-fly']:.0f} on-the-fly "
        f"({many['on-the-fly'] / need:.2f}x); one worker each: "
        f"{need / best['prepared']:.1f} prepared / {need / best['on-the-fly']:.1f} on-the-fly "
        "workers needed"
    )
    print(f"wall-clock speedup (noisy on a shared machine): {f['wall_speedup']:.2f}x")
    print(f"speedup: {f['speedup']:.2f}x")


if __name__ == "__main__":
    main()
