"""`make tables` also writes table1.html / table2.html: the panel spec's charts from the runs."""

import base64
import csv
import re

from matbackprop.engine.records import find_runs
from matbackprop.results import html as tables_html
from matbackprop.results import tables
from matbackprop.results.panels import panels


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_make_tables_writes_both_pages(table_runs, tmp_path):
    assert tables.main(["--runs", str(table_runs), "--out", str(tmp_path)]) == 0
    page1 = (tmp_path / "table1.html").read_text()
    page2 = (tmp_path / "table2.html").read_text()

    # paper number beside ours: our final val error read straight from metrics.csv
    rows = _csv(table_runs / "coco" / "table1_deepo2p" / "metrics.csv")
    final = float(rows[-1]["val_error"])
    assert f"<td>DeepO2P</td><td>28.6</td><td>{final:.1f}</td>" in page1
    # every Table 1 line panel has data in a DeepO2P run logged to W&B offline (the per-step
    # ones from its W&B files): one PNG per panel, + per-class error by epoch + confusion
    images = _images(page1)
    assert len(images) == len(panels("table1", kind="line")) + 1 + 1
    assert all(img.startswith(b"\x89PNG") for img in images)
    assert "not recorded" not in page1  # per-step loss, lr per group and confusion all found
    # the selected run's per-class table, cell by cell from tables/per_class.csv
    for row in _csv(table_runs / "coco" / "table1_deepo2p" / "tables" / "per_class.csv"):
        assert f"<td>{row['class']}</td><td>{int(row['n'])}</td>" in page1
    assert "<code>eval.monitor_items</code>" in page1 and "`" not in page1  # inline code

    # Table 2: the run's latest overlay PNG is embedded byte for byte, with the per-scale table
    run2 = table_runs / "bsds" / "table2_deepncut_alexnet"
    (overlay,) = sorted((run2 / "overlays").glob("epoch*.png"))[-1:]
    assert overlay.read_bytes() in _images(page2)
    assert len(_images(page2)) == len(panels("table2", kind="line")) + 3 + 1  # + by k, overlay
    assert "cover ODS" in page2 and "<h4>per_scale" in page2
    ods = max(float(r["val_cover_ods"]) for r in _csv(run2 / "metrics.csv"))
    assert f"<td>{ods:.3f}</td>" in page2
    assert "Paper values not recovered" in page2 and "<th>paper" not in page2


def test_a_panel_without_data_is_left_out(table_runs):
    runs = [r for r in find_runs(table_runs) if r["cfg"]["paper"]["table"] == "table1"]
    assert tables_html.curve_panel("x", ["val_cover_ods"], False, runs) == ""
    assert tables_html.curve_panel("x", ["val_error"], False, runs).count("<img") == 1


def test_inline_code_and_bold():
    text = "scored on `best.pt` (**best** <epoch>)"
    assert tables_html.inline(text) == (
        "scored on <code>best.pt</code> (<b>best</b> &lt;epoch&gt;)"
    )
