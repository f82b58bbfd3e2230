"""MSCOCO region loader throughput, as data: on-the-fly crops vs the prepared store.

    figures = measure("outputs/bench/loader", regions=300, rounds=3, workers=2)
    figures["speedup"]          # prepared / on-the-fly regions per CPU second, one worker

Moved from ``scripts/bench_loader.py`` (which prints these figures; its docstring says what is
measured): a synthetic MSCOCO-format set of 640×480 JPEGs with 3–8 regions per image, its
JPEG and raw stores, the Table 1 item settings; one worker in CPU time (best of ``rounds``,
interleaved), wall clock, and all cores through a ``DataLoader``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


def measure(
    work: str | Path,
    regions: int = 300,
    rounds: int = 3,
    workers: int = 1,
    params: Mapping[str, Any] = PARAMS,
    item: Mapping[str, Any] = ITEM,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Regions/s per path (``on-the-fly``, ``prepared``, ``prepared (raw, lossless)``):
    ``cpu`` (one worker, per CPU second, best round), ``wall`` (same, per wall-clock second),
    ``many`` (``workers`` DataLoader workers); ``speedup`` (prepared / on-the-fly, ``cpu``),
    ``wall_speedup``, ``regions`` (items in the set)."""
    torch.set_num_threads(1)
    root = ensure_generated(Path(work) / "coco", params, make_synthetic_coco)
    paths = {"on-the-fly": CocoRegions(root, ANN, **item)}
    for fmt, name in (("jpeg", "prepared"), ("raw", "prepared (raw, lossless)")):
        store = root / "prepared" / fmt / "val2014"
        t0 = time.perf_counter()
        spec = StoreSpec(root, ANN, None, store, max_side=item["max_side"], fmt=fmt)
        man = prepare_store(spec, workers=workers)
        size = sum(f.stat().st_size for f in store.glob("*.bin")) / man["regions"] / 1e3
        log(
            f"{fmt} store: {man['regions']} regions, {man['done_now']} chunks written now "
            f"({time.perf_counter() - t0:.1f} s), {size:.1f} kB/region"
        )
        paths[name] = PreparedCocoRegions(store, root, ANN, **item)
    fly = paths["on-the-fly"]
    n = min(regions, len(fly))
    order = np.random.default_rng(0).permutation(len(fly))[:n].tolist()
    for ds in paths.values():  # warm the page cache and PIL
        one_worker(ds, order[:20])
    rates: dict[str, list] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, ds in paths.items():
            rates[k].append(one_worker(ds, order))
    cpu = {k: max(r[0] for r in v) for k, v in rates.items()}
    wall = {k: max(r[1] for r in v) for k, v in rates.items()}
    many = {k: all_cores(ds, workers) for k, ds in paths.items()}
    return dict(
        cpu=cpu,
        wall=wall,
        many=many,
        regions=len(fly),
        speedup=cpu["prepared"] / cpu["on-the-fly"],
        wall_speedup=wall["prepared"] / wall["on-the-fly"],
    )
