"""Validation at indexing (data/validate.py): every broken COCO / BSDS rule is refused before any
pycocotools call or file read, naming the file, the id and the field; on_error=skip leaves
out invalid entries, never a broken file structure."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io as sio

from matbackprop.data.bsds import BSDS, load_groundtruth
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.synthetic_bsds import make_synthetic_bsds
from matbackprop.data.synthetic_coco import make_synthetic_coco
from matbackprop.data.validate import rle_string_counts
from matbackprop.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ANN = "annotations/instances_val2014.json"
ARGS = dict(crop_size=64, max_side=56, min_area=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, n_train=3, n_val=6, image_size=(64, 64), seed=1)
    return root


def _first(d):
    """The first kept (non-crowd, non-degenerate) annotation and its image entry."""
    ann = next(a for a in d["annotations"] if not a.get("iscrowd") and a["bbox"][2] > 4)
    return ann, next(im for im in d["images"] if im["id"] == ann["image_id"])


def _edit(base, tmp_path, edit):
    root = tmp_path / "coco"
    shutil.copytree(base, root)
    d = json.loads((root / ANN).read_text())
    edit(d, *_first(d))
    (root / ANN).write_text(json.dumps(d))
    return root


def _dup_image(d, ann, im):
    d["images"].append(dict(copy.deepcopy(im), file_name="other.jpg"))


def _dup_ann(d, ann, im):
    d["annotations"].append(dict(copy.deepcopy(ann), bbox=[1, 1, 30, 30]))


NAN = float("nan")
# case: (edit, the refusal's text after "<file>: ", fatal = refused even with on_error=skip)
CASES = {
    "duplicate image id": (_dup_image, r"image id {iid}: `id` is listed twice", True),
    "duplicate annotation id": (_dup_ann, r"annotation {aid}: `id` is listed twice", True),
    "100000 x 100000": (
        lambda d, a, im: im.update(height=100_000, width=100_000),
        r"image id {iid}: `height` = 100000 is not an integer in 1..32768",
        False,
    ),
    "65536 x 65537": (
        lambda d, a, im: im.update(height=65536, width=65537),
        r"image id {iid}: `height` = 65536",
        False,
    ),
    "32768 x 32768": (
        lambda d, a, im: im.update(height=32768, width=32768),
        r"image id {iid}: `height` x `width` = 32768x32768 is more than",
        False,
    ),
    "width 0": (lambda d, a, im: im.update(width=0), r"image id {iid}: `width` = 0", False),
    "height 64.5": (
        lambda d, a, im: im.update(height=64.5),
        r"image id {iid}: `height` = 64.5",
        False,
    ),
    "file_name ../": (
        lambda d, a, im: im.update(file_name="../../../outside.jpg"),
        r"image id {iid}: `file_name` '../../../outside.jpg' is not a relative path inside",
        False,
    ),
    "file_name absolute": (
        lambda d, a, im: im.update(file_name="/etc/hostname"),
        r"image id {iid}: `file_name` '/etc/hostname' is not a relative path inside",
        False,
    ),
    "RLE size 4000x4000": (
        lambda d, a, im: a.update(segmentation={"size": [4000, 4000], "counts": "PPYo1"}),
        r"annotation {aid} \(image id {iid}\): RLE `size` \[4000, 4000\] is not the image's",
        False,
    ),
    "RLE counts overrun": (
        lambda d, a, im: a.update(segmentation={"size": [64, 64], "counts": [0, 5000]}),
        r"annotation {aid} \(image id {iid}\): RLE `counts` cover 5000 pixels",
        False,
    ),
    "compressed RLE overrun": (
        lambda d, a, im: a.update(segmentation={"size": [64, 64], "counts": "0`o1"}),
        r"annotation {aid} \(image id {iid}\): RLE `counts` cover",
        False,
    ),
    "bbox NaN": (
        lambda d, a, im: a.update(bbox=[NAN, 10, 20, 20]),
        r"annotation {aid} \(image id {iid}\): `bbox` \[nan, 10, 20, 20\] is not finite",
        False,
    ),
    "polygon NaN": (
        lambda d, a, im: a.update(segmentation=[[NAN, 1, 10, 1, 10, 10]]),
        r"annotation {aid} \(image id {iid}\): `segmentation` has a polygon coordinate",
        False,
    ),
    "polygon 1e12": (
        lambda d, a, im: a.update(segmentation=[[1e12, 1, 10, 1, 10, 10]]),
        r"annotation {aid} \(image id {iid}\): `segmentation` has a polygon coordinate",
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_is_refused_naming_file_id_and_field(base, tmp_path, case):
    edit, text, fatal = CASES[case]
    root = _edit(base, tmp_path, edit)
    ann, im = _first(json.loads((base / ANN).read_text()))
    expect = text.format(iid=im["id"], aid=ann["id"])
    with pytest.raises(DataError, match=rf"instances_val2014\.json: {expect}") as err:
        CocoRegions(root, ANN, train=False, **ARGS)
    assert err.value.problems[0].startswith(str(root / ANN))
    good = CocoRegions(base, ANN, train=False, **ARGS)
    if fatal:  # a broken structure: refused whatever on_error says
        with pytest.raises(DataError, match=expect):
            CocoRegions(root, ANN, train=False, on_error="skip", **ARGS)
        return
    ds = CocoRegions(root, ANN, train=False, on_error="skip", **ARGS)
    left_out = 1 if "annotation" in text else sum(a["image_id"] == im["id"] for a in
                                                  json.loads((base / ANN).read_text())["annotations"]
                                                  if not a.get("iscrowd"))  # fmt: skip
    assert ds.skipped["invalid"] == left_out and len(ds) < len(good)
    assert ann["id"] not in ds._ann_id.tolist()
    for i in range(len(ds)):  # every kept item loads (nothing is read outside val2014/)
        assert ds[i]["bad"] == 0


def test_a_100000_pixel_image_is_refused_in_a_subprocess_not_a_segfault(base, tmp_path):
    root = _edit(base, tmp_path, CASES["100000 x 100000"][0])
    code = f"from matbackprop.data.coco_regions import CocoRegions; CocoRegions({str(root)!r}, "
    code += f"{ANN!r}, train=False)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (
        proc.returncode == 1 and "DataError" in proc.stderr and "`height` = 100000" in proc.stderr
    )


def test_a_symlinked_data_root_and_image_folder_keep_working(base, tmp_path):
    link = tmp_path / "link"
    os.symlink(base, link)
    a, b = CocoRegions(base, ANN, train=False, **ARGS), CocoRegions(link, ANN, train=False, **ARGS)
    assert len(a) == len(b) > 0 and bool((a[0]["image"] == b[0]["image"]).all())
    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    shutil.move(moved / "val2014", tmp_path / "images_elsewhere")
    os.symlink(tmp_path / "images_elsewhere", moved / "val2014")
    assert len(CocoRegions(moved, ANN, train=False, **ARGS)[0]["image"]) == 3


def test_min_area_default_follows_train(base):
    val = CocoRegions(base, ANN, train=False, crop_size=64, max_side=56)
    train = CocoRegions(base, ANN, train=True, crop_size=64, max_side=56)
    assert val.min_area == 0 and train.min_area == 64
    assert val.skipped["small"] == 0 and train.skipped["small"] > 0 and len(val) > len(train)
    assert (
        CocoRegions(base, ANN, train=False, min_area=64, crop_size=64, max_side=56).min_area == 64
    )


def test_rle_string_counts_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = np.asfortranarray(rng.random((17, 23)) < rng.random())
        rle = mask_utils.encode(m.astype(np.uint8))
        runs = rle_string_counts(rle["counts"])
        assert sum(runs) == 17 * 23 and min(runs) >= 0
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        np.testing.assert_array_equal(flat, m.ravel(order="F"))
    assert rle_string_counts(b"\x7f") is None and rle_string_counts("o") is None


def _write_gt(path, seg, dtype):
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"Segmentation": np.asarray(seg, dtype), "Boundaries": np.zeros((2, 3), np.uint8)}
    sio.savemat(path, {"groundTruth": cell})


@pytest.mark.parametrize(
    "seg, dtype, text",
    [
        ([[1, 70000, 2], [1, 1, 2]], np.int32, r"labels span 1..70000, outside 0..65535"),
        ([[1, np.nan, 2], [1, 1, 2]], np.float64, "labels contain NaN"),
        ([[1, 1.5, 2], [1, 1, 2]], np.float64, "labels are not integers"),
        ([[1, -1, 2], [1, 1, 2]], np.int32, r"labels span -1..2"),
        ([[0, 0, 0], [0, 0, 0]], np.uint16, "labels are all zero"),
    ],
)
def test_bsds_labels_are_checked_before_the_uint16_cast(tmp_path, seg, dtype, text):
    _write_gt(tmp_path / "g.mat", seg, dtype)
    with pytest.raises(DataError, match=rf"g\.mat: groundTruth entry 1 `Segmentation`: {text}"):
        load_groundtruth(tmp_path / "g.mat")
    _write_gt(tmp_path / "ok.mat", [[1, 65535, 2], [1, 1, 0]], np.float64)
    assert load_groundtruth(tmp_path / "ok.mat")[0].max() == 65535


def test_bsds_bad_labels_name_the_image_id(tmp_path):
    root = make_synthetic_bsds(tmp_path / "bsds", n_train=2, n_val=1, n_test=1, size=(24, 32))
    ds = BSDS(root, "train")
    iid, _, gt = ds.items[1]
    _write_gt(gt, np.full((24, 32), 70000), np.int32)
    with pytest.raises(DataError, match=rf"{gt.name}: groundTruth entry 1 .*70000.*image id {iid}"):
        ds[1]
    assert BSDS(root, "train", on_error="skip")[1]["bad"] == 1
