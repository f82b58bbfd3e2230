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


def _npy_bytes(rows):
    import io

    buf = io.BytesIO()
    np.save(buf, rows)
    return buf.getvalue()


def _edit_rows(store, edit, rehash):
    """Edit the rows of chunk 0's index; with ``rehash`` also fix its SHA-256 everywhere (an
    edit that keeps the checksums consistent: only the binding to the annotations is left)."""
    import hashlib

    npy = store / "chunk-00000.npy"
    rows = np.load(npy)
    edit(rows)
    data = _npy_bytes(rows)
    npy.write_bytes(data)
    if rehash:
        sha = hashlib.sha256(data).hexdigest()
        meta = json.loads((store / "chunk-00000.json").read_text())
        (store / "chunk-00000.json").write_text(json.dumps(dict(meta, npy_sha256=sha)))
        man = json.loads((store / "manifest.json").read_text())
        man["chunk_npy_sha256"][0] = sha
        (store / "manifest.json").write_text(json.dumps(man))


def _swap_ids(r):
    r["ann_id"][[0, 1]] = r["ann_id"][[1, 0]]


def _swap_wh(r):
    r["w"], r["h"] = r["h"].copy(), r["w"].copy()


def _w200(r):
    r["w"][0] = 200


def _flip_header(store):
    npy = store / "chunk-00000.npy"
    b = bytearray(npy.read_bytes())
    b[20] ^= 0x5A  # inside the header's Python literal: np.load raised SyntaxError
    npy.write_bytes(bytes(b))


DAMAGE = {
    "swapped ann_id rows": (lambda s: _edit_rows(s, _swap_ids, False), r"chunk-00000\.npy does not match its SHA-256"),
    "swapped ann_id rows, rehashed": (lambda s: _edit_rows(s, _swap_ids, True), r"row \d+ \(annotation \d+\) has the wrong box"),
    "swapped w/h": (lambda s: _edit_rows(s, _swap_wh, False), r"chunk-00000\.npy does not match its SHA-256"),
    "swapped w/h, rehashed": (lambda s: _edit_rows(s, _swap_wh, True), r"has the wrong patch size"),
    "w=200, rehashed": (lambda s: _edit_rows(s, _w200, True), r"row 0 .*has the wrong patch size"),
    "flipped .npy header byte": (_flip_header, r"chunk-00000\.npy does not match its SHA-256"),
    "garbage manifest.json": (lambda s: (s / "manifest.json").write_text("{garbage"), r"cannot read .*manifest\.json"),
    "manifest.json a list": (lambda s: (s / "manifest.json").write_text("[1]"), r"manifest\.json is not a JSON object"),
    "missing .bin": (lambda s: (s / "chunk-00001.bin").unlink(), r"store chunk .*chunk-00001\.bin is missing"),
    "truncated .bin": (lambda s: (s / "chunk-00001.bin").write_bytes(b"x"), r"chunk-00001\.bin is 1 bytes"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_store_is_refused_at_open_and_repaired_by_a_rerun(synth, stores, tmp_path, case):
    damage, text = DAMAGE[case]
    copy = tmp_path / "raw"
    shutil.copytree(stores / "raw", copy)
    damage(copy)
    with pytest.raises(DataError, match=rf"{text}.*make prepare-coco") as err:
        PreparedCocoRegions(copy, synth["root"], ANN, train=False, **ARGS)
    assert "make data-coco" not in str(err.value)
    man = prepare_store(_spec(synth["root"], copy, fmt="raw"))
    assert man["done_now"] == (0 if "manifest" in case else 1)  # the damaged chunk is rebuilt
    for f in sorted((stores / "raw").iterdir()):
        assert (copy / f.name).read_bytes() == f.read_bytes(), f.name
    a, b = _pair(synth, copy, train=False)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))


def test_a_store_of_an_edited_annotation_file_is_not_used(synth, stores, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synth["root"], root)
    d = json.loads((root / ANN).read_text())
    ann = next(a for a in d["annotations"] if not a.get("iscrowd"))
    ann["bbox"] = [ann["bbox"][0] + 1, *ann["bbox"][1:]]
    (root / ANN).write_text(json.dumps(d))
    with pytest.raises(DataError, match="another version of instances_val2014.json"):
        PreparedCocoRegions(stores / "raw", root, ANN, train=False, **ARGS)
    man = json.loads((stores / "raw" / "manifest.json").read_text())
    assert man["ann_sha256"] == rs.sha256_file(synth["root"] / ANN)
    assert {"format", "max_side", "chunk_images", "image_dir", "min_area"} <= man.keys()


def test_records_are_bound_to_their_annotation(synth, stores):
    b = PreparedCocoRegions(stores / "raw", synth["root"], ANN, train=False, **ARGS)
    b._box = b._box.copy()
    b._box[2, 0] += 0.5  # another box: the record's CRC no longer matches
    with pytest.raises(DataError, match="CRC mismatch"):
        b[2]


def test_loader_identity(synth, stores):
    a, b = _pair(synth, stores / "jpeg", train=False)
    assert rs.loader_identity(a) == "on-the-fly"
    ident = rs.loader_identity(b)
    assert ident.startswith(f"store {stores / 'jpeg'} sha256:") and len(ident.split(":")[-1]) == 16
