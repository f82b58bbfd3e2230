"""make_tables from fake run folders: final.json numbers, checkpoint, provenance per row."""

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from matbackprop.engine.records import read_csv, save_config, write_csv
from matbackprop.results import tables
from matbackprop.train import CONFIG_DIR


def _run(root: Path, config: str, experiment: str, rows, final=None, extra=()) -> Path:
    """A run folder as the trainer leaves it: config.yaml, metrics.csv, final.json."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config, overrides=[f"experiment={experiment}", *extra])
    run_dir = root / cfg.task / cfg.run_name
    save_config(cfg, run_dir / "config.yaml")
    write_csv(run_dir / "metrics.csv", rows, list(rows[0]))
    if final is not None:
        (run_dir / "final.json").write_text(json.dumps(final))
    return run_dir


def _line(md: str, start: str) -> list[str]:
    line = next(li for li in md.splitlines() if li.startswith(start))
    return [c.strip() for c in line.split("|")[1:-1]]


def test_table1_reports_final_json_with_provenance(tmp_path, capsys):
    runs = tmp_path / "runs"
    monitor = [{"epoch": 1, "val_error": 40.0}, {"epoch": 2, "val_error": 35.0}]  # 1-based
    final = {
        "last": {"val_error": 33.25, "val_items": 291875, "epoch": 2},
        "best": {"val_error": 31.75, "val_items": 291875, "epoch": 2},
    }
    _run(runs, "coco", "table1_deepo2p", monitor, final)
    _run(runs, "coco", "table1_alexnet", monitor)  # no final.json: the last monitor score
    _run(runs, "coco", "table1_deepo2p_bn", monitor, final)
    assert tables.main(["--runs", str(runs), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "table1.md").read_text()
    assert md in capsys.readouterr().out  # `make tables` prints the table with its notes
    cells = _line(md, "| DeepO2P |")
    assert cells[1:4] == ["28.6", "31.8", "best.pt (epoch 2)"]  # paper, ours (best.pt, full val)
    cells = _line(md, "| AlexNet |")
    assert cells[2] == "35.0" and "no final.json" in cells[3]
    note = next(li for li in md.splitlines() if li.startswith("- **AlexNet**"))
    assert "reported: epoch 2 monitor evaluation (no final.json)." in note
    assert _line(md, "| DeepO2P + descriptor BN (extra) |")[1] == "—"  # no paper number
    assert "Region information, the same for every row: the bounding-box crop only" in md
    assert "recalled, unverified" in md and "torchvision's AlexNet" in md
    note = next(li for li in md.splitlines() if li.startswith("- **DeepO2P**"))
    for part in [
        "alexnet trunk (ImageNet-pretrained)",
        "input: box crop, largest side 200 on 227², jitter ±16, mask grid receptive",
        "head: log-cov (ε = 0.001, float64, whole crop) → triu_vec → linear",
        "2/10 epochs, SGD lr 0.001, new layers ×10, ×0.1 every 6 epochs",
        "batch 100",
        "val set: 291875 regions",
        "reported: best.pt (epoch 2) (best epoch on a 10000-region val subset)",
    ]:
        assert part in note, part
    bn = next(li for li in md.splitlines() if li.startswith("- **DeepO2P + descriptor BN"))
    assert "triu_vec → BatchNorm → linear" in bn
    fc_alex = next(li for li in md.splitlines() if li.startswith("- **AlexNet**"))
    assert "pool5 → fc6 → relu → dropout 0.5 → fc7 → relu → dropout 0.5 → linear" in fc_alex
    rec = next(r for r in read_csv(tmp_path / "t" / "table1.csv") if r["row"] == "DeepO2P")
    assert float(rec["last_val_error"]) == 33.25 and float(rec["best_val_error"]) == 31.75
    assert rec["provenance"].startswith("alexnet trunk")


def test_table1_note_warns_when_rows_saw_different_regions(tmp_path):
    runs = tmp_path / "runs"
    rows = [{"epoch": 1, "val_error": 40.0}]
    _run(runs, "coco", "table1_deepo2p", rows)
    _run(runs, "coco", "table1_alexnet", rows, extra=["region=segment"])
    tables.main(["--runs", str(runs), "--out", str(tmp_path / "t")])
    md = (tmp_path / "t" / "table1.md").read_text()
    assert "WARNING: the rows saw different region information (box, segment)" in md
    note = next(li for li in md.splitlines() if li.startswith("- **AlexNet**"))
    assert "segment (mean colour outside the mask) crop" in note


def test_table2_both_protocols_all_columns(tmp_path):
    runs = tmp_path / "runs"
    keys = ["val_cover_ods", "val_cover_ois", "val_cover_best", "val_pri_ods", "val_vi_ods"]
    res = dict(zip(keys, [0.61, 0.66, 0.74, 0.82, 1.75]))
    monitor = [{"epoch": e, **{k: 0.1 for k in keys}} for e in range(1, 4)]  # 1-based
    final = {"last": {**res, "val_images": 200, "epoch": 3}, "best": {**res, "epoch": 2}}
    final["best"]["val_images"] = 200
    _run(runs, "bsds", "table2_deepncut_alexnet", monitor, final)
    f300 = {w: {**v, "val_images": 100} for w, v in final.items()}
    _run(runs, "bsds", "table2_bsds300_deepncut_alexnet", monitor, f300)
    tables.main(["--runs", str(runs), "--out", str(tmp_path / "t")])
    md = (tmp_path / "t" / "table2.md").read_text()
    lines = [li for li in md.splitlines() if li.startswith("| DeepNCut, AlexNet relu5")]
    assert [_line(li, "|")[1] for li in lines] == ["BSDS500", "BSDS300"]
    cells = _line(lines[0], "|")
    assert cells[2:7] == ["0.610", "0.660", "0.740", "0.820", "1.750"]  # no paper numbers
    assert cells[7:9] == ["best.pt (epoch 2)", "3/30"]
    head = "| Method | protocol | cover ODS | cover OIS | cover Best | PRI | VI | checkpoint |"
    assert head in md
    notes = [li for li in md.splitlines() if li.startswith("- **DeepNCut, AlexNet relu5")]
    assert "BSDS500 (trainval → test, 200 images; 0.1 of the training images held out" in notes[0]
    assert "BSDS300 (train → test, 100 images" in notes[1]
    assert "dropout 0.5 (element-wise)" in notes[0] and "3/30 epochs" in notes[0]
