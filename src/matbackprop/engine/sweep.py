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
    """Records every job of a sweep and prints them all when the sweep ends (also on failure,
    and on SIGTERM / SIGINT to the sweep command: see :func:`install_driver_signals`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = _jobs_file(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        atexit.register(report, path)
        install_driver_signals(path)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _STOP:  # a stop signal reached the sweep between two in-process jobs
            raise SystemExit(_STOP[0])

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        status = getattr(job_return.status, "name", str(job_return.status))
        error = ""
        if status == "FAILED":
            err = job_return._return_value
            error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        run_dir = str((getattr(job_return, "cfg", None) or config).get("run_dir", ""))
        record_job(config.hydra, status, run_dir, error)


def record_job(hydra_cfg: Any, status: str, run_dir: str, error: str = "") -> None:
    """Append one job's outcome to ``jobs.jsonl``: its state, the overrides the sweep varies,
    and its monitored metric (best and last) read from its ``status.json``. ``hydra_cfg``:
    the job's ``hydra`` config (``HydraConfig.get()`` inside the job)."""
    swept = swept_keys(hydra_cfg.sweep.dir)
    overrides = list(hydra_cfg.overrides.task)
    line = {
        "job": int(hydra_cfg.job.num),
        "overrides": overrides,
        "changed": [o for o in overrides if override_key(o) in swept],
        "run_dir": run_dir,
        "status": status,
        "error": error,
        **_metric(Path(run_dir)),
    }
    path = Path(str(hydra_cfg.sweep.dir)) / "jobs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # one short write per job: atomic with O_APPEND
        fh.write(json.dumps(line) + "\n")


def _metric(run_dir: Path) -> dict[str, Any]:
    """monitor, mode, best and last value of a job's run (empty if it wrote no status)."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    monitor = status.get("monitor")
    last = (status.get("last") or {}).get(monitor)
    return {"monitor": monitor, "mode": status.get("monitor_mode", "min"),
            "best": status.get("best"), "last": last}  # fmt: skip


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "—"


def report(path: Path) -> list[dict[str, Any]]:
    """Print (and return) the jobs recorded in ``path``: state, changed overrides, the
    monitored metric (best, last), sorted by the best value (best first)."""
    if not path.is_file() or os.environ.get("MATBACKPROP_SWEEP_REPORTED") == str(path):
        return []
    jobs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    failed = [j for j in jobs if j["status"] != "COMPLETED"]
    stopped = [j for j in jobs if j["status"] == "STOPPED"]
    head = f"[sweep] {len(jobs)} job(s): {len(jobs) - len(failed)} completed, "
    head += f"{len(failed) - len(stopped)} failed" + (
        f", {len(stopped)} stopped" if stopped else ""
    )
    lines = [head]

    def key(j: dict[str, Any]):
        b = j.get("best")
        sign = -1 if j.get("mode") == "max" else 1
        return (not isinstance(b, (int, float)), sign * b if isinstance(b, (int, float)) else 0)

    for j in sorted(jobs, key=lambda j: (key(j), j["job"])):
        mark = {"COMPLETED": "ok  ", "STOPPED": "STOP"}.get(j["status"], "FAIL")
        changed = ",".join(j.get("changed") or []) or "-"
        metric = ""
        if j.get("monitor"):
            metric = f" {j['monitor']} best {_fmt(j.get('best'))} last {_fmt(j.get('last'))}"
        lines.append(f"[sweep] {mark} #{j['job']} {changed}{metric}  {j['run_dir']}")
        if j["error"]:
            lines.append(f"[sweep]      {j['error']}")
    print("\n".join(lines), flush=True)
    os.environ["MATBACKPROP_SWEEP_REPORTED"] = str(path)
    return jobs


# ---------------------------------------------------------------------- the sweep command
_STOP: list[int] = []  # the exit status a stop signal to the sweep command asks for


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie has exited


def install_driver_signals(path: Path, wait_s: float = 900.0) -> None:
    """SIGTERM / SIGINT to the sweep command: forwarded to the job processes (local launcher),
    which checkpoint and exit; then the ``[sweep]`` report and exit 75 (SIGINT: 130). Jobs
    running in this process (the basic launcher) are stopped by their own trainer, and no new
    job starts. Only in the main thread (a no-op elsewhere)."""
    import signal
    import time

    def on_signal(signum: int, frame: Any) -> None:
        code = 130 if signum == signal.SIGINT else 75
        if not _STOP:
            _STOP.append(code)
        kids = _children(os.getpid())
        if not kids:  # in-process jobs: the running trainer (if any) checkpoints and stops
            return
        name = signal.Signals(signum).name
        print(f"[sweep] {name}: forwarded to {len(kids)} job process(es); waiting for them "
              "to checkpoint and exit", flush=True)  # fmt: skip
        for pid in kids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait_s
        while any(_alive(p) for p in kids) and time.time() < deadline:
            time.sleep(0.2)
        report(path)
        os._exit(code)  # submitit's waiting loop is not returned to

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            return
