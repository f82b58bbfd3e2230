"""Evaluation entry point (Hydra): score a model without training it.

    python -m matbackprop.evaluate experiment=table2_ncut_alexnet_relu5
    python -m matbackprop.evaluate experiment=table2_deepncut_alexnet eval.checkpoint=best

Builds the task and model exactly as ``matbackprop.train`` would (same seed, so an untrained
model has the weights a training run starts from) and runs the task's ``evaluate`` once, on the
whole val set (``eval.monitor_items``, the subset scored during training, is ignored).

- ``eval.checkpoint=none`` (default): the untrained model. The run folder's record is this one
  evaluation: ``config.yaml``, ``metrics.csv`` (one row, epoch 0: untrained), ``eval.json``, ``tables/``
  (and the task's outputs, e.g. ``segs/``). Refused on a folder that holds a training run
  (``last.pt``, ``best.pt`` or ``status.json``): that would overwrite its record.
- ``eval.checkpoint=best|last``: loads ``<run_dir>/<best|last>.pt`` and writes everything
  (``config.yaml``, ``eval.json``, ``tables/``, the task's outputs) under
  ``<run_dir>/eval/<best|last>/``; the training record is left byte-identical.

The run folder is the one ``matbackprop.train`` gives the same command line
(``outputs/<task>/<run_name>[/<overrides>]``, README "Run folders"), so ``eval.checkpoint=best``
with the overrides a run was trained with scores that run. Hydra writes no ``.hydra/`` or log
file here (``HYDRA_OVERRIDES``). The configuration is validated before any data is read (Hydra's
own errors too: unknown experiment, key or group option, exit 2), and the run folder is locked
for the whole evaluation (:class:`~matbackprop.engine.runlock.RunLock`). Used for the paper's
"not fine-tuned" rows and for the untrained side of the demo.
Exit codes: 0 done, 2 missing/corrupt data or checkpoint, a bad config value, or a run folder
in use or holding a training run (message, no traceback; :mod:`matbackprop.cli`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from matbackprop.cli import run_cli, run_overrides
from matbackprop.engine.checkpoint import (
    MissingCheckpointError,
    seed_everything,
    write_json_atomic,
)
from matbackprop.engine.distributed import resolve_device
from matbackprop.engine.records import (
    append_metrics,
    save_config,
    split_metrics,
    truncate_metrics,
    write_media,
)
from matbackprop.engine.runlock import RunLock
from matbackprop.engine.schema import complete, validate
from matbackprop.errors import RunFolderError
from matbackprop.tasks import task_factory
from matbackprop.weights import NAMES, eval_folder_name, load_model_weights, resolve_checkpoint

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
TRAINING_FILES = ("last.pt", "best.pt", "status.json")  # a folder with any of these was trained


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns the scalar metrics (no Hydra needed: tests call this).

    Raises:
        ConfigError: a config value of the wrong type or range (before any data is read).
        RunFolderError: the run folder is in use, or holds a training run and
            ``eval.checkpoint=none``.
        CheckpointError: the requested checkpoint is missing, unreadable or of another model.
    """
    validate(cfg, training=False)
    cfg = complete(cfg)  # every default filled in (cfg.trainer.seed, cfg.trainer.device)
    run_dir = Path(cfg.run_dir)
    with RunLock(run_dir):
        return _evaluate(cfg, run_dir)


def _evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    which = str(OmegaConf.select(cfg, "eval.checkpoint", default="none"))
    if which == "none":
        trained = [name for name in TRAINING_FILES if (run_dir / name).is_file()]
        if trained:
            raise RunFolderError(
                f"run folder {run_dir} holds a training run ({', '.join(trained)}); evaluating "
                "the untrained model there would overwrite its records. Pass "
                "eval.checkpoint=best or eval.checkpoint=last to score its weights (written to "
                f"{run_dir / 'eval' / '<checkpoint>'}), or another run_name=... to score an "
                "untrained model."
            )
        out_dir, task_cfg = run_dir, cfg
    else:
        # best|last: this run's own; else a .pt file or run folder -> eval/<stem>-<path hash>/
        ckpt_path = run_dir / f"{which}.pt" if which in NAMES else resolve_checkpoint(which)
        out_dir = run_dir / "eval" / (which if which in NAMES else eval_folder_name(ckpt_path))
        task_cfg = cfg.copy()  # the task writes its own outputs (segs/, overlays/) to run_dir
        task_cfg.run_dir = str(out_dir)
    if which != "none" and not ckpt_path.is_file():
        raise MissingCheckpointError(
            f"checkpoint not found: {ckpt_path} (eval.checkpoint={which}). Train this run first "
            "(python -m matbackprop.train with the same overrides), or pass eval.checkpoint=none "
            "to score the untrained model in another run folder."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if OmegaConf.select(task_cfg, "eval.monitor_items") is not None:
        task_cfg = task_cfg.copy()  # score the whole val set, not the training-time monitor subset
        task_cfg.eval.monitor_items = None
    seed_everything(int(cfg.trainer.seed))
    task = task_factory(cfg.task)(task_cfg)
    model = task.build_model()
    epoch = 0  # epochs the scored weights were trained for (counted from 1; 0: untrained)
    if which != "none":
        epoch = load_model_weights(model, ckpt_path)["epoch"]  # epochs trained, from 1
    model = model.to(resolve_device(str(cfg.trainer.device))).eval()
    with torch.no_grad():
        scalars, media = split_metrics(task.evaluate(model, max(epoch - 1, 0)))
    row = {"epoch": epoch, **scalars}
    save_config(cfg, out_dir / "config.yaml")
    if which == "none":  # an untrained model: this row is the run's whole record
        for csv_path in [run_dir / "metrics.csv", *(run_dir / "tables").glob("*_by_epoch.csv")]:
            truncate_metrics(csv_path, epoch)  # a re-evaluation replaces its rows
        append_metrics(run_dir / "metrics.csv", row)
    else:  # eval/<which>/ holds one evaluation: drop the history of an earlier one
        for csv_path in (out_dir / "tables").glob("*_by_epoch.csv"):
            csv_path.unlink()
    write_media(out_dir, media, epoch)
    source = which if which in ("none", *NAMES) else str(ckpt_path)  # the file a path resolved to
    write_json_atomic({"checkpoint": source, **row}, out_dir / "eval.json")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items() if isinstance(v, float))
    print(f"[evaluate] {out_dir}: {shown}")
    return row


# Hydra itself writes nothing into the run folder (its .hydra/ and evaluate.log would replace a
# training run's): evaluate writes config.yaml next to its results. Command-line values win.
HYDRA_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="coco")
def _hydra_main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


def main() -> None:
    """``python -m matbackprop.evaluate [overrides]`` (Hydra; see the module docstring)."""
    given = {arg.split("=")[0].lstrip("+~") for arg in sys.argv[1:]}
    sys.argv += [o for o in HYDRA_OVERRIDES if o.split("=")[0] not in given]
    sys.argv += run_cli(run_overrides, CONFIG_DIR, sys.argv[1:], training=False)
    _hydra_main()


if __name__ == "__main__":
    main()
