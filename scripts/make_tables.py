#!/usr/bin/env python
"""Results tables next to the paper's numbers, and training curves, from run folders.

    python scripts/make_tables.py --runs outputs --out outputs/tables     # = make tables

A run folder is any folder under ``--runs`` with ``config.yaml`` and ``metrics.csv`` (what
``python -m matbackprop.train`` writes). A run belongs to a paper table when its config has
``paper: {table: <id>, row: <row name>}`` (the ``experiment/table*`` configs set it).

The reported numbers come from the run's ``final.json`` when there is one (the whole
evaluation split scored once at the end of training on ``best.pt`` and ``last.pt``: best.pt is
reported, both go to the CSV), else from the last ``metrics.csv`` row; the table says which.
Each row gets a provenance line made from its ``config.yaml`` (trunk, pretrained or scratch,
input, head, epochs, lr schedule, evaluation set size, checkpoint); ``make tables`` prints them.

Writes, per table spec in :data:`TABLES`: ``<id>.md``, ``<id>.csv`` and ``<id>_curves.png``;
and ``runs.csv`` listing every run found. Adding a table = adding an entry to ``TABLES``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from matbackprop.engine.records import write_csv  # noqa: E402

# Paper numbers: SPEC §4 ("recalled, unverified"). `metrics`: key in final.json / metrics.csv ->
# label, and whether lower is better. `rows`: row name -> {metric key: paper value}. Runs whose
# config names a row not listed here (``paper.extra: true``) are appended as extra rows.
TABLES: dict[str, dict[str, Any]] = {
    "table1": {
        "title": "Table 1: MSCOCO region classification, top-1 error on val (%)",
        "note": "Paper numbers as recalled in SPEC §4 (recalled, unverified). SIFT-O2P is not "
        "reproduced (not a deep model). Ours: the whole val set scored once on the checkpoint "
        "named in the table (best.pt = best epoch on the fixed monitor subset of val, "
        "`eval.monitor_items`; runs without final.json: the last epoch's monitor score). "
        "Trunk: torchvision's AlexNet (64/192/384/256/256 channels, no LRN), not the original "
        "Caffe one.",
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
        "title": "Table 2: BSDS segmentation, region benchmark on the test split (all humans)",
        "note": "The paper's Table 2 values could not be read (SPEC gives none): ours only. "
        "Rows as in the paper: NCut on non-finetuned ImageNet features (no training, "
        "`python -m matbackprop.evaluate`) and DeepNCut trained end to end, under BSDS500 "
        "(train+val / 200 test) and BSDS300 (200 train / 100 test). Epochs and best.pt are "
        "chosen on held-out training images (`data.holdout`); the test split is scored once "
        "per checkpoint. Covering ODS / OIS / Best, PRI and VI (bits, lower is better) at ODS.",
        "digits": 3,
        "metrics": {
            "val_cover_ods": ("cover ODS", "max"),
            "val_cover_ois": ("cover OIS", "max"),
            "val_cover_best": ("cover Best", "max"),
            "val_pri_ods": ("PRI", "max"),
            "val_vi_ods": ("VI", "min"),
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
        final_path = folder / "final.json"
        final = json.loads(final_path.read_text()) if final_path.is_file() else None
        runs.append(
            {"dir": folder, "cfg": cfg, "rows": rows, "epochs_total": epochs_total, "final": final}
        )
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


def reported(run: dict[str, Any], keys: list[str]) -> tuple[dict[str, float], str]:
    """The numbers a table reports for a run, and which checkpoint / evaluation they come from.

    ``final.json`` (the whole evaluation split, scored once per checkpoint at the end of
    training): ``best`` if there, else ``last``. Without it: the last ``metrics.csv`` row (an
    untrained run's only evaluation, or a training run's last monitor evaluation).
    """
    final = run.get("final") or {}
    for which in ("best", "last"):
        if isinstance(final.get(which), dict):
            res = final[which]
            epoch = res.get("epoch")
            where = f"{which}.pt" + (f" (epoch {int(epoch) + 1})" if epoch is not None else "")
            return {k: _num(res.get(k)) for k in keys}, where
    row = run["rows"][-1]
    if not run["epochs_total"]:
        where = "not trained"
    else:
        where = f"epoch {int(row['epoch']) + 1} monitor evaluation (no final.json)"
    return {k: _num(row.get(k)) for k in keys}, where


def _get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return default
        cfg = cfg[part]
    return cfg


def _schedule(cfg: dict[str, Any]) -> str:
    o = cfg.get("optim") or {}
    sched = o.get("schedule", "step")
    if sched == "step":
        sched = f"×{o.get('gamma')} every {o.get('step_size')} epochs"
    pretrained = _get(cfg, "model.pretrained", False)
    mult = f", new layers ×{o.get('new_lr_mult')}" if pretrained else ""
    return (
        f"SGD lr {o.get('lr')}{mult}, {sched}, momentum {o.get('momentum')}, "
        f"wd {o.get('weight_decay')}, batch {_get(cfg, 'trainer.batch_size')}"
    )


def _coco_head(m: dict[str, Any]) -> str:
    arch, p = m.get("arch"), m.get("dropout", 0)
    fc = f"fc6 → relu → dropout {p} → fc7 → relu → dropout {p} → linear"
    if arch == "alexnet":
        return f"pool5 → {fc}"
    mask = ", region-mask weights" if m.get("use_mask") else ", whole crop"
    pool = f"log-cov (ε = {m.get('pool_eps')}, {m.get('pool_dtype')}{mask}) → triu_vec"
    norm = " → BatchNorm" if m.get("head_norm") == "batchnorm" else ""
    if arch == "deepo2p_fc":
        return f"{pool}{norm} → {fc}"
    if arch == "deepo2p":
        drop = f" → dropout {p}" if p else ""
        return f"{pool}{norm}{drop} → linear"
    return str(arch)


def region_of(cfg: dict[str, Any]) -> str:
    """``box`` or ``segment``: the region information a COCO run's input carried."""
    region = _get(cfg, "data.region")
    if region:
        return str(region)
    masked = _get(cfg, "data.mean_fill") or (
        _get(cfg, "model.use_mask") and _get(cfg, "model.arch") != "alexnet"
    )
    return "segment" if masked else "box"


