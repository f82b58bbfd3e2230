"""Every experiment config composes, says what the paper row needs, and trains one tiny epoch."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from matbackprop.engine.records import read_csv
from matbackprop.results.paper import TABLES
from matbackprop.train import CONFIG_DIR, run
from tests.engine.coco_tiny import compose_coco, tiny_overrides

ROW = TABLES["table1"]["experiments"]  # experiment -> paper row name (the one list)
TABLE1 = {
    "table1_alexnet": (ROW["table1_alexnet"], "alexnet", True),
    "table1_alexnet_s": (ROW["table1_alexnet_s"], "alexnet", False),
    "table1_deepo2p": (ROW["table1_deepo2p"], "deepo2p", True),
    "table1_deepo2p_s": (ROW["table1_deepo2p_s"], "deepo2p", False),
    "table1_deepo2p_fc": (ROW["table1_deepo2p_fc"], "deepo2p_fc", True),
    "table1_deepo2p_fc_s": (ROW["table1_deepo2p_fc_s"], "deepo2p_fc", False),
}
EXTRA = {"table1_deepo2p_bn": (ROW["table1_deepo2p_bn"], "deepo2p", True)}
DEMOS = ("demo_coco_avgpool", "demo_coco_deepo2p")
EXPERIMENTS = sorted([*TABLE1, *EXTRA, *DEMOS])


def test_experiment_files_are_the_expected_ones():
    found = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    assert set(EXPERIMENTS) <= found


@pytest.mark.parametrize("name", sorted([*TABLE1, *EXTRA]))
def test_table1_configs(name):
    row, arch, pretrained = {**TABLE1, **EXTRA}[name]
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


def _plain(overrides):
    return OmegaConf.to_container(compose_coco(overrides), resolve=True)


@pytest.mark.parametrize("region", [None, "segment"])
def test_table1_rows_share_one_data_config_and_region_choice(region):
    """Every Table 1 row (and the extra row) sees the same data, the same region information
    (box by default: no mask anywhere; region=segment: mean fill + mask-weighted pooling for
    every row), the paper's optimiser settings and no descriptor BatchNorm."""
    over = [f"region={region}"] if region else []
    cfgs = {n: _plain([f"experiment={n}", *over]) for n in [*TABLE1, *EXTRA]}
    first = cfgs["table1_alexnet"]
    for name, cfg in cfgs.items():
        assert cfg["data"] == first["data"], name
        assert cfg["data"]["region"] == (region or "box")
        assert cfg["data"]["mean_fill"] is (region == "segment"), name
        assert cfg["model"]["use_mask"] is (region == "segment"), name
        assert cfg["data"]["mask_grid"] == "receptive"
        assert cfg["eval"] == first["eval"] and cfg["eval"]["monitor_items"] == 10000
        if name in TABLE1 and cfg["model"]["arch"] != "alexnet":
            assert cfg["model"]["head_norm"] == "none", name  # the paper's heads
    assert cfgs["table1_deepo2p_bn"]["model"]["head_norm"] == "batchnorm"
    assert cfgs["table1_deepo2p_bn"]["paper"]["extra"] is True
    # the extra row is table1_deepo2p plus the normalisation, nothing else
    bn, plain = cfgs["table1_deepo2p_bn"], cfgs["table1_deepo2p"]
    assert {k: v for k, v in bn["model"].items() if k != "head_norm"} == {
        k: v for k, v in plain["model"].items() if k != "head_norm"
    }
    assert bn["optim"] == plain["optim"] and bn["trainer"] == plain["trainer"]


def test_table1_heads_built_from_the_configs():
    """DeepO2P-FC's stack has dropout after relu6 and relu7; DeepO2P has none, no norm."""
    from matbackprop.models.build import build_model

    tiny = ["model.trunk=tiny", "model.pretrained=false", "model.fc_dim=16"]
    fc = build_model(compose_coco(["experiment=table1_deepo2p_fc", *tiny]).model, 3)
    kinds = [type(m).__name__ for m in fc.head]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert fc.head[2].p == fc.head[5].p == 0.5
    plain = build_model(compose_coco(["experiment=table1_deepo2p", *tiny[:2]]).model, 3)
    assert type(plain.norm).__name__ == "Identity" and plain.head.p == 0.0
    assert plain.use_mask is False


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
