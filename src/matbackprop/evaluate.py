"""Evaluation entry point (Hydra): score a model without training it.

    python -m matbackprop.evaluate --config-name bsds experiment=table2_ncut_alexnet_relu5
    python -m matbackprop.evaluate --config-name bsds experiment=table2_deepncut_alexnet eval.checkpoint=best

Builds the task and model exactly as ``matbackprop.train`` would (same seed, so an untrained
model has the weights a training run starts from), loads ``<run_dir>/<eval.checkpoint>.pt``
when ``eval.checkpoint`` is ``best`` or ``last`` (default ``none``), runs the task's
``evaluate`` once, and writes ``metrics.csv`` (one row, epoch -1 for untrained models),
``eval.json`` and ``tables/`` in the run folder (for a checkpoint of a trained run only
``eval.json`` and ``tables/eval_<which>_*.csv``: its training record is left alone). Used for
the paper's "not fine-tuned" rows and for the untrained side of the demo.
Exit codes: 0 done, 2 missing/corrupt data or checkpoint (message, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from matbackprop.engine.checkpoint import load_checkpoint, seed_everything, write_json_atomic
from matbackprop.engine.records import append_metrics, save_config, truncate_metrics
from matbackprop.engine.trainer import resolve_device, split_metrics, write_media
from matbackprop.tasks import DataError, task_factory


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns the scalar metrics (no Hydra needed: tests call this)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.trainer.get("seed", 0)))
    task = task_factory(cfg.task)(cfg)
    model = task.build_model()
    which = str(cfg.get("eval", {}).get("checkpoint", "none"))
    epoch = -1
    if which != "none":
        path = run_dir / f"{which}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (eval.checkpoint={which})")
        ckpt = load_checkpoint(path)
        model.load_state_dict(ckpt["model"])
        epoch = int(ckpt.get("epoch", -1))
    model = model.to(resolve_device(str(cfg.trainer.get("device", "auto")))).eval()
    with torch.no_grad():
        scalars, media = split_metrics(task.evaluate(model, max(epoch, 0)))
    row = {"epoch": epoch, **scalars}
    prefix = ""
    if which == "none":  # an untrained model: this row is the run's whole record
        save_config(cfg, run_dir / "config.yaml")
        for csv_path in [run_dir / "metrics.csv", *(run_dir / "tables").glob("*_by_epoch.csv")]:
            truncate_metrics(csv_path, epoch)  # a re-evaluation replaces its rows
        append_metrics(run_dir / "metrics.csv", row)
    else:  # a trained run: leave its training record alone
        prefix = f"eval_{which}_"
    write_media(run_dir, media, epoch, prefix)
    write_json_atomic({"checkpoint": which, **row}, run_dir / "eval.json")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items() if isinstance(v, float))
    print(f"[evaluate] {run_dir}: {shown}")
    return row


@hydra.main(version_base="1.3", config_path="../../conf", config_name="coco")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