def provenance(run: dict[str, Any]) -> str:
    """One line on how a run was made, from its ``config.yaml`` (and final.json's set size)."""
    cfg, m, d = run["cfg"], run["cfg"].get("model") or {}, run["cfg"].get("data") or {}
    trunk = (
        f"{m.get('trunk')} trunk ({'ImageNet-pretrained' if m.get('pretrained') else 'scratch'})"
    )
    epochs = f"{len(run['rows']) if run['epochs_total'] else 0}/{run['epochs_total']} epochs"
    _, where = reported(run, [])
    final = run.get("final") or {}
    res = final.get("best") or final.get("last") or run["rows"][-1]
    if cfg.get("task") == "bsds":
        n = res.get("val_images", "?")
        proto = f"BSDS{d.get('version')} ({d.get('train_split')} → {d.get('val_split')}, {n} images"
        held = d.get("holdout") if run["epochs_total"] else 0
        proto += f"; {held} of the training images held out for selection)" if held else ")"
        taps = "+".join(m.get("taps") or [])
        if m.get("head", True):
            head = (
                f"{taps} → conv3×3 {m.get('hidden')} + ReLU → dropout {m.get('dropout')} "
                f"(element-wise) → conv3×3 {m.get('out_dim')} + ReLU → ncut"
            )
        else:
            head = f"{taps} features as they are (no training)"
        train = f"{epochs}, {_schedule(cfg)}" if run["epochs_total"] else "no training"
        grid = d.get("label_grid", "uniform")
        return f"{proto}; {trunk}; {head}; {train}; label grid {grid}; reported: {where}"
    n = res.get("val_items", "?")
    region = region_of(cfg)
    inp = (
        f"{'segment (mean colour outside the mask)' if region == 'segment' else 'box'} crop, "
        f"largest side {d.get('max_side')} on {d.get('crop_size')}², jitter ±{d.get('jitter')}, "
        f"mask grid {d.get('mask_grid', 'uniform')}"
    )
    mon = _get(cfg, "eval.monitor_items")
    sel = f"best epoch on a {mon}-region val subset" if mon else "best epoch on the val set"
    sel = f" ({sel})" if where.startswith("best.pt") else ""
    return (
        f"{trunk}; input: {inp}; head: {_coco_head(m)}; {epochs}, {_schedule(cfg)}; "
        f"val set: {n} regions; reported: {where}{sel}"
    )


