"""CocoRegions on hand-made COCO files (exact geometry) and on the synthetic COCO fixture."""

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.synthetic_coco import make_synthetic_coco
from matbackprop.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from matbackprop.errors import DataError

RED = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD  # normalised colours
BLUE = (np.array([0.0, 0.0, 1.0]) - IMAGENET_MEAN) / IMAGENET_STD
ANN = "annotations/instances_val2014.json"
# pycocotools' decode trips a numpy-2 DeprecationWarning (its code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rle_uncompressed(mask):
    flat = mask.ravel(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def _save(path, w, h, rect):
    """Blue image with a red axis-aligned rectangle rect = (x0, y0, x1, y1), as lossless PNG."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255
    x0, y0, x1, y1 = rect
    img[y0:y1, x0:x1] = (255, 0, 0)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def rect_root(tmp_path_factory):
    """Two images with one red rectangle each; gapped, unsorted category ids; skipped cases.

    ann 11: rectangle x 20..40, y 30..70 (RLE) in the LEFT half of its 40x40 bbox.
    ann 12: rectangle x 10..74, y 20..52 (polygon) in the TOP half of its 64x64 bbox.
    ann 13: crowd; ann 14: 4-pixel mask (small); ann 15: bbox 0.5 px wide (degenerate).
    """
    root = tmp_path_factory.mktemp("rect_coco")
    (root / "val2014").mkdir()
    (root / "annotations").mkdir()
    _save(root / "val2014" / "a.png", 120, 100, (20, 30, 40, 70))
    _save(root / "val2014" / "b.png", 100, 90, (10, 20, 74, 52))
    m11 = np.zeros((100, 120), np.uint8)
    m11[30:70, 20:40] = 1
    crowd = np.zeros((100, 120), np.uint8)
    crowd[80:95, 60:110] = 1
    square = [10, 20, 74, 20, 74, 52, 10, 52]
    anns = [
        dict(
            id=11,
            image_id=7,
            category_id=18,
            bbox=[20, 30, 40, 40],
            segmentation=_rle_uncompressed(m11),
        ),
        dict(id=12, image_id=9, category_id=90, bbox=[10, 20, 64, 64], segmentation=[square]),
        dict(
            id=13,
            image_id=7,
            category_id=1,
            bbox=[60, 80, 50, 15],
            segmentation=_rle_uncompressed(crowd),
            iscrowd=1,
        ),
        dict(
            id=14,
            image_id=7,
            category_id=3,
            bbox=[1, 1, 2, 2],
            segmentation=[[1, 1, 3, 1, 3, 3, 1, 3]],
        ),
        dict(id=15, image_id=9, category_id=3, bbox=[10, 20, 0.5, 32], segmentation=[square]),
    ]
    for a in anns:
        a.setdefault("iscrowd", 0)
        a["area"] = 1.0
    cats = [dict(id=i, name=f"c{i}", supercategory="x") for i in (90, 1, 18, 3)]
    images = [
        dict(id=7, file_name="a.png", width=120, height=100),
        dict(id=9, file_name="b.png", width=100, height=90),
    ]
    (root / ANN).write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), n_train=24, n_val=12, seed=3)


def _small(paths, split="val", **kw):
    args = dict(crop_size=64, max_side=56, jitter=4, mask_size=8)
    return CocoRegions(paths["root"], f"annotations/instances_{split}2014.json", **(args | kw))


def test_items_shapes_dtypes(synth):
    for train in (True, False):
        ds = _small(synth, "train" if train else "val", train=train)
        item = ds[0]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert item["label"].shape == () and item["label"].dtype == torch.int64
        assert item["mask"].shape == (8, 8) and item["mask"].dtype == torch.float32
        assert isinstance(item["ann_id"], int)
        assert 0 <= item["mask"].min() and item["mask"].max() <= 1 and item["mask"].max() > 0.9
        assert 0 <= int(item["label"]) < ds.num_classes == 4


def test_label_mapping_sorted_gapped_ids(rect_root, synth):
    ds = CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=40, min_area=64)
    assert ds.cat_id_to_label == {1: 0, 3: 1, 18: 2, 90: 3}  # file order was 90, 1, 18, 3
    assert ds.class_names == ["c1", "c3", "c18", "c90"]
    assert {ds[i]["ann_id"]: int(ds[i]["label"]) for i in range(len(ds))} == {11: 2, 12: 3}
    # synthetic file: every item's label is the rank of its category id (checked via pycocotools)
    ds = _small(synth, "train", train=False)
    coco = COCO(str(synth["train_ann"]))
    ranks = {cid: r for r, cid in enumerate(sorted(coco.getCatIds()))}
    for i in range(len(ds)):
        item = ds[i]
        assert int(item["label"]) == ranks[coco.anns[item["ann_id"]]["category_id"]]


def test_crowd_and_degenerate_skipped_and_counted(rect_root, synth, caplog):
    caplog.set_level(logging.INFO, logger="matbackprop.data.coco_regions")
    ds = CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=40, min_area=64)
    assert len(ds) == 2 and ds.skipped == {"crowd": 1, "degenerate": 1, "small": 1, "invalid": 0}
    assert ds.stats == {"kept": 2, "crowd": 1, "degenerate": 1, "small": 1, "invalid": 0}
    assert "crowd=1 degenerate=1 small=1" in caplog.text
    assert len(CocoRegions(rect_root, ANN, train=False, min_area=5000)) == 0  # 800 and 2048 px
    ds = CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=40)  # min_area 0
    assert ds.stats == {"kept": 3, "crowd": 1, "degenerate": 1, "small": 0, "invalid": 0}
    ds = _small(synth, "train", train=True)
    assert len(ds) == 24 and ds.skipped == {"crowd": 1, "degenerate": 0, "small": 1, "invalid": 0}


def test_val_canvas_is_exact(rect_root):
    # ann 11: 40x40 box, max_side 40 -> scale 1; centred at (12, 12) on the 64 canvas
    ds = CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=40, mask_size=64)
    item = ds[0]
    assert item["ann_id"] == 11
    expected = np.zeros((64, 64), np.float32)
    expected[12:52, 12:32] = 1  # object = left half of the box
    np.testing.assert_allclose(item["mask"].numpy(), expected, atol=1e-6)
    img = item["image"].numpy()
    np.testing.assert_allclose(
        img[:, 12:52, 12:32], RED[:, None, None] * np.ones((1, 40, 20)), atol=1e-5
    )
    np.testing.assert_allclose(
        img[:, 12:52, 32:52], BLUE[:, None, None] * np.ones((1, 40, 20)), atol=1e-5
    )
    outside = np.ones((64, 64), bool)
    outside[12:52, 12:52] = False
    assert np.abs(img[:, outside]).max() == 0  # padding = mean colour = 0


def test_mean_fill_outside_mask(rect_root):
    ds = CocoRegions(
        rect_root, ANN, train=False, crop_size=64, max_side=40, mask_size=64, mean_fill=True
    )
    img = ds[0]["image"].numpy()
    np.testing.assert_allclose(
        img[:, 12:52, 12:32], RED[:, None, None] * np.ones((1, 40, 20)), atol=1e-5
    )
    assert np.abs(img[:, :, 32:]).max() == 0  # the blue part of the box is now mean colour


def test_downscaled_mask_area_average(rect_root):
    # ann 12: 64x64 box -> 32x32 (scale 1/2) at (16, 16); object = top half -> canvas rows 16..32,
    # cols 16..48 -> on the 8x8 grid (8 px cells): rows 2-3, cols 2-5 fully covered, rest empty
    ds = CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=32, mask_size=8)
    item = ds[1]
    assert item["ann_id"] == 12
    expected = np.zeros((8, 8), np.float32)
    expected[2:4, 2:6] = 1
    np.testing.assert_allclose(item["mask"].numpy(), expected, atol=0.05)  # bilinear edge band
    # the antialiasing filter also reads 1 px just outside the box (background here): -8 px
    np.testing.assert_allclose(item["mask"].sum().item(), expected.sum(), atol=0.2)


def test_train_jitter_and_flip_keep_mask_aligned(rect_root):
    ds = CocoRegions(rect_root, ANN, train=True, crop_size=64, max_side=40, jitter=6, mask_size=64)
    offsets, flips = set(), set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        item = ds[0]
        img, mask = item["image"].numpy(), item["mask"].numpy()
        rows, cols = np.nonzero(np.abs(img).sum(0) > 0.1)  # where the 40x40 box landed
        oy, ox = rows.min(), cols.min()
        assert rows.max() - oy == 39 and cols.max() - ox == 39
        assert 6 <= ox <= 18 and 6 <= oy <= 18  # centred (12) +- jitter (6)
        red_cols = np.nonzero(img[0] > 1.5)[1]
        flipped = red_cols.min() > ox  # object sits in the right half after a flip
        expected = np.zeros((64, 64), np.float32)
        x0 = ox + 20 if flipped else ox
        expected[oy : oy + 40, x0 : x0 + 20] = 1
        np.testing.assert_allclose(mask, expected, atol=1e-6)
        np.testing.assert_array_equal(mask > 0.5, img[0] > 1.5)  # mask == red pixels
        offsets.add((64 - 40 - ox if flipped else ox, oy))  # placement before the flip
        flips.add(bool(flipped))
    assert flips == {True, False} and len(offsets) >= 10
    assert len({ox - oy for ox, oy in offsets}) > 1  # x and y jitter drawn independently

    no_flip = CocoRegions(
        rect_root, ANN, train=True, crop_size=64, max_side=40, jitter=6, hflip=False
    )
    for epoch in range(10):
        no_flip.set_epoch(epoch)
        img = no_flip[0]["image"].numpy()
        cols = np.nonzero(np.abs(img).sum(0) > 0.1)[1]
        assert np.nonzero(img[0] > 1.5)[1].min() == cols.min()  # red stays on the left


def test_val_is_deterministic(synth):
    ds = _small(synth, "val", train=False)
    ds2 = _small(synth, "val", train=False)
    for i in (0, 5, len(ds) - 1):
        torch.manual_seed(i)
        a = ds[i]
        torch.manual_seed(i + 100)
        b, c = ds[i], ds2[i]
        for key in ("image", "mask", "label"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])


def test_train_is_random(synth):
    ds = _small(synth, "train", train=True)
    first = ds[0]["image"]
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(ds[0]["image"], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], first)


def test_max_items_seeded_subset(synth):
    full = _small(synth, "train", train=False)
    all_ids = [full[i]["ann_id"] for i in range(len(full))]
    sub = [_small(synth, "train", train=False, max_items=10, seed=s) for s in (0, 0, 1)]
    ids = [[d[i]["ann_id"] for i in range(len(d))] for d in sub]
    assert len(ids[0]) == 10 and ids[0] == ids[1] != ids[2]
    assert set(ids[0]) <= set(all_ids) and ids[0] == sorted(ids[0], key=all_ids.index)


def test_dataloader_two_workers_and_pickle(synth):
    ds = _small(synth, "train", train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 3
    b = batches[0]
    assert b["image"].shape == (8, 3, 64, 64) and b["mask"].shape == (8, 8, 8)
    assert b["label"].shape == (8,) and b["ann_id"].shape == (8,)
    assert sorted(torch.cat([x["ann_id"] for x in batches]).tolist()) == sorted(
        ds[i]["ann_id"] for i in range(24)
    )
    val = _small(synth, "val", train=False)
    clone = pickle.loads(pickle.dumps(val))
    assert torch.equal(clone[3]["image"], val[3]["image"])


def test_clear_errors(tmp_path, rect_root):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*make data-coco"):
        CocoRegions(tmp_path / "nowhere", ANN, train=False)
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json.*make data-coco"):
        CocoRegions(rect_root, "annotations/instances_train2014.json", train=False)
    root = tmp_path / "copy"
    shutil.copytree(rect_root, root)
    with pytest.raises(FileNotFoundError, match=r"train2014"):  # ann file exists, image dir not
        shutil.copy(root / ANN, root / "annotations/instances_train2014.json")
        CocoRegions(root, "annotations/instances_train2014.json", train=False)
    (root / "val2014" / "a.png").unlink()
    ds = CocoRegions(root, root / ANN, train=False)  # absolute ann_file works too
    with pytest.raises(DataError, match=r"a\.png \(image id 7, annotation 11\).*on_error=skip"):
        ds[0]
    (root / ANN).write_text('{"images": [')
    with pytest.raises(DataError, match=r"corrupt.*instances_val2014\.json"):
        CocoRegions(root, ANN, train=False)
    (root / ANN).write_text('{"images": []}')
    with pytest.raises(DataError, match=r"instances_val2014\.json.*missing keys"):
        CocoRegions(root, ANN, train=False)
    with pytest.raises(ValueError, match="max_side"):
        CocoRegions(rect_root, ANN, train=False, crop_size=64, max_side=200)
