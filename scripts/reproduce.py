#!/usr/bin/env python
"""Reproduce a paper table on real data: its rows as one sweep.

    python scripts/reproduce.py coco [--data-root data/coco] [extra Hydra overrides ...]
    python scripts/reproduce.py coco --keep-going        # a failing (diverging) row does not stop the rest
    python scripts/reproduce.py coco --launcher slurm hydra.launcher.partition=gpu   # rows in parallel
    python scripts/reproduce.py bsds --data-root /data/bsds trainer.epochs=1
    python scripts/reproduce.py coco --dry-run           # the plan only (works without the data)

Options and Hydra overrides may come in any order. ``coco``: the six deep rows of Table 1 and
the extra ``table1_deepo2p_bn`` row (``matbackprop.results.paper.TABLES``), each as
``python -m matbackprop.train experiment=<name> data.root=<root>``. By default the rows run one
after another in this process (finished runs are skipped, partial ones resume to the step);
the first failing row stops the script with its exit code, unless ``--keep-going``, which
runs every row and lists the failed ones at the end (exit 1 if any failed).
``--launcher slurm`` (or ``local``) instead submits all rows as one Hydra multirun
(``python -m matbackprop.train -m experiment=a,b,... hydra/launcher=slurm``): the rows run in
parallel as SLURM jobs (``conf/hydra/launcher/slurm.yaml``), a failing row never stops the
others, and Hydra's sweep report lists them. Missing data stops it at once (exit 2) with a
message naming ``make data-coco``. Then ``make tables``.

``bsds``: the Table 2 rows under both protocols, BSDS500 (train on train+val, evaluate on test)
and BSDS300 (``table2_bsds300_*``: 200 train / 100 test): the not-fine-tuned NCut baselines with
``python -m matbackprop.evaluate`` (no training), the DeepNCut rows with
``python -m matbackprop.train``; missing data stops at once naming ``make data-bsds``.

``--dry-run`` prints the plan, per row: its state (start, resume, or skip: finished), run
folder, command, and steps per epoch x epochs (counted from the data when it is there, else
from the real sets' known sizes, ``matbackprop.results.paper.DATA_SIZES``); without the data
it then says what is missing (exit 2), with it exit 0. Nothing is run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from matbackprop.results.plan import plan_lines, plan_rows, row_jobs

ROOT = Path(__file__).resolve().parents[1]
COCO_FILES = (
    "annotations/instances_train2014.json",
    "annotations/instances_val2014.json",
    "train2014",
    "val2014",
)
TABLE_NAMES = {"coco": "Table 1", "bsds": "Table 2"}


def missing_coco(root: Path) -> list[Path]:
    """Paths the COCO runs need that are not there."""
    if not root.is_dir():
        return [root]
    return [root / rel for rel in COCO_FILES if not (root / rel).exists()]


def missing_bsds(root: Path) -> list[Path]:
    """The BSDS500 folders the Table 2 runs need that are not there (official layout)."""
    from matbackprop.data.bsds import find_data_dir

    try:
        data, _ = find_data_dir(root)
    except (FileNotFoundError, ValueError):
        return [root]
    need = [
        data / kind / split
        for kind in ("images", "groundTruth")
        for split in ("train", "val", "test")
    ]
    return [p for p in need if not p.is_dir()]


def data_error(what: str, missing: list[Path], name: str) -> None:
    print(
        f"error: {what} data not found: {', '.join(str(p) for p in missing)}\n"
        f"Run `make data-{name}` (downloads into data/{name}) or pass --data-root /path/to/{name}.",
        file=sys.stderr,
    )


def run_sequence(plans, keep_going: bool) -> int:
    """Run the rows in order; finished ones are skipped. The first failure stops the sequence
    (its exit code is returned) unless ``keep_going``."""
    failed: list[tuple[str, int]] = []
    for i, p in enumerate(plans, 1):
        if p.state.startswith("skip"):
            print(f"[reproduce] {i}/{len(plans)} {p.name}: finished already ({p.run_dir}), skipped")
            continue
        print(f"[reproduce] {i}/{len(plans)} {p.name}: {' '.join(p.command[1:])}", flush=True)
        code = subprocess.call(p.command, cwd=ROOT)
        if code != 0:
            if not keep_going:
                print(
                    f"[reproduce] {p.name} failed with exit code {code}; stopping", file=sys.stderr
                )
                return code
            print(f"[reproduce] {p.name} failed with exit code {code}; going on", file=sys.stderr)
            failed.append((p.name, code))
    if failed:
        print(
            f"[reproduce] {len(failed)} of {len(plans)} rows failed: "
            + ", ".join(f"{n} (exit {c})" for n, c in failed),
            file=sys.stderr,
        )
        return 1
    return 0


def time_plans(plans, n_steps: int) -> list[dict]:
    """Time ``n_steps`` real training steps of every row still to run (``RowPlan.step_s``)."""
    import torch

    from matbackprop.bench.plan import time_rows

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    todo = [p for p in plans if p.epochs and not p.state.startswith("skip")]
    print(f"[plan] timing {n_steps} real step(s) of {len(todo)} row(s) on {device} ...", flush=True)
    timed = time_rows([p.name for p in todo], n_steps, device)
    for p, t in zip(todo, timed):
        p.step_s = t["s_per_step"]
    return timed


def estimate_lines(plans, timed: list[dict], gpus: int, nodes: int) -> list[str]:
    """Per row and for the whole table: the wall time on 1 device and on gpus x nodes."""
    from matbackprop.bench.plan import ASSUMPTION, estimate
    from matbackprop.results.plan import duration

    by_name = {t["experiment"]: t for t in timed}
    device = timed[0]["device"] if timed else "?"
    lines = [f"[plan] estimated training time (measured on {device}; {ASSUMPTION}):"]
    one = many = 0.0
    for p in plans:
        t = by_name.get(p.name)
        if t is None or t["s_per_step"] is None:
            continue
        a = estimate(p.steps_per_epoch, p.epochs, t["s_per_step"])
        b = estimate(p.steps_per_epoch, p.epochs, t["s_per_step"], gpus, nodes)
        one, many = one + a, many + b
        lines.append(
            f"[plan]   {p.name}: {t['s_per_step']:.3g} s/step -> {duration(a)} on 1, "
            f"{duration(b)} on {gpus} x {nodes}  ({t['note']})"
        )
        if t["batch"] < gpus * nodes:
            lines.append(
                f"[plan]     (its global batch is {t['batch']}: {gpus * nodes} ranks need "
                f"trainer.batch_size >= {gpus * nodes}; the estimate keeps the time per item)"
            )
    lines.append(f"[plan]   table: {duration(one)} on 1, {duration(many)} on {gpus} GPU(s) x "
                 f"{nodes} node(s), rows one after another")  # fmt: skip
    return lines


def sweep_commands(jobs, output_root: Path, launcher: str) -> list[list[str]]:
    """All rows of one entry point as one Hydra multirun on ``launcher`` (rows in parallel)."""
    cmds = []
    for module in dict.fromkeys(m for _, m, _ in jobs):
        names = [n for n, m, _ in jobs if m == module]
        args = next(a for _, m, a in jobs if m == module)
        rest = [a for a in args if not a.startswith("experiment=")]
        cmds.append(
            [
                sys.executable,
                "-m",
                module,
                "-m",
                *rest,
                f"experiment={','.join(names)}",
                f"hydra/launcher={launcher}",
                f"output_root={output_root}",
            ]
        )
    return cmds


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Options and overrides in any order (``parse_intermixed_args``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=["coco", "bsds"], help="which paper table")
    parser.add_argument("--data-root", type=Path, default=None, help="default: data/<table>")
    parser.add_argument("--output-root", type=Path, default=Path("outputs"))
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument(
        "--keep-going", action="store_true", help="sequential: run every row even if one fails"
    )
    parser.add_argument(
        "--launcher",
        default="sequential",
        choices=["sequential", "local", "slurm"],
        help="sequential (default, this process) or a Hydra multirun on submitit local / SLURM",
    )
    parser.add_argument(
        "--time-steps",
        type=int,
        default=0,
        metavar="N",
        help="with the plan: time N real training steps of each row (synthetic data of the "
        "real input size, on this machine's device) and estimate the wall time (implies --dry-run)",
    )
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node for the estimate")
    parser.add_argument("--nodes", type=int, default=1, help="nodes for the estimate")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    from matbackprop.train import CONFIG_DIR

    args = parse(argv)
    args.dry_run = args.dry_run or args.time_steps > 0
    data_root = (args.data_root or Path(f"data/{args.table}")).resolve()
    output_root = args.output_root.resolve()
    missing = (missing_coco if args.table == "coco" else missing_bsds)(data_root)
    what = "MSCOCO 2014" if args.table == "coco" else "BSDS500"
    if missing and not args.dry_run:
        data_error(what, missing, args.table)
        return 2
    plans = plan_rows(
        args.table, data_root, args.overrides, output_root, CONFIG_DIR, data_present=not missing
    )
    if args.dry_run:
        timed = time_plans(plans, args.time_steps) if args.time_steps else []
        print("\n".join(plan_lines(plans)))
        if timed:
            print("\n".join(estimate_lines(plans, timed, args.gpus, args.nodes)))
        if args.launcher != "sequential":
            jobs = row_jobs(args.table, data_root, args.overrides)
            for cmd in sweep_commands(jobs, output_root, args.launcher):
                print(f"[plan] as one multirun: {' '.join(cmd[1:])}")
        if missing:
            print(
                f"note: {what} data not found ({', '.join(str(p) for p in missing)}): the plan "
                f"uses the sets' known sizes; the real run needs it: `make data-{args.table}` "
                f"or --data-root /path/to/{args.table}",
                file=sys.stderr,
            )
        return 0
    if args.launcher == "sequential":
        code = run_sequence(plans, args.keep_going)
    else:
        code = 0
        for cmd in sweep_commands(
            row_jobs(args.table, data_root, args.overrides), output_root, args.launcher
        ):
            print(f"[reproduce] {cmd[2]} x rows: {' '.join(cmd[1:])}", flush=True)
            code = subprocess.call(cmd, cwd=ROOT) or code
    if code == 0:
        table = "table1" if args.table == "coco" else "table2"
        print(
            f"[reproduce] {TABLE_NAMES[args.table]} runs done; `make tables` writes outputs/tables/{table}.md"
        )
    return code


if __name__ == "__main__":
    from matbackprop.cli import call_cli

    raise SystemExit(call_cli(main))