def build_table(table_id: str, spec: dict[str, Any], runs: list[dict]) -> list[dict[str, Any]]:
    """One record per (row, run); paper rows without a run get one empty record; runs of rows
    that the paper does not have (``paper.extra``) come last."""
    mine = [r for r in runs if (r["cfg"].get("paper") or {}).get("table") == table_id]
    extra = sorted({r["cfg"]["paper"].get("row") for r in mine} - set(spec["rows"]))
    keys = list(spec["metrics"])
    records = []
    for row in [*spec["rows"], *extra]:
        paper = spec["rows"].get(row, {})
        found = [r for r in mine if r["cfg"]["paper"].get("row") == row]
        found.sort(key=lambda r: -int(_get(r["cfg"], "data.version", 0) or 0))  # BSDS500 first
        for run in found or [None]:
            rec: dict[str, Any] = {"row": row}
            if table_id == "table2":
                rec["protocol"] = f"BSDS{_get(run['cfg'], 'data.version')}" if run else ""
            values, where = reported(run, keys) if run else ({}, "")
            final = (run or {}).get("final") or {}
            for key in keys:
                rec[f"paper_{key}"] = paper.get(key, math.nan)
                rec[f"ours_{key}"] = values.get(key, math.nan)
                for which in ("last", "best"):
                    rec[f"{which}_{key}"] = _num((final.get(which) or {}).get(key))
            rec["checkpoint"] = where
            rec["epochs"] = ""
            if run:
                done = len(run["rows"]) if run["epochs_total"] else 0
                rec["epochs"] = f"{done}/{run['epochs_total']}"
            rec["run"] = str(run["dir"]) if run else ""
            rec["provenance"] = provenance(run) if run else ""
            records.append(rec)
    return records


def protocol_note(table_id: str, runs: list[dict[str, Any]]) -> str:
    """What the runs of a table share: Table 1's region information (one choice for every row)."""
    mine = [r for r in runs if (r["cfg"].get("paper") or {}).get("table") == table_id]
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


def write_markdown(
    path: Path, spec: dict[str, Any], records: list[dict], protocol: str = ""
) -> None:
    """The table, its note (and ``protocol``) and one provenance line per run."""
    head = ["Method", *(["protocol"] if any("protocol" in r for r in records) else [])]
    digits = spec.get("digits", 1)
    paper = any(spec["rows"].values())  # Table 2: no paper numbers, no paper columns
    for label, _ in spec["metrics"].values():
        head += [f"paper {label}", f"ours {label}"] if paper else [label]
    head += ["checkpoint", "epochs", "run"]
    lines = [f"## {spec['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        cells = [rec["row"], *([rec["protocol"] or "—"] if "protocol" in rec else [])]
        for key in spec["metrics"]:
            ours = _fmt(rec[f"ours_{key}"], digits)
            cells += [_fmt(rec[f"paper_{key}"], digits), ours] if paper else [ours]
        cells += [
            rec["checkpoint"] or "—",
            rec["epochs"] or "not run",
            f"`{rec['run']}`" if rec["run"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", spec.get("note", "") + (f" {protocol}" if protocol else "")]
    notes = [r for r in records if r["provenance"]]
    if notes:
        lines += ["", "Provenance (from each run's config.yaml):", ""]
        for rec in notes:
            proto = f", {rec['protocol']}" if rec.get("protocol") else ""
            lines.append(f"- **{rec['row']}**{proto}: {rec['provenance']}.")
    lines.append("")
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
    final = run.get("final") or {}
    chosen = final.get("best") or final.get("last")
    scores = [_num(r.get("val_cover_ods_k")) for r in ([chosen] if chosen else run["rows"])]
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
        write_markdown(args.out / f"{table_id}.md", spec, records, protocol_note(table_id, runs))
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
