"""Loggers: no-op, W&B disabled via the environment, and W&B offline without a login."""

import numpy as np
import pytest
from PIL import Image

from matbackprop.engine.logging import (
    Confusion,
    Figure,
    LoggerWarning,
    NullLogger,
    Table,
    WandbLogger,
    build_logger,
    flatten_config,
    offline_runs,
    read_offline_run,
    run_metadata,
)
from matbackprop.errors import ConfigError


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
    with pytest.raises(ConfigError, match="logger.name"):
        build_logger({"name": "tensorboard"}, tmp_path, {})
    with pytest.raises(ConfigError, match="logger.mode 'onlin'; expected offline, online"):
        build_logger({"name": "wandb", "mode": "onlin"}, tmp_path, {})


def test_only_rank_0_logs(tmp_path, monkeypatch):
    from matbackprop.engine import distributed

    monkeypatch.setattr(distributed, "rank", lambda: 1)
    logger = build_logger({"name": "wandb", "mode": "offline"}, tmp_path, {}, run_id="r1")
    assert isinstance(logger, NullLogger) and not (tmp_path / "wandb").exists()


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


# --- runs that group themselves -------------------------------------------------------------


def _compose(config_name: str, experiment: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from matbackprop.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[f"experiment={experiment}"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    "config_name, experiment, group, name, tags",
    [
        (
            "coco",
            "table1_deepo2p_fc_s",
            "table1",
            "DeepO2P-FC(S)",
            ["trunk:alexnet", "scratch", "head:deepo2p_fc", "protocol:coco"],
        ),
        (
            "bsds",
            "table2_ncut_alexnet_relu3",
            "table2",
            "NCut, AlexNet relu3 (not fine-tuned)",
            ["trunk:alexnet", "pretrained", "head:ncut_raw_features", "protocol:bsds500"],
        ),
        (
            "bsds",
            "demo_bsds_deepncut",
            "demo",
            "demo_bsds_deepncut",
            ["trunk:tiny", "scratch", "head:deepncut", "protocol:bsds_synthetic"],
        ),
    ],
)
def test_run_metadata_from_experiment_files(config_name, experiment, group, name, tags):
    cfg = _compose(config_name, experiment)
    meta = run_metadata(cfg)
    assert (meta["group"], meta["name"], meta["tags"]) == (group, name, tags)
    flat = meta["config"]
    assert flat["row"] == name and flat["model.trunk"] == cfg["model"]["trunk"]
    assert flat["optim.lr"] == cfg["optim"]["lr"]
    assert not any(isinstance(v, dict) for v in flat.values())  # flat: dot keys only


def test_group_falls_back_to_run_name_then_task():
    assert run_metadata({"run_name": "table2_x", "task": "bsds"})["group"] == "table2"
    assert run_metadata({"run_name": "mine", "task": "coco"})["group"] == "coco"
    assert flatten_config({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}}) == {
        "a.b.c": 1,
        "a.d": [1, 2],
        "e": {},
    }


def _flushed(root):
    """Offline runs under ``root`` once the W&B service has closed its files."""
    import wandb

    wandb.teardown()  # finish() may return before the service process wrote the log out
    return offline_runs(root)


def _offline_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))


def test_redone_steps_after_resume_are_kept(tmp_path, monkeypatch):
    """The trainer re-logs steps 3..5 after a resume: every log lands, x-axis = global_step."""
    _offline_env(monkeypatch, tmp_path)
    cfg = {"run_name": "table1_deepo2p", "paper": {"table": "table1", "row": "DeepO2P"}}
    for steps in [range(0, 6), range(3, 8)]:  # killed after step 5, resumed from step 3
        logger = build_logger({"name": "wandb", "project": "t"}, tmp_path, cfg, run_id="res1")
        for s in steps:
            logger.log({"train/loss": float(s)}, step=s + 1)
        logger.log({"epoch/epoch": 1, "epoch/val_error": 50.0 - s}, step=steps[-1] + 1)
        logger.finish()
    fragments = _flushed(tmp_path)["res1"]
    assert len(fragments) == 2  # one folder per session; `make sync-wandb` uploads them as one
    logged = [read_offline_run(f) for f in fragments]
    steps = [h["global_step"] for r in logged for h in r["history"] if "train/loss" in h]
    assert steps == [*range(1, 7), *range(4, 9)]  # the redone 4..6 are there, not dropped
    epochs = [h for r in logged for h in r["history"] if "epoch/val_error" in h]
    assert [(h["epoch"], h["global_step"]) for h in epochs] == [(1, 6), (1, 8)]  # epoch 0 done
    metrics = {m["name"]: m for m in logged[1]["metrics"]}
    assert metrics["train/*"]["step_metric"] == "global_step"
    assert metrics["epoch/*"]["step_metric"] == "epoch"
    assert metrics["epoch/val_error"]["summary"] == ["min"]
    assert metrics["epoch/val_cover_ods"]["summary"] == ["max"]
    assert logged[0]["config"]["paper.row"] == "DeepO2P" and logged[0]["config"]["row"] == "DeepO2P"
    assert (logged[0]["group"], logged[0]["job_type"], logged[0]["id"]) == (
        "table1",
        "train",
        "res1",
    )


def test_lower_step_in_one_session_is_kept(tmp_path, monkeypatch):
    """An online resume continues W&B's step counter from the server's last step, so the redone
    stretch arrives with lower steps in the same session: W&B's `step=` would drop it."""
    _offline_env(monkeypatch, tmp_path)
    logger = build_logger({"name": "wandb"}, tmp_path, {}, run_id="low1")
    for s in [5, 6, 3, 4]:
        logger.log({"train/loss": float(s)}, step=s)
    logger.finish()
    (folder,) = _flushed(tmp_path)["low1"]
    history = read_offline_run(folder)["history"]
    assert [h["global_step"] for h in history] == [5, 6, 3, 4]
    assert [h["_step"] for h in history] == [0, 1, 2, 3]  # W&B's own counter stays monotonic


