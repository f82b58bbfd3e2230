#!/usr/bin/env python
"""Upload the offline W&B runs under a folder, one ``wandb sync`` per run id.

    python scripts/sync_wandb.py --runs outputs [--dry-run]       # = make sync-wandb

A resumed training leaves one ``offline-run-*-<id>`` folder per session, all with the run's
id; they are uploaded together as fragments of that one run, oldest first
(``wandb sync --id <id> <folders...>``), so the stretch a resume redid stays in the history
(the logger logs a ``global_step`` field as the x-axis, not W&B's own step).
Needs ``wandb login`` (or ``WANDB_API_KEY``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from matbackprop.engine.logging import offline_runs


def sync_commands(root: Path, wandb_exe: str = "wandb") -> list[list[str]]:
    """One ``wandb sync --id <id> <fragments...>`` command per offline run id under ``root``."""
    return [
        [wandb_exe, "sync", "--id", run_id, *map(str, folders)]
        for run_id, folders in offline_runs(root).items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs"), help="folder to scan")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no folder {args.runs} (train with logger=wandb first)", file=sys.stderr)
        return 2
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    commands = sync_commands(args.runs, exe)
    print(f"[sync-wandb] {len(commands)} offline run(s) under {args.runs}")
    failed = 0
    for cmd in commands:
        print(" ".join(cmd), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd).returncode != 0
    if failed:
        print(
            f"error: {failed} run(s) failed to upload (see above; `wandb login`?)", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
