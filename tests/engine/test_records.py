"""metrics.csv appends / truncation, concurrent writers, status.json and the fingerprint."""

import json
import threading

import pytest
from omegaconf import OmegaConf

from matbackprop.engine.records import (
    append_metrics,
    fingerprint,
    read_csv,
    read_status,
    truncate_metrics,
    write_csv,
)
from matbackprop.engine.schema import compare
from matbackprop.errors import RunFolderError


def test_append_widen_and_truncate(tmp_path):
    path = tmp_path / "metrics.csv"
    append_metrics(path, {"epoch": 0, "train_loss": 1.5})
    append_metrics(path, {"epoch": 1, "train_loss": 0.5, "val_error": 12.25})
    lines = path.read_text().splitlines()
    assert lines == ["epoch,train_loss,val_error", "0,1.5,", "1,0.5,12.25"]
    truncate_metrics(path, before_epoch=1)
    assert path.read_text().splitlines() == ["epoch,train_loss,val_error", "0,1.5,"]
    append_metrics(path, {"epoch": 1, "train_loss": 0.25, "val_error": 3.0})
    assert [r["epoch"] for r in read_csv(path)] == ["0", "1"]
    assert read_csv(tmp_path / "absent.csv") == []


def test_fingerprint_ignores_resumable_keys_only():
    a = OmegaConf.create(
        {
            "task": "coco",
            "run_dir": "x",
            "model": {"arch": "deepo2p", "pool_eps": 1e-3},
            "trainer": {"epochs": 5, "batch_size": 100, "workers": 4},
            "data": {"root": "/a", "crop_size": 227},
            "logger": {"mode": "offline"},
        }
    )
    b = a.copy()
    b.run_dir, b.trainer.epochs, b.trainer.workers, b.data.root = "y", 9, 0, "/b"
    b.logger.mode = "online"
    # trainer.epochs may change on resume: it is in the fingerprint and compared as a change
    assert compare(fingerprint(a), b) == ([], {"trainer.epochs": (5, 9)})
    b.model.arch, b.trainer.batch_size = "alexnet", 32
    diff, _ = compare(fingerprint(a), b)
    assert len(diff) == 2
    assert diff[0].startswith("model.arch: 'deepo2p'") and "'alexnet' (now)" in diff[0]
    assert diff[1].startswith("trainer.batch_size: 100")


def test_concurrent_csv_writers_never_collide(tmp_path):
    path = tmp_path / "metrics.csv"
    errors = []
    rows = [{"epoch": e, "loss": e / 7} for e in range(3000)]

    def work():
        for _ in range(30):
            try:
                write_csv(path, rows, ["epoch", "loss"])
                assert len(read_csv(path)) == len(rows)
            except Exception as err:  # noqa: BLE001 (collected and asserted on)
                errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_read_status(tmp_path):
    assert read_status(tmp_path) is None
    good = {"epochs_done": 2, "fingerprint": {"a": 1}, "last": {"epoch": 1}}
    (tmp_path / "status.json").write_text(json.dumps(good))
    assert read_status(tmp_path) == good


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"epochs_done": 2, "fingerp', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"fingerprint": {}}', "'epochs_done' must be an integer >= 0, found None"),
        ('{"epochs_done": "2", "fingerprint": {}}', "'epochs_done' must be an integer"),
        ('{"epochs_done": 2, "fingerprint": []}', "'fingerprint' must be an object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_corrupt_status_names_the_file(tmp_path, text, problem):
    path = tmp_path / "status.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RunFolderError) as info:
        read_status(tmp_path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg and "Delete it" in msg
