"""The reproduction plan of a paper table: each row's command, run folder, steps and state.

``scripts/reproduce.py`` runs the plan; ``--dry-run`` prints it (no data needed: the sizes of
the real sets are :data:`~matbackprop.results.paper.DATA_SIZES` when the data is absent).
A row's plan is a :class:`RowPlan`; a later ``--time-steps N`` adds a measured seconds-per-step
to it (``RowPlan.step_s``) and :func:`plan_lines` prints the estimated wall time.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from matbackprop.engine.records import read_status
from matbackprop.errors import ConfigError
from matbackprop.results.paper import DATA_SIZES, TABLES

# which table a reproduce target runs, and the config its rows compose with
TARGETS = {"coco": ("table1", "coco"), "bsds": ("table2", "bsds")}


def row_jobs(target: str, data_root: Path, extra: list[str]) -> list[tuple[str, str, list[str]]]:
    """(experiment, entry-point module, Hydra args) per row, in run order: Table 1's rows
    with ``matbackprop.train``; Table 2's NCut baselines with ``matbackprop.evaluate`` (no
    training) first, then its DeepNCut rows with ``matbackprop.train``."""
    table, config = TARGETS[target]
    names = list(TABLES[table]["experiments"])
    pre = ["--config-name", config] if config == "bsds" else []

    def args(name: str) -> list[str]:
        return [*pre, f"experiment={name}", f"data.root={data_root}", *extra]

    if target == "coco":
        return [(n, "matbackprop.train", args(n)) for n in names]
    evals = [n for n in names if "_ncut_" in n]
    trains = [n for n in names if n not in evals]
    return [(n, "matbackprop.evaluate", args(n)) for n in evals] + [
        (n, "matbackprop.train", args(n)) for n in trains
    ]


@dataclass
class RowPlan:
    name: str
    module: str
    command: list[str]
    run_dir: Path
    train_items: int | None = None
    steps_per_epoch: int | None = None
    epochs: int = 0
    sizes_from: str = ""  # "counted" (the data is there) or "known size" (DATA_SIZES)
    state: str = "start"  # start | resume (...) | skip (finished)
    step_s: float | None = None  # seconds per step, from a later --time-steps
    notes: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int | None:
        return None if self.steps_per_epoch is None else self.steps_per_epoch * self.epochs


def compose_row(config_dir: str, args: list[str], output_root: Path) -> dict[str, Any]:
    """A row's resolved config, as its command composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config, overrides = ("coco", args) if args[:1] != ["--config-name"] else (args[1], args[2:])
    overrides = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]  # launcher's
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config, overrides=[*overrides, f"output_root={output_root}"])
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"{' '.join(args)}: {err}".replace("\n", " ")) from err


def run_folder(cfg: dict[str, Any], overrides: list[str]) -> Path:
    """The folder the row's command trains in: ``run_dir`` (with the schema's override suffix
    where the entry point adds one, ``engine.schema.run_folder_name``)."""
    try:
        from matbackprop.engine.schema import run_folder_name
    except ImportError:  # before the schema module: run_dir as composed
        return Path(cfg["run_dir"])
    return Path(run_folder_name(cfg["run_dir"], overrides))


def _bsds_count(root: Path, version: int, split: str) -> int | None:
    """Images of a split in the data under ``root`` (None when the data is not there)."""
    try:
        from matbackprop.data.bsds import BSDS

        return len(BSDS(root, split, version=version).items)
    except Exception:  # noqa: BLE001 - absent / incomplete data: fall back to the known sizes
        return None


def train_items(cfg: dict[str, Any], data_present: bool) -> tuple[int, str]:
    """(training items per epoch, where the count comes from)."""
    d, epochs = cfg["data"], int(cfg["trainer"]["epochs"] or 0)
    if cfg["task"] == "coco":
        n, where = DATA_SIZES["coco"]["train"], "known size (upper bound)"
        cap = d.get("max_train_items")
        return (min(n, int(cap)) if cap else n), where
    version, split = int(d.get("version", 500)), d["train_split"]
    n = _bsds_count(Path(d["root"]), version, split) if data_present else None
    where = "counted"
    if n is None:
        n, where = DATA_SIZES[f"bsds{version}"][split], "known size"
    frac = float(d.get("holdout") or 0)
    if epochs > 0 and frac > 0:
        n -= max(1, round(frac * n))  # held out for selection (tasks.bsds.split_holdout)
    cap = d.get("max_train_images")
    return (min(n, int(cap)) if cap else n), where


def steps_per_epoch(cfg: dict[str, Any], n: int) -> int:
    """Optimizer steps of one epoch over ``n`` items (COCO drops a last short batch; BSDS
    batches by orientation, so with batch > 1 this is a lower bound by at most one)."""
    bs = int(cfg["trainer"]["batch_size"])
    steps = n // bs if cfg["task"] == "coco" and n > bs else math.ceil(n / bs)
    max_steps = cfg["trainer"].get("max_steps")
    return min(steps, int(max_steps)) if max_steps else steps


def row_state(run_dir: Path, module: str, epochs: int) -> str:
    """What the row's command would do with its run folder."""
    if module.endswith("evaluate"):
        return "skip (finished)" if (run_dir / "eval.json").is_file() else "start"
    status = read_status(run_dir)
    if not status:
        return "start"
    if status.get("finished"):
        return "skip (finished)"
    step = status.get("step_in_epoch")
    at = f", step {step}" if step else ""
    return f"resume (epochs done {status['epochs_done']}/{epochs}{at})"


def plan_rows(
    target: str,
    data_root: Path,
    extra: list[str],
    output_root: Path,
    config_dir: str,
    data_present: bool,
) -> list[RowPlan]:
    """The plan of every row of a reproduce target."""
    plans = []
    for name, module, args in row_jobs(target, data_root, extra):
        cfg = compose_row(config_dir, args, output_root)
        overrides = [a for a in args if "=" in a and not a.startswith("experiment=")]
        run_dir = run_folder(cfg, overrides)
        epochs = int(cfg["trainer"]["epochs"] or 0) if module.endswith("train") else 0
        n, where = train_items(cfg, data_present)
        cmd = [sys.executable, "-m", module, *args, f"output_root={output_root}"]
        plan = RowPlan(name, module, cmd, run_dir, n, None, epochs, where)
        plan.steps_per_epoch = steps_per_epoch(cfg, n) if epochs else 0
        plan.state = row_state(run_dir, module, epochs)
        plans.append(plan)
    return plans


def duration(seconds: float) -> str:
    """``"2.5 h"`` / ``"14 min"``: a wall time as a planner reads it."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_lines(plans: list[RowPlan]) -> list[str]:
    """The plan as printed by ``reproduce.py --dry-run``: one block per row, then the total."""
    lines = []
    for i, p in enumerate(plans, 1):
        if p.epochs:
            work = (
                f"{p.steps_per_epoch} steps/epoch x {p.epochs} epochs = {p.total_steps} steps "
                f"({p.train_items} training items, {p.sizes_from})"
            )
        else:
            work = "no training (evaluation only)"
        if p.step_s is not None and p.total_steps:
            work += f"; ~{duration(p.total_steps * p.step_s)} at {p.step_s:.3g} s/step"
        lines += [
            f"[plan] {i}/{len(plans)} {p.name}: {p.state}",
            f"         run folder: {p.run_dir}",
            f"         command:    {' '.join(p.command[1:])}",
            f"         work:       {work}",
        ]
    total = sum(p.total_steps or 0 for p in plans if not p.state.startswith("skip"))
    lines.append(f"[plan] {len(plans)} rows; {total} training steps in the rows still to run")
    return lines
