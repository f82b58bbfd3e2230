"""Model weights from anywhere: a run folder, a ``.pt`` file, or ``best|last`` of a run folder.

    path = resolve_checkpoint("outputs/coco/demo_coco_deepo2p")        # its best.pt (or last.pt)
    info = load_model_weights(model, "outputs/coco/run/last.pt")     # {"path", "epoch", "which"}

Two checkpoint formats (:mod:`matbackprop.engine.state`): ``best.pt`` = ``{"model", "epoch"
(counted from 1), <monitor>: value}``; ``last.pt`` = ``{"model", "optimizer", ..., "epoch"
(the epoch it was written in, from 1; 0-based in files without ``"format": 2``),
"step_in_epoch" (None: that epoch finished)}``.
``info["epoch"]`` counts from 1 for both: the number of whole epochs the weights were trained
for (as ``metrics.csv`` and ``final.json`` count them). Loading is strict: every key and every
shape must match, else a :class:`~matbackprop.errors.CheckpointError` names the file, the first
mismatches and the config the weights were trained with.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from matbackprop.engine.checkpoint import MissingCheckpointError, load_checkpoint
from matbackprop.errors import CheckpointError

NAMES = ("best", "last")  # the checkpoints a training run writes: <run>/best.pt, <run>/last.pt
_SHOWN = 3  # mismatching keys named in a message


def resolve_checkpoint(
    source: str | Path, default: str = "best", run_dir: str | Path | None = None
) -> Path:
    """The checkpoint file ``source`` names.

    - a run folder: ``<run>/<default>.pt``; for ``default="best"`` a missing ``best.pt`` falls
      back to ``last.pt`` (said on stderr);
    - ``"best"`` or ``"last"`` with ``run_dir``: exactly ``<run_dir>/<source>.pt`` (no fallback);
    - anything else: a checkpoint file.

    Raises:
        MissingCheckpointError: nothing at that path, or a run folder without ``best.pt`` /
            ``last.pt`` (names the folder).
    """
    if default not in NAMES:
        raise ValueError(f"default must be one of {NAMES}, got {default!r}")
    if run_dir is not None and str(source) in NAMES:
        path = Path(run_dir) / f"{source}.pt"
        if not path.is_file():
            raise MissingCheckpointError(f"checkpoint not found: {path} (run folder {run_dir})")
        return path
    path = Path(source)
    if path.is_dir():
        order = (default, "last") if default == "best" else (default,)
        for name in order:
            candidate = path / f"{name}.pt"
            if candidate.is_file():
                if name != default:
                    print(f"[weights] {path}: no {default}.pt, using {name}.pt", file=sys.stderr)
                return candidate
        wanted = " or ".join(f"{n}.pt" for n in order)
        raise MissingCheckpointError(
            f"run folder {path} holds no weights ({wanted} not found): train it first "
            "(python -m matbackprop.train ...), or pass a .pt file"
        )
    if not path.is_file():
        raise MissingCheckpointError(
            f"checkpoint not found: {path} (expected a .pt file or a run folder holding "
            "best.pt / last.pt)"
        )
    return path


def checkpoint_epoch(ckpt: dict[str, Any]) -> int:
    """Whole epochs the checkpoint's weights were trained for, counted from 1 (-1: unknown)."""
    if "epoch" not in ckpt:
        return -1
    epoch = int(ckpt["epoch"])
    if "step_in_epoch" not in ckpt:  # best.pt: counted from 1
        return epoch
    if int(ckpt.get("format", 1)) < 2:  # last.pt before format 2: a 0-based index
        epoch += 1
    return epoch - (0 if ckpt["step_in_epoch"] is None else 1)  # inside it: one less done


def load_model_weights(
    model: torch.nn.Module,
    source: str | Path,
    default: str = "best",
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Load the weights ``source`` names (:func:`resolve_checkpoint`) into ``model``, strictly.

    Returns:
        ``{"path": Path, "epoch": int (counted from 1, -1 unknown), "which": the file's stem,
        "step_in_epoch": int | None}``.

    Raises:
        MissingCheckpointError: no such file / no weights in the run folder.
        CheckpointError: unreadable, no ``model`` key, or keys / shapes that do not fit
            ``model`` (names the file, the first mismatches and ``<run>/config.yaml``).
    """
    path = resolve_checkpoint(source, default, run_dir)
    ckpt = load_checkpoint(path)
    load_state(model, ckpt, path)
    return {
        "path": path,
        "epoch": checkpoint_epoch(ckpt),
        "which": path.stem,
        "step_in_epoch": ckpt.get("step_in_epoch"),
    }


def load_state(model: torch.nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(ckpt["model"])``, a mismatch reported as a CheckpointError."""
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no model weights (key 'model' missing)")
    problems = mismatches(model.state_dict(), state)
    if problems:
        shown = "; ".join(problems[:_SHOWN]) + (
            f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit the configured model: {shown}. Use the model "
            f"config the weights were trained with (see {path.parent / 'config.yaml'})."
        )
    model.load_state_dict(state)


def mismatches(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> list[str]:
    """Differences between a model's state dict and a checkpoint's, one line each: shape
    mismatches first (in the model's key order), then missing and unexpected keys."""
    shapes = [
        f"{k}: checkpoint {tuple(given[k].shape)} != model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(v.shape)
    ]
    missing = [f"{k}: missing in the checkpoint" for k in expected if k not in given]
    extra = [f"{k}: not in the model" for k in given if k not in expected]
    return shapes + missing + extra


def eval_folder_name(path: str | Path) -> str:
    """``<file stem>-<8 hex digits of the absolute path's SHA-1>``: where ``evaluate`` writes
    the scores of a checkpoint given by path (two files named ``best.pt`` never collide)."""
    path = Path(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{path.stem}-{digest}"
