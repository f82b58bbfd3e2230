"""find_runs / make tables with corrupt run folders: one warning naming the file, the rest tabled."""

import json

import pytest

from matbackprop.engine.records import find_runs, save_config, write_csv
from matbackprop.errors import RunFolderError
from matbackprop.results import tables


def _run(root, name, epochs=2, row="DeepO2P"):
    folder = root / "coco" / name
    cfg = {"task": "coco", "run_name": name, "trainer": {"epochs": epochs}}
    cfg["paper"] = {"table": "table1", "row": row}
    from omegaconf import OmegaConf

    save_config(OmegaConf.create(cfg), folder / "config.yaml")
    rows = [{"epoch": e, "val_error": 50.0 - e} for e in range(1, epochs + 1)]  # 1-based
    write_csv(folder / "metrics.csv", rows, ["epoch", "val_error"])
    return folder


CORRUPT = {
    "config.yaml": "model: [unclosed\n  : : :",
    "final.json": '{"best": {"val_error": 3',
    "metrics.csv": "epoch,val_error\nnot-an-epoch,1.0\n",
}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "good_a", row="AlexNet")
    _run(root, "good_b", row="DeepO2P-FC")
    for i, (name, text) in enumerate(CORRUPT.items()):
        folder = _run(root, f"bad_{i}", row="DeepO2P")
        (folder / name).write_text(text)
    folder = _run(root, "bad_bytes", row="DeepO2P")
    (folder / "metrics.csv").write_bytes(b"epoch,val\x00\n\xff\xfe\x001,2\n")
    return root


def test_make_tables_skips_corrupt_folders_with_one_warning_each(runs, tmp_path, capsys):
    assert tables.main(["--runs", str(runs), "--out", str(tmp_path / "t")]) == 0
    captured = capsys.readouterr()
    warnings = [li for li in captured.err.splitlines() if "warning" in li]
    assert len(warnings) == 4, captured.err
    for i, name in enumerate(CORRUPT):
        (line,) = [w for w in warnings if f"bad_{i}" in w]
        assert str(runs / "coco" / f"bad_{i}" / name) in line
    assert any(str(runs / "coco" / "bad_bytes" / "metrics.csv") in w for w in warnings)
    assert "Traceback" not in captured.err
    md = (tmp_path / "t" / "table1.md").read_text()
    assert "| AlexNet | 25.3 | 48.0 |" in md and "| DeepO2P-FC | 25.2 | 48.0 |" in md
    assert "| DeepO2P | 28.6 | — | — | not run |" in md  # every DeepO2P folder was corrupt
    assert "[tables] 2 run(s) under" in captured.out


def test_find_runs_without_a_handler_raises_naming_the_file(runs):
    with pytest.raises(RunFolderError, match=r"bad_0.config\.yaml"):
        find_runs(runs)
    reported = []
    good = find_runs(runs, on_corrupt=lambda folder, msg: reported.append(folder.name))
    assert [r["dir"].name for r in good] == ["good_a", "good_b"]
    assert sorted(reported) == ["bad_0", "bad_1", "bad_2", "bad_bytes"]


def test_final_json_that_is_not_an_object_is_corrupt(tmp_path):
    folder = _run(tmp_path, "x")
    (folder / "final.json").write_text(json.dumps([1, 2]))
    with pytest.raises(RunFolderError, match="final.json: expected a JSON object"):
        find_runs(tmp_path)
