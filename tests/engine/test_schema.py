"""The config schema: every conf/ key declared once, defaults = the YAML, resume rules, compare,
complete, the incompatible-group check and the default run folder name."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from matbackprop.cli import run_overrides
from matbackprop.engine import schema
from matbackprop.engine.schema import (
    IDENTITY,
    MAY_CHANGE,
    OPERATIONAL,
    SCHEMA,
    compare,
    complete,
    fingerprint,
    flatten,
    rule,
    run_folder_name,
)
from matbackprop.errors import ConfigError
from matbackprop.train import CONFIG_DIR

CONF = Path(CONFIG_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
OPTIONS = {  # every group option, composed in its task
    "coco": ["data=coco_synthetic", "model=alexnet", "model=avgpool", "model=deepo2p_fc"],
    "bsds": ["data=bsds300", "data=bsds_synthetic", "logger=none"],
}


def _compose(overrides=(), name="coco"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _flat(cfg, resolve=False):
    return flatten(OmegaConf.to_container(cfg, resolve=resolve))


def _declared(key: str) -> bool:
    return key in SCHEMA or key.startswith("paper.")  # paper: free-form {table, row, extra}


@pytest.mark.parametrize(
    "overrides",
    [
        *[[f"experiment={e}"] for e in EXPERIMENTS],
        *[[f"task={t}", o] for t, opts in OPTIONS.items() for o in opts],
        ["experiment=table1_deepo2p", "region=segment"],
    ],
)
def test_every_conf_key_is_declared(overrides):
    undeclared = [k for k in _flat(_compose(overrides)) if not _declared(k)]
    assert undeclared == []


@pytest.mark.parametrize("task", ["coco", "bsds"])
def test_defaults_are_the_yaml(task):
    """A task's entry config with no experiment is exactly the schema's defaults."""
    cfg = _compose([], name=task)
    groups = {k: v for k, v in _flat(cfg).items() if "." in k}
    assert groups == schema.defaults(task, cfg.model.arch)
    assert cfg.task == task


def test_rules_of_the_listed_keys():
    may_change = ["optim.lr", "optim.schedule", "optim.step_size", "optim.gamma"]
    may_change += ["optim.min_lr_mult", "trainer.clip", "trainer.epochs", "trainer.precision"]
    may_change += ["trainer.on_nonfinite"]
    operational = [f"trainer.{k}" for k in ("workers", "device", "log_every", "eval_every")]
    operational += [f"trainer.{k}" for k in ("eval_batch_size", "save_best", "max_steps")]
    operational += ["trainer.checkpoint_every", "trainer.max_nonfinite", "trainer.channels_last"]
    operational += ["trainer.find_unused_parameters", "trainer.cudnn_benchmark"]
    operational += ["model.pool_device", "data.root", "run_name", "run_dir", "output_root"]
    operational += ["logger", "logger.mode", "logger.whatever", "paper.row", "eval.ks", "eval.x"]
    assert {k: rule(k) for k in may_change} == dict.fromkeys(may_change, MAY_CHANGE)
    assert {k: rule(k) for k in operational} == dict.fromkeys(operational, OPERATIONAL)
    for key in ("task", "trainer.batch_size", "trainer.seed", "optim.momentum", "model.arch"):
        assert rule(key) == IDENTITY, key
    for key in ("data.synthetic.n_train", "data.crop_size", "trainer.new_knob", "unknown"):
        assert rule(key) == IDENTITY, key  # undeclared keys are identity


def test_fingerprint_keeps_may_change_drops_operational():
    fp = fingerprint(_compose(["experiment=table1_deepo2p"]))
    assert fp["trainer.epochs"] == 10 and fp["optim.lr"] == 0.001 and fp["task"] == "coco"
    assert not [k for k in fp if rule(k) == OPERATIONAL]
    assert "data.root" not in fp and "trainer.workers" not in fp and "run_dir" not in fp


def test_compare_identity_changes_and_old_fingerprints():
    cfg = _compose(["experiment=table1_deepo2p"])
    saved = fingerprint(cfg)
    assert compare(saved, cfg) == ([], {})
    now = _compose(["experiment=table1_deepo2p", "optim.lr=0.01", "trainer.epochs=12"])
    now.trainer.workers, now.data.root = 0, "/elsewhere"  # operational: free
    now.model.pool_eps, now.trainer.batch_size = 0.01, 64
    identity, changes = compare(saved, now)
    assert identity == [
        "model.pool_eps: 0.001 (run folder) != 0.01 (now)",
        "trainer.batch_size: 100 (run folder) != 64 (now)",
    ]
    assert changes == {"optim.lr": (0.001, 0.01), "trainer.epochs": (10, 12)}
    # a fingerprint written before this schema: no trainer.epochs, no data.task / model.task
    # (keys added since: absent counts as the default), operational keys still in it
    old = {k: v for k, v in saved.items() if k not in ("trainer.epochs", "data.task", "model.task")}
    old["trainer.checkpoint_every"], old["trainer.max_steps"] = 2000, 5
    assert compare(old, _compose(["experiment=table1_deepo2p", "trainer.epochs=12"])) == ([], {})
    old["model.arch"] = "alexnet"
    assert compare(old, cfg)[0] == ["model.arch: 'alexnet' (run folder) != 'deepo2p' (now)"]
    del old["model.pool_dtype"], old["data.region"]  # absent: the default, if there is one
    assert compare(old, cfg)[0][1:] == ["model.arch: 'alexnet' (run folder) != 'deepo2p' (now)"]
    assert compare(old, cfg)[0][0] == "data.region: <absent> (run folder) != 'box' (now)"


def test_complete_fills_the_defaults_of_the_groups_present():
    cfg = OmegaConf.create(
        {
            "task": "bsds",
            "trainer": {"epochs": 2},
            "optim": {"lr": 0.1},
            "model": {"arch": "deepncut"},
        }
    )
    full = complete(cfg)
    assert full.trainer.clip == 10.0 and full.trainer.log_every == 20  # the BSDS trainer
    assert full.model.dropout == 0.5 and full.model.taps == ["relu5"]
    assert "pool_eps" not in full.model and "crop_size" not in full.get("data", {})
    assert "data" not in full and "batch_size" not in full.trainer  # absent group, required key
    assert full.optim.schedule == "step" and "trainer" in cfg and "clip" not in cfg.trainer
    coco = complete(OmegaConf.create({"task": "coco", "model": {"arch": "alexnet"}}))
    assert coco.model.dropout == 0.0 and "use_mask" not in coco.model
    composed = _compose(["experiment=table1_deepo2p_fc"])
    assert _flat(complete(composed)) == _flat(composed)  # shipped configs are complete
    deleted = complete(_compose(["~trainer.seed", "~model.pool_eps"]))  # struct configs too
    assert deleted.model.pool_eps == 1e-3 and deleted.trainer.seed == 0


def test_other_tasks_group_is_refused():
    cfg = _compose(["experiment=demo_bsds_deepncut", "data=coco_synthetic"])
    assert cfg.task == "bsds"
    with pytest.raises(ConfigError, match=r"data.task='coco': the data group .* bsds run"):
        schema.validate(cfg)
    cfg = _compose(["experiment=table1_deepo2p", "model=deepncut"])
    with pytest.raises(ConfigError, match=r"model.task='bsds'.*coco run"):
        schema.validate(cfg)


def test_bsds_experiment_composes_as_bsds_without_config_name():
    for name in ("demo_bsds_deepncut", "table2_deepncut_alexnet", "table2_bsds300_ncut_vgg16"):
        cfg = _compose([f"experiment={name}"])
        assert cfg.task == "bsds" and cfg.run_dir == f"outputs/bsds/{name}"
        assert cfg.data.task == cfg.model.task == "bsds" and cfg.model.arch == "deepncut"
        assert cfg == _compose([f"experiment={name}"], name="bsds")  # --config-name bsds: same
    table1 = _compose(["experiment=table1_deepo2p"], name="bsds")
    assert table1.task == "coco" and table1 == _compose(["experiment=table1_deepo2p"])


def test_trainer_bsds_states_only_what_differs():
    text = (CONF / "trainer" / "bsds.yaml").read_text()
    assert "- default" in text and "device:" not in text and "on_nonfinite:" not in text


BASE = "outputs/coco/table1_deepo2p"


@pytest.mark.parametrize(
    "overrides, folder",
    [
        ([], BASE),
        (["experiment=table1_deepo2p"], BASE),
        (["experiment=table1_deepo2p", "optim.lr=0.005"], f"{BASE}/optim.lr=0.005"),
        (["trainer.workers=0", "data.root=/d", "logger=none", "++trainer.max_steps=3"], BASE),
        (["run_name=table1_deepo2p", "trainer.epochs=12"], BASE),  # explicit: as is
        (["run_dir=somewhere", "optim.lr=0.1"], BASE),
        (["trainer.epochs=12", "region=segment", "+optim.lr=1", "hydra/launcher=local"],
         f"{BASE}/optim.lr=1,region=segment,trainer.epochs=12"),
    ],
)  # fmt: skip
def test_run_folder_name(overrides, folder):
    assert run_folder_name(BASE, overrides) == folder


def test_run_folder_name_stays_a_valid_file_name():
    many = [f"model.k{i}=value_number_{i}" for i in range(40)]
    name = run_folder_name(BASE, many).removeprefix(BASE + "/")
    assert len(name.encode()) <= 200 and "~" in name and "/" not in name
    assert name != run_folder_name(BASE, many[:-1]).removeprefix(BASE + "/")


def test_entry_point_names_single_runs(tmp_path):
    """What ``python -m matbackprop.train`` adds to its command line (run_overrides)."""
    base = ["experiment=demo_coco_deepo2p", f"output_root={tmp_path}", "trainer.workers=0"]
    assert run_overrides(CONFIG_DIR, base) == []
    extra = run_overrides(CONFIG_DIR, [*base, "optim.lr=0.005", "trainer.clip=1"])
    folder = f"{tmp_path}/coco/demo_coco_deepo2p/optim.lr=0.005,trainer.clip=1"
    assert extra == [
        "run_name='demo_coco_deepo2p/optim.lr=0.005,trainer.clip=1'",
        f"run_dir='{folder}'",
    ]
    cfg = _compose([*base, "optim.lr=0.005", "trainer.clip=1", *extra])
    assert cfg.run_dir == folder and cfg.optim.lr == 0.005  # Hydra reads them back
    assert run_overrides(CONFIG_DIR, [*base, "run_name=demo_coco_deepo2p", "optim.lr=1"]) == []
    assert run_overrides(CONFIG_DIR, ["-m", *base, "optim.lr=0.1,0.2"]) == []  # sweep.py names
    with pytest.raises(ConfigError, match="optim.lr='abc'"):
        run_overrides(CONFIG_DIR, [*base, "optim.lr=abc"])


@pytest.mark.parametrize(
    "swept, name",
    [
        ({"optim.lr"}, "table1_deepo2p/optim.lr=0.01"),
        ({"optim.lr", "trainer.workers", "experiment"}, "table1_deepo2p/optim.lr=0.01"),
        ({"experiment"}, "table1_deepo2p"),  # the rows are named already
        ({"optim.lr", "run_name"}, "table1_deepo2p"),
        ({"trainer.channels_last"}, "table1_deepo2p/trainer.channels_last=true"),  # own folders
    ],
)
def test_sweep_job_names_come_from_the_schema(monkeypatch, swept, name):
    from types import SimpleNamespace

    from matbackprop.engine import sweep

    task = ["experiment=table1_deepo2p", "optim.lr=0.01", "trainer.workers=0"]
    task += ["trainer.channels_last=true", "data.root=/d"]
    hc = SimpleNamespace(sweep=SimpleNamespace(dir="unused"), overrides=SimpleNamespace(task=task))
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    monkeypatch.setattr(sweep.HydraConfig, "get", staticmethod(lambda: hc))
    monkeypatch.setattr(sweep, "swept_keys", lambda _: swept)
    cfg = _compose(["experiment=table1_deepo2p"])
    assert sweep.name_sweep_job(cfg).run_name == name
