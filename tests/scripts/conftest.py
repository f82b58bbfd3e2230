"""Tiny real training runs (W&B offline) shared by the dashboard and HTML-table tests."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tests.engine.bsds_tiny import BSDS_TINY as _BSDS_TINY
from tests.engine.coco_tiny import tiny_overrides

from matbackprop.train import CONFIG_DIR, run

BSDS_TINY = [*_BSDS_TINY, "trainer.log_every=1"]


def _compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="session")
def table_runs(tmp_path_factory) -> Path:
    """A tiny Table 1 row (DeepO2P) and Table 2 row (DeepNCut), 2 epochs each, trained with
    ``logger=wandb`` in offline mode: run folders (metrics.csv, tables/, W&B offline run)."""
    import wandb

    root = tmp_path_factory.mktemp("table_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_CONFIG_DIR", str(root / "wandb_cfg"))
        over = tiny_overrides(root / "coco" / "table1_deepo2p", root / "coco_data")
        coco = ["experiment=table1_deepo2p", *over, "logger=wandb", "trainer.log_every=1"]
        run(_compose("coco", [*coco, "trainer.epochs=2", "optim.schedule=cosine"]))
        bsds = ["experiment=table2_deepncut_alexnet", f"output_root={root}", *BSDS_TINY]
        run(_compose("bsds", [*bsds, "logger=wandb", "trainer.epochs=2", "trainer.eval_every=1"]))
        wandb.teardown()  # the service has written the offline runs out
    return root
