"""Every experiment config composes, says what the paper row needs, and trains one tiny epoch."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from matbackprop.engine.records import read_csv
from matbackprop.train import CONFIG_DIR, run
from tests.engine.coco_tiny import compose_coco, tiny_overrides

TABLE1 = {
    "table1_alexnet": ("AlexNet", "alexnet", True),
    "table1_alexnet_s": ("AlexNet(S)", "alexnet", False),
    "table1_deepo2p": ("DeepO2P", "deepo2p", True),
    "table1_deepo2p_s": ("DeepO2P(S)", "deepo2p", False),
    "table1_deepo2p_fc": ("DeepO2P-FC", "deepo2p_fc", True),
    "table1_deepo2p_fc_s": ("DeepO2P-FC(S)", "deepo2p_fc", False),
}
DEMOS = ("demo_coco_avgpool", "demo_coco_deepo2p")
EXPERIMENTS = sorted([*TABLE1, *DEMOS])


def test_experiment_files_are_the_expected_ones():
    found = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    assert set(EXPERIMENTS) <= found


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_configs(name):
    row, arch, pretrained = TABLE1[name]
    cfg = compose_coco([f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)  # everything resolves
    assert cfg.task == "coco" and cfg.run_name == name
    assert cfg.run_dir == f"outputs/coco/{name}"
    assert cfg.paper.table == "table1" and cfg.paper.row == row
    assert cfg.model.arch == arch and cfg.model.trunk == "alexnet"
    assert cfg.model.pretrained is pretrained
    assert cfg.data.name == "coco" and cfg.data.crop_size == 227
    assert cfg.trainer.batch_size == 100  # all methods (SPEC §4)
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.optim.new_lr_mult == 10 and cfg.optim.bias_lr_mult == 2
    if arch != "alexnet":
        assert cfg.model.pool_eps == 1e-3 and cfg.model.pool_dtype == "float64"


def test_demo_configs_differ_only_in_the_pooling():
    a, b = (OmegaConf.to_container(compose_coco([f"experiment={n}"]), resolve=True) for n in DEMOS)
    for key in ("data", "optim", "trainer"):
        assert a[key] == b[key], key
    assert a["model"]["trunk"] == b["model"]["trunk"] == "tiny"
    assert a["model"]["head_norm"] == b["model"]["head_norm"]
    assert (a["model"]["arch"], b["model"]["arch"]) == ("avgpool", "deepo2p")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_one_tiny_epoch(name, tmp_path_factory):
    data_root = tmp_path_factory.getbasetemp() / "coco_tiny"  # shared; generated once
    run_dir = tmp_path_factory.mktemp(name)
    cfg = compose_coco([f"experiment={name}", *tiny_overrides(run_dir, data_root)])
    result = run(cfg)
    rows = read_csv(run_dir / "metrics.csv")
    assert len(rows) == 1 and result.epochs_done == 1
    assert 0.0 <= float(rows[0]["val_error"]) <= 100.0
    assert float(rows[0]["train_loss"]) > 0
    assert (run_dir / "last.pt").is_file() and (run_dir / "config.yaml").is_file()
    assert OmegaConf.load(run_dir / "config.yaml").model.arch == cfg.model.arch
