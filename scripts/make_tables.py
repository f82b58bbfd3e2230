#!/usr/bin/env python
"""Results tables next to the paper's numbers, and training curves, from run folders.

    python scripts/make_tables.py --runs outputs --out outputs/tables     # = make tables

A run folder is any folder under ``--runs`` with ``config.yaml`` and ``metrics.csv`` (what
``python -m matbackprop.train`` writes). A run belongs to a paper table when its config has
``paper: {table: <id>, row: <row name>}`` (the ``experiment/table*`` configs set it).

Writes, per table spec in :data:`TABLES`: ``<id>.md``, ``<id>.csv`` and ``<id>_curves.png``;
and ``runs.csv`` listing every run found. Adding a table = adding an entry to ``TABLES``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from matbackprop.engine.records import write_csv  # noqa: E402

# Paper numbers: SPEC §4 ("recalled, unverified"). `metrics`: key in metrics.csv -> label, and
# whether lower is better. `rows`: row name -> {metric key: paper value}.
TABLES: dict[str, dict[str, Any]] = {
    "table1": {
        "title": "Table 1: MSCOCO region classification, top-1 error on val (%)",
        "note": "Paper numbers as recalled in SPEC §4 (unverified). SIFT-O2P is not reproduced "
        "(not a deep model).",
        "metrics": {"val_error": ("val error %", "min")},
        "rows": {
            "SIFT-O2P": {"val_error": 36.4},
            "AlexNet": {"val_error": 25.3},
            "AlexNet(S)": {"val_error": 35.3},
            "DeepO2P": {"val_error": 28.6},
            "DeepO2P(S)": {"val_error": 32.4},
            "DeepO2P-FC": {"val_error": 25.2},
            "DeepO2P-FC(S)": {"val_error": 28.9},
        },
    },
    "table2": {
        "title": "Table 2: BSDS segmentation, region benchmark (covering ODS / OIS, all humans)",
        "note": "The paper's Table 2 values could not be read (SPEC gives none): ours only. "
        "Rows as in the paper: NCut on non-finetuned ImageNet features (no training, "
        "`python -m matbackprop.evaluate`) and DeepNCut trained end to end.",
        "digits": 3,
        "metrics": {
            "val_cover_ods": ("covering ODS", "max"),
            "val_cover_ois": ("covering OIS", "max"),
        },
        "rows": {
            "NCut, AlexNet relu3 (not fine-tuned)": {},
            "NCut, AlexNet relu4 (not fine-tuned)": {},
            "NCut, AlexNet relu5 (not fine-tuned)": {},
            "DeepNCut, AlexNet relu5 (end to end)": {},
            "NCut, VGG-16 relu4_3+relu5_3 (not fine-tuned)": {},
            "DeepNCut, VGG-16 relu4_3+relu5_3 (end to end)": {},
        },
    },
}


def find_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder under ``root``: its config, metrics rows and status."""
    runs = []
    for cfg_path in sorted(root.rglob("config.yaml")):
        folder = cfg_path.parent
        metrics_path = folder / "metrics.csv"
        if ".hydra" in cfg_path.parts or not metrics_path.is_file():
            continue
        with open(metrics_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) or {}
        epochs_total = (cfg.get("trainer") or {}).get("epochs")
        runs.append({"dir": folder, "cfg": cfg, "rows": rows, "epochs_total": epochs_total})
    return runs


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarize(run: dict[str, Any], key: str, mode: str) -> tuple[float, float]:
    """(final, best) of a metric over a run's epochs (NaN where never evaluated)."""
    values = [_num(r.get(key)) for r in run["rows"]]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return values[-1], (min(values) if mode == "min" else max(values))


def _fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def build_table(table_id: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict]:
    """One record per (paper row, run); rows without a run get one empty record."""
    records = []
    for row, paper in spec["rows"].items():
        mine = [
            r
            for r in runs
            if (r["cfg"].get("paper") or {}).get("table") == table_id
            and r["cfg"]["paper"].get("row") == row
        ]
        for run in mine or [None]:
            rec: dict[str, Any] = {"row": row}
            for key, (_, mode) in spec["metrics"].items():
                final, best = summarize(run, key, mode) if run else (math.nan, math.nan)
                rec[f"paper_{key}"] = paper.get(key, math.nan)
                rec[f"final_{key}"], rec[f"best_{key}"] = final, best
            rec["epochs"] = f"{len(run['rows'])}/{run['epochs_total']}" if run else ""
            rec["run"] = str(run["dir"]) if run else ""
            records.append(rec)
    return records


def write_markdown(path: Path, spec: dict[str, Any], records: list[dict]) -> None:
    head = ["Method"]
    for _, (label, _) in spec["metrics"].items():
        head += [f"paper {label}", "ours final", "ours best"]
    head += ["epochs", "run"]
    lines = [f"## {spec['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        cells = [rec["row"]]
        digits = spec.get("digits", 1)
        for key in spec["metrics"]:
            cells += [
                _fmt(rec[f"paper_{key}"], digits),
                _fmt(rec[f"final_{key}"], digits),
                _fmt(rec[f"best_{key}"], digits),
            ]
        cells += [rec["epochs"] or "not run", f"`{rec['run']}`" if rec["run"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", spec.get("note", ""), ""]
    path.write_text("\n".join(lines))


def write_records(path: Path, records: list[dict]) -> None:
    write_csv(path, records, list(records[0]) if records else ["row"])


def plot_curves(path: Path, spec: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Train loss and each table metric against epoch, one line per run."""
    keys = ["train_loss", *spec["metrics"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run in runs:
            pts = [(int(r["epoch"]) + 1, _num(r.get(key))) for r in run["rows"]]
            pts = [(e, v) for e, v in pts if not math.isnan(v)]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=run["cfg"]["paper"]["row"])
        label = spec["metrics"][key][0] if key in spec["metrics"] else "train loss"
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    scores = [_num(r.get("val_cover_ods_k")) for r in run["rows"]]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs"), help="folder to scan")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="output folder")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no run folder {args.runs} (train something first: make demo)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(args.runs)
    print(f"[tables] {len(runs)} run(s) under {args.runs}")

    everything = []
    for run in runs:
        final, best = summarize(run, "val_error", "min")
        paper = run["cfg"].get("paper") or {}
        everything.append(
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
    write_records(args.out / "runs.csv", everything)

    for table_id, spec in TABLES.items():
        records = build_table(table_id, spec, runs)
        write_markdown(args.out / f"{table_id}.md", spec, records)
        write_records(args.out / f"{table_id}.csv", records)
        mine = [r for r in runs if (r["cfg"].get("paper") or {}).get("table") == table_id]
        if mine:
            plot_curves(args.out / f"{table_id}_curves.png", spec, mine)
        if table_id == "table2":
            for run in mine:
                fig = segmentation_figure(run, args.out / f"table2_{run['dir'].name}_segs.png")
                if fig:
                    print(f"[tables] {fig}")
        print((args.out / f"{table_id}.md").read_text())
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tables_html import write_html  # the W&B views' panels, offline (table*.html)

    print("\n".join(f"[tables] {p}" for p in write_html(args.out, runs, TABLES)))
    print(f"[tables] written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
