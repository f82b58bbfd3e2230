"""The W&B views' picture offline: ``table1.html`` / ``table2.html``, one self-contained page each.

Generated from the panel specification (:mod:`matbackprop.results.panels`) and what every run
folder holds: ``metrics.csv`` (one row per epoch, epochs counted from 1), ``tables/<name>.csv``
/ ``tables/<name>_by_epoch.csv``, ``overlays/epoch*.png``, and, for runs trained with
``logger=wandb``, the W&B offline files (per-step train loss, per-group learning rates, the
confusion matrix). Plots are embedded as base64 PNG. Each page: the paper's numbers beside
ours, provenance lines, the curves, the per-run panels, then the demo runs (synthetic data).
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

from matbackprop.engine.records import read_csv
from matbackprop.results.charts import (
    by_epoch_panel,
    confusion,
    confusion_panel,
    curve_panel,
    offline_history,
    step_panel,
)
from matbackprop.results.panels import VIEWS
from matbackprop.results.paper import TABLES
from matbackprop.results.provenance import epochs_done, num, provenance, row_name
from matbackprop.results.tables import (
    DEMO_TITLE,
    build_demo_table,
    build_table,
    demos_of,
    has_paper_values,
    runs_of,
)


def inline(text: str) -> str:
    """Markdown-ish text as HTML: escaped, ```code``` -> ``<code>``, ``**b**`` -> ``<b>``."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def html_table(rows: list[dict[str, Any]], digits: int = 3, ints: bool = True) -> str:
    """A list of dicts as an HTML table (numbers rounded; whole numbers as integers)."""
    if not rows:
        return "<p>(empty)</p>"

    def cell(v: Any) -> str:
        x = num(v)
        if isinstance(v, str) and math.isnan(x):
            return inline(v)
        if math.isnan(x):
            return "—"
        if ints and x == int(x) and abs(x) < 1e6:
            return str(int(x))  # counts, k, epochs
        return f"{x:.{digits}g}" if 0 < abs(x) < 1e-3 else f"{x:.{digits}f}"

    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def results_rows(table_id: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict]:
    """Paper number beside ours (final and best over epochs), one row per run or paper row;
    no paper column where the table has no recovered paper numbers."""
    out, paper = [], has_paper_values(spec)
    names = list(spec["rows"]) + [row_name(r) for r in runs if row_name(r) not in spec["rows"]]
    for name in dict.fromkeys(names):
        for run in [r for r in runs if row_name(r) == name] or [None]:
            rec: dict[str, Any] = {"row": name}
            for key, (label, mode) in spec["metrics"].items():
                vals = [num(r.get(key)) for r in run["rows"]] if run else []
                vals = [v for v in vals if not math.isnan(v)]
                best = (min(vals) if mode == "min" else max(vals)) if vals else math.nan
                if paper:
                    rec[f"paper {label}"] = spec["rows"].get(name, {}).get(key, math.nan)
                blank = math.nan if run else ""
                rec[f"ours final {label}"] = vals[-1] if vals else blank
                rec[f"ours best {label}"] = best if vals else blank
            rec["epochs"] = epochs_done(run) if run else "not run"
            out.append(rec)
    return out


def reported_rows(spec: dict[str, Any], records: list[dict], paper: bool) -> list[dict]:
    """The records of ``make tables`` (what ``<table>.md`` reports) as HTML table rows."""
    out = []
    for rec in records:
        row: dict[str, Any] = {("row" if paper else "run"): rec["row"]}
        if "protocol" in rec:
            row["protocol"] = rec["protocol"]
        for key, (label, _) in spec["metrics"].items():
            if paper and has_paper_values(spec):
                row[f"paper {label}"] = rec[f"paper_{key}"]
            row[f"ours {label}"] = rec[f"ours_{key}"] if rec["run"] else ""
        row["checkpoint"] = rec["checkpoint"]
        row["epochs"] = rec["epochs"] or "not run"
        out.append(row)
    return out


def run_details(table_id: str, run: dict[str, Any], history: list) -> str:
    """The selected run's panels: its tables (last evaluated epoch) and their history over
    epochs, the confusion matrix, and the latest overlays."""
    parts = []
    for p in [p for s in VIEWS[table_id]["sections"] for p in s.panels]:
        if p.kind == "table":
            for x, ys, line in p.by_epoch:
                path = run["dir"] / "tables" / f"{p.name}_by_epoch.csv"
                if path.is_file():
                    parts.append("".join(by_epoch_panel(path, x, y, line) for y in ys))
            path = run["dir"] / "tables" / f"{p.name}.csv"
            if path.is_file():
                table = html_table(read_csv(path))
                parts.append(
                    f"<div class='panel'><h4>{p.name} (last evaluated epoch)</h4>{table}</div>"
                )
        elif p.kind == "confusion":
            found = confusion(run["dir"], history)
            parts.append(
                confusion_panel(*found)
                if found
                else "<p class='gap'>confusion matrix: not in this run folder (the trainer "
                "logs it to W&amp;B only; train with <code>logger=wandb</code> to see it here)</p>"
            )
        elif p.kind == "media":
            overlays = sorted((run["dir"] / p.name).glob("epoch*.png"))
            if overlays:
                data = base64.b64encode(overlays[-1].read_bytes()).decode()
                parts.append(
                    f"<h4>segmentations: image | human | ours at the ODS scale "
                    f"({overlays[-1].name})</h4>"
                    f'<img class="wide" src="data:image/png;base64,{data}">'
                )
    if not parts:
        return ""
    summary = f"{html.escape(row_name(run))} — <code>{html.escape(str(run['dir']))}</code>"
    return f"<details open><summary>{summary}</summary>{''.join(parts)}</details>"


STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
    ".panel{display:inline-block;margin:4px;vertical-align:top}img.wide{max-width:100%}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
    "font-size:13px;text-align:right}th{background:#f3f3f3}details{margin:1em 0}"
    "code{background:#f3f3f3;padding:0 3px}.gap{color:#777;font-size:13px}"
    ".demo{border-top:4px solid #e0a000;margin-top:2em;padding-top:.5em}"
    ".demo h2{color:#a06000}li{font-size:13px;margin:.2em 0}"
)


def _provenance(runs: list[dict[str, Any]]) -> str:
    items = "".join(
        f"<li><b>{html.escape(row_name(r))}</b>: {inline(provenance(r))}.</li>" for r in runs
    )
    return f"<h3>Provenance (from each run's config.yaml)</h3><ul>{items}</ul>" if items else ""


def _curves(table_id: str, runs: list[dict[str, Any]], history: dict) -> str:
    """The spec's line panels, by section, for ``runs`` (a note for per-step gaps)."""
    spec, out = TABLES[table_id], []
    for section in VIEWS[table_id]["sections"]:
        charts, gaps = [], []
        for p in section.panels:
            if p.kind != "line":
                continue
            if p.x == "step":
                chart = step_panel(p, runs, history)
                if not chart:
                    gaps.append(p.title)
            else:
                chart = curve_panel(p.title, p.keys, p.log_y, runs, spec if p.paper_ref else None)
            charts.append(chart)
        if runs and (any(charts) or gaps):
            note = (
                f"<p class='gap'>not recorded in these run folders: {html.escape(', '.join(gaps))}"
                " (logged every <code>trainer.log_every</code> steps to W&amp;B only; train with "
                "<code>logger=wandb</code> to get them here)</p>"
                if gaps
                else ""
            )
            out.append(f"<h3>{html.escape(section.name)}</h3>{''.join(charts)}{note}")
    return "".join(out)


def _block(table_id: str, spec: dict, runs: list[dict], paper: bool) -> tuple[str, str, str]:
    """(results table, curves, per-run details) of a set of runs."""
    history = {r["dir"]: offline_history(r["dir"]) for r in runs}
    if paper:
        rows = results_rows(table_id, spec, runs)
    else:  # demos: one row per run (named by its folder), no paper rows
        rows = [
            {"run": r.pop("row"), **r} for r in results_rows(table_id, {**spec, "rows": {}}, runs)
        ]
    digits = spec.get("digits", 1)
    over_epochs = html_table(rows, digits, ints=False)
    records = build_table(table_id, spec, runs) if paper else build_demo_table(table_id, spec, runs)
    table = (
        f"{html_table(reported_rows(spec, records, paper), digits, ints=False)}"
        "<h3>Over epochs (the per-epoch evaluations of metrics.csv: last and best)</h3>"
        f"{over_epochs}"
    )
    details = "".join(run_details(table_id, r, history[r["dir"]]) for r in runs)
    return table, _curves(table_id, runs, history), details


def table_page(table_id: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """The HTML page of one paper table, with its demo runs in their own section."""
    mine, demos = runs_of(table_id, runs), demos_of(table_id, runs)
    title = html.escape(spec["title"])
    table, curves, details = _block(table_id, spec, mine, paper=True)
    missing = (
        ""
        if has_paper_values(spec)
        else "<p><b>Paper values not recovered</b> (SPEC gives none): ours only.</p>"
    )
    page = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>",
        f"<p>{len(mine)} run(s) of the paper's rows; {len(demos)} demo run(s) "
        f"({DEMO_TITLE}, below). {inline(spec.get('note', ''))}</p>",
        f"<h2>Paper vs ours</h2>{missing}{table}{_provenance(mine)}",
        f"<h2>Curves (one line per run)</h2>{curves or '<p>no runs of the paper rows yet</p>'}",
        f"<h2>Per run</h2>{details or '<p>no per-run tables yet</p>'}",
    ]
    if demos:
        dtable, dcurves, ddetails = _block(table_id, spec, demos, paper=False)
        page.append(
            f"<div class='demo'><h2>{DEMO_TITLE}: not paper results</h2><p>Runs of "
            "<code>make demo</code> on built-in synthetic data (tiny trunk, CPU): what the "
            f"pipeline and this page produce, not the paper's numbers.</p>{dtable}"
            f"{_provenance(demos)}<h2>Demo curves</h2>{dcurves}<h2>Demo runs</h2>{ddetails}</div>"
        )
    return "".join(page) + "</body></html>"


def write_html(out: Path, runs: list[dict[str, Any]]) -> list[Path]:
    """Write ``<out>/<table>.html`` for every view of the panel spec; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table_id in VIEWS:
        path = out / f"{table_id}.html"
        path.write_text(table_page(table_id, TABLES[table_id], runs))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``scripts/tables_html.py``: only the HTML pages."""
    from matbackprop.results.tables import read_runs

    found = read_runs(argv, "The HTML pages of the paper tables.")
    if found is None:
        return 2
    args, runs = found
    for path in write_html(args.out, runs):
        print(f"[tables] {path}")
    return 0
