"""Training entry point (Hydra).

    python -m matbackprop.train experiment=table1_deepo2p_fc optim.lr=0.005 data.root=/data/coco
    python -m matbackprop.train experiment=demo_coco_deepo2p          # synthetic data, CPU
    python -m matbackprop.train experiment=demo_bsds_deepncut         # the experiment sets its task
    torchrun --nproc_per_node=8 -m matbackprop.train experiment=table1_deepo2p_fc   # one node, 8 GPUs
    python -m matbackprop.train -m experiment=table1_deepo2p optim.lr=0.01,0.001    # a sweep

The run folder is ``${run_dir}`` = ``outputs/<task>/<run_name>``, plus ``/<overrides>`` when the
command line changes keys that define the run (identity and may_change keys of
:mod:`matbackprop.engine.schema`, sorted, ``k=v`` joined by ``,``: ``table1_deepo2p/optim.lr=0.005``);
an explicit ``run_name=`` / ``run_dir=`` is used as is. It holds ``config.yaml``, ``metrics.csv``,
``status.json``, ``last.pt``, ``best.pt``, ``tables/``, ``wandb/``; the same command again resumes
it (to the step), or says it is finished. In a sweep each job gets ``<run_name>/<swept
overrides>``. ``task`` (set by the experiment, ``conf/task/``) picks ``matbackprop.tasks.<task>``;
``--config-name bsds`` is still accepted.

Exit codes: 0 done; 2 missing/corrupt data, bad checkpoint or config value (Hydra's own errors
too: unknown experiment, key or group option), run folder of another experiment or in use (one
message, no traceback); 3 training diverged (non-finite loss / gradient; the message says what
to change); 75 stopped by SIGTERM / SIGUSR1 / SIGUSR2 after writing a checkpoint (rerun, or
requeue, to continue); 1 a bug (traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from matbackprop.cli import run_cli, run_overrides
from matbackprop.engine.sweep import in_multirun, name_sweep_job

if TYPE_CHECKING:
    from matbackprop.engine.loop import FitResult

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run(cfg: DictConfig) -> FitResult:
    """Train as configured (no Hydra needed: tests call this on a composed config)."""
    from matbackprop.engine.loop import fit  # imported here: config errors exit at once
    from matbackprop.tasks import task_factory

    return fit(cfg, task_factory(cfg.task), Path(cfg.run_dir))


@hydra.main(version_base="1.3", config_path="../../conf", config_name="coco")
def _hydra_main(cfg: DictConfig) -> None:
    cfg = name_sweep_job(cfg)
    if in_multirun():  # a failing job raises into Hydra, which records it; the sweep goes on
        from hydra.core.hydra_config import HydraConfig

        from matbackprop.engine.preemption import Preempted
        from matbackprop.engine.sweep import record_job

        try:
            result = run(cfg)
        except Preempted as err:  # a stop signal: checkpointed; the sweep stops here too
            record_job(HydraConfig.get(), "STOPPED", str(cfg.run_dir), str(err))
            print(f"stopped: {err}", file=sys.stderr, flush=True)
            raise SystemExit(err.exit_code) from None
    else:
        result = run_cli(run, cfg)
    if result.best is not None and os.environ.get("RANK", "0") == "0":
        print(f"[train] {result.run_dir}: best {result.monitor} = {result.best:.4g}")


def main() -> None:
    """``python -m matbackprop.train [overrides]`` (Hydra; see the module docstring)."""
    sys.argv += run_cli(run_overrides, CONFIG_DIR, sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
