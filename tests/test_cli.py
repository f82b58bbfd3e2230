"""The error contract: user errors -> one message and exit 2; bugs keep their traceback (exit 1)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from matbackprop.cli import call_cli, run_cli, user_message
from matbackprop.errors import DataError, UserError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")}


class BadItem(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise DataError("cannot decode /data/x.jpg (image id 7)\nre-download it")
        return torch.zeros(1)


def test_dataloader_worker_error_prints_only_the_workers_message():
    loader = DataLoader(BadItem(), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as info:  # torch re-raises the worker's exception type
        list(loader)
    assert "Original Traceback" in str(info.value) and "File " in str(info.value)
    assert user_message(info.value) == "cannot decode /data/x.jpg (image id 7)\nre-download it"
    assert user_message(DataError("plain")) == "plain"


def test_run_cli_exit_codes(capsys):
    def fail(err):
        raise err

    with pytest.raises(SystemExit) as info:
        run_cli(fail, UserError("bad thing at /x; do y"))
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: bad thing at /x; do y\n"
    assert call_cli(fail, FileNotFoundError("missing /data/coco")) == 2
    assert capsys.readouterr().err == "error: missing /data/coco\n"
    with pytest.raises(KeyError):  # a bug: propagates untouched (traceback, exit 1)
        run_cli(fail, KeyError("bbox"))
    assert run_cli(lambda a, b=0: a + b, 1, b=2) == 3 and call_cli(lambda: 0) == 0


def _python(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_bug_keeps_traceback_exit_1():
    proc = _python("-c", "from matbackprop.cli import run_cli\nrun_cli(lambda: {}['bbox'])")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


def test_evaluate_bad_value_exits_2_naming_the_key(tmp_path):
    proc = _python(
        "-m", "matbackprop.evaluate", "optim.lr=abc", f"output_root={tmp_path}",
        f"data.root={tmp_path / 'none'}", "logger=none", "trainer.device=cpu",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "error: invalid configuration value:\n  optim.lr='abc': expected a number > 0" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "none").exists()  # no data was looked for


def test_evaluate_hydra_error_exits_2_with_one_line(tmp_path):
    proc = _python("-m", "matbackprop.evaluate", "experiment=table2_ncut_alexnet_relu9")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: experiment=table2_ncut_alexnet_relu9: no such experiment")
    assert "table2_ncut_alexnet_relu5" in proc.stderr and proc.stderr.count("\n") == 1


def test_evaluate_segmentation_bad_input_exits_2(tmp_path):
    (tmp_path / "segs").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "segs" / "1.mat").write_bytes(b"garbage")
    (tmp_path / "gt" / "1.mat").write_bytes(b"garbage")
    proc = _python(
        "-m", "matbackprop.evaluate_segmentation", str(tmp_path / "segs"), str(tmp_path / "gt"),
        "--out", str(tmp_path / "o"), "--workers", "1",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "1.mat" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_read_only_run_folder_is_exit_2_before_hydra_logs_there(tmp_path, monkeypatch):
    import errno
    import tempfile

    from matbackprop.cli import run_overrides
    from matbackprop.errors import RunFolderError
    from matbackprop.train import CONFIG_DIR

    def read_only(*a, **k):  # as root chmod does not stop writes: the file system's answer
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(RunFolderError, match=rf"read-only.*{tmp_path}.*output_root="):
        run_overrides(CONFIG_DIR, ["experiment=demo_coco_deepo2p", f"output_root={tmp_path}"])
