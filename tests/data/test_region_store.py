"""The prepared region store: items equal the on-the-fly crops (raw: exactly; JPEG: PSNR >= 40 dB),
resumable and checksummed preparation, bad images and corrupt records, data.store resolution."""

import json
import shutil

import numpy as np
import pytest
import torch

from matbackprop.data import region_store as rs
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.region_store import PreparedCocoRegions, StoreSpec, prepare_store
from matbackprop.data.synthetic_coco import make_synthetic_coco
from matbackprop.errors import DataError
from matbackprop.tasks.coco import region_store_for

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ANN = "annotations/instances_val2014.json"
ARGS = dict(crop_size=64, max_side=56, jitter=4, mask_size=8, min_area=0)
MASK_TOL = 1 / 510 + 1e-6  # masks are stored as round(255 m)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_coco(
        tmp_path_factory.mktemp("synth"), n_train=4, n_val=14, image_size=(120, 160), seed=2
    )


def _spec(root, out, **kw):
    return StoreSpec(root, ANN, None, out, **({"max_side": 56, "chunk_images": 3} | kw))


@pytest.fixture(scope="module")
def stores(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores")
    for fmt in ("raw", "jpeg"):
        prepare_store(_spec(synth["root"], out / fmt, fmt=fmt), workers=2)
    return out


def _pair(synth, store, **kw):
    a = CocoRegions(synth["root"], ANN, **(ARGS | kw))
    b = PreparedCocoRegions(store, synth["root"], ANN, **(ARGS | kw))
    return a, b


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("mean_fill", [False, True])
def test_raw_store_items_equal_on_the_fly(synth, stores, train, mean_fill):
    a, b = _pair(synth, stores / "raw", train=train, mean_fill=mean_fill, aug_seed=4)
    assert len(a) == len(b) > 10
    for ds in (a, b):
        ds.set_epoch(3)  # fixed (seed, epoch): same jitter and flip on both paths
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["ann_id"] == y["ann_id"] and torch.equal(x["label"], y["label"])
        assert (x["mask"] - y["mask"]).abs().max() <= MASK_TOL
        if mean_fill:  # the mask's quantisation reaches the image through the blend
            assert (x["image"] - y["image"]).abs().max() <= MASK_TOL * 2.7
        else:
            assert torch.equal(x["image"], y["image"])


def test_jpeg_store_psnr_at_least_40db(synth, stores):
    for train in (False, True):
        a, b = _pair(synth, stores / "jpeg", train=train)
        for i in range(len(a)):
            p, m = a._patch(i)
            q, n = b._patch(i)
            assert p.shape == q.shape and np.abs(m - n).max() <= MASK_TOL
            mse = np.mean((p.astype(np.float64) - q) ** 2)
            assert 10 * np.log10(255**2 / mse) >= 40.0, (i, mse)
            x, y = a[i], b[i]
            assert (x["mask"] - y["mask"]).abs().max() <= MASK_TOL
    raw = sum(f.stat().st_size for f in (stores / "raw").glob("*.bin"))
    jpg = sum(f.stat().st_size for f in (stores / "jpeg").glob("*.bin"))
    assert jpg < raw / 2


def test_interrupted_prepare_resumes_without_redoing_work(synth, stores, tmp_path, monkeypatch):
    spec = _spec(synth["root"], tmp_path / "s", fmt="raw")
    n = len(spec.chunks)
    assert n >= 3
    real, calls = rs.prepare_chunk, []

    def interrupted(s, c):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(c)
        return real(s, c)

    monkeypatch.setattr(rs, "prepare_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(spec)
    assert not (spec.out / "manifest.json").exists() and calls == [0, 1]
    assert rs.store_status(spec.out, synth["root"] / ANN, 56) is not None  # incomplete
    calls.clear()
    monkeypatch.setattr(rs, "prepare_chunk", lambda s, c: calls.append(c) or real(s, c))
    man = prepare_store(spec)
    assert calls == list(range(2, n)) and man["done_now"] == n - 2  # no chunk redone
    for f in sorted((stores / "raw").iterdir()):  # identical to an uninterrupted prepare
        assert (spec.out / f.name).read_bytes() == f.read_bytes(), f.name
    calls.clear()
    assert prepare_store(spec)["done_now"] == 0 and calls == []
    bin1 = spec.chunk_path(1, "bin")  # a damaged finished chunk fails its SHA-256: redone
    bin1.write_bytes(b"x" + bin1.read_bytes()[1:])
    assert prepare_store(spec)["done_now"] == 1 and calls == [1]
    assert bin1.read_bytes() == (stores / "raw" / bin1.name).read_bytes()
    with pytest.raises(DataError, match="other parameters"):
        prepare_store(_spec(synth["root"], spec.out, fmt="jpeg"))


def test_store_refuses_mismatch_and_catches_corruption(synth, stores, tmp_path):
    with pytest.raises(DataError, match="max_side=56, not 40.*make prepare-coco"):
        PreparedCocoRegions(stores / "raw", synth["root"], ANN, False, **(ARGS | {"max_side": 40}))
    with pytest.raises(DataError, match="no manifest.json"):
        PreparedCocoRegions(tmp_path, synth["root"], ANN, train=False, **ARGS)
    copy = tmp_path / "raw"
    shutil.copytree(stores / "raw", copy)
    b = PreparedCocoRegions(copy, synth["root"], ANN, train=False, **ARGS)
    row = b._rows[1]
    blob = bytearray(copy.joinpath(f"chunk-{b._chunk[1]:05d}.bin").read_bytes())
    blob[int(row["offset"]) + 5] ^= 0xFF
    copy.joinpath(f"chunk-{b._chunk[1]:05d}.bin").write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"corrupt record of .*annotation .*CRC"):
        b[1]
    b.on_error = "skip"
    assert b[1]["bad"] == 1 and b[1]["ann_id"] == b[2]["ann_id"]


def test_bad_image_at_prepare_time_is_a_bad_item(synth, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synth["root"], root)
    a = CocoRegions(root, ANN, train=False, **ARGS)
    path = a.image_dir / a._files[a._img[0]]
    path.write_bytes(path.read_bytes()[:200])  # truncated
    prepare_store(_spec(root, tmp_path / "s", fmt="raw"))
    b = PreparedCocoRegions(tmp_path / "s", root, ANN, train=False, **ARGS)
    with pytest.raises(DataError, match=rf"{path.name} \(image id \d+, annotation \d+\)"):
        b[0]
    assert b[len(b) - 1]["bad"] == 0


def test_data_store_resolution(synth, stores, tmp_path, capsys):
    common = {"max_side": 56}
    root = tmp_path / "coco"
    shutil.copytree(synth["root"], root)
    assert region_store_for(root, "none", "val2014", ANN, common) is None
    assert region_store_for(root, "auto", "val2014", ANN, common) is None
    assert "make prepare-coco" in capsys.readouterr().out  # one-line hint on real data
    shutil.copytree(stores / "jpeg", root / "prepared" / "val2014")
    assert region_store_for(root, "auto", "val2014", ANN, common) == root / "prepared/val2014"
    assert region_store_for(root, "auto", "val2014", ANN, {"max_side": 40}) is None
    assert region_store_for(root, "/x/y", "val2014", ANN, common).as_posix() == "/x/y/val2014"
    man = json.loads((root / "prepared/val2014/manifest.json").read_text())
    assert man["regions"] == len(CocoRegions(root, ANN, train=False, **ARGS))


def test_store_through_dataloader_workers(synth, stores):
    import pickle

    b = PreparedCocoRegions(stores / "jpeg", synth["root"], ANN, train=True, **ARGS)
    b.set_epoch(2)
    ref = torch.stack([b[i]["image"] for i in range(len(b))])  # opens file descriptors here
    clone = pickle.loads(pickle.dumps(b))  # descriptors are not carried over
    assert torch.equal(clone[1]["image"], ref[1])
    loader = torch.utils.data.DataLoader(b, batch_size=5, num_workers=2)
    assert torch.equal(torch.cat([x["image"] for x in loader]), ref)
