"""metrics.csv appends / truncation and the resume fingerprint."""

from omegaconf import OmegaConf

from matbackprop.engine.records import (
    append_metrics,
    fingerprint,
    fingerprint_diff,
    read_csv,
    truncate_metrics,
)


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
    assert fingerprint_diff(fingerprint(a), fingerprint(b)) == []
    b.model.arch, b.trainer.batch_size = "alexnet", 32
    diff = fingerprint_diff(fingerprint(a), fingerprint(b))
    assert len(diff) == 2
    assert diff[0].startswith("model.arch: 'deepo2p'") and "'alexnet' (now)" in diff[0]
    assert diff[1].startswith("trainer.batch_size: 100")
