"""Bad data items (each failure reproduced first), data.on_error=skip, and per-sample randomness."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from matbackprop.data.bad_items import BadItemCounter, fetch, item_seed
from matbackprop.data.bsds import BSDS
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.data.synthetic import make_synthetic_bsds, make_synthetic_coco
from matbackprop.errors import DataError, UserError
from matbackprop.tasks.bsds import TrainImages

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ARGS = dict(crop_size=64, max_side=56, jitter=4, mask_size=8)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), n_train=12, n_val=8, seed=5)


@pytest.fixture
def coco(tmp_path, synth):
    root = tmp_path / "coco"
    shutil.copytree(synth["root"], root)
    return root


def _ds(root, split, **kw):
    return CocoRegions(root, f"annotations/instances_{split}2014.json", **(ARGS | kw))


def _truncate(path, keep=0.3):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------ COCO failures
@pytest.mark.parametrize("split", ["train", "val"])
def test_truncated_jpeg_names_file_image_and_annotation(coco, split):
    ds = _ds(coco, split, train=split == "train")
    k = ds._img[0]
    path = ds.image_dir / ds._files[k]
    ds[0]  # fine before
    _truncate(path)
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert path.name in msg and f"image id {ds._image_ids[k]}" in msg
    assert f"annotation {ds._ann_id[0]}" in msg and "data.on_error=skip" in msg


def test_garbage_jpeg_and_wrong_size(coco):
    ds = _ds(coco, "val", train=False)
    first = ds.image_dir / ds._files[ds._img[0]]
    first.write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(DataError, match=rf"cannot decode COCO image .*{first.name}"):
        ds[0]
    last = len(ds) - 1
    other = ds.image_dir / ds._files[ds._img[last]]
    Image.new("RGB", (33, 17)).save(other, format="JPEG")
    with pytest.raises(DataError, match=rf"{other.name} .*is 33x17 but .* says 160x160"):
        ds[last]


def test_annotation_without_bbox_and_json_array(coco):
    ann = coco / "annotations/instances_val2014.json"
    data = json.loads(ann.read_text())
    victim = data["annotations"][3]["id"]
    del data["annotations"][3]["bbox"]
    ann.write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=rf"instances_val2014\.json: annotation {victim} has no bbox"
    ):
        _ds(coco, "val", train=False)
    ann.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"instances_val2014\.json.*JSON is a list, not an object"):
        _ds(coco, "val", train=False)
    assert issubclass(DataError, UserError)  # exit 2 at the entry points


def test_skip_replaces_by_next_good_index_and_flags_it(coco, caplog):
    ds = _ds(coco, "val", train=False, on_error="skip")
    good = [ds[i] for i in range(len(ds))]
    assert all(it["bad"] == 0 for it in good)
    bad_img = ds._img[2]
    hit = [i for i in range(len(ds)) if ds._img[i] == bad_img]  # every region of that image
    _truncate(ds.image_dir / ds._files[bad_img])
    nxt = (max(hit) + 1) % len(ds)
    for i in hit:
        item = ds[i]
        assert item["bad"] == 1 and item["ann_id"] == good[nxt]["ann_id"]
        assert torch.equal(item["image"], good[nxt]["image"])
    assert ds[nxt]["bad"] == 0
    assert caplog.text.count(ds._files[bad_img]) == 1  # warned once per file, naming it


def test_skip_wraps_around_and_fails_when_nothing_loads():
    calls = []

    def load(j):
        calls.append(j)
        if j != 1:
            raise DataError(f"bad {j}")
        return {"x": j}

    assert fetch(load, 3, 4, "skip") == {"x": 1, "bad": 1} and calls == [3, 0, 1]
    assert fetch(load, 1, 4, "skip") == {"x": 1, "bad": 0}
    with pytest.raises(DataError, match="bad 3.*on_error=skip"):
        fetch(load, 3, 4, "raise")
    with pytest.raises(DataError, match="no item could replace bad item 0: 3 candidates"):
        fetch(lambda j: load(7), 0, 3, "skip")
    tried = []
    with pytest.raises(DataError, match="bad item 2: 5 candidates.*first error: bad 9"):
        fetch(lambda j: tried.append(j) or load(7 + j), 2, 10**6, "skip", max_tries=5)
    assert tried == [2, 3, 4, 5, 6]  # bounded: a missing folder does not scan every index
    odd = fetch(lambda j: {"x": j} if j else load(0), 0, 4, "skip", accept=lambda j: j % 2 == 0)
    assert odd == {"x": 2, "bad": 1}  # index 1 skipped: wrong size


def test_counter_caps_per_split_and_epoch():
    c = BadItemCounter(max_skipped=3)
    assert c.add("train", 0, torch.tensor([1, 0, 1])) == 2
    assert c.add("val", 0, [1]) == 1 and c.add("train", 1, 1) == 1  # other split / epoch
    with pytest.raises(DataError, match=r"3 bad train items .* epoch 0.*max_skipped=2"):
        BadItemCounter(2).add("train", 0, 3)
    with pytest.raises(DataError, match="4 bad train items"):
        c.add("train", 0, torch.tensor([1, 1]))
    c.reset("val", 0)
    assert c.add("val", 0, 3) == 3


# ------------------------------------------------------------------ BSDS failures
@pytest.fixture
def bsds(tmp_path):
    return make_synthetic_bsds(tmp_path / "bsds", n_train=4, n_val=2, n_test=1, size=(40, 60))


def _bsds_paths(root, split="train"):
    ds = BSDS(root, split)
    return ds, ds.items


def test_bsds_truncated_and_garbage_jpeg_and_mat(bsds):
    ds, items = _bsds_paths(bsds)
    iid, img, gt = items[1]
    _truncate(img)
    with pytest.raises(DataError, match=rf"{img.name} \(image id {iid}\).*on_error=skip"):
        ds[1]
    img.write_bytes(b"garbage")
    with pytest.raises(DataError, match=rf"{img.name} \(image id {iid}\)"):
        ds[1]
    iid2, _, gt2 = items[2]
    gt2.write_bytes(b"MATLAB garbage")
    with pytest.raises(DataError, match=rf"{gt2.name}.*image id {iid2}"):
        ds[2]
    skip = BSDS(bsds, "train", on_error="skip")
    assert skip[1]["bad"] == 1 and skip[1]["id"] == items[3][0]  # 1 and 2 bad -> 3
    assert skip[0]["bad"] == 0


def test_train_images_skip_keeps_size_and_header_errors(bsds):
    ds, items = _bsds_paths(bsds)
    _, img, _ = items[0]
    img.write_bytes(b"garbage")  # even the header is unreadable
    with pytest.raises(DataError, match=rf"{img.name}.*on_error=skip"):
        TrainImages(ds)
    tr = TrainImages(ds, on_error="skip")
    assert tr.sizes[0] == tr.sizes[1]  # takes the size of its replacement
    item = tr[0]
    assert item["bad"] == 1 and item["id"] == items[1][0]
    assert tuple(item["image"].shape[1:]) == tr.sizes[0]


# ------------------------------------------------------------------ per-sample randomness
def test_item_seed_mixes_all_three():
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27 and all(0 <= x < 2**63 for x in seeds)
    with pytest.raises(ValueError, match=">= 0"):
        item_seed(0, -1, 0)


def _epoch_items(ds, epoch, workers):
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
    return torch.cat([b["image"] for b in loader])


def test_coco_item_depends_only_on_seed_epoch_index(synth):
    a = _ds(synth["root"], "train", train=True, aug_seed=7)
    b = _ds(synth["root"], "train", train=True, aug_seed=7)
    torch.manual_seed(0)
    x0 = _epoch_items(a, 2, workers=0)
    torch.manual_seed(99)  # the global RNG plays no part
    x2 = _epoch_items(b, 2, workers=2)
    assert torch.equal(x0, x2)
    b.set_epoch(5)
    a.set_epoch(5)
    assert torch.equal(b[3]["image"], a[3]["image"])  # random access, any order
    assert not torch.equal(_epoch_items(a, 3, workers=0), x0)  # another epoch differs
    c = _ds(synth["root"], "train", train=True, aug_seed=8)
    assert not torch.equal(_epoch_items(c, 2, workers=0), x0)  # another seed differs


def test_bsds_human_and_flip_depend_only_on_seed_epoch_index(tmp_path):
    root = make_synthetic_bsds(tmp_path / "b", n_train=4, n_val=1, n_test=1, size=(40, 60))
    ds = BSDS(root, "train")
    a, b = TrainImages(ds, seed=3), TrainImages(ds, seed=3)
    draws = {}
    for epoch in range(12):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        torch.manual_seed(epoch)
        x = a[1]
        torch.manual_seed(1000 + epoch)
        y = b[1]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["seg"], y["seg"])
        draws[epoch] = (x["image"].sum().item(), x["seg"].float().sum().item())
    assert len(set(draws.values())) > 2  # humans / flips vary over epochs
    np.testing.assert_equal(len(a), 4)


def test_bad_on_error_and_max_skipped_name_the_key(synth):
    from matbackprop.errors import ConfigError

    with pytest.raises(ConfigError, match="data.on_error must be 'raise' or 'skip'"):
        _ds(synth["root"], "val", train=False, on_error="ignore")
    with pytest.raises(ConfigError, match="data.max_skipped"):
        BadItemCounter(-1)
