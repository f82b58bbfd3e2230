#!/usr/bin/env python
"""Reproduce a paper table on real data: its rows as one sweep.

    python scripts/reproduce.py coco [--data-root data/coco] [extra Hydra overrides ...]
    python scripts/reproduce.py coco --keep-going        # a failing (diverging) row does not stop the rest
    python scripts/reproduce.py coco --launcher slurm hydra.launcher.partition=gpu   # rows in parallel
    python scripts/reproduce.py coco --dry-run           # print the commands only

``coco``: the six deep rows of Table 1 (``conf/experiment/table1_*.yaml``) and the extra
``table1_deepo2p_bn`` row, each as
``python -m matbackprop.train experiment=<name> data.root=<root>``. By default the rows run one
after another in this process (finished runs are skipped, partial ones resume to the step);
the first failing row stops the script with its exit code, unless ``--keep-going``, which
runs every row and lists the failed ones at the end (exit 1 if any failed).
``--launcher slurm`` (or ``local``) instead submits all rows as one Hydra multirun
(``python -m matbackprop.train -m experiment=a,b,... hydra/launcher=slurm``): the rows run in
parallel as SLURM jobs (``conf/hydra/launcher/slurm.yaml``: one node, 8 GPUs, DDP, requeue
on preemption), a failing row never stops the others, and Hydra's sweep report lists them.
Missing data stops it at once (exit 2) with a message naming ``make data-coco``. Then
``make tables``.

``bsds``: the Table 2 rows (``conf/experiment/table2_*.yaml``) under both protocols, BSDS500
(train on train+val, evaluate on test) and BSDS300 (``table2_bsds300_*``: 200 train / 100
test): the not-fine-tuned NCut baselines with ``python -m matbackprop.evaluate``
(no training), the DeepNCut rows with ``python -m matbackprop.train``, all with
``--config-name bsds data.root=<root>``; missing data stops at once naming ``make data-bsds``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from matbackprop.engine.records import read_status

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = [
    "table1_alexnet",
    "table1_alexnet_s",
    "table1_deepo2p",
    "table1_deepo2p_s",
    "table1_deepo2p_fc",
    "table1_deepo2p_fc_s",
    "table1_deepo2p_bn",  # extra row, not in the paper (descriptor BatchNorm): runs last
]
_TABLE2_EVAL = ["ncut_alexnet_relu3", "ncut_alexnet_relu4", "ncut_alexnet_relu5", "ncut_vgg16"]
_TABLE2_TRAIN = ["deepncut_alexnet", "deepncut_vgg16"]
# both protocols: BSDS500 (train+val / test) and BSDS300 (200 train / 100 test)
TABLE2_EVAL = [f"table2_{p}{n}" for p in ("", "bsds300_") for n in _TABLE2_EVAL]
TABLE2_TRAIN = [f"table2_{p}{n}" for p in ("", "bsds300_") for n in _TABLE2_TRAIN]
COCO_FILES = (
    "annotations/instances_train2014.json",
    "annotations/instances_val2014.json",
    "train2014",
    "val2014",
)


def missing_coco(root: Path) -> list[Path]:
    """Paths the COCO runs need that are not there."""
    if not root.is_dir():
        return [root]
    return [root / rel for rel in COCO_FILES if not (root / rel).exists()]


def is_finished(run_dir: Path) -> bool:
    """The run's ``status.json`` says finished (a corrupt one: RunFolderError naming it)."""
    status = read_status(run_dir)
    return bool(status and status.get("finished"))


def run_sequence(
    jobs: list[tuple[str, str, list[str]]], output_root: Path, dry_run: bool, keep_going: bool
) -> int:
    """Run (name, module, hydra args) jobs in order; finished runs are skipped. The first
    failure stops the sequence (its exit code is returned) unless ``keep_going``."""
    failed: list[tuple[str, int]] = []
    for i, (name, module, hydra_args) in enumerate(jobs, 1):
        task = "bsds" if name.startswith("table2") else "coco"
        run_dir = output_root / task / name
        cmd = [sys.executable, "-m", module, *hydra_args, f"output_root={output_root}"]
        if is_finished(run_dir) or (
            module.endswith("evaluate") and (run_dir / "eval.json").is_file()
        ):
            print(f"[reproduce] {i}/{len(jobs)} {name}: finished already ({run_dir}), skipped")
            continue
        print(f"[reproduce] {i}/{len(jobs)} {name}: {' '.join(cmd[1:])}", flush=True)
        if dry_run:
            continue
        code = subprocess.call(cmd, cwd=ROOT)
        if code != 0:
            if not keep_going:
                print(f"[reproduce] {name} failed with exit code {code}; stopping", file=sys.stderr)
                return code
            print(f"[reproduce] {name} failed with exit code {code}; going on", file=sys.stderr)
            failed.append((name, code))
    if failed:
        print(
            f"[reproduce] {len(failed)} of {len(jobs)} rows failed: "
            + ", ".join(f"{n} (exit {c})" for n, c in failed),
            file=sys.stderr,
        )
        return 1
    return 0


