"""The charts of the results pages (matplotlib, embedded as base64 PNG) and what they read.

Epoch charts read ``metrics.csv`` (epochs as stored, integer ticks); per-step charts read the
run's W&B offline files (:func:`offline_history`); a metric evaluated once is a marker with
its value; an evaluation-only run is a dotted horizontal baseline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from matbackprop.engine.records import read_csv
from matbackprop.results.panels import Panel
from matbackprop.results.provenance import count, num, row_name


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    """The per-step history of a run folder: its W&B offline runs (folder, history rows),
    oldest first, else the trainer's own ``train_steps.csv`` (the same keys: ``global_step``,
    ``train/loss``, ``lr/<group>``, ...), which every run writes, W&B or not."""
    from matbackprop.engine.logging import offline_runs, read_offline_run

    out = []
    for folders in offline_runs(run_dir).values():
        for folder in folders:
            try:
                out.append((folder, read_offline_run(folder)["history"]))
            except (OSError, ValueError) as err:
                print(f"[tables] warning: cannot read W&B offline run {folder}: {err}")
    steps = run_dir / "train_steps.csv"
    if not any(rows for _, rows in out) and steps.is_file():
        rows = [{k: num(v) for k, v in r.items() if v not in ("", None)} for r in read_csv(steps)]
        out = [(run_dir, rows)]
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


def by_epoch_panel(path: Path, x: str, y: str, line: str) -> str:
    """A chart of ``y`` against ``x`` from a ``*_by_epoch.csv``, one line per value of ``line``
    (epochs as stored)."""
    plt = _plt()
    rows = read_csv(path)
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
            rows = read_csv(path)
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
