#!/usr/bin/env python
"""The W&B dashboards' picture offline: ``table1.html`` / ``table2.html`` from the CSV files.

    python scripts/tables_html.py --runs outputs --out outputs/tables   # also run by make tables

One self-contained HTML page per paper table (plots embedded as base64 PNG), with the panels of
the W&B view of scripts/wandb_dashboards.py, drawn from what every run folder holds:
``metrics.csv`` (one row per epoch), ``tables/<name>.csv`` / ``tables/<name>_by_epoch.csv``
and ``overlays/epoch*.png``. Per-step curves (``train/loss`` every ``log_every`` steps) and the
confusion matrix exist only in W&B; here the train loss is the epoch mean.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import importlib.util
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (title, metrics.csv columns drawn on one chart, log y): one chart per entry, a line per run
PANELS: dict[str, list[tuple[str, list[str], bool]]] = {
    "table1": [
        ("val top-1 error %", ["val_error"], False),
        ("val mean per-class error %", ["val_mean_class_error"], False),
        ("train loss (epoch mean)", ["train_loss"], False),
        ("val loss", ["val_loss"], False),
        ("base learning rate", ["lr"], True),
        ("smallest eigenvalue (ε floor)", ["eig_min"], True),
        ("largest eigenvalue", ["eig_max"], True),
        ("eigenvalues at ε per matrix", ["eig_near_eps"], False),
    ],
    "table2": [
        ("covering ODS", ["val_cover_ods"], False),
        ("covering OIS", ["val_cover_ois"], False),
        ("covering Best", ["val_cover_best"], False),
        ("PRI ODS / OIS", ["val_pri_ods", "val_pri_ois"], False),
        ("VI ODS / OIS (lower is better)", ["val_vi_ods", "val_vi_ois"], False),
        ("rank of Z (train mean, val mean)", ["train_rank_z", "val_rank_z"], False),
        ("train loss (epoch mean)", ["train_loss"], False),
        ("val loss", ["val_loss"], False),
    ],
}
# per-run tables shown below the curves: tables/<name>.csv (the last evaluated epoch)
RUN_TABLES = {"table1": ["per_class"], "table2": ["per_scale"]}
# per-run charts from tables/<name>_by_epoch.csv: (name, x column, y columns, line per column)
BY_EPOCH = {
    "table1": [("per_class", "epoch", ["error"], "class")],  # error per class over epochs
    "table2": [("per_scale", "k", ["cover", "pri", "vi"], "epoch")],  # vs k, a line per epoch
}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _row_name(run: dict[str, Any]) -> str:
    return str((run["cfg"].get("paper") or {}).get("row") or run["dir"].name)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def curve_panel(title: str, keys: list[str], log_y: bool, runs: list[dict[str, Any]]) -> str:
    """One chart: ``keys`` of every run against epoch (empty string when no run has them)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    drawn = 0
    for run in runs:
        for key in keys:
            pts = [(int(r["epoch"]) + 1, _num(r.get(key))) for r in run["rows"]]
            pts = [(e, v) for e, v in pts if not math.isnan(v) and (v > 0 or not log_y)]
            if pts:
                label = _row_name(run) + (f" {key}" if len(keys) > 1 else "")
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
                drawn += 1
    if not drawn:
        plt.close(fig)
        return ""
    ax.set(xlabel="epoch", title=title, yscale="log" if log_y else "linear")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return f'<div class="panel">{_png(fig)}</div>'


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def html_table(rows: list[dict[str, Any]], digits: int = 3, ints: bool = True) -> str:
    """A list of dicts as an HTML table (numbers rounded; whole numbers as integers)."""
    if not rows:
        return "<p>(empty)</p>"

    def cell(v: Any) -> str:
        x = _num(v)
        if isinstance(v, str) and math.isnan(x):
            return html.escape(v)
        if math.isnan(x):
            return "—"
        if ints and x == int(x) and abs(x) < 1e6:
            return str(int(x))  # counts, k, epochs
        return f"{x:.{digits}g}" if abs(x) < 1e-3 else f"{x:.{digits}f}"

    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def results_rows(table_id: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict]:
    """Paper number beside ours (final and best over epochs), one row per run or paper row."""
    out = []
    names = list(spec["rows"]) + [_row_name(r) for r in runs if _row_name(r) not in spec["rows"]]
    for name in names:
        mine = [r for r in runs if _row_name(r) == name] or [None]
        for run in mine:
            rec: dict[str, Any] = {"row": name}
            for key, (label, mode) in spec["metrics"].items():
                vals = [_num(r.get(key)) for r in run["rows"]] if run else []
                vals = [v for v in vals if not math.isnan(v)]
                best = (min(vals) if mode == "min" else max(vals)) if vals else math.nan
                rec[f"paper {label}"] = spec["rows"].get(name, {}).get(key, math.nan)
                rec[f"ours final {label}"] = vals[-1] if vals else math.nan
                rec[f"ours best {label}"] = best
            rec["epochs"] = f"{len(run['rows'])}/{run['epochs_total']}" if run else "not run"
            out.append(rec)
    return out


