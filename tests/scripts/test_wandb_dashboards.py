"""W&B views in dry-run mode: every panel reads a key that a real (offline) training logs."""

import json
import re

from matbackprop.engine.logging import offline_runs, read_offline_run, run_metadata
from matbackprop.results import wandb_views as dash
from matbackprop.results.panels import VIEWS
from matbackprop.results.paper import TABLES


def logged(root) -> dict[str, dict[str, set[str]]]:
    """Per W&B group: the history keys (media under their own key) and config keys logged."""
    out: dict[str, dict[str, set[str]]] = {}
    for folders in offline_runs(root).values():
        for folder in folders:
            run = read_offline_run(folder)
            keys = out.setdefault(run["group"], {"history": set(), "config": set()})
            for row in run["history"]:
                keys["history"].update(k for k in row if "/_" not in k)
                keys["history"].update(k.split("/_")[0] for k in row if k.endswith("/_type"))
            keys["config"].update(run["config"])
    return out


def unlogged(refs: dict[str, set[str]], keys: dict[str, set[str]], paper_keys: set[str]):
    """The references of a view that no run of its group logs."""
    history, config = keys["history"], keys["config"] | paper_keys
    missing = [f"history:{k}" for k in refs["history"] | refs["summary"] if k not in history]
    missing += [f"summary:{k}" for k in refs["summary_columns"] if k not in history]
    missing += [f"config:{k}" for k in refs["config_columns"] if k not in config]
    missing += [f"regex:{r}" for r in refs["regex"] if not any(re.search(r, k) for k in history)]
    return missing


def _paper_keys(group: str) -> set[str]:
    """Config keys the script adds to synced runs: paper.<metric> of the table's metrics."""
    return {f"paper.{k}" for k in TABLES[group]["metrics"]}


def test_dry_run_prints_every_view_and_panels_read_logged_keys(table_runs, capsys):
    assert dash.main(["--dry-run"]) == 0
    views = json.loads(capsys.readouterr().out)
    keys = logged(table_runs)
    assert set(views) == {"table1", "table2"} <= set(keys)  # the runs grouped themselves
    for group, view in views.items():
        refs = {k: set(v) for k, v in view["references"].items()}
        assert unlogged(refs, keys[group], _paper_keys(group)) == [], group
        assert view["spec"]["spec"]["section"]["panelBankConfig"]["sections"]  # W&B's own spec


def test_a_panel_naming_an_unlogged_metric_is_caught(table_runs):
    keys = logged(table_runs)["table1"]
    view = dash.build_views("e", "p")["table1"]
    view.sections[0].panels.append(dash._line("typo", ["epoch/val_eror"]))
    view.sections[1].panels.append(dash._line("no such", [], metric_regex="^lrate/"))
    refs = dash.panel_references(view)
    assert unlogged(refs, keys, _paper_keys("table1")) == [
        "history:epoch/val_eror",
        "regex:^lrate/",
    ]


def test_views_cover_every_metric_family():
    views = dash.build_views("e", "p")
    t1, t2 = (dash.panel_references(views[g]) for g in ("table1", "table2"))
    assert {"epoch/val_error", "train/loss", "epoch/eig_min", "epoch/eig_max"} <= t1["history"]
    assert {"epoch/eig_near_eps", "epoch", "global_step"} <= t1["history"]
    assert t1["regex"] == {"^lr/"} and t1["summary"] == {"per_class", "confusion_table"}
    assert {"paper.val_error", "row"} <= t1["config_columns"]
    assert {"epoch/val_error"} <= t1["summary_columns"]
    for m in ["cover_ods", "cover_ois", "cover_best", "pri_ods", "pri_ois", "vi_ods", "vi_ois"]:
        assert f"epoch/val_{m}" in t2["history"]
    assert {"train/rank_z", "epoch/val_rank_z", "overlays"} <= t2["history"]
    assert t2["summary"] == {"per_scale"}


def test_paper_numbers_match_the_tables_script():
    md = dash.paper_markdown(TABLES["table1"])
    assert "| DeepO2P | 28.6 |" in md and "| AlexNet(S) | 35.3 |" in md


def test_group_of_each_row_is_its_table():
    cfg = {"paper": {"table": "table1", "row": "DeepO2P"}, "run_name": "x"}
    assert run_metadata(cfg)["group"] in VIEWS


def _dashboards(tmp_path, *args, **env):
    """``scripts/wandb_dashboards.py`` in a fresh process (a fresh W&B service; bounded)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path), **env}
    env.pop("WANDB_MODE", None)
    if "WANDB_API_KEY" not in env or env["WANDB_API_KEY"] is None:
        env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "wandb_dashboards.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_login_it_stops_with_exit_2(tmp_path):
    proc = _dashboards(tmp_path, "--entity", "me", WANDB_API_KEY=None)  # no key, no ~/.netrc
    assert proc.returncode == 2, proc.stderr
    assert "wandb login" in proc.stderr and "make sync-wandb" in proc.stderr
    assert "--dry-run" in proc.stderr and "Traceback" not in proc.stderr


def test_without_network_it_stops_with_exit_2(tmp_path):
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.time()
    proc = _dashboards(
        tmp_path,
        "--timeout",
        "3",
        WANDB_BASE_URL=f"http://127.0.0.1:{port}",
        WANDB_API_KEY="x" * 40,
    )
    assert proc.returncode == 2, proc.stderr
    assert time.time() - t0 < 60
    assert "cannot reach W&B" in proc.stderr
