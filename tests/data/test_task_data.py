"""The data side of the tasks: val filter and data_stats, data.store, bad items counted per split."""

import json
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from tests.engine.bsds_tiny import BSDS_TINY
from tests.engine.coco_tiny import compose_coco, tiny_overrides

from matbackprop.data.region_store import (
    PreparedCocoRegions,
    StoreSpec,
    loader_identity,
    prepare_store,
)
from matbackprop.errors import DataError
from matbackprop.tasks.bsds import BsdsTask
from matbackprop.tasks.coco import CocoTask
from matbackprop.train import CONFIG_DIR

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "coco"
    CocoTask(_coco(tmp_path_factory.mktemp("run"), root))  # generates the synthetic set once
    return root


def _coco(run_dir, root, *extra):
    over = tiny_overrides(run_dir, root)
    return compose_coco(["experiment=demo_coco_deepo2p", *over, *extra])


def _copy(coco_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    return root


def test_min_area_filters_training_only(coco_root, tmp_path):
    task = CocoTask(_coco(tmp_path, coco_root))
    # the synthetic set has one 6-pixel instance per split (< min_area=64)
    stats = dict(task.data_stats)
    assert stats.pop("class_names") == task.class_names  # recorded for predict
    assert stats == {
        "train": {"kept": 16, "crowd": 1, "degenerate": 0, "small": 1, "invalid": 0},
        "val": {"kept": 9, "crowd": 1, "degenerate": 0, "small": 0, "invalid": 0},
    }
    for split, ds, kept in (("val", task.val_set, True), ("train", task.train_set, False)):
        anns = json.loads((coco_root / f"annotations/instances_{split}2014.json").read_text())
        (tiny,) = [a["id"] for a in anns["annotations"] if a["area"] < 64 and not a["iscrowd"]]
        assert (tiny in ds._ann_id.tolist()) == kept  # the 6-px instance is evaluated
    with pytest.raises(DataError, match=r"no usable regions .*\(train 0, val 9\)"):
        CocoTask(_coco(tmp_path, coco_root, "data.min_area=100000"))  # val is never filtered


def test_data_store_auto_none_and_path(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    assert type(CocoTask(_coco(tmp_path, root)).train_set).__name__ == "CocoRegions"
    for split in ("train2014", "val2014"):
        spec = StoreSpec(root, f"annotations/instances_{split}.json", None,
                         root / "prepared" / split, max_side=28, fmt="raw")  # fmt: skip
        prepare_store(spec)
    auto = CocoTask(_coco(tmp_path, root))
    assert isinstance(auto.train_set, PreparedCocoRegions)
    assert isinstance(auto.val_set, PreparedCocoRegions)
    fly = CocoTask(_coco(tmp_path, root, "data.store=none"))
    assert not isinstance(fly.val_set, PreparedCocoRegions)
    for ds in (auto.train_set, fly.train_set):
        ds.set_epoch(1)
    a, b = auto.train_set[3], fly.train_set[3]
    assert torch.equal(a["image"], b["image"]) and (a["mask"] - b["mask"]).abs().max() < 2e-3
    with pytest.raises(DataError, match="no manifest.json.*make prepare-coco"):
        CocoTask(_coco(tmp_path, root, f"data.store={tmp_path / 'nowhere'}"))
    assert loader_identity(fly.train_set) == "on-the-fly"
    assert loader_identity(auto.val_set).startswith(f"store {root / 'prepared/val2014'} sha256:")
    (root / "prepared/val2014/manifest.json").write_text("{garbage")  # auto: damage is an error
    with pytest.raises(DataError, match=r"prepared/val2014/manifest\.json.*make prepare-coco") as e:
        CocoTask(_coco(tmp_path, root))
    assert "make data-coco" not in str(e.value)
    (root / "prepared/val2014/chunk-00000.bin").unlink()
    prepare_store(StoreSpec(root, "annotations/instances_val2014.json", None,
                            root / "prepared" / "val2014", max_side=28, fmt="raw"))  # fmt: skip
    assert isinstance(CocoTask(_coco(tmp_path, root)).val_set, PreparedCocoRegions)  # repaired


def _corrupt_first_train_image(task):
    ds = task.train_set
    path = ds.image_dir / ds._files[ds._img[0]]
    path.write_bytes(path.read_bytes()[:100])
    return sum(int(ds._img[i] == ds._img[0]) for i in range(len(ds)))


def test_coco_bad_items_counted_and_capped(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    task = CocoTask(_coco(tmp_path, root, "data.on_error=skip"))
    n_bad = _corrupt_first_train_image(task)
    model = task.build_model()
    loader = torch.utils.data.DataLoader(task.train_set, batch_size=4)
    total = sum(task.train_step(model, b)[1]["count_bad_items"] for b in loader)
    assert total == n_bad >= 1
    ann_file = task.val_set.image_dir / task.val_set._files[task.val_set._img[0]]
    ann_file.write_bytes(b"garbage")
    assert task.evaluate(model.eval(), 0)["val_bad_items"] >= 1
    model.train()
    capped = CocoTask(_coco(tmp_path, root, "data.on_error=skip", "data.max_skipped=0"))
    with pytest.raises(DataError, match=r"bad train items .*max_skipped=0"):
        for b in torch.utils.data.DataLoader(capped.train_set, batch_size=4):
            capped.train_step(model, b)
    strict = CocoTask(_coco(tmp_path, root))
    with pytest.raises(DataError, match="cannot decode COCO image.*on_error=skip"):
        strict.train_set[0]


def test_bsds_bad_items_counted(tmp_path):
    over = [
        *BSDS_TINY,
        f"data.root={tmp_path / 'bsds'}",
        "data.synthetic.n_train=4",
        "logger=none",
        "data.on_error=skip",
        f"run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="bsds", overrides=over)
    task = BsdsTask(cfg)
    _, img, _ = task.train_set.items[0]
    img.write_bytes(img.read_bytes()[:150])
    task = BsdsTask(cfg)
    model = task.build_model()
    items = task.train_items
    batch = torch.utils.data.default_collate([items[0], items[1]] if items.sizes[0] == items.sizes[1]
                                             else [items[0]])  # fmt: skip
    assert task.train_step(model, batch)[1]["count_bad_items"] == 1
