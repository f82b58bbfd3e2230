"""The one panel specification of the results views: what each paper table's page shows.

Both the offline HTML pages (:mod:`matbackprop.results.html`, ``make tables``) and the W&B
workspace views (:mod:`matbackprop.results.wandb_views`, ``make dashboards``) are generated
from :data:`VIEWS`. A panel names what it reads once:

- ``line`` over ``epoch``: ``keys`` are ``metrics.csv`` columns (W&B: ``epoch/<key>``);
- ``line`` over ``step``: ``keys`` are W&B history keys logged every ``log_every`` steps
  (``train/loss``), ``regex`` a pattern over them (``^lr/``: one line per parameter group);
  offline they come from the run's W&B offline files when it logged to W&B;
- ``table``: ``tables/<name>.csv`` (W&B: the summary table ``<name>``), with ``by_epoch``
  charts from ``tables/<name>_by_epoch.csv`` as ``(x column, y columns, a line per column)``;
- ``confusion``: the confusion matrix (W&B: ``wandb.plot.confusion_matrix``'s ``<name>``);
- ``media``: images (``overlays/epoch*.png``; W&B: the media key ``<name>``);
- ``paper``: the paper's numbers beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...] = ()
    kind: str = "line"  # line | table | confusion | media | paper
    x: str = "epoch"  # epoch | step (line panels)
    log_y: bool = False
    regex: str = ""  # step line panels: a pattern over history keys
    paper_ref: bool = False  # draw each row's paper number as a reference line
    name: str = ""  # table / confusion / media: the table or media key
    by_epoch: tuple[tuple[str, tuple[str, ...], str], ...] = ()  # table: history charts


@dataclass(frozen=True)
class Section:
    name: str
    panels: tuple[Panel, ...]


def line(title: str, *keys: str, **kw) -> Panel:
    return Panel(title, tuple(keys), **kw)


VIEWS: dict[str, dict] = {
    "table1": {
        "name": "Table 1: DeepO2P on MSCOCO",
        "columns": ["config:paper.val_error", "summary:epoch/val_error"],
        "sections": (
            Section(
                "Table 1: validation error",
                (
                    line("val top-1 error % (one line per row)", "val_error", paper_ref=True),
                    line("val mean per-class error %", "val_mean_class_error"),
                    line("train / val loss per epoch", "train_loss", "val_loss"),
                ),
            ),
            Section(
                "Training",
                (
                    line("train loss (per logged step)", "train/loss", x="step"),
                    line("learning rates (per parameter group)", x="step", regex="^lr/"),
                    line("base learning rate per epoch", "lr", log_y=True),
                ),
            ),
            Section(
                "Eigenvalues of the pooled log-covariance inputs",
                (
                    line("smallest eigenvalue (ε floor)", "eig_min", log_y=True),
                    line("largest eigenvalue", "eig_max", log_y=True),
                    line(
                        "eigenvalues at ε per matrix (count, fraction)",
                        "eig_near_eps",
                        "eig_near_eps_frac",
                    ),
                ),
            ),
            Section(
                "Selected run: per-class error and confusion matrix",
                (
                    Panel(
                        "per-class error",
                        kind="table",
                        name="per_class",
                        by_epoch=(("epoch", ("error",), "class"),),
                    ),
                    Panel("confusion matrix", kind="confusion", name="confusion_table"),
                ),
            ),
            Section("Paper vs ours", (Panel("paper vs ours", kind="paper"),)),
        ),
    },
    "table2": {
        "name": "Table 2: DeepNCut on BSDS",
        "columns": ["summary:epoch/val_cover_ods", "summary:epoch/val_cover_ois"],
        "sections": (
            Section(
                "Table 2: segment covering",
                (
                    line("covering ODS", "val_cover_ods"),
                    line("covering OIS", "val_cover_ois"),
                    line("covering Best", "val_cover_best"),
                ),
            ),
            Section(
                "Probabilistic Rand index and variation of information",
                (
                    line("PRI ODS / OIS", "val_pri_ods", "val_pri_ois"),
                    line("VI ODS / OIS (lower is better)", "val_vi_ods", "val_vi_ois"),
                    line("k at covering ODS", "val_cover_ods_k"),
                ),
            ),
            Section(
                "Rank of Z and losses",
                (
                    line("rank of Z (train, per logged step)", "train/rank_z", x="step"),
                    line("rank of Z (val, per epoch)", "val_rank_z"),
                    line("train loss (per logged step)", "train/loss", x="step"),
                    line("train / val loss per epoch", "train_loss", "val_loss"),
                ),
            ),
            Section(
                "Segmentations: image | human | ours at the ODS scale",
                (
                    Panel("overlays", kind="media", name="overlays"),
                    Panel(
                        "per-scale scores",
                        kind="table",
                        name="per_scale",
                        by_epoch=(("k", ("cover", "pri", "vi"), "epoch"),),
                    ),
                ),
            ),
            Section("Paper vs ours", (Panel("paper vs ours", kind="paper"),)),
        ),
    },
}


def panels(table_id: str, kind: str | None = None, x: str | None = None) -> list[Panel]:
    """The panels of a view, optionally only of one ``kind`` / x-axis."""
    found = [p for s in VIEWS[table_id]["sections"] for p in s.panels]
    return [p for p in found if (kind is None or p.kind == kind) and (x is None or p.x == x)]
