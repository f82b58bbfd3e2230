"""make tables with demo runs: their own section in the console, .md and both HTML pages."""

import json

from omegaconf import OmegaConf

from matbackprop.engine.records import find_runs, save_config, write_csv
from matbackprop.results import html as pages
from matbackprop.results import tables
from matbackprop.results.provenance import monitor_note


def _run(root, task, name, cfg, rows, final=None):
    folder = root / task / name
    base = {"task": task, "run_name": name, "trainer": {"epochs": len(rows)}}
    save_config(OmegaConf.create({**base, **cfg}), folder / "config.yaml")
    write_csv(folder / "metrics.csv", rows, list(rows[0]))
    if final:
        (folder / "final.json").write_text(json.dumps(final))
    return folder


def _tree(root):
    rows = [{"epoch": e, "val_error": 60.0 - 10 * e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
    demo = {"data": {"name": "coco_synthetic"}, "eval": {"monitor_items": 10000}}
    final = {"best": {"val_error": 12.5, "val_items": 201.0, "epoch": 3}}
    _run(root, "coco", "demo_coco_deepo2p", demo, rows, final)
    paper = {"paper": {"table": "table1", "row": "DeepO2P"}, "data": {"name": "coco"}}
    _run(root, "coco", "table1_deepo2p", paper, rows)
    bsds = {"data": {"name": "bsds_synthetic", "version": 500}}
    _run(root, "bsds", "demo_bsds_deepncut", bsds, [{"epoch": 8, "val_cover_ods": 0.68}])


def test_demo_runs_get_their_own_section_everywhere(tmp_path, capsys):
    _tree(tmp_path / "runs")
    assert tables.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "3 run(s) under" in out and "(2 demo (synthetic data))" in out
    md1 = (tmp_path / "t" / "table1.md").read_text()
    assert md1 in out
    paper, demo = md1.split("### demo (synthetic data): not paper results")
    assert "| DeepO2P | 28.6 | 30.0 |" in paper and "demo_coco" not in paper
    assert "| demo_coco_deepo2p | 12.5 | best.pt (epoch 3) | 3/3 |" in demo
    # counts as integers; the monitor subset capped at the val size
    assert "val set: 201 regions" in demo and "201.0" not in md1
    assert "(best epoch on all 201 val regions)" in demo
    md2 = (tmp_path / "t" / "table2.md").read_text()
    assert "| demo_bsds_deepncut | 0.680 |" in md2.split("### demo (synthetic data)")[1]
    for page, name in [("table1", "demo_coco_deepo2p"), ("table2", "demo_bsds_deepncut")]:
        text = (tmp_path / "t" / f"{page}.html").read_text()
        head, demo_part = text.split("<div class='demo'><h2>demo (synthetic data)")
        assert name in demo_part and name not in head
        assert "`" not in text  # inline code rendered as <code>
    page1 = (tmp_path / "t" / "table1.html").read_text()
    assert "1 run(s) of the paper's rows; 1 demo run(s)" in page1
    assert "not in this run folder (the trainer logs it to W&amp;B only" in page1  # no confusion
    page2 = (tmp_path / "t" / "table2.html").read_text()
    assert "Paper values not recovered" in page2 and "paper cover" not in page2


def test_monitor_note_caps_the_subset_at_the_val_size():
    assert monitor_note(10000, 201.0) == "best epoch on all 201 val regions"
    assert monitor_note(10000, 291875) == "best epoch on a 10000-region val subset"
    assert monitor_note(None, 201) == "best epoch on the val set"


def test_val_error_chart_draws_the_paper_number(tmp_path):
    _tree(tmp_path)
    runs = [r for r in find_runs(tmp_path) if r["dir"].name == "table1_deepo2p"]
    spec = tables.TABLES["table1"]
    plain = pages.curve_panel("val error", ["val_error"], False, runs)
    with_ref = pages.curve_panel("val error", ["val_error"], False, runs, paper=spec)
    assert plain and with_ref and plain != with_ref  # the dashed paper line (and its legend)
    bad = {"rows": {"DeepO2P": {"val_error": float("nan")}}}
    assert pages.curve_panel("val error", ["val_error"], False, runs, paper=bad)
