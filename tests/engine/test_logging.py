"""Loggers: no-op, W&B disabled via the environment, and W&B offline without a login."""

import numpy as np
import pytest
from PIL import Image

from matbackprop.engine.logging import (
    Confusion,
    Figure,
    NullLogger,
    Table,
    WandbLogger,
    build_logger,
)


def _media(tmp_path):
    png = tmp_path / "fig.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    return {
        "val_error": 12.5,
        "per_class": Table(["class", "n", "error"], [["a", 3, 33.3], ["b", 2, 0.0]]),
        "confusion": Confusion([0, 1, 1], [0, 0, 1], ["a", "b"]),
        "overlays": Figure(str(png)),
    }


def test_none_logger_and_bad_name(tmp_path):
    logger = build_logger({"name": "none"}, tmp_path, {})
    assert isinstance(logger, NullLogger)
    logger.log(_media(tmp_path), step=1)
    logger.finish(exit_code=1)
    with pytest.raises(ValueError, match="logger.name"):
        build_logger({"name": "tensorboard"}, tmp_path, {})


def test_env_disabled_wins_over_offline_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = build_logger({"name": "wandb", "mode": "offline"}, tmp_path, {"a": 1}, run_id="abc")
    assert isinstance(logger, WandbLogger)
    logger.log(_media(tmp_path), step=1)
    logger.finish()
    assert not (tmp_path / "wandb").exists()  # disabled: nothing written


def test_offline_mode_writes_a_local_run_without_login(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))  # no ~/.netrc / settings
    logger = build_logger(
        {"name": "wandb", "mode": "offline", "project": "t"}, tmp_path, {"a": 1}, run_id="off1"
    )
    logger.log(_media(tmp_path), step=1)
    logger.finish(exit_code=0)
    runs = list((tmp_path / "wandb").glob("offline-run-*-off1"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = {p.suffix for p in (runs[0] / "files" / "media").rglob("*") if p.is_file()}
    assert {".png", ".json"} <= media  # the image and the tables were written
