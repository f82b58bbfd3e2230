"""Synthetic COCO: real-format validity (pycocotools), determinism, and that it tests what it is
for -- same mean colour per class, different second-order statistics."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy.ndimage import binary_erosion

from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.synthetic_coco import class_orientation, make_synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), n_train=48, n_val=24, seed=0)


def _regular(anns):
    return [a for a in anns if not a["iscrowd"] and a["area"] >= 64]


@pytest.mark.parametrize("split, n", [("train", 48), ("val", 24)])
def test_real_coco_format(synth, split, n, capsys):
    ann_path = synth[f"{split}_ann"]
    assert ann_path == synth["root"] / "annotations" / f"instances_{split}2014.json"
    data = json.loads(ann_path.read_text())
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
    coco = COCO(str(ann_path))  # pycocotools builds its index
    capsys.readouterr()
    ids = [c["id"] for c in data["categories"]]
    assert sorted(ids) == [1, 3, 18, 90] and ids != sorted(ids)  # gapped and out of order
    assert all({"id", "name", "supercategory"} <= set(c) for c in data["categories"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for img in data["images"]:
        path = synth["root"] / f"{split}2014" / img["file_name"]
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (img["width"], img["height"]) == (160, 160)
    for a in data["annotations"]:
        img = coco.imgs[a["image_id"]]
        m = coco.annToMask(a)  # polygons, multi-polygons and uncompressed RLE all decode
        assert m.shape == (img["height"], img["width"])
        assert abs(m.sum() - a["area"]) <= 0.01 * a["area"] + 1  # declared area
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], list)
    assert sum(crowd[0]["segmentation"]["counts"]) == 160 * 160
    assert any(
        isinstance(a["segmentation"], list) and len(a["segmentation"]) >= 2
        for a in data["annotations"]
    )
    tiny = [a for a in data["annotations"] if not a["iscrowd"] and a["area"] < 64]
    assert len(tiny) == 1
    assert len(_regular(data["annotations"])) == n


def test_deterministic_for_seed(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", n_train=6, n_val=3, seed=5)
    b = make_synthetic_coco(tmp_path / "b", n_train=6, n_val=3, seed=5)
    c = make_synthetic_coco(tmp_path / "c", n_train=6, n_val=3, seed=6)
    for key in ("train_ann", "val_ann"):
        assert a[key].read_bytes() == b[key].read_bytes() != c[key].read_bytes()
    files = sorted(p.relative_to(a["root"]) for p in a["root"].rglob("*.jpg"))
    assert files and files == sorted(p.relative_to(b["root"]) for p in b["root"].rglob("*.jpg"))
    assert all((a["root"] / f).read_bytes() == (b["root"] / f).read_bytes() for f in files)


def test_more_classes_and_bad_arguments(tmp_path):
    p = make_synthetic_coco(tmp_path, n_train=8, n_val=4, num_classes=6, image_size=(96, 128))
    ds = CocoRegions(p["root"], p["val_ann"], train=False, crop_size=64, max_side=56)
    assert ds.num_classes == 6 and sorted(ds.cat_id_to_label) == [1, 3, 18, 90, 95, 100]
    with Image.open(next((tmp_path / "val2014").glob("*.jpg"))) as im:
        assert im.size == (128, 96)  # image_size is (height, width)
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_coco(tmp_path / "x", num_classes=0)
    with pytest.raises(ValueError, match="objects_per_image"):
        make_synthetic_coco(tmp_path / "x", objects_per_image=(3, 1))


def _object_stats(ann_path, img_dir):
    """Per regular object: class rank, mean colour (3,), colour covariance (3, 3), and the
    gradient structure tensor (2, 2) of its luminance, from the JPEG pixels."""
    data = json.loads(ann_path.read_text())
    ranks = {cid: r for r, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    images = {im["id"]: im for im in data["images"]}
    out = []
    for a in _regular(data["annotations"]):
        im = images[a["image_id"]]
        img = np.asarray(Image.open(img_dir / im["file_name"]), dtype=np.float64)  # (H, W, 3)
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], im["height"], im["width"]))
        m = binary_erosion(mask_utils.decode(rle).astype(bool), iterations=2)  # skip edges
        px = img[m]  # (n, 3)
        gy, gx = np.gradient(img.mean(2))
        g = np.stack([gx[m], gy[m]], 1)  # (n, 2)
        out.append((ranks[a["category_id"]], px.mean(0), np.cov(px.T), g.T @ g))
    return out


def test_same_mean_colour_different_second_order(synth):
    train = _object_stats(synth["train_ann"], synth["root"] / "train2014")
    val = _object_stats(synth["val_ann"], synth["root"] / "val2014")
    y = np.array([s[0] for s in train])
    y_val = np.array([s[0] for s in val])
    k = 4
    assert set(y) == set(range(k))

    def nearest_centroid_accuracy(feat):
        x, x_val = np.array([feat(s) for s in train]), np.array([feat(s) for s in val])
        cent = np.stack([x[y == c].mean(0) for c in range(k)])
        pred = np.argmin(((x_val[:, None] - cent[None]) ** 2).sum(-1), 1)
        return (pred == y_val).mean()

    # first order: class means within a few grey levels; classifying by mean colour ~ chance
    means = np.stack([np.mean([s[1] for s in train if s[0] == c], 0) for c in range(k)])
    assert np.abs(means[:, None] - means[None]).max() < 10
    assert nearest_centroid_accuracy(lambda s: s[1]) < 0.6
    # second order: colour covariances clearly differ and separate the classes
    covs = np.stack([np.mean([s[2] for s in train if s[0] == c], 0) for c in range(k)])
    for a in range(k):
        for b in range(a + 1, k):
            assert np.linalg.norm(covs[a] - covs[b]) > 0.5 * np.linalg.norm(covs[a])
    assert nearest_centroid_accuracy(lambda s: s[2][np.triu_indices(3)]) >= 0.9
    # and the stripes have the class orientation (gradient direction = grating normal)
    for c in range(k):
        w, v = np.linalg.eigh(sum(s[3] for s in train if s[0] == c))
        angle = np.arctan2(v[1, 1], v[0, 1]) % np.pi
        diff = abs(angle - class_orientation(c, k)) % np.pi
        assert min(diff, np.pi - diff) < np.radians(5) and w[1] > 10 * w[0]


def test_object_radius_fits_three_to_eight_per_640x480(tmp_path):
    out = make_synthetic_coco(
        tmp_path / "s", n_train=2, n_val=40, image_size=(480, 640), objects_per_image=(3, 8),
        object_radius=(0.05, 0.12), seed=1,
    )  # fmt: skip
    data = json.loads(out["val_ann"].read_text())
    per_image = {}
    for a in data["annotations"]:
        if not a["iscrowd"] and a["area"] >= 128:
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
            assert max(a["bbox"][2:]) <= 2.3 * 0.12 * 480  # a rotated square: 2.26 r_max
    counts = sorted(per_image.values())
    assert sum(counts) == 40 and counts[-1] >= 6 and counts[-1] <= 8
    with pytest.raises(ValueError, match="object_radius"):
        make_synthetic_coco(tmp_path / "t", object_radius=(0.3, 0.6))