def run_sweep(
    jobs: list[tuple[str, str, list[str]]], output_root: Path, dry_run: bool, launcher: str
) -> int:
    """All rows of one entry point as one Hydra multirun on ``launcher`` (rows in parallel)."""
    code = 0
    for module in dict.fromkeys(m for _, m, _ in jobs):
        names = [n for n, m, _ in jobs if m == module]
        args = next(a for _, m, a in jobs if m == module)
        rest = [a for a in args if not a.startswith("experiment=")]
        cmd = [
            sys.executable,
            "-m",
            module,
            "-m",
            *rest,
            f"experiment={','.join(names)}",
            f"hydra/launcher={launcher}",
            f"output_root={output_root}",
        ]
        print(f"[reproduce] {module} x {len(names)} rows: {' '.join(cmd[1:])}", flush=True)
        if not dry_run:
            code = subprocess.call(cmd, cwd=ROOT) or code
    return code


def data_found(what: str, missing: list[Path], name: str) -> bool:
    """False (after a message naming the paths and ``make data-<name>``) if anything is missing."""
    if missing:
        print(
            f"error: {what} data not found: {', '.join(str(p) for p in missing)}\n"
            f"Run `make data-{name}` (downloads into data/{name}) or pass --data-root /path/to/{name}.",
            file=sys.stderr,
        )
    return not missing


def launch(jobs, output_root: Path, opts) -> int:
    if opts.launcher == "sequential":
        return run_sequence(jobs, output_root, opts.dry_run, opts.keep_going)
    return run_sweep(jobs, output_root, opts.dry_run, opts.launcher)


def reproduce_coco(data_root: Path, extra: list[str], output_root: Path, opts) -> int:
    if not data_found("MSCOCO 2014", missing_coco(data_root), "coco"):
        return 2
    jobs = [
        (name, "matbackprop.train", [f"experiment={name}", f"data.root={data_root}", *extra])
        for name in TABLE1
    ]
    code = launch(jobs, output_root, opts)
    if code == 0:
        print("[reproduce] Table 1 runs done; `make tables` writes outputs/tables/table1.md")
    return code


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


def reproduce_bsds(data_root: Path, extra: list[str], output_root: Path, opts) -> int:
    if not data_found("BSDS500", missing_bsds(data_root), "bsds"):
        return 2

    def args(name: str) -> list[str]:
        return ["--config-name", "bsds", f"experiment={name}", f"data.root={data_root}", *extra]

    jobs = [(n, "matbackprop.evaluate", args(n)) for n in TABLE2_EVAL]
    jobs += [(n, "matbackprop.train", args(n)) for n in TABLE2_TRAIN]
    code = launch(jobs, output_root, opts)
    if code == 0:
        print("[reproduce] Table 2 runs done; `make tables` writes outputs/tables/table2.md")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=["coco", "bsds"], help="which paper table")
    parser.add_argument("--data-root", type=Path, default=None, help="default: data/<table>")
    parser.add_argument("--output-root", type=Path, default=Path("outputs"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--keep-going", action="store_true", help="sequential: run every row even if one fails"
    )
    parser.add_argument(
        "--launcher",
        default="sequential",
        choices=["sequential", "local", "slurm"],
        help="sequential (default, this process) or a Hydra multirun on submitit local / SLURM",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    data_root = (args.data_root or Path(f"data/{args.table}")).resolve()
    fn = reproduce_coco if args.table == "coco" else reproduce_bsds
    return fn(data_root, args.overrides, args.output_root.resolve(), args)


if __name__ == "__main__":
    from matbackprop.cli import call_cli

    raise SystemExit(call_cli(main))
