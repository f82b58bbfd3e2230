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

The last line is ``speedup: X.XXx`` (prepared / on-the-fly, one worker).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.region_store import PreparedCocoRegions, StoreSpec, prepare_store
from matbackprop.data.synthetic import ensure_generated, make_synthetic_coco

ANN = "annotations/instances_val2014.json"
ITEM = dict(crop_size=227, max_side=200, jitter=16, mask_size=13, min_area=64, train=True)
PARAMS = dict(
    n_train=4,
    n_val=500,
    image_size=(480, 640),
    num_classes=4,
    objects_per_image=(3, 8),
    object_radius=(0.05, 0.12),
    seed=0,
)


def one_worker(ds, order: list[int]) -> tuple[float, float]:
    """Items per CPU second and per wall-clock second."""
    c0, t0 = time.process_time(), time.perf_counter()
    for i in order:
        ds[i]
    return len(order) / (time.process_time() - c0), len(order) / (time.perf_counter() - t0)


def all_cores(ds, workers: int) -> float:
    """Items/s of a second pass of a persistent ``DataLoader`` (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        ds, batch_size=100, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in loader:  # start the workers, warm the caches
        pass
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return len(ds) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="outputs/bench/loader", help="synthetic set + store")
    p.add_argument("--regions", type=int, default=300, help="items per round (one worker)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="all-cores run")
    p.add_argument("--gpu-step-ms", type=float, default=150.0, help="assumed step at batch 100")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    root = ensure_generated(Path(args.work) / "coco", PARAMS, make_synthetic_coco)
    paths = {"on-the-fly": CocoRegions(root, ANN, **ITEM)}
    for fmt, name in (("jpeg", "prepared"), ("raw", "prepared (raw, lossless)")):
        store = root / "prepared" / fmt / "val2014"
        t0 = time.perf_counter()
        spec = StoreSpec(root, ANN, None, store, max_side=ITEM["max_side"], fmt=fmt)
        man = prepare_store(spec, workers=args.workers)
        size = sum(f.stat().st_size for f in store.glob("*.bin")) / man["regions"] / 1e3
        print(
            f"{fmt} store: {man['regions']} regions, {man['done_now']} chunks written now "
            f"({time.perf_counter() - t0:.1f} s), {size:.1f} kB/region"
        )
        paths[name] = PreparedCocoRegions(store, root, ANN, **ITEM)
    fly = paths["on-the-fly"]
    n = min(args.regions, len(fly))
    order = np.random.default_rng(0).permutation(len(fly))[:n].tolist()
    for ds in paths.values():  # warm the page cache and PIL
        one_worker(ds, order[:20])
    rates = {k: [] for k in paths}
    for _ in range(args.rounds):
        for k, ds in paths.items():
            rates[k].append(one_worker(ds, order))
    best = {k: max(r[0] for r in v) for k, v in rates.items()}
    wall = {k: max(r[1] for r in v) for k, v in rates.items()}
    many = {k: all_cores(ds, args.workers) for k, ds in paths.items()}
    need = 100 / (args.gpu_step_ms / 1000)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; {len(fly)} train-mode regions (640x480 JPEGs)\n"
    )
    print(
        f"| path | regions/s, 1 worker, CPU time (best of {args.rounds}) | same, wall clock | "
        f"regions/s, {args.workers} workers, wall clock |"
    )
    print("|---|---|---|---|")
    for k in rates:
        print(f"| {k} | {best[k]:.0f} | {wall[k]:.0f} | {many[k]:.0f} |")
    print(
        f"\nGPU step {args.gpu_step_ms:.0f} ms at batch 100 needs {need:.0f} regions/s: "
        f"{args.workers} workers give {many['prepared']:.0f} prepared "
        f"({many['prepared'] / need:.2f}x of it), {many['on-the-fly']:.0f} on-the-fly "
        f"({many['on-the-fly'] / need:.2f}x); one worker each: "
        f"{need / best['prepared']:.1f} prepared / {need / best['on-the-fly']:.1f} on-the-fly "
        "workers needed"
    )
    print(
        f"wall-clock speedup (noisy on a shared machine): {wall['prepared'] / wall['on-the-fly']:.2f}x"
    )
    print(f"speedup: {best['prepared'] / best['on-the-fly']:.2f}x")


if __name__ == "__main__":
    main()
