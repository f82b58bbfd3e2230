"""DeepNCut training throughput at full BSDS resolution (481×321), images per second, as data.

    rows = measure([0, 1], torch.device("cpu"), steps=4)
    rows[0]["images_per_s"], rows[0]["s_per_step"]

Each setting is ``table2_deepncut_alexnet`` (AlexNet relu5 + the two new conv pairs) timed
through its real step (:mod:`matbackprop.bench.real_step`: the BSDS task's ``train_step`` —
ground truth onto the feature grid, ``ncut_alignment_loss`` — inside ``OptimStep`` with the
row's ``trainer.clip`` = 10 and the non-finite check), random init, synthetic 481×321 images:
fine-tuned end to end, and with conv1–conv2 frozen (``model.freeze_through=relu2``), at 1 and
4 images per step (batches of one orientation, as the task groups them). The paper reports
about 2–3 images/s for training on a Titan Z GPU (MATLAB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from matbackprop.bench.harness import describe, time_call
from matbackprop.bench.real_step import WORK, build_step, compose_row

EXPERIMENT = "table2_deepncut_alexnet"
SETTINGS = [  # (label, overrides, images per step)
    ("AlexNet relu5, end to end", [], 1),
    ("AlexNet relu5, end to end", [], 4),
    ("AlexNet relu5, conv1-2 frozen", ["model.freeze_through=relu2"], 1),
    ("AlexNet relu5, conv1-2 frozen", ["model.freeze_through=relu2"], 4),
]
COLUMNS = [
    ("setting", "s"),
    ("batch", "d"),
    ("s_per_step", ".3f", "s/step"),
    ("images_per_s", ".2f", "images/s"),
    ("grad_norm", ".3g", "grad norm (last, before clip)"),
]


def measure(
    settings: Sequence[int] | None,
    device: torch.device,
    steps: int = 4,
    warmup: int = 1,
    precision: str = "32",
    work: str | Path = WORK,
    verbose: bool = True,
) -> list[dict]:
    """One row per setting (indices into ``SETTINGS``; None: all): seconds per step (median),
    images/s, CUDA peak MiB, the last step's loss / gradient norm, and the settings."""
    rows = []
    for i in range(len(SETTINGS)) if settings is None else settings:
        label, over, batch = SETTINGS[i]
        cfg = compose_row(EXPERIMENT, [*over, f"trainer.precision={precision}"], batch, work)
        torch.manual_seed(0)
        step = build_step(cfg, device)
        t = time_call(step, device, steps, warmup)
        rows.append(
            dict(
                setting=label,
                batch=step.batch_size,
                s_per_step=t.median,
                images_per_s=step.batch_size / t.median,
                mean_s=t.mean,
                min_s=t.min,
                peak_mib=t.peak_mib,
                loss=t.last.loss,
                grad_norm=t.last.grad_norm,
                clip=cfg.trainer.clip,
                image=f"{tuple(step.batch['image'].shape[-2:])}",
                device=describe(device),
                precision=precision,
                steps=steps,
            )
        )
        if verbose:
            r = rows[-1]
            print(f"  {label:<32} batch {batch}: {r['s_per_step']:.3f} s/step", flush=True)
    return rows
