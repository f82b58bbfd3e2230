"""The paper tables from run folders: records, Markdown, CSV, curves, and the ``make tables`` CLI.

A run belongs to a paper table when its config has ``paper: {table: <id>, row: <row name>}``
(the ``experiment/table*`` configs set it); runs on the built-in synthetic data (``make demo``)
go to the "demo (synthetic data)" section of their task's table, never into the paper rows.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matbackprop.engine.records import find_runs, write_csv
from matbackprop.results.paper import TABLES, TASK_OF_TABLE, is_demo, table_of_run
from matbackprop.results.provenance import (
    epochs_done,
    fmt,
    get,
    num,
    provenance,
    region_of,
    reported,
    row_name,
    summarize,
)

DEMO_TITLE = "demo (synthetic data)"


def runs_of(table_id: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of a paper table's rows."""
    return [r for r in runs if table_of_run(r["cfg"]) == table_id]


def demos_of(table_id: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The demo runs shown beside a table: synthetic-data runs of the table's task."""
    task = TASK_OF_TABLE[table_id]
    return [r for r in runs if is_demo(r["cfg"]) and r["cfg"].get("task") == task]


def _record(row: str, run: dict | None, keys: list[str], paper: dict, table_id: str) -> dict:
    rec: dict[str, Any] = {"row": row}
    if table_id == "table2":
        rec["protocol"] = f"BSDS{get(run['cfg'], 'data.version')}" if run else ""
    values, where = reported(run, keys) if run else ({}, "")
    final = (run or {}).get("final") or {}
    for key in keys:
        rec[f"paper_{key}"] = paper.get(key, math.nan)
        rec[f"ours_{key}"] = values.get(key, math.nan)
        for which in ("last", "best"):
            rec[f"{which}_{key}"] = num((final.get(which) or {}).get(key))
    rec["checkpoint"] = where
    rec["epochs"] = epochs_done(run) if run else ""
    rec["run"] = str(run["dir"]) if run else ""
    rec["provenance"] = provenance(run) if run else ""
    return rec


def build_table(table_id: str, spec: dict[str, Any], runs: list[dict]) -> list[dict[str, Any]]:
    """One record per (row, run); paper rows without a run get one empty record; runs of rows
    that the paper does not have (``paper.extra``) come last."""
    mine = runs_of(table_id, runs)
    extra = sorted({r["cfg"]["paper"].get("row") for r in mine} - set(spec["rows"]))
    keys = list(spec["metrics"])
    records = []
    for row in [*spec["rows"], *extra]:
        found = [r for r in mine if r["cfg"]["paper"].get("row") == row]
        found.sort(key=lambda r: -int(get(r["cfg"], "data.version", 0) or 0))  # BSDS500 first
        for run in found or [None]:
            records.append(_record(row, run, keys, spec["rows"].get(row, {}), table_id))
    return records


def build_demo_table(table_id: str, spec: dict[str, Any], runs: list[dict]) -> list[dict]:
    """One record per demo run of the table's task (named by run folder, no paper numbers)."""
    keys = list(spec["metrics"])
    return [_record(row_name(r), r, keys, {}, "") for r in demos_of(table_id, runs)]


def protocol_note(table_id: str, runs: list[dict[str, Any]]) -> str:
    """What the runs of a table share: Table 1's region information (one choice for every row)."""
    mine = runs_of(table_id, runs)
    if table_id != "table1" or not mine:
        return ""
    regions = sorted({region_of(r["cfg"]) for r in mine})
    what = {
        "box": "the bounding-box crop only (no mask anywhere; the paper's text)",
        "segment": "the instance segment (mean colour outside the mask, mask-weighted pooling)",
    }
    if len(regions) == 1:
        return f"Region information, the same for every row: {what[regions[0]]}."
    return f"WARNING: the rows saw different region information ({', '.join(regions)})."


def has_paper_values(spec: dict[str, Any]) -> bool:
    """Whether any paper number of the table was recovered (Table 2: none)."""
    return any(spec["rows"].values())


def markdown_table(spec: dict[str, Any], records: list[dict], paper: bool) -> list[str]:
    head = ["Method", *(["protocol"] if any("protocol" in r for r in records) else [])]
    digits = spec.get("digits", 1)
    for label, _ in spec["metrics"].values():
        head += [f"paper {label}", f"ours {label}"] if paper else [label]
    head += ["checkpoint", "epochs", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        cells = [rec["row"], *([rec["protocol"] or "—"] if "protocol" in rec else [])]
        for key in spec["metrics"]:
            ours = fmt(rec[f"ours_{key}"], digits)
            cells += [fmt(rec[f"paper_{key}"], digits), ours] if paper else [ours]
        cells += [
            rec["checkpoint"] or "—",
            rec["epochs"] or "not run",
            f"`{rec['run']}`" if rec["run"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _provenance_lines(records: list[dict]) -> list[str]:
    lines = []
    for rec in records:
        if rec["provenance"]:
            proto = f", {rec['protocol']}" if rec.get("protocol") else ""
            lines.append(f"- **{rec['row']}**{proto}: {rec['provenance']}.")
    return lines


def write_markdown(
    path: Path, spec: dict[str, Any], records: list[dict], protocol: str = "", demos=()
) -> None:
    """The table, its note (and ``protocol``), one provenance line per run, and the demo runs'
    section (``demos``: records of :func:`build_demo_table`)."""
    lines = [f"## {spec['title']}", "", *markdown_table(spec, records, has_paper_values(spec))]
    lines += ["", spec.get("note", "") + (f" {protocol}" if protocol else "")]
    notes = _provenance_lines(records)
    if notes:
        lines += ["", "Provenance (from each run's config.yaml):", "", *notes]
    if demos:
        lines += ["", f"### {DEMO_TITLE}: not paper results", ""]
        lines += [
            "Runs of `make demo` on built-in synthetic data (tiny trunk, CPU): they show what the "
            "pipeline and these pages produce, not the paper's numbers.",
            "",
        ]
        lines += [*markdown_table(spec, list(demos), False), "", *_provenance_lines(demos)]
    lines.append("")
    path.write_text("\n".join(lines))


def write_records(path: Path, records: list[dict]) -> None:
    write_csv(path, records, list(records[0]) if records else ["row"])


def plot_curves(path: Path, spec: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Train loss and each table metric against epoch (as stored, 1-based), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = ["train_loss", *spec["metrics"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run in runs:
            pts = [(int(r["epoch"]), num(r.get(key))) for r in run["rows"]]
            pts = [(e, v) for e, v in pts if not math.isnan(v)]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=row_name(run))
        label = spec["metrics"][key][0] if key in spec["metrics"] else "train loss"
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def runs_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs.csv``: every run found, with its final and best val error."""
    out = []
    for run in runs:
        final, best = summarize(run, "val_error", "min")
        paper = run["cfg"].get("paper") or {}
        out.append(
            {
                "run": str(run["dir"]),
                "task": run["cfg"].get("task", ""),
                "model": (run["cfg"].get("model") or {}).get("arch", ""),
                "paper_row": paper.get("row", ""),
                "epochs": f"{len(run['rows'])}/{run['epochs_total']}",
                "final_val_error": final,
                "best_val_error": best,
            }
        )
    return out


def _warn_corrupt(folder: Path, message: str) -> None:
    print(f"[tables] warning: skipped {folder}: {message}", file=sys.stderr)


def read_runs(argv: list[str] | None, description: str):
    """``--runs`` / ``--out`` of ``make tables`` and ``tables_html.py``: (args, the runs found,
    a corrupt folder skipped with a warning), or None (printed) when ``--runs`` is no folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=Path, default=Path("outputs"), help="folder to scan")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="output folder")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no run folder {args.runs} (train something first: make demo)")
        return None
    return args, find_runs(args.runs, on_corrupt=_warn_corrupt)


def main(argv: list[str] | None = None, figures: Callable | None = None) -> int:
    """``make tables``. ``figures(run, out) -> list[Path]``: extra per-run figures of Table 2
    runs (scripts/make_tables.py passes the segmentation figure)."""
    from matbackprop.results.html import write_html

    found = read_runs(argv, "Results tables next to the paper's numbers.")
    if found is None:
        return 2
    args, runs = found
    args.out.mkdir(parents=True, exist_ok=True)
    n_demo = sum(is_demo(r["cfg"]) for r in runs)
    print(f"[tables] {len(runs)} run(s) under {args.runs} ({n_demo} {DEMO_TITLE})")
    write_records(args.out / "runs.csv", runs_summary(runs))

    for table_id, spec in TABLES.items():
        records = build_table(table_id, spec, runs)
        demos = build_demo_table(table_id, spec, runs)
        md = args.out / f"{table_id}.md"
        write_markdown(md, spec, records, protocol_note(table_id, runs), demos)
        write_records(args.out / f"{table_id}.csv", records)
        if demos:
            write_records(args.out / f"{table_id}_demo.csv", demos)
        mine = runs_of(table_id, runs)
        if mine:
            plot_curves(args.out / f"{table_id}_curves.png", spec, mine)
        if figures is not None and table_id == "table2":
            for path in [p for run in mine for p in figures(run, args.out)]:
                print(f"[tables] {path}")
        print(md.read_text())
    print("\n".join(f"[tables] {p}" for p in write_html(args.out, runs)))
    print(f"[tables] written to {args.out}")
    return 0
