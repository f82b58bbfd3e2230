"""Training-step cost of DeepO2P against plain AlexNet (the structured layer's overhead), as data.

    rows = measure(["AlexNet", "DeepO2P"], torch.device("cpu"), batch_size=100, steps=3)
    rows[1]["median_s"], rows[1]["ratio_vs_alexnet"]          # seconds; × AlexNet

Each model is its Table 1 experiment (``MODELS``) timed through its real step
(:mod:`matbackprop.bench.real_step`: ``OptimStep`` with the row's clip and the non-finite
check, the COCO task's ``train_step``, 227×227 crops with region masks, 80 classes, random
init). Target: DeepO2P ≤ 1.3× AlexNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from matbackprop.bench.harness import add_ratio, describe, time_call
from matbackprop.bench.real_step import WORK, build_step, compose_row

MODELS = {
    "AlexNet": "table1_alexnet",
    "DeepO2P": "table1_deepo2p",
    "DeepO2P-FC": "table1_deepo2p_fc",  # slow on CPU: fc6 alone has d(d+1)/2 × 4096 = 135M weights
}
COLUMNS = [
    ("model", "s"),
    ("median_s", ".3f", "median s/step"),
    ("min_s", ".3f", "min s/step"),
    ("ratio_vs_alexnet", ".2f", "× AlexNet"),
    ("images_per_s", ".1f", "img/s"),
    ("grad_norm", ".3g", "grad norm (last)"),
]


def measure(
    models: Sequence[str],
    device: torch.device,
    batch_size: int = 100,
    steps: int = 3,
    warmup: int = 1,
    precision: str = "32",
    pool_dtype: str = "float64",
    work: str | Path = WORK,
    verbose: bool = True,
) -> list[dict]:
    """One row per model: median / mean / min seconds per step, images/s, CUDA peak MiB, the
    last step's loss and gradient norm, and the settings; ``ratio_vs_alexnet`` (× AlexNet, when
    AlexNet was measured; NaN otherwise)."""
    rows = []
    for name in models:
        over = [f"trainer.precision={precision}"]
        if name != "AlexNet":
            over.append(f"model.pool_dtype={pool_dtype}")
        cfg = compose_row(MODELS[name], over, batch_size=batch_size, work=work)
        torch.manual_seed(0)
        step = build_step(cfg, device)

        def progress(i, s, name=name):
            if verbose:
                print(f"  {name} step {i}/{steps}: {s:.3f}s", flush=True)

        t = time_call(step, device, steps, warmup, progress)
        rows.append(
            dict(
                model=name,
                experiment=MODELS[name],
                median_s=t.median,
                mean_s=t.mean,
                min_s=t.min,
                images_per_s=step.batch_size / t.median,
                peak_mib=t.peak_mib,
                loss=t.last.loss,
                grad_norm=t.last.grad_norm,
                clip=cfg.trainer.clip,
                device=describe(device),
                batch_size=step.batch_size,
                crop=int(cfg.data.crop_size),
                pool_dtype=pool_dtype if name != "AlexNet" else "",
                precision=precision,
                steps=steps,
                threads=torch.get_num_threads(),
            )
        )
    add_ratio(rows, "median_s", "model", "AlexNet", "ratio_vs_alexnet")
    return rows
