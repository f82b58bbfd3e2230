"""scripts/check_data.py lists every bad image / .mat / annotation file and exits 2."""

import json
import subprocess
import sys

import pytest
from tests.conftest import ROOT, load_script

from matbackprop.data.synthetic import make_synthetic_bsds, make_synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
check = load_script("check_data")


@pytest.fixture
def roots(tmp_path):
    coco = make_synthetic_coco(tmp_path / "coco", n_train=4, n_val=4, image_size=(64, 64))["root"]
    bsds = make_synthetic_bsds(tmp_path / "bsds", n_train=3, n_val=1, n_test=1, size=(24, 32))
    return coco, bsds


def test_clean_data_exits_0(roots, capsys):
    coco, bsds = roots
    assert check.main(["--coco-root", str(coco), "--bsds-root", str(bsds), "--workers", "2"]) == 0
    assert "0 bad" in capsys.readouterr().out


def test_every_bad_file_is_listed(roots, capsys):
    coco, bsds = roots
    train = sorted((coco / "train2014").glob("*.jpg"))
    train[0].write_bytes(train[0].read_bytes()[:300])  # truncated
    val = sorted((coco / "val2014").glob("*.jpg"))
    val[1].write_bytes(b"garbage")
    from PIL import Image

    Image.new("RGB", (10, 20)).save(val[0])  # wrong size
    mats = sorted((bsds / "BSR/BSDS500/data/groundTruth/train").glob("*.mat"))
    mats[0].write_bytes(b"MATLAB garbage")
    jpgs = sorted((bsds / "BSR/BSDS500/data/images/test").glob("*.jpg"))
    jpgs[0].write_bytes(jpgs[0].read_bytes()[:100])
    rc = check.main(["--coco-root", str(coco), "--bsds-root", str(bsds), "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 2 and "5 bad" in out
    for path in (train[0], val[1], val[0], mats[0], jpgs[0]):
        assert f"BAD {path}" in out or f"{path.name}" in out, path
    assert "image is 10x20, annotations say 64x64" in out
    assert f"image id {mats[0].stem}" in out and "(image id" in out


def test_bad_annotation_files_and_cli(roots):
    coco, _ = roots
    ann = coco / "annotations/instances_val2014.json"
    data = json.loads(ann.read_text())
    aid = data["annotations"][0]["id"]
    del data["annotations"][0]["bbox"]
    ann.write_text(json.dumps(data))
    (coco / "annotations/instances_train2014.json").write_text("[]")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_data.py"), "--coco-root", str(coco)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"annotation {aid} has no bbox" in proc.stdout
    assert "instances_train2014.json is not a COCO instances file" in proc.stdout
