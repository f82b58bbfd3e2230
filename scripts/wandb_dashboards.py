#!/usr/bin/env python
"""W&B dashboards as code: one saved workspace view per paper table.

    python scripts/wandb_dashboards.py [--entity E] [--project matbackprop]   # = make dashboards
    python scripts/wandb_dashboards.py --dry-run      # the views' definitions (JSON), no W&B

Needs ``wandb login`` and the runs uploaded (``make sync-wandb``); without them it stops with
exit 2 and says which. Each view shows the runs of one W&B group (the logger sets ``group`` =
``paper.table``, see ``matbackprop.engine.logging.run_metadata``):

- ``table1``: val error of the rows on one chart, train loss, learning rates, eigenvalue
  statistics of the pooled matrices (min / max / count at ε), the per-class error table and
  the confusion matrix of the selected run, and a run table with the paper's number beside ours.
- ``table2``: covering ODS / OIS / Best and PRI / VI over epochs, rank of Z, the segmentation
  overlays and the per-scale table, and a run table.

Before saving, each synced run of a table gets the paper's number (``scripts/make_tables.py``
``TABLES``) in its config as ``paper.<metric>`` (e.g. ``paper.val_error``) when it lacks it, so
the run table shows it beside ``summary:epoch/<metric>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

HERE = Path(__file__).resolve().parent
STEP, EPOCH = "global_step", "epoch"  # the x-axes the logger declares (define_metric)


def paper_tables() -> dict[str, dict[str, Any]]:
    """``TABLES`` of scripts/make_tables.py (paper rows and numbers)."""
    spec = importlib.util.spec_from_file_location("make_tables", HERE / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TABLES


def _line(title: str, ys: list[str], x: str = EPOCH, **kw) -> wr.LinePlot:
    return wr.LinePlot(title=title, x=x, y=ys, max_runs_to_show=20, **kw)


def _paper_markdown(table: dict[str, Any]) -> str:
    """The paper's numbers of a table as a markdown table (for a panel beside the run table)."""
    metrics = table["metrics"]
    lines = [f"**{table['title']}**", "", "| row | " + " | ".join(metrics) + " |"]
    lines.append("|---" * (len(metrics) + 1) + "|")
    for row, values in table["rows"].items():
        cells = [str(values.get(k, "—")) for k in metrics]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", table.get("note", "")])


def _runset(group: str, columns: list[str]) -> ws.RunsetSettings:
    return ws.RunsetSettings(
        filters=ws.And(ws.Metric("Group") == group),
        pinned_columns=["config:row", *columns, "config:model.trunk", "config:optim.lr"],
        order=[ws.Ordering(ws.Config("row"), ascending=True)],
    )


def table1_view(entity: str, project: str, tables: dict[str, Any]) -> ws.Workspace:
    """Table 1 (DeepO2P on MSCOCO): one line per row."""
    sections = [
        ws.Section(
            name="Table 1: validation error",
            is_open=True,
            panels=[
                _line("val top-1 error % (one line per row)", ["epoch/val_error"]),
                _line("val mean per-class error %", ["epoch/val_mean_class_error"]),
                _line("train / val loss per epoch", ["epoch/train_loss", "epoch/val_loss"]),
            ],
        ),
        ws.Section(
            name="Training",
            is_open=True,
            panels=[
                _line("train loss (per logged step)", ["train/loss"], x=STEP),
                _line("learning rates (per parameter group)", [], x=STEP, metric_regex="^lr/"),
                _line("base learning rate per epoch", ["epoch/lr"]),
            ],
        ),
        ws.Section(
            name="Eigenvalues of the pooled log-covariance inputs",
            is_open=True,
            panels=[
                _line("smallest eigenvalue (ε floor)", ["epoch/eig_min"], log_y=True),
                _line("largest eigenvalue", ["epoch/eig_max"], log_y=True),
                _line(
                    "eigenvalues at ε per matrix (count, fraction)",
                    ["epoch/eig_near_eps", "epoch/eig_near_eps_frac"],
                ),
            ],
        ),
        ws.Section(
            name="Selected run: per-class error and confusion matrix",
            is_open=True,
            panels=[
                wr.WeavePanelSummaryTable(table_name="per_class"),
                wr.CustomChart(
                    query={"summaryTable": {"tableKey": "confusion_table"}},
                    chart_name="wandb/confusion_matrix/v1",
                    chart_fields={
                        "Actual": "Actual",
                        "Predicted": "Predicted",
                        "nPredictions": "nPredictions",
                    },
                ),
            ],
        ),
        ws.Section(
            name="Paper vs ours",
            is_open=True,
            panels=[wr.MarkdownPanel(markdown=_paper_markdown(tables["table1"]))],
        ),
    ]
    columns = ["config:paper.val_error", "summary:epoch/val_error"]
    return ws.Workspace(
        entity=entity,
        project=project,
        name="Table 1: DeepO2P on MSCOCO",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=EPOCH, max_runs=20),
        runset_settings=_runset("table1", columns),
    )


