"""Planning a reproduction: seconds per real training step of paper rows, and wall-time estimates.

    timed = time_rows([{"experiment": "table1_deepo2p"}], n_steps=5, device=torch.device("cuda"))
    timed[0]["s_per_step"]                                    # seconds per step at batch 100
    estimate(steps_per_epoch=6000, epochs=10, s_per_step=0.4, gpus=8)   # -> wall seconds

:func:`time_rows` composes each row's experiment from ``conf/`` and times ``n_steps`` real
training steps (:mod:`matbackprop.bench.real_step`: ``OptimStep`` + the task's ``train_step``,
the row's model / optimizer / trainer settings, ``model.pretrained=false`` — the same compute,
no download) on synthetic data of the row's real input size: COCO 227×227 crops, BSDS
full-resolution 481×321 images. On CPU a COCO batch of 100 is timed at ``max_batch`` (8)
and scaled linearly to the row's batch — an assumption, said in the row's ``note``.

:func:`estimate` is linear scaling, also an assumption: the global batch is split evenly over
``gpus × nodes`` with no communication or input-pipeline cost, and evaluation is not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from matbackprop.bench.harness import describe, time_call
from matbackprop.bench.real_step import WORK, build_step, compose_config, compose_row, config_name
from matbackprop.errors import ConfigError

CPU_MAX_BATCH = 8  # images per timed step on CPU (a COCO batch of 100 takes minutes there)
ASSUMPTION = "linear scaling over gpus x nodes (no communication cost), evaluation not counted"


def _as_row(row: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"experiment": row} if isinstance(row, str) else dict(row)


def time_rows(
    rows: Sequence[str | Mapping[str, Any]],
    n_steps: int,
    device: torch.device,
    max_batch: int | None | str = "auto",
    warmup: int = 1,
    work: str | Path = WORK,
) -> list[dict[str, Any]]:
    """Each row (an experiment name, or a dict with ``experiment`` and optional ``overrides``)
    with the timing added: ``s_per_step`` (median of ``n_steps`` after ``warmup``, at the
    row's batch), ``batch``, ``timed_batch``, ``timed_s_per_step``, ``scaled``, ``device``,
    ``input`` and ``note``. ``max_batch``: the largest batch timed (``auto``: 8 on CPU, no
    limit on CUDA). Rows without training (``trainer.epochs=0``) get ``s_per_step`` None."""
    if n_steps < 1:
        raise ConfigError(f"--time-steps must be at least 1, got {n_steps}")
    if max_batch == "auto":
        max_batch = None if device.type == "cuda" else CPU_MAX_BATCH
    out = []
    for row in map(_as_row, rows):
        name, over = row["experiment"], list(row.get("overrides", []))
        real = compose_config(config_name(name), [f"experiment={name}", *over])
        batch = int(real.trainer.batch_size)
        row.update(batch=batch, device=describe(device), steps_timed=n_steps)
        if int(real.trainer.epochs) == 0:
            out.append({**row, "s_per_step": None, "note": "no training (trainer.epochs=0)"})
            continue
        timed_batch = min(batch, max_batch) if max_batch else batch
        cfg = compose_row(name, over, batch_size=timed_batch, work=work)
        torch.manual_seed(0)
        step = build_step(cfg, device)
        t = time_call(step, device, n_steps, warmup)
        scale = batch / step.batch_size
        image = tuple(step.batch["image"].shape[-2:])
        note = f"synthetic data at {image[1]}x{image[0]}, model.pretrained=false"
        if scale != 1:
            note += f"; timed at batch {step.batch_size}, scaled x{scale:g} (linear: an assumption)"
        out.append(
            {
                **row,
                "s_per_step": t.median * scale,
                "timed_batch": step.batch_size,
                "timed_s_per_step": t.median,
                "scaled": scale != 1,
                "input": f"{image[1]}x{image[0]}",
                "peak_mib": t.peak_mib,
                "note": note,
            }
        )
    return out


def estimate(
    steps_per_epoch: int, epochs: int, s_per_step: float, gpus: int = 1, nodes: int = 1
) -> float:
    """Wall seconds of ``epochs`` × ``steps_per_epoch`` steps of ``s_per_step`` (one GPU, the
    global batch) on ``gpus`` GPUs per node × ``nodes`` nodes, assuming linear scaling
    (:data:`ASSUMPTION`)."""
    if gpus < 1 or nodes < 1:
        raise ConfigError(f"gpus and nodes must be at least 1, got gpus={gpus}, nodes={nodes}")
    if steps_per_epoch < 0 or epochs < 0 or s_per_step < 0:
        raise ConfigError("steps_per_epoch, epochs and s_per_step must not be negative")
    return steps_per_epoch * epochs * s_per_step / (gpus * nodes)
