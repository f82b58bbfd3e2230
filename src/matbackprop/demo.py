"""The demo (``make demo``): both paper experiments on built-in synthetic data, on CPU.

    python -m matbackprop.demo            # a few minutes on a 2-core CPU
    python -m matbackprop.demo --seed 1   # another synthetic set and initialisation

COCO part (DeepO2P, SPEC §3–§4): a fresh synthetic MSCOCO-format set (4 texture classes with
the same mean colour, different second-order statistics) under ``outputs/demo/data/``; the
first-order baseline (tiny conv trunk -> masked average pooling -> linear) and DeepO2P (the
same trunk -> masked log-covariance pooling -> linear) trained through the real pipeline
(``conf/experiment/demo_coco_{avgpool,deepo2p}.yaml``: same data, optimiser, schedule and
epochs), twice: end to end, and with the trunk frozen at its random initialisation (only the
pooling head learns: what the pooling itself adds). Validation errors per epoch, side by side.

BSDS part (DeepNCut, SPEC §5–§6): a fresh synthetic BSDS500-layout set; covering ODS / OIS of
the untrained DeepNCut features (the exact initialisation training starts from, scored by
``matbackprop.evaluate``) next to the same model trained end to end through the
normalized-cuts layer (``conf/experiment/demo_bsds_deepncut.yaml``).
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


def demo_config(name: str, out: Path, seed: int, epochs: int | None, logger: str | None, extra=()):
    """Compose ``experiment=demo_coco_<name>`` with the demo's folders and seed."""
    overrides = [
        *extra,
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


def _coco_variant(out, seed, epochs, logger, frozen: bool) -> dict[str, list[float]]:
    curves = {}
    for name, label in MODELS.items():
        extra = ["model.freeze_trunk=true", f"run_name=demo_coco_{name}_frozen"] if frozen else []
        print(
            f"\n=== {label}{' (frozen trunk)' if frozen else ''}: python -m matbackprop.train "
            f"experiment=demo_coco_{name} {' '.join(extra)}"
        )
        cfg = demo_config(name, out, seed, epochs, logger, extra)
        result = run(cfg)
        curves[name] = [float(r["val_error"]) for r in read_csv(result.run_dir / "metrics.csv")]
    return curves


def run_coco_demo(
    out: Path, seed: int = 0, epochs: int | None = None, logger: str | None = None
) -> dict:
    """Train both models end to end and with a frozen trunk, print the comparison; returns
    ``{variant: {model: final val error}}``."""
    stale = [out / "data"] + [
        out / "coco" / f"demo_coco_{m}{s}" for m in MODELS for s in ("", "_frozen")
    ]
    for path in stale:
        if path.exists():
            shutil.rmtree(path)  # demo-owned folders: start fresh
    t0, finals = time.time(), {}
    for variant, frozen in (("end to end", False), ("frozen random trunk", True)):
        curves = _coco_variant(out, seed, epochs, logger, frozen)
        cfg = demo_config("avgpool", out, seed, epochs, logger)
        uniform, majority = chance_levels(cfg)
        k = cfg.data.synthetic.num_classes
        print(
            f"\nSynthetic COCO regions ({k} texture classes, one mean colour), {variant}, "
            f"val error % (seed {seed}):"
        )
        print(f"{'epoch':>6}  " + "  ".join(f"{MODELS[m]:>24}" for m in MODELS))
        for e in range(len(curves["avgpool"])):
            print(f"{e + 1:>6}  " + "  ".join(f"{curves[m][e]:>24.1f}" for m in MODELS))
        finals[variant] = {m: curves[m][-1] for m in MODELS}
        print(f"{'final':>6}  " + "  ".join(f"{finals[variant][m]:>24.1f}" for m in MODELS))
        print(f"chance: {uniform:.1f} (uniform guess), {majority:.1f} (majority class)")
    print(f"[demo] COCO part took {time.time() - t0:.0f}s; run folders under {out / 'coco'}")
    return finals


def run_bsds_demo(out: Path, seed: int = 0, logger: str | None = None) -> dict:
    """Untrained vs trained DeepNCut features on synthetic BSDS; returns their summaries."""
    from matbackprop.evaluate import evaluate

    run_dir = out / "bsds" / "demo_bsds_deepncut"
    for path in (
        out / "data" / "bsds_synthetic",
        run_dir,
        run_dir.with_name(run_dir.name + "_untrained"),
    ):
        if path.exists():
            shutil.rmtree(path)
    overrides = [
        "experiment=demo_bsds_deepncut",
        f"output_root={out}",
        f"data.root={out / 'data' / 'bsds_synthetic'}",
        f"trainer.seed={seed}",
        f"data.synthetic.seed={seed}",
    ]
    if logger is not None:
        overrides.append(f"logger={logger}")
    t0 = time.time()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        untrained = compose(
            config_name="bsds",
            overrides=[*overrides, "trainer.epochs=0", "run_name=demo_bsds_deepncut_untrained"],
        )
        trained = compose(config_name="bsds", overrides=overrides)
    print(
        "\n=== DeepNCut, untrained: python -m matbackprop.evaluate --config-name bsds "
        "experiment=demo_bsds_deepncut trainer.epochs=0"
    )
    before = evaluate(untrained)
    print(
        "\n=== DeepNCut, trained end to end: python -m matbackprop.train --config-name bsds "
        "experiment=demo_bsds_deepncut"
    )
    run(trained)
    after = {
        k: float(v)
        for k, v in read_csv(run_dir / "metrics.csv")[-1].items()
        if k.startswith("val_")
    }
    n = trained.data.synthetic
    print(
        f"\nSynthetic BSDS ({n.n_train} train / {n.n_val} val images, {n.n_humans} humans each), "
        f"region benchmark on val (seed {seed}):"
    )
    keys = [
        ("val_cover_ods", "covering ODS"),
        ("val_cover_ois", "covering OIS"),
        ("val_pri_ods", "PRI ODS"),
        ("val_vi_ods", "VI ODS (lower is better)"),
    ]
    print(f"{'':>26}  {'untrained features':>20}  {'trained DeepNCut':>18}")
    for key, label in keys:
        print(f"{label:>26}  {before[key]:>20.3f}  {after[key]:>18.3f}")
    print(
        f"[demo] BSDS part took {time.time() - t0:.0f}s; segmentations in {run_dir / 'segs'}, "
        f"overlays in {run_dir / 'overlays'}"
    )
    return {"untrained": before, "trained": after}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="demo folder")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    parser.add_argument("--logger", default=None, help="wandb | none (default: the config's)")
    args = parser.parse_args(argv)
    t0 = time.time()
    run_coco_demo(args.out.resolve(), args.seed, args.epochs, args.logger)
    run_bsds_demo(args.out.resolve(), args.seed, args.logger)
    print(f"\n[demo] done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
