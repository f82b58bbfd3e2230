"""W&B workspace views generated from the panel specification (``make dashboards``).

Each view shows the runs of one W&B group (the logger sets ``group`` = ``paper.table``, see
``matbackprop.engine.logging.run_metadata``). Before saving, each synced run of a table gets
the paper's number (:data:`matbackprop.results.paper.TABLES`) in its config as
``paper.<metric>`` when it lacks it, so the run table shows it beside
``summary:epoch/<metric>``.
"""

from __future__ import annotations

from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

from matbackprop.results.panels import VIEWS, Panel
from matbackprop.results.paper import TABLES

STEP, EPOCH = "global_step", "epoch"  # the x-axes the logger declares (define_metric)


def _line(title: str, ys: list[str], x: str = EPOCH, **kw) -> wr.LinePlot:
    return wr.LinePlot(title=title, x=x, y=ys, max_runs_to_show=20, **kw)


def paper_markdown(table: dict[str, Any]) -> str:
    """The paper's numbers of a table as a markdown table (for a panel beside the run table)."""
    metrics = table["metrics"]
    lines = [f"**{table['title']}**", "", "| row | " + " | ".join(metrics) + " |"]
    lines.append("|---" * (len(metrics) + 1) + "|")
    for row, values in table["rows"].items():
        cells = [str(values.get(k, "—")) for k in metrics]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", table.get("note", "")])


def wandb_panel(table_id: str, p: Panel):
    """One W&B panel from the specification."""
    if p.kind == "line" and p.x == "step":
        kw = {"metric_regex": p.regex} if p.regex else {}
        return _line(p.title, list(p.keys), x=STEP, **kw)
    if p.kind == "line":
        kw = {"log_y": True} if p.log_y else {}
        return _line(p.title, [f"epoch/{k}" for k in p.keys], **kw)
    if p.kind == "table":
        return wr.WeavePanelSummaryTable(table_name=p.name)
    if p.kind == "confusion":
        return wr.CustomChart(
            query={"summaryTable": {"tableKey": p.name}},
            chart_name="wandb/confusion_matrix/v1",
            chart_fields={
                "Actual": "Actual",
                "Predicted": "Predicted",
                "nPredictions": "nPredictions",
            },
        )
    if p.kind == "media":
        return wr.MediaBrowser(title=p.title, media_keys=[p.name], num_columns=1)
    if p.kind == "paper":
        return wr.MarkdownPanel(markdown=paper_markdown(TABLES[table_id]))
    raise ValueError(f"unknown panel kind {p.kind!r}")


def build_view(table_id: str, entity: str, project: str) -> ws.Workspace:
    """The W&B view of one paper table (one line per row)."""
    view = VIEWS[table_id]
    sections = [
        ws.Section(name=s.name, is_open=True, panels=[wandb_panel(table_id, p) for p in s.panels])
        for s in view["sections"]
    ]
    runset = ws.RunsetSettings(
        filters=ws.And(ws.Metric("Group") == table_id),
        pinned_columns=["config:row", *view["columns"], "config:model.trunk", "config:optim.lr"],
        order=[ws.Ordering(ws.Config("row"), ascending=True)],
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=view["name"],
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=EPOCH, max_runs=20),
        runset_settings=runset,
    )


def build_views(entity: str, project: str) -> dict[str, ws.Workspace]:
    """Every view, keyed by the W&B group (paper table) it shows."""
    return {table_id: build_view(table_id, entity, project) for table_id in VIEWS}


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


def _panel_fields(panel) -> dict[str, Any]:
    names = ("title", "x", "y", "metric_regex", "media_keys", "table_name", "chart_name")
    fields = {k: getattr(panel, k, None) for k in names}
    if isinstance(panel, wr.MarkdownPanel):
        fields["markdown"] = panel.markdown
    return fields


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
    """``scripts/wandb_dashboards.py``: save the views (or print them with ``--dry-run``)."""
    import argparse
    import json
    import os
    import sys

    parser = argparse.ArgumentParser(description="W&B dashboards as code: one view per table.")
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
    saved = 0
    for group, view in build_views(entity, args.project).items():
        path = f"{entity}/{args.project}"
        try:
            runs = annotate_paper_numbers(api, path, group, TABLES[group])
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