def table2_view(entity: str, project: str, tables: dict[str, Any]) -> ws.Workspace:
    """Table 2 (DeepNCut on BSDS): one line per row."""
    sections = [
        ws.Section(
            name="Table 2: segment covering",
            is_open=True,
            panels=[
                _line("covering ODS", ["epoch/val_cover_ods"]),
                _line("covering OIS", ["epoch/val_cover_ois"]),
                _line("covering Best", ["epoch/val_cover_best"]),
            ],
        ),
        ws.Section(
            name="Probabilistic Rand index and variation of information",
            is_open=True,
            panels=[
                _line("PRI ODS / OIS", ["epoch/val_pri_ods", "epoch/val_pri_ois"]),
                _line("VI ODS / OIS (lower is better)", ["epoch/val_vi_ods", "epoch/val_vi_ois"]),
                _line("k at covering ODS", ["epoch/val_cover_ods_k"]),
            ],
        ),
        ws.Section(
            name="Rank of Z and losses",
            is_open=True,
            panels=[
                _line("rank of Z (train, per logged step)", ["train/rank_z"], x=STEP),
                _line("rank of Z (val, per epoch)", ["epoch/val_rank_z"]),
                _line("train loss (per logged step)", ["train/loss"], x=STEP),
                _line("train / val loss per epoch", ["epoch/train_loss", "epoch/val_loss"]),
            ],
        ),
        ws.Section(
            name="Segmentations: image | human | ours at the ODS scale",
            is_open=True,
            panels=[
                wr.MediaBrowser(title="overlays", media_keys=["overlays"], num_columns=1),
                wr.WeavePanelSummaryTable(table_name="per_scale"),
            ],
        ),
        ws.Section(
            name="Paper vs ours",
            is_open=True,
            panels=[wr.MarkdownPanel(markdown=_paper_markdown(tables["table2"]))],
        ),
    ]
    columns = ["summary:epoch/val_cover_ods", "summary:epoch/val_cover_ois"]
    return ws.Workspace(
        entity=entity,
        project=project,
        name="Table 2: DeepNCut on BSDS",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=EPOCH, max_runs=20),
        runset_settings=_runset("table2", columns),
    )


VIEWS = {"table1": table1_view, "table2": table2_view}


def build_views(entity: str, project: str) -> dict[str, ws.Workspace]:
    """Every view, keyed by the W&B group (paper table) it shows."""
    tables = paper_tables()
    return {group: make(entity, project, tables) for group, make in VIEWS.items()}


