"""Synthetic BSDS tree: official file formats, determinism, textured regions, human variety."""

import time

import numpy as np
import scipy.io as sio
from PIL import Image

from matbackprop.data.bsds import BSDS
from matbackprop.data.synthetic_bsds import make_synthetic_bsds
from matbackprop.evaluation.covering import evaluate_segs


def test_default_tree_is_fast_and_in_the_official_layout(tmp_path):
    t0 = time.perf_counter()
    root = make_synthetic_bsds(tmp_path)
    assert time.perf_counter() - t0 < 2.0
    data = root / "BSR" / "BSDS500" / "data"
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        assert len(list((data / "images" / split).glob("*.jpg"))) == n
        assert len(list((data / "groundTruth" / split).glob("*.mat"))) == n
    raw = sio.loadmat(data / "groundTruth" / "train" / "1000.mat")["groundTruth"]
    assert raw.shape == (1, 3) and raw.dtype == object
    seg = raw[0, 0]["Segmentation"][0, 0]
    bnd = raw[0, 0]["Boundaries"][0, 0]
    assert seg.dtype == np.uint16 and seg.min() == 1 and seg.shape == (96, 144)
    assert bnd.dtype == np.uint8 and set(np.unique(bnd)) == {0, 1}
    with Image.open(data / "images" / "test" / "3001.jpg") as im:
        assert im.format == "JPEG" and im.size == (96, 144)  # portrait: width 96, height 144


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_bsds(tmp_path / "a", 2, 1, 1, seed=3)
    b = make_synthetic_bsds(tmp_path / "b", 2, 1, 1, seed=3)
    c = make_synthetic_bsds(tmp_path / "c", 2, 1, 1, seed=4)
    da, db, dc = BSDS(a, "train")[1], BSDS(b, "train")[1], BSDS(c, "train")[1]
    np.testing.assert_array_equal(da["image"], db["image"])
    assert all(np.array_equal(x, y) for x, y in zip(da["gts"], db["gts"]))
    assert not np.array_equal(da["image"], dc["image"])


def test_regions_differ_in_texture_and_humans_differ_slightly(tmp_path):
    root = make_synthetic_bsds(tmp_path, 6, 0, 0, n_humans=3)
    ds = BSDS(root, "train")
    for i in range(len(ds)):
        it = ds[i]
        img, gts = it["image"].astype(float), it["gts"]
        truth = gts[0]
        # texture: within-region intensity varies a lot (not flat colour patches)
        stds = [img[truth == r].std() for r in np.unique(truth)]
        assert min(stds) > 5
        # humans agree a lot but not perfectly; human 3 has fewer regions (a merge)
        r = evaluate_segs([gts[1], gts[2]], [truth])
        cover = r.cntR / r.sumR
        assert np.all(cover > 0.6) and cover[0] < 1
        assert gts[2].max() < truth.max() or not np.array_equal(gts[2], truth)
