"""Training entry point (Hydra).

    python -m matbackprop.train experiment=table1_deepo2p_fc optim.lr=0.005 data.root=/data/coco
    python -m matbackprop.train experiment=demo_coco_deepo2p          # synthetic data, CPU

The run folder is ``${run_dir}`` = ``outputs/<task>/<run_name>`` (``config.yaml``,
``metrics.csv``, ``last.pt``, ``best.pt``, ``tables/``, ``wandb/``); the same command again
resumes it, or says it is finished. ``task`` picks ``matbackprop.tasks.<task>``.
Exit codes: 0 done, 2 missing/corrupt data or an incompatible run folder (message, no
traceback).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from matbackprop.cli import run_cli
from matbackprop.engine.trainer import FitResult, fit
from matbackprop.tasks import task_factory

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run(cfg: DictConfig) -> FitResult:
    """Train as configured (no Hydra needed: tests call this on a composed config)."""
    return fit(cfg, task_factory(cfg.task), Path(cfg.run_dir))


@hydra.main(version_base="1.3", config_path="../../conf", config_name="coco")
def main(cfg: DictConfig) -> None:
    result = run_cli(run, cfg)
    if result.best is not None:
        print(f"[train] {result.run_dir}: best {result.monitor} = {result.best:.4g}")


if __name__ == "__main__":
    main()