# --- W&B can never stop or corrupt training ------------------------------------------------


def _lone_warning(record) -> str:
    ours = [w for w in record if issubclass(w.category, LoggerWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    return str(ours[0].message)


@pytest.mark.parametrize("error", ["UsageError", "CommError"])
def test_online_init_failure_falls_back_to_offline_with_one_warning(tmp_path, monkeypatch, error):
    import wandb

    _offline_env(monkeypatch, tmp_path)
    real_init, modes = wandb.init, []

    def init(*args, mode=None, **kwargs):
        modes.append(mode)
        if mode == "online":
            raise getattr(wandb.errors, error)("no key / no network")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(LoggerWarning) as record:
        logger = build_logger({"name": "wandb", "mode": "online"}, tmp_path, {}, run_id="fb1")
        logger.log({"train/loss": 1.0}, step=1)
        logger.finish()
    assert "logging offline" in _lone_warning(record) and error in _lone_warning(record)
    assert modes == ["online", "offline"] and logger.mode == "offline"
    (folder,) = _flushed(tmp_path)["fb1"]
    assert read_offline_run(folder)["history"][0]["train/loss"] == 1.0


def test_online_without_network_falls_back_fast(tmp_path, monkeypatch):
    """Real wandb, invalid key, server = a closed port on 127.0.0.1: bounded by init_timeout."""
    import socket
    import time

    import wandb

    _offline_env(monkeypatch, tmp_path)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb.teardown()  # a W&B session of an earlier test would ignore the new environment
    t0 = time.time()
    with pytest.warns(LoggerWarning) as record:
        logger = build_logger(
            {"name": "wandb", "mode": "online", "init_timeout": 3}, tmp_path, {}, run_id="net1"
        )
        logger.log({"train/loss": 2.0}, step=1)
        logger.finish()
    assert time.time() - t0 < 30  # wandb's default would block ~90 s, then raise
    assert "CommError" in _lone_warning(record)
    assert list(_flushed(tmp_path)) == ["net1"]


def test_log_and_finish_failures_are_warnings(tmp_path, monkeypatch):
    _offline_env(monkeypatch, tmp_path)
    logger = build_logger({"name": "wandb"}, tmp_path, {}, run_id="lf1")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    run = logger.run
    monkeypatch.setattr(logger.run, "log", boom)
    monkeypatch.setattr(logger.run, "finish", boom)
    with pytest.warns(LoggerWarning) as record:
        for step in range(3):
            logger.log({"train/loss": 1.0}, step=step)  # no exception into training
    assert "log failed at step 0" in _lone_warning(record)
    # finish() runs in the trainer's `finally`: its failure must not mask the real error
    with pytest.raises(KeyError, match="the real error"), pytest.warns(LoggerWarning) as record:
        try:
            raise KeyError("the real error")
        finally:
            logger.finish(exit_code=1)
    messages = [str(w.message) for w in record]
    assert any("failed 3 times" in m for m in messages)
    assert any("finish failed" in m and "disk full" in m for m in messages)
    monkeypatch.undo()
    run.finish()  # leave no open run behind for the next test


# --- through the trainer --------------------------------------------------------------------


def _tiny_coco(run_dir, data_root, *extra):
    from tests.engine.coco_tiny import compose_coco, tiny_overrides

    over = tiny_overrides(run_dir, data_root)
    return compose_coco(
        ["experiment=demo_coco_deepo2p", *over, "logger=wandb", "trainer.log_every=1", *extra]
    )


def test_training_resumed_mid_epoch_logs_the_redone_epoch(tmp_path, monkeypatch):
    import matbackprop.engine.state as trainer_mod
    from matbackprop.train import run

    _offline_env(monkeypatch, tmp_path)
    real, calls = trainer_mod.save_checkpoint, {"n": 0}

    def save_then_die(state, path):
        calls["n"] += path.name == "last.pt"
        if calls["n"] == 2 and path.name == "last.pt":
            raise KeyboardInterrupt  # killed before epoch 2's checkpoint: epoch 2 is redone
        real(state, path)

    cfg = _tiny_coco(tmp_path / "run", tmp_path / "data", "trainer.epochs=2")
    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real)
    run(cfg)
    (run_id, fragments), *others = _flushed(tmp_path / "run").items()
    assert not others and len(fragments) == 2  # one W&B id for the run, one folder per session
    history = [h for f in fragments for h in read_offline_run(f)["history"]]
    steps = [h["global_step"] for h in history if "train/loss" in h]
    per_epoch = len(steps) // 3  # epoch 1, epoch 2, epoch 2 again
    assert steps == [*range(1, 2 * per_epoch + 1), *range(per_epoch + 1, 2 * per_epoch + 1)]
    assert [h["epoch"] for h in history if "epoch/val_error" in h] == [1, 2, 2]


def test_training_goes_on_when_wandb_is_down(tmp_path, monkeypatch):
    """Online init fails and every log raises: training still finishes, with warnings."""
    import wandb

    from matbackprop.train import run

    _offline_env(monkeypatch, tmp_path)
    real_init = wandb.init

    def init(*args, mode=None, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("no network")
        run_ = real_init(*args, mode=mode, **kwargs)
        monkeypatch.setattr(run_, "log", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
        return run_

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(LoggerWarning) as record:
        result = run(_tiny_coco(tmp_path / "run", tmp_path / "data", "logger.mode=online"))
    assert result.epochs_done == 1
    messages = " | ".join(str(w.message) for w in record if w.category is LoggerWarning)
    assert "logging offline" in messages and "log failed" in messages
