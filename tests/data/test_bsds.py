"""BSDS loader: official / flat layouts, splits of both protocols, .mat parsing, errors."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from matbackprop.data.bsds import BSDS, find_data_dir, load_groundtruth
from matbackprop.data.synthetic_bsds import make_synthetic_bsds
from matbackprop.errors import DataError

SAMPLE = Path("/work/shared/bsds500-sample")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_bsds(tmp_path_factory.mktemp("bsds"), n_train=5, n_val=3, n_test=4)


@pytest.fixture(scope="module")
def dl():
    from tests.conftest import load_script

    return load_script("download_bsds")


def write_gt(path, segs, kx1=False):
    cell = np.empty((len(segs), 1) if kx1 else (1, len(segs)), dtype=object)
    for s, g in enumerate(segs):
        cell.flat[s] = {
            "Segmentation": np.asarray(g, np.uint16),
            "Boundaries": np.zeros_like(g, np.uint8),
        }
    sio.savemat(path, {"groundTruth": cell})


@pytest.mark.parametrize("kx1", [False, True])
def test_load_groundtruth_from_savemat_cells(tmp_path, kx1):
    a = np.array([[1, 1, 2], [1, 3, 2]])
    b = np.array([[1, 2, 2], [1, 2, 2]])
    write_gt(tmp_path / "g.mat", [a, b], kx1=kx1)
    gts = load_groundtruth(tmp_path / "g.mat")
    assert len(gts) == 2 and all(g.dtype == np.uint16 for g in gts)
    np.testing.assert_array_equal(gts[0], a)
    np.testing.assert_array_equal(gts[1], b)


def test_load_groundtruth_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_groundtruth(tmp_path / "nope.mat")
    (tmp_path / "bad.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.mat"):  # exit 2 at the entry points
        load_groundtruth(tmp_path / "bad.mat")
    sio.savemat(tmp_path / "other.mat", {"x": np.ones(3)})
    with pytest.raises(ValueError, match="groundTruth"):
        load_groundtruth(tmp_path / "other.mat")
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"Boundaries": np.zeros((2, 2), np.uint8)}
    sio.savemat(tmp_path / "nofield.mat", {"groundTruth": cell})
    with pytest.raises(ValueError, match="Segmentation"):
        load_groundtruth(tmp_path / "nofield.mat")


def test_synthetic_tree_items(synth):
    ds = BSDS(synth, "train")
    assert len(ds) == 5 and ds.layout == "official"
    item = ds[0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (96, 144, 3)
    assert len(item["gts"]) == 3 and item["gts"][0].shape == (96, 144) and item["gts"][0].min() == 1
    assert ds[1]["image"].shape == (144, 96, 3)  # portrait
    assert ds.ids == sorted(ds.ids) and item["id"] == ds.ids[0]


def test_split_sizes_of_both_protocols(synth):
    n = {s: len(BSDS(synth, s)) for s in ("train", "val", "test", "trainval")}
    assert n == {"train": 5, "val": 3, "test": 4, "trainval": 8}
    assert BSDS(synth, "train", version=300).ids == BSDS(synth, "train").ids
    assert BSDS(synth, "test", version=300).ids == BSDS(synth, "val").ids  # BSDS300 test = val
    with pytest.raises(ValueError, match="val"):
        BSDS(synth, "val", version=300)
    with pytest.raises(ValueError, match="version"):
        BSDS(synth, "train", version=400)


def test_root_may_point_inside_the_tree(synth):
    for root in (
        synth,
        synth / "BSR",
        synth / "BSR" / "BSDS500",
        synth / "BSR" / "BSDS500" / "data",
    ):
        assert len(BSDS(root, "test")) == 4


def test_transform_receives_the_item(synth):
    ds = BSDS(synth, "val", transform=lambda it: (it["image"].mean(), len(it["gts"])))
    mean, k = ds[0]
    assert k == 3 and 0 < mean < 255


def test_missing_data_errors_suggest_make_target(tmp_path, synth):
    with pytest.raises(FileNotFoundError, match="make data-bsds"):
        BSDS(tmp_path / "absent", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="make data-bsds"):
        BSDS(tmp_path / "empty", "train")
    data = tmp_path / "partial" / "BSR" / "BSDS500" / "data"
    (data / "images" / "train").mkdir(parents=True)
    (data / "groundTruth").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"groundTruth/train"):
        BSDS(tmp_path / "partial", "train")


def test_missing_groundtruth_file_is_named(tmp_path):
    data = tmp_path / "BSR" / "BSDS500" / "data"
    for d in ("images/train", "groundTruth/train"):
        (data / d).mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(data / "images/train/42.jpg")
    with pytest.raises(FileNotFoundError, match="42.mat"):
        BSDS(tmp_path, "train")
    write_gt(data / "groundTruth/train/42.mat", [np.ones((6, 4), int)])  # transposed: wrong
    with pytest.raises(DataError, match=r"42\.mat.*image id 42.*on_error=skip"):
        BSDS(tmp_path, "train")[0]


def test_flat_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "groundTruth").mkdir()
    Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(tmp_path / "images" / "7.jpg")
    write_gt(tmp_path / "groundTruth" / "7.mat", [np.ones((5, 7), int)] * 2)
    assert find_data_dir(tmp_path) == (tmp_path, "flat")
    ds = BSDS(tmp_path, "all")
    assert len(ds) == 1 and len(ds[0]["gts"]) == 2 and ds[0]["id"] == "7"
    with pytest.raises(ValueError, match="split='all'"):
        BSDS(tmp_path, "test")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="BSDS500 sample not present")
def test_real_sample():
    ds = BSDS(SAMPLE, "all")
    assert ds.ids == ["2018", "3063", "5096", "6046", "8068"]
    shapes = set()
    for i in range(len(ds)):
        it = ds[i]
        shapes.add(it["image"].shape)
        assert len(it["gts"]) in (5, 6) and all(g.shape == it["image"].shape[:2] for g in it["gts"])
        assert all(g.min() >= 1 for g in it["gts"])
    assert shapes == {(321, 481, 3), (481, 321, 3)}


# ---------------------------------------------------------------- download script helpers (offline)


def test_sha256sum(dl, tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    assert dl.sha256sum(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    p.write_bytes(b"abc")
    assert dl.sha256sum(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_check_layout_on_synthetic_tree(dl, synth, tmp_path):
    assert dl.check_layout(synth, {"train": 5, "val": 3, "test": 4}) == []
    problems = dl.check_layout(synth)  # official counts 200/100/200
    assert len(problems) == 3 and "expected 200" in problems[0]
    assert dl.check_layout(tmp_path)[0].startswith("missing folder")


def test_download_and_extract_from_a_local_file(dl, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"hello bsds"
        info = tarfile.TarInfo("BSR/README.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    src = tmp_path / "src.tgz"
    src.write_bytes(buf.getvalue())
    dest = tmp_path / "out" / "BSR_bsds500.tgz"
    dest.parent.mkdir()
    dl.download(src.as_uri(), dest)
    assert (
        dest.read_bytes() == src.read_bytes() and not dest.with_name(dest.name + ".part").exists()
    )
    dl.extract(dest, tmp_path / "out")
    assert (tmp_path / "out" / "BSR" / "README.txt").read_text() == "hello bsds"
