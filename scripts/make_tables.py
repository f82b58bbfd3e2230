#!/usr/bin/env python
"""Results tables next to the paper's numbers, and training curves, from run folders.

    python scripts/make_tables.py --runs outputs --out outputs/tables     # = make tables

A run folder is any folder under ``--runs`` with ``config.yaml`` and ``metrics.csv`` (what
``python -m matbackprop.train`` writes); a corrupt one is skipped with a warning naming the
file. A run belongs to a paper table when its config has ``paper: {table: <id>, row: <row
name>}`` (the ``experiment/table*`` configs set it); ``make demo`` runs are tabled in a
separate "demo (synthetic data)" section.

The reported numbers come from the run's ``final.json`` when there is one (the whole
evaluation split scored once at the end of training on ``best.pt`` and ``last.pt``: best.pt is
reported, both go to the CSV), else from the last ``metrics.csv`` row; the table says which.
Each row gets a provenance line made from its ``config.yaml``; ``make tables`` prints them.

Writes ``<id>.md``, ``<id>.csv``, ``<id>_curves.png`` and ``<id>.html`` per paper table
(``matbackprop.results.paper.TABLES``), ``runs.csv`` listing every run found, and for each
Table 2 run with ``segs/`` a segmentation figure. The code is ``matbackprop.results``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matbackprop.results.provenance import num
from matbackprop.results.tables import main as tables_main


def segmentation_figure(run: dict[str, Any], path: Path, n: int = 3) -> Path | None:
    """Image | first human | our segmentation at the run's ODS scale, for n val images (PNG).

    Reads the run's ``segs/<id>.mat`` and the images / ground truth from its ``data.root``;
    returns None (with a message) when either is not there.
    """
    from matbackprop.data.bsds import BSDS
    from matbackprop.evaluation.segment import read_segs
    from matbackprop.tasks.bsds import save_overlays

    seg_dir, data = run["dir"] / "segs", run["cfg"].get("data") or {}
    if not seg_dir.is_dir():
        return None
    try:
        val = BSDS(data["root"], data["val_split"], version=int(data.get("version", 500)))
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"[tables] no segmentation figure for {run['dir']}: {err}")
        return None
    final = run.get("final") or {}
    chosen = final.get("best") or final.get("last")
    scores = [num(r.get("val_cover_ods_k")) for r in ([chosen] if chosen else run["rows"])]
    ks = list((run["cfg"].get("eval") or {}).get("ks", []))
    k_best = next((k for k in reversed(scores) if not math.isnan(k)), math.nan)
    scale = ks.index(int(k_best)) if not math.isnan(k_best) and int(k_best) in ks else 0
    items = []
    for i in range(len(val)):
        if (seg_dir / f"{val.ids[i]}.mat").is_file():
            items.append((val[i], read_segs(seg_dir / f"{val.ids[i]}.mat")))
        if len(items) == n:
            break
    return save_overlays(items, scale, path) if items else None


def _figures(run: dict[str, Any], out: Path) -> list[Path]:
    fig = segmentation_figure(run, out / f"table2_{run['dir'].name}_segs.png")
    return [fig] if fig else []


def main(argv: list[str] | None = None) -> int:
    return tables_main(argv, figures=_figures)


if __name__ == "__main__":
    raise SystemExit(main())
