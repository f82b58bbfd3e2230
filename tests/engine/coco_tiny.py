"""Shared by the COCO pipeline tests: compose a config that trains in about a second."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from matbackprop.train import CONFIG_DIR


def tiny_overrides(run_dir: Path, data_root: Path) -> list[str]:
    """Tiny trunk, 32 px crops, 16 train / 8 val synthetic regions, batch 4, 1 epoch, no logger."""
    return [
        "data=coco_synthetic",
        f"data.root={data_root}",
        "data.synthetic.n_train=16",
        "data.synthetic.n_val=8",
        "data.synthetic.image_size=[64,64]",
        "data.crop_size=32",
        "data.max_side=28",
        "data.jitter=2",
        "data.mask_size=8",
        "model.trunk=tiny",
        "model.pretrained=false",
        "model.tiny_width=8",
        "model.tiny_out=6",
        "++model.fc_dim=16",
        "trainer.batch_size=4",
        "trainer.epochs=1",
        "trainer.workers=0",
        "trainer.device=cpu",
        "eval.eig_samples=2",
        "logger=none",
        f"run_dir={run_dir}",
    ]


def compose_coco(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="coco", overrides=overrides)
