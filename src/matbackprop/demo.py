"""The demo: first-order vs second-order (DeepO2P) pooling on synthetic COCO regions, on CPU.

    python -m matbackprop.demo            # = make demo; a few minutes on a laptop CPU
    python -m matbackprop.demo --seed 1   # another synthetic set and initialisation

1. writes a fresh synthetic MSCOCO-format set (4 texture classes with the same mean colour,
   different second-order statistics) under ``outputs/demo/data/``;
2. trains the first-order baseline (tiny conv trunk -> masked average pooling -> linear) and
   DeepO2P (the same trunk -> masked log-covariance pooling -> linear), both through the real
   pipeline (``conf/experiment/demo_coco_{avgpool,deepo2p}.yaml``: same data, optimiser,
   schedule and epochs), run folders under ``outputs/demo/coco/``;
3. prints both validation errors per epoch, side by side, with the chance level.

The BSDS (DeepNCut) part is a separate hook, :func:`run_bsds_demo`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from matbackprop.engine.records import read_csv
from matbackprop.train import CONFIG_DIR, run

MODELS = {"avgpool": "first-order (avg pool)", "deepo2p": "DeepO2P (log-cov)"}


def demo_config(name: str, out: Path, seed: int, epochs: int | None, logger: str | None):
    """Compose ``experiment=demo_coco_<name>`` with the demo's folders and seed."""
    overrides = [
        f"experiment=demo_coco_{name}",
        f"output_root={out}",
        f"data.root={out / 'data'}",
        f"trainer.seed={seed}",
        f"data.synthetic.seed={seed}",
    ]
    if epochs is not None:
        overrides.append(f"trainer.epochs={epochs}")
    if logger is not None:
        overrides.append(f"logger={logger}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="coco", overrides=overrides)


def chance_levels(cfg) -> tuple[float, float]:
    """(uniform-guess error, majority-class error) in % on the demo's val set."""
    import json

    val = json.loads((Path(cfg.data.root) / cfg.data.val_ann).read_text())
    counts: dict[int, int] = {}
    for ann in val["annotations"]:
        if not ann.get("iscrowd", 0) and ann["area"] >= cfg.data.min_area:
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    n, k = sum(counts.values()), len(val["categories"])
    return 100.0 * (1 - 1 / k), 100.0 * (1 - max(counts.values()) / n)


def run_coco_demo(
    out: Path, seed: int = 0, epochs: int | None = None, logger: str | None = None
) -> dict:
    """Train both models and print the comparison; returns ``{name: final val error}``."""
    for stale in [out / "data", *[out / "coco" / f"demo_coco_{m}" for m in MODELS]]:
        if stale.exists():
            shutil.rmtree(stale)  # demo-owned folders: start fresh
    curves, t0 = {}, time.time()
    for name, label in MODELS.items():
        print(f"\n=== {label}: python -m matbackprop.train experiment=demo_coco_{name}")
        cfg = demo_config(name, out, seed, epochs, logger)
        result = run(cfg)
        curves[name] = [float(r["val_error"]) for r in read_csv(result.run_dir / "metrics.csv")]
    uniform, majority = chance_levels(cfg)
    k = cfg.data.synthetic.num_classes
    print(
        f"\nSynthetic COCO regions ({k} texture classes, one mean colour), val error % (seed {seed}):"
    )
    print(f"{'epoch':>6}  " + "  ".join(f"{MODELS[m]:>24}" for m in MODELS))
    for e in range(len(curves["avgpool"])):
        print(f"{e + 1:>6}  " + "  ".join(f"{curves[m][e]:>24.1f}" for m in MODELS))
    final = {m: curves[m][-1] for m in MODELS}
    print(f"{'final':>6}  " + "  ".join(f"{final[m]:>24.1f}" for m in MODELS))
    print(f"chance: {uniform:.1f} (uniform guess), {majority:.1f} (majority class)")
    print(f"[demo] COCO part took {time.time() - t0:.0f}s; run folders under {out / 'coco'}")
    return final


def run_bsds_demo(out: Path, seed: int = 0) -> None:
    """Hook for the DeepNCut (BSDS) demo."""
    print("\nBSDS demo: coming (DeepNCut pipeline not yet built)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="demo folder")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    parser.add_argument("--logger", default=None, help="wandb | none (default: the config's)")
    args = parser.parse_args(argv)
    run_coco_demo(args.out.resolve(), args.seed, args.epochs, args.logger)
    run_bsds_demo(args.out.resolve(), args.seed)


if __name__ == "__main__":
    main()
