"""What a table reports for a run and how the run was made: numbers, checkpoint, provenance line.

Epochs are shown as stored (``metrics.csv``, ``final.json`` and ``status.json`` count them
from 1). Counts are printed as integers (``201 regions``, not ``201.0``).
"""

from __future__ import annotations

import math
from typing import Any


def num(value: Any) -> float:
    """``value`` as a float (NaN when it is not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def count(value: Any) -> str:
    """A count as an integer string (``"201"`` for ``201.0`` / ``"201.0"``), else as given."""
    x = num(value)
    return str(int(x)) if not math.isnan(x) and x == int(x) else str(value)


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"`` (``default`` when a part is missing)."""
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return default
        cfg = cfg[part]
    return cfg


def row_name(run: dict[str, Any]) -> str:
    """The paper row of a run (its folder name for runs of no paper row, e.g. demos)."""
    return str((run["cfg"].get("paper") or {}).get("row") or run["dir"].name)


def summarize(run: dict[str, Any], key: str, mode: str) -> tuple[float, float]:
    """(final, best) of a metric over a run's epochs (NaN where never evaluated)."""
    values = [num(r.get(key)) for r in run["rows"]]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return values[-1], (min(values) if mode == "min" else max(values))


def epochs_done(run: dict[str, Any]) -> str:
    """``done/total`` epochs (``0/0`` for an evaluation-only run)."""
    done = len(run["rows"]) if run["epochs_total"] else 0
    return f"{done}/{run['epochs_total']}"


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
            where = f"{which}.pt" + (f" (epoch {count(epoch)})" if epoch is not None else "")
            return {k: num(res.get(k)) for k in keys}, where
    row = run["rows"][-1]
    if not run["epochs_total"]:
        where = "not trained"
    else:
        where = f"epoch {count(row['epoch'])} monitor evaluation (no final.json)"
    return {k: num(row.get(k)) for k in keys}, where


def _schedule(cfg: dict[str, Any]) -> str:
    o = cfg.get("optim") or {}
    sched = o.get("schedule", "step")
    if sched == "step":
        sched = f"×{o.get('gamma')} every {o.get('step_size')} epochs"
    pretrained = get(cfg, "model.pretrained", False)
    mult = f", new layers ×{o.get('new_lr_mult')}" if pretrained else ""
    return (
        f"SGD lr {o.get('lr')}{mult}, {sched}, momentum {o.get('momentum')}, "
        f"wd {o.get('weight_decay')}, batch {get(cfg, 'trainer.batch_size')}"
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
    region = get(cfg, "data.region")
    if region:
        return str(region)
    masked = get(cfg, "data.mean_fill") or (
        get(cfg, "model.use_mask") and get(cfg, "model.arch") != "alexnet"
    )
    return "segment" if masked else "box"


def monitor_note(monitor: Any, n_val: Any) -> str:
    """How best.pt was chosen: on a subset of val, or (subset >= val) on all of it."""
    mon, n = num(monitor), num(n_val)
    if math.isnan(mon) or mon <= 0:
        return "best epoch on the val set"
    if not math.isnan(n) and mon >= n:
        return f"best epoch on all {count(n)} val regions"
    return f"best epoch on a {count(mon)}-region val subset"


def provenance(run: dict[str, Any]) -> str:
    """One line on how a run was made, from its ``config.yaml`` (and final.json's set size)."""
    cfg, m, d = run["cfg"], run["cfg"].get("model") or {}, run["cfg"].get("data") or {}
    trunk = (
        f"{m.get('trunk')} trunk ({'ImageNet-pretrained' if m.get('pretrained') else 'scratch'})"
    )
    epochs = f"{epochs_done(run)} epochs"
    _, where = reported(run, [])
    final = run.get("final") or {}
    res = final.get("best") or final.get("last") or run["rows"][-1]
    if cfg.get("task") == "bsds":
        n = count(res.get("val_images", "?"))
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
    n = count(res.get("val_items", "?"))
    region = region_of(cfg)
    inp = (
        f"{'segment (mean colour outside the mask)' if region == 'segment' else 'box'} crop, "
        f"largest side {d.get('max_side')} on {d.get('crop_size')}², jitter ±{d.get('jitter')}, "
        f"mask grid {d.get('mask_grid', 'uniform')}"
    )
    sel = monitor_note(get(cfg, "eval.monitor_items"), res.get("val_items"))
    sel = f" ({sel})" if where.startswith("best.pt") else ""
    return (
        f"{trunk}; input: {inp}; head: {_coco_head(m)}; {epochs}, {_schedule(cfg)}; "
        f"val set: {n} regions; reported: {where}{sel}"
    )
