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
import csv
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from matbackprop.results.panels import VIEWS, Panel
from matbackprop.results.paper import TABLES
from matbackprop.results.provenance import count, epochs_done, num, provenance, row_name
from matbackprop.results.tables import (
    DEMO_TITLE,
    build_demo_table,
    build_table,
    demos_of,
    has_paper_values,
    runs_of,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def inline(text: str) -> str:
    """Markdown-ish text as HTML: escaped, ```code``` -> ``<code>``, ``**b**`` -> ``<b>``."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _finish(ax, title: str, xlabel: str, log_y: bool = False, xspan=None) -> None:
    """Title, labels, integer x ticks (epochs, steps, k), legend; ``xspan``: (first, last)
    x the axis must show (e.g. epochs 1..N of a run evaluated once)."""
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel=xlabel, title=title, yscale="log" if log_y else "linear")
    ax.margins(x=0.12, y=0.12)  # room for a single point's value
    if xspan:
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, xspan[0] - 0.5), max(hi, xspan[1] + 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.figure.tight_layout()


def _plot(ax, pts: list[tuple[float, float]], label: str, marker: str = "o", **kw):
    """A line; a single point is a marker with its value written next to it."""
    ms = 3 if len(pts) > 1 else 6
    (drawn,) = ax.plot(*zip(*pts), marker=marker, ms=ms, label=label, **kw)
    if len(pts) == 1:
        x, y = pts[0]
        ax.annotate(f"{y:.4g}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    return drawn


STYLES = ("-", "--", ":", "-.")  # one line style and marker per key of a multi-key chart
MARKERS = ("o", "s", "^", "D")


def curve_panel(title: str, keys, log_y: bool, runs: list[dict[str, Any]], paper=None) -> str:
    """One chart: ``keys`` (metrics.csv columns) of every run against epoch, one colour per
    run (a line style per key); ``paper``: the table spec, for a dashed reference line at each
    run's paper number. An evaluation-only run (no training) is a dotted horizontal line at its
    score. Empty string when no run has the keys."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    drawn, colours = 0, iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10)
    span = [(1, int(num(r["epochs_total"]))) for r in runs if num(r["epochs_total"]) > 0]
    for run in runs:
        colour = next(colours)
        for j, key in enumerate(keys):
            pts = [(int(r["epoch"]), num(r.get(key))) for r in run["rows"]]
            pts = [(e, v) for e, v in pts if not math.isnan(v) and (v > 0 or not log_y)]
            if not pts:
                continue
            label = row_name(run) + (f" {key}" if len(keys) > 1 else "")
            if not run["epochs_total"]:  # not trained: its score as a baseline
                v = pts[-1][1]
                ls = (":", "-.")[j % 2]
                ax.axhline(v, ls=ls, lw=1.5, color=colour, label=f"{label} (untrained) {v:.4g}")
            else:
                style = {"ls": STYLES[j % len(STYLES)], "marker": MARKERS[j % len(MARKERS)]}
                _plot(ax, pts, label, color=colour, **style)
            drawn += 1
            ref = ((paper or {}).get("rows", {}).get(row_name(run)) or {}).get(key)
            if ref is not None:
                ax.axhline(ref, ls="--", lw=1, color=colour, label=f"paper {row_name(run)} {ref}")
    if not drawn:
        plt.close(fig)
        return ""
    xspan = (min(a for a, _ in span), max(b for _, b in span)) if span else None
    _finish(ax, title, "epoch", log_y, xspan)
    return f'<div class="panel">{_png(fig)}</div>'


def offline_history(run_dir: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """The W&B offline runs inside a run folder: (folder, history rows), oldest first."""
    from matbackprop.engine.logging import offline_runs, read_offline_run

    out = []
    for folders in offline_runs(run_dir).values():
        for folder in folders:
            try:
                out.append((folder, read_offline_run(folder)["history"]))
            except (OSError, ValueError) as err:
                print(f"[tables] warning: cannot read W&B offline run {folder}: {err}")
    return out


def step_panel(p: Panel, runs: list[dict[str, Any]], history: dict[Path, list]) -> str:
    """A per-step chart from the runs' W&B offline history (``keys`` or ``regex``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    drawn = 0
    for run in runs:
        rows = [r for _, rows in history.get(run["dir"], []) for r in rows]
        keys = list(p.keys) or sorted({k for r in rows for k in r if re.search(p.regex, k)})
        for key in keys:
            pts = [(r["global_step"], r[key]) for r in rows if key in r and "global_step" in r]
            pts = [(s, v) for s, v in pts if isinstance(v, (int, float))]
            if pts:
                _plot(ax, sorted(pts), row_name(run) + (f" {key}" if len(keys) > 1 else ""))
                drawn += 1
    if not drawn:
        plt.close(fig)
        return ""
    _finish(ax, p.title, "optimizer step", p.log_y)
    return f'<div class="panel">{_png(fig)}</div>'


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


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


def by_epoch_panel(path: Path, x: str, y: str, line: str) -> str:
    """A chart of ``y`` against ``x`` from a ``*_by_epoch.csv``, one line per value of ``line``
    (epochs as stored)."""
    plt = _plt()
    rows = _read_csv(path)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name in dict.fromkeys(r[line] for r in rows):
        pts = [(num(r[x]), num(r[y])) for r in rows if r[line] == name]
        _plot(ax, pts, f"epoch {count(name)}" if line == "epoch" else f"{line} {name}")
    _finish(ax, f"{y} vs {x}, a line per {line} ({path.name})", x)
    return f'<div class="panel">{_png(fig)}</div>'


def confusion(run_dir: Path, history: list) -> tuple[list[list[Any]], str] | None:
    """(rows of [actual, predicted, n], where from): ``tables/confusion*.csv`` if the run wrote
    one, else the last ``confusion_table`` of its W&B offline files; None when neither."""
    for path in sorted((run_dir / "tables").glob("confusion*.csv")):
        if "_by_epoch" not in path.name:
            rows = _read_csv(path)
            return [list(r.values())[:3] for r in rows], str(path.relative_to(run_dir))
    for folder, rows in reversed(history):
        for row in reversed(rows):
            ref = row.get("confusion_table/path")  # nested keys come flattened
            if isinstance(ref, str):
                path = folder / "files" / ref
                if path.is_file():
                    table = json.loads(path.read_text())
                    return table["data"], f"W&B offline {path.relative_to(run_dir)}"
    return None


def confusion_panel(rows: list[list[Any]], where: str) -> str:
    """A confusion matrix (counts, rows = actual class) as a heat map with the counts."""
    plt = _plt()
    classes = list(dict.fromkeys([str(r[0]) for r in rows] + [str(r[1]) for r in rows]))
    m = [[0.0] * len(classes) for _ in classes]
    for actual, pred, n in rows:
        m[classes.index(str(actual))][classes.index(str(pred))] += num(n)
    size = max(3.4, 0.4 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    if len(classes) <= 12:
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, count(v), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix (last evaluation)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return f'<div class="panel">{_png(fig)}<br><span class="gap">from {html.escape(where)}</span></div>'


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
                table = html_table(_read_csv(path))
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
    import argparse

    from matbackprop.engine.records import find_runs

    parser = argparse.ArgumentParser(description="The HTML pages of the paper tables.")
    parser.add_argument("--runs", type=Path, default=Path("outputs"), help="folder to scan")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="output folder")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no run folder {args.runs} (train something first: make demo)")
        return 2
    warn = lambda folder, msg: print(f"[tables] warning: skipped {folder}: {msg}")  # noqa: E731
    for path in write_html(args.out, find_runs(args.runs, on_corrupt=warn)):
        print(f"[tables] {path}")
    return 0