def panel_references(view: ws.Workspace) -> dict[str, set[str]]:
    """What a view's panels read: ``history`` keys (line plot axes, media), ``summary``
    tables, ``regex`` patterns over history keys, ``summary_columns`` / ``config_columns``."""
    refs: dict[str, set[str]] = {
        k: set() for k in ("history", "summary", "regex", "summary_columns", "config_columns")
    }
    for section in view.sections:
        for panel in section.panels:
            if isinstance(panel, wr.LinePlot):
                refs["history"].update([panel.x, *panel.y])
                if panel.metric_regex:
                    refs["regex"].add(panel.metric_regex)
            elif isinstance(panel, wr.MediaBrowser):
                refs["history"].update(panel.media_keys)
            elif isinstance(panel, wr.WeavePanelSummaryTable):
                refs["summary"].add(panel.table_name)
            elif isinstance(panel, wr.CustomChart):
                refs["summary"].add(panel.query["summaryTable"]["tableKey"])
    for column in view.runset_settings.pinned_columns:
        kind, _, name = column.partition(":")
        if kind in ("summary", "config"):
            refs[f"{kind}_columns"].add(name)
    return refs


def describe(view: ws.Workspace) -> dict[str, Any]:
    """A view as JSON: a readable outline and the full W&B view spec it saves."""
    outline = [
        {
            "section": s.name,
            "panels": [
                {"type": type(p).__name__, **{k: v for k, v in _panel_fields(p).items() if v}}
                for p in s.panels
            ],
        }
        for s in view.sections
    ]
    refs = {k: sorted(v) for k, v in panel_references(view).items()}
    spec = view._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"name": view.name, "sections": outline, "references": refs, "spec": spec}


def _panel_fields(panel) -> dict[str, Any]:
    names = ("title", "x", "y", "metric_regex", "media_keys", "table_name", "chart_name")
    fields = {k: getattr(panel, k, None) for k in names}
    if isinstance(panel, wr.MarkdownPanel):
        fields["markdown"] = panel.markdown
    return fields


def annotate_paper_numbers(api, path: str, group: str, table: dict[str, Any]) -> list:
    """The synced runs of ``group``; each gets ``paper.<metric>`` from the paper table in its
    config where it lacks it (so the run table can show it)."""
    runs = list(api.runs(path, filters={"group": group}))
    for run in runs:
        paper = table["rows"].get(run.config.get("row") or run.config.get("paper.row"), {})
        missing = {f"paper.{k}": v for k, v in paper.items() if f"paper.{k}" not in run.config}
        if missing:
            run.config.update(missing)
            run.update()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"))
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "matbackprop"))
    parser.add_argument("--dry-run", action="store_true", help="print the views as JSON")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per W&B request")
    args = parser.parse_args(argv)

    if args.dry_run:
        views = build_views(args.entity or "<entity>", args.project)
        print(json.dumps({g: describe(v) for g, v in views.items()}, indent=1))
        return 0

    import wandb

    try:
        api = wandb.Api(timeout=args.timeout)
        entity = args.entity or api.default_entity
    except Exception as err:  # noqa: BLE001 - no key, no network, bad key: all user-fixable
        print(
            f"error: cannot reach W&B ({type(err).__name__}: {err}).\n"
            "Log in first (`wandb login`, or set WANDB_API_KEY), upload the runs with "
            "`make sync-wandb`, then run `make dashboards` again; "
            "`python scripts/wandb_dashboards.py --dry-run` prints the views without W&B.",
            file=sys.stderr,
        )
        return 2
    tables, saved = paper_tables(), 0
    for group, view in build_views(entity, args.project).items():
        path = f"{entity}/{args.project}"
        try:
            runs = annotate_paper_numbers(api, path, group, tables[group])
        except Exception as err:  # noqa: BLE001
            print(f"error: cannot list the runs of {path} ({err}).", file=sys.stderr)
            return 2
        if not runs:
            print(
                f"[dashboards] no runs of group {group!r} in {path}: train a {group} row with "
                f"the W&B logger and upload it (`make sync-wandb`); view not saved.",
                file=sys.stderr,
            )
            continue
        view.save()
        saved += 1
        print(f"[dashboards] {view.name}: {len(runs)} run(s), {view.url}")
    if not saved:
        print(
            f"error: no synced runs in {entity}/{args.project} (groups {', '.join(VIEWS)}). "
            "Run `make sync-wandb` first (or pass --entity / --project).",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
