"""Hydra multirun support: one run folder per job, and a report of every job at the end.

``python -m matbackprop.train -m experiment=table1_deepo2p optim.lr=0.01,0.001`` runs two jobs
in ``outputs/coco/table1_deepo2p/optim.lr=0.01`` and ``.../optim.lr=0.001`` (the folder is the
run name plus the swept keys that name a run, from the config schema: operational keys such
as ``trainer.workers``, and ``experiment``, are left out). A failing job does not stop the
sweep: Hydra records it and runs the others; :class:`SweepReport` (a Hydra callback) appends each job's outcome to
``<sweep dir>/jobs.jsonl`` — from whichever process runs the job, locally or on SLURM — and
prints the table of all of them when the sweep command exits.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from matbackprop.engine.schema import names_run, override_key


def in_multirun() -> bool:
    """True inside a job of ``-m`` / ``--multirun``."""
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # Hydra not initialised (tests calling run() directly)
        return False


def swept_keys(sweep_dir: str | Path) -> set[str]:
    """Keys the sweep varies (``a=1,2``, ``range(...)``, ``choice(...)``), read from the
    ``multirun.yaml`` Hydra writes in the sweep folder before launching."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return set()
    raw = list(OmegaConf.load(path).hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(raw)
    return {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}


def name_sweep_job(cfg: DictConfig) -> DictConfig:
    """In a multirun job, append the swept keys' values to ``run_name`` (so ``run_dir``):
    ``table1_deepo2p/optim.lr=0.01``; unless the sweep sets ``run_name`` / ``run_dir`` itself
    or varies nothing that names a run (:func:`~matbackprop.engine.schema.names_run`:
    identity and may_change keys, not ``experiment``, whose rows are named already). A sweep
    of operational keys only (e.g. ``trainer.channels_last=true,false``) is named by them, so
    that its jobs never share a folder."""
    if not in_multirun():
        return cfg
    hc = HydraConfig.get()
    swept = swept_keys(hc.sweep.dir)
    if swept & {"run_name", "run_dir"}:
        return cfg
    keys = {k for k in swept if names_run(k)}
    if not keys:
        keys = {k for k in swept if k.split("/")[0].split(".")[0] not in ("experiment", "hydra")}
    overrides = {override_key(o): o.lstrip("+") for o in hc.overrides.task}
    suffix = ",".join(overrides[k] for k in sorted(keys) if k in overrides)
    if suffix:
        with open_dict(cfg):
            cfg.run_name = f"{cfg.run_name}/{suffix}"
    return cfg


def _jobs_file(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / "jobs.jsonl"


class SweepReport(Callback):
    """Records every job of a sweep and prints them all when the sweep ends (also on failure)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = _jobs_file(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        atexit.register(report, path)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        status = getattr(job_return.status, "name", str(job_return.status))
        error = ""
        if status == "FAILED":
            err = job_return._return_value
            error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        line = {
            "job": int(config.hydra.job.num),
            "overrides": list(config.hydra.overrides.task),
            "run_dir": str((getattr(job_return, "cfg", None) or config).get("run_dir", "")),
            "status": status,
            "error": error,
        }
        path = _jobs_file(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:  # one short write per job: atomic with O_APPEND
            fh.write(json.dumps(line) + "\n")


def report(path: Path) -> list[dict[str, Any]]:
    """Print (and return) the jobs recorded in ``path``."""
    if not path.is_file():
        return []
    jobs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    failed = [j for j in jobs if j["status"] != "COMPLETED"]
    lines = [
        f"[sweep] {len(jobs)} job(s): {len(jobs) - len(failed)} completed, {len(failed)} failed"
    ]
    for j in sorted(jobs, key=lambda j: j["job"]):
        mark = "ok  " if j["status"] == "COMPLETED" else "FAIL"
        lines.append(f"[sweep] {mark} #{j['job']} {j['run_dir']}")
        if j["error"]:
            lines.append(f"[sweep]      {j['error']}")
    print("\n".join(lines), flush=True)
    os.environ.setdefault("MATBACKPROP_SWEEP_REPORTED", "1")
    return jobs
