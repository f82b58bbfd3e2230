"""Config values are checked (type and range, naming the key) before any data is read."""

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from matbackprop.engine.validate import config_problems, validate_config
from matbackprop.errors import ConfigError
from matbackprop.train import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _compose(config_name: str, overrides=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_config_is_valid(experiment):
    name = "bsds" if "bsds" in experiment or "table2" in experiment else "coco"
    cfg = _compose(name, [f"experiment={experiment}", "trainer.device=cpu"])
    validate_config(cfg, training=int(cfg.trainer.epochs) > 0)  # epochs 0: evaluation only


@pytest.fixture(scope="module")
def base_cfg():
    return _compose("coco", ["trainer.device=cpu"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("trainer.epochs=-3", "trainer.epochs=-3: expected an integer >= 1"),
        ("optim.lr=abc", "optim.lr='abc': expected a number > 0; e.g. optim.lr=0.01"),
    ],
)
def test_bad_value_from_the_command_line(override, needle):
    cfg = _compose("coco", ["trainer.device=cpu", override])
    with pytest.raises(ConfigError, match="invalid configuration value:") as info:
        validate_config(cfg)
    assert needle in str(info.value) and str(info.value).count("\n  ") == 1


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("trainer.epochs", 0, "trainer.epochs=0: expected an integer >= 1"),
        ("trainer.epochs", 2.5, "trainer.epochs=2.5: expected an integer >= 1"),
        ("optim.lr", 0, "optim.lr=0: expected a number > 0"),
        ("optim.momentum", -0.1, "optim.momentum=-0.1: expected a number >= 0"),
        ("optim.weight_decay", -1, "optim.weight_decay=-1: expected a number >= 0"),
        ("optim.schedule", "linear", "optim.schedule='linear': expected one of step | cosine"),
        ("trainer.batch_size", 0, "trainer.batch_size=0: expected an integer >= 1"),
        ("trainer.workers", -1, "trainer.workers=-1: expected an integer >= 0"),
        ("trainer.precision", 8, "trainer.precision=8: expected one of 32 | bf16 | 16 | fp16"),
        ("trainer.device", "gpu", "trainer.device='gpu': expected auto | cpu | cuda | cuda:N"),
        ("trainer.clip", 0, "trainer.clip=0: expected null or a number > 0"),
        ("trainer.log_every", 0, "trainer.log_every=0: expected an integer >= 1"),
        ("trainer.eval_every", 0, "trainer.eval_every=0: expected an integer >= 1"),
        ("trainer.save_best", "maybe", "trainer.save_best='maybe': expected true or false"),
        ("trainer.checkpoint_every", 0, "trainer.checkpoint_every=0: expected null or an integer"),
        ("trainer.max_steps", -1, "trainer.max_steps=-1: expected null or an integer >= 1"),
        ("data.on_error", "ignore", "data.on_error='ignore': expected one of raise | skip"),
        ("model.pool_device", "gpu", "model.pool_device='gpu': expected one of auto | same | cpu"),
        ("model.pool_dtype", "float16", "model.pool_dtype='float16': expected one of float64"),
        ("model.dropout", 1.0, "model.dropout=1.0: expected a number >= 0 and < 1"),
        ("eval.checkpoint", "bset", "eval.checkpoint='bset': expected one of none | best | last"),
        ("logger.mode", "onlin", "logger.mode='onlin': expected one of offline | online"),
    ],
)
def test_bad_value_names_key_value_and_range(base_cfg, key, value, needle):
    cfg = copy.deepcopy(base_cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert needle in str(info.value)
    assert str(info.value).count("\n  ") == 1  # only the bad key is reported


def test_all_problems_reported_together_and_evaluate_allows_zero_epochs():
    cfg = _compose(
        "bsds", ["trainer.epochs=0", "optim.lr=abc", "eval.ks=[0,2]", "trainer.device=cpu"]
    )
    problems = config_problems(cfg, training=True)
    assert [p.split("=")[0] for p in problems] == ["trainer.epochs", "optim.lr", "eval.ks"]
    assert problems[2] == "eval.ks=[0, 2]: expected a non-empty list of integers >= 1"
    with pytest.raises(ConfigError, match="invalid configuration values:"):
        validate_config(cfg)
    keys = [p.split("=")[0] for p in config_problems(cfg, training=False)]
    assert keys == ["optim.lr", "eval.ks"]  # evaluate: trainer.epochs=0 is fine


def test_accepted_spellings():
    cfg = _compose(
        "coco",
        ["trainer.precision=32", "trainer.clip=null", "optim.lr=1", "trainer.device=cpu"],
    )
    assert config_problems(cfg) == []  # int 32 (what the shell gives Hydra), int lr, null clip
    cfg = _compose("coco", ["~optim.lr", "trainer.device=cpu"])
    assert config_problems(cfg) == ["optim.lr: missing (set optim.lr=0.01)"]


def test_cuda_device_must_exist(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _compose("coco", ["trainer.device=cuda:1"])
    with pytest.raises(ConfigError, match=r"trainer.device='cuda:1'.*0 CUDA device\(s\)"):
        validate_config(cfg)