def by_epoch_panel(path: Path, x: str, y: str, line: str) -> str:
    """A chart of ``y`` against ``x`` from a ``*_by_epoch.csv``, one line per value of ``line``."""
    rows = _read_csv(path)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name in dict.fromkeys(r[line] for r in rows):
        pts = [(_num(r[x]) + (x == "epoch"), _num(r[y])) for r in rows if r[line] == name]
        label = f"epoch {int(name) + 1}" if line == "epoch" else f"{line} {name}"  # 1-based
        ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set(xlabel=x, title=f"{y} vs {x}, a line per {line} ({path.name})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return f'<div class="panel">{_png(fig)}</div>'


def run_details(table_id: str, run: dict[str, Any]) -> str:
    """The selected run's panels: its tables (last evaluated epoch), their history over epochs
    and the latest overlays."""
    parts = []
    for name, x, ys, line in BY_EPOCH.get(table_id, []):
        path = run["dir"] / "tables" / f"{name}_by_epoch.csv"
        if path.is_file():
            parts.append("".join(by_epoch_panel(path, x, y, line) for y in ys))
    for name in RUN_TABLES.get(table_id, []):
        path = run["dir"] / "tables" / f"{name}.csv"
        if path.is_file():
            parts.append(f"<h4>{name} (last evaluated epoch)</h4>" + html_table(_read_csv(path)))
    overlays = sorted((run["dir"] / "overlays").glob("epoch*.png"))
    if overlays:
        data = base64.b64encode(overlays[-1].read_bytes()).decode()
        parts.append(
            f"<h4>segmentations: image | human | ours at the ODS scale ({overlays[-1].name})</h4>"
            f'<img class="wide" src="data:image/png;base64,{data}">'
        )
    if not parts:
        return ""
    summary = f"{html.escape(_row_name(run))} — <code>{html.escape(str(run['dir']))}</code>"
    return f"<details open><summary>{summary}</summary>{''.join(parts)}</details>"


STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
    ".panel{display:inline-block;margin:4px}img.wide{max-width:100%}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
    "font-size:13px;text-align:right}th{background:#f3f3f3}details{margin:1em 0}"
)


def table_page(table_id: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """The HTML page of one paper table."""
    mine = [r for r in runs if (r["cfg"].get("paper") or {}).get("table") == table_id]
    curves = "".join(curve_panel(t, keys, log, mine) for t, keys, log in PANELS[table_id])
    details = "".join(run_details(table_id, r) for r in mine)
    title = html.escape(spec["title"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>{len(mine)} run(s). {html.escape(spec.get('note', ''))}</p>"
        f"<h2>Paper vs ours</h2>{html_table(results_rows(table_id, spec, mine), spec.get('digits', 1), ints=False)}"
        f"<h2>Curves (one line per run)</h2>{curves or '<p>no runs yet</p>'}"
        f"<h2>Per run</h2>{details or '<p>no per-run tables yet</p>'}</body></html>"
    )


def write_html(out: Path, runs: list[dict[str, Any]], tables: dict[str, dict]) -> list[Path]:
    """Write ``<out>/<table>.html`` for every table of :data:`PANELS`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table_id in PANELS:
        path = out / f"{table_id}.html"
        path.write_text(table_page(table_id, tables[table_id], runs))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs"), help="folder to scan")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="output folder")
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location(
        "make_tables", Path(__file__).with_name("make_tables.py")
    )
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    if not args.runs.is_dir():
        print(f"error: no run folder {args.runs} (train something first: make demo)")
        return 2
    for path in write_html(args.out, tables.find_runs(args.runs), tables.TABLES):
        print(f"[tables] {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
