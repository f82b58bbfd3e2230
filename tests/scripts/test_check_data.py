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


def test_every_validation_problem_is_listed_and_no_file_outside_is_opened(tmp_path, capsys):
    from PIL import Image

    coco = make_synthetic_coco(tmp_path / "coco", n_train=4, n_val=16, image_size=(64, 64))["root"]
    Image.new("RGB", (5, 7)).save(coco.parent / "outside.jpg")  # would be "image is 5x7" if read
    ann = coco / "annotations/instances_val2014.json"
    d = json.loads(ann.read_text())
    used = [a for a in d["annotations"] if not a.get("iscrowd")]
    by_id = {im["id"]: im for im in d["images"]}
    by_id[used[0]["image_id"]].update(file_name="../../outside.jpg")
    other = next(a for a in used if a["image_id"] != used[0]["image_id"])
    by_id[other["image_id"]].update(height=100_000, width=100_000)  # segfaulted pycocotools
    rest = [a for a in used if a["image_id"] not in (used[0]["image_id"], other["image_id"])]
    rest[0]["bbox"] = [float("nan"), 10, 20, 20]
    rest[1]["segmentation"] = {"size": [4000, 4000], "counts": "PPYo1"}
    ann.write_text(json.dumps(d))
    train = coco / "annotations/instances_train2014.json"
    t = json.loads(train.read_text())
    t["images"].append(dict(t["images"][0]))
    train.write_text(json.dumps(t))
    assert check.main(["--coco-root", str(coco), "--workers", "1"]) == 2
    out = capsys.readouterr().out
    expect = [
        f"image id {t['images'][0]['id']}: `id` is listed twice in 'images'",
        f"image id {used[0]['image_id']}: `file_name` '../../outside.jpg' is not a relative path",
        f"image id {other['image_id']}: `height` = 100000 is not an integer in 1..32768",
        f"annotation {rest[0]['id']} (image id {rest[0]['image_id']}): `bbox` [nan, 10, 20, 20]",
        f"annotation {rest[1]['id']} (image id {rest[1]['image_id']}): RLE `size` [4000, 4000]",
    ]
    for text in expect:
        assert text in out, text
    assert "5x7" not in out and "[check-data]" in out and f"{len(expect)} bad" in out


def test_bsds_label_problems_are_listed(roots, capsys):
    import numpy as np
    import scipy.io as sio

    _, bsds = roots
    mats = sorted((bsds / "BSR/BSDS500/data/groundTruth/train").glob("*.mat"))
    for mat, seg in zip(mats[:2], (np.full((24, 32), 70000, np.int32), np.zeros((24, 32)))):
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = {"Segmentation": seg, "Boundaries": np.zeros((24, 32), np.uint8)}
        sio.savemat(mat, {"groundTruth": cell})
    assert check.main(["--bsds-root", str(bsds), "--workers", "1"]) == 2
    out = capsys.readouterr().out
    assert f"{mats[0].name}: groundTruth entry 1 `Segmentation`: labels span 70000" in out
    assert f"{mats[1].name}: groundTruth entry 1 `Segmentation`: labels are all zero" in out
    assert "2 bad" in out
