"""The paper's tables in one place: rows, their experiment configs, numbers and provenance notes.

Everything else (``make tables``, the HTML pages, the W&B views, ``reproduce.py``, the logger's
W&B groups, the config tests) reads the rows from here. Paper numbers: SPEC §4 ("recalled,
unverified"); the paper's Table 2 values could not be recovered.
"""

from __future__ import annotations

from typing import Any

DEMO = "demo"  # the W&B group / results section of the built-in synthetic-data runs

# `metrics`: key in final.json / metrics.csv -> (label, "min" | "max": which is better).
# `rows`: row name -> {metric key: paper value}. Runs whose config names a row not listed here
# (``paper.extra: true``) are appended as extra rows. `experiments`: conf/experiment/<name>
# -> row, in the order reproduce.py runs them.
TABLES: dict[str, dict[str, Any]] = {
    "table1": {
        "title": "Table 1: MSCOCO region classification, top-1 error on val (%)",
        "note": "Paper numbers as recalled in SPEC §4 (recalled, unverified). SIFT-O2P is not "
        "reproduced (not a deep model). Ours: the whole val set scored once on the checkpoint "
        "named in the table (best.pt = best epoch on the fixed monitor subset of val, "
        "`eval.monitor_items`; runs without final.json: the last epoch's monitor score). "
        "Trunk: torchvision's AlexNet (64/192/384/256/256 channels, no LRN), not the original "
        "Caffe one.",
        "metrics": {"val_error": ("val error %", "min")},
        "rows": {
            "SIFT-O2P": {"val_error": 36.4},
            "AlexNet": {"val_error": 25.3},
            "AlexNet(S)": {"val_error": 35.3},
            "DeepO2P": {"val_error": 28.6},
            "DeepO2P(S)": {"val_error": 32.4},
            "DeepO2P-FC": {"val_error": 25.2},
            "DeepO2P-FC(S)": {"val_error": 28.9},
        },
        "experiments": {
            "table1_alexnet": "AlexNet",
            "table1_alexnet_s": "AlexNet(S)",
            "table1_deepo2p": "DeepO2P",
            "table1_deepo2p_s": "DeepO2P(S)",
            "table1_deepo2p_fc": "DeepO2P-FC",
            "table1_deepo2p_fc_s": "DeepO2P-FC(S)",
            # extra row, not in the paper (descriptor BatchNorm): runs last
            "table1_deepo2p_bn": "DeepO2P + descriptor BN (extra)",
        },
    },
    "table2": {
        "title": "Table 2: BSDS segmentation, region benchmark on the test split (all humans)",
        "note": "The paper's Table 2 values could not be read (SPEC gives none): ours only. "
        "Rows as in the paper: NCut on non-finetuned ImageNet features (no training, "
        "`python -m matbackprop.evaluate`) and DeepNCut trained end to end, under BSDS500 "
        "(train+val / 200 test) and BSDS300 (200 train / 100 test). Epochs and best.pt are "
        "chosen on held-out training images (`data.holdout`); the test split is scored once "
        "per checkpoint. Covering ODS / OIS / Best, PRI and VI (bits, lower is better) at ODS.",
        "digits": 3,
        "metrics": {
            "val_cover_ods": ("cover ODS", "max"),
            "val_cover_ois": ("cover OIS", "max"),
            "val_cover_best": ("cover Best", "max"),
            "val_pri_ods": ("PRI", "max"),
            "val_vi_ods": ("VI", "min"),
        },
        "rows": {
            "NCut, AlexNet relu3 (not fine-tuned)": {},
            "NCut, AlexNet relu4 (not fine-tuned)": {},
            "NCut, AlexNet relu5 (not fine-tuned)": {},
            "DeepNCut, AlexNet relu5 (end to end)": {},
            "NCut, VGG-16 relu4_3+relu5_3 (not fine-tuned)": {},
            "DeepNCut, VGG-16 relu4_3+relu5_3 (end to end)": {},
        },
        # both protocols: BSDS500 (train+val / test) and BSDS300 (table2_bsds300_*)
        "experiments": {
            f"table2_{p}{name}": row
            for p in ("", "bsds300_")
            for name, row in {
                "ncut_alexnet_relu3": "NCut, AlexNet relu3 (not fine-tuned)",
                "ncut_alexnet_relu4": "NCut, AlexNet relu4 (not fine-tuned)",
                "ncut_alexnet_relu5": "NCut, AlexNet relu5 (not fine-tuned)",
                "ncut_vgg16": "NCut, VGG-16 relu4_3+relu5_3 (not fine-tuned)",
                "deepncut_alexnet": "DeepNCut, AlexNet relu5 (end to end)",
                "deepncut_vgg16": "DeepNCut, VGG-16 relu4_3+relu5_3 (end to end)",
            }.items()
        },
    },
}
TABLE_IDS = tuple(TABLES)  # the W&B groups of the paper rows (with DEMO)
# the task each table's runs belong to (the demo section of a page shows that task's demos)
TASK_OF_TABLE = {"table1": "coco", "table2": "bsds"}
# conf/experiment/<name> -> paper row name, every table
EXPERIMENT_ROWS: dict[str, str] = {
    e: r for t in TABLES.values() for e, r in t["experiments"].items()
}

# Known sizes of the real data sets, for planning (reproduce.py --dry-run) without the data.
# COCO 2014: instance annotations in instances_{train,val}2014.json (82,783 / 40,504 images;
# cocodataset.org, Lin et al. 2014); crowd, degenerate and (train only) small instances are
# dropped when indexing, so steps per epoch from these are an upper bound.
# BSDS500: 200 train / 100 val / 200 test images (Arbelaez et al., TPAMI 2011; the same counts
# scripts/download_bsds.py checks); BSDS300 = 200 train / 100 test (the BSDS500 train+val).
DATA_SIZES: dict[str, dict[str, int]] = {
    "coco": {"train": 604_907, "val": 291_875},
    "bsds500": {"train": 200, "val": 100, "test": 200, "trainval": 300},
    "bsds300": {"train": 200, "test": 100},
}
DATA_SOURCES = {
    "coco": "annotation counts of instances_{train,val}2014.json (cocodataset.org); "
    "an upper bound: crowd / degenerate / small instances are dropped when indexing",
    "bsds500": "Arbelaez et al., TPAMI 2011 (scripts/download_bsds.py checks these counts)",
    "bsds300": "Martin et al., ICCV 2001 (the BSDS500 train+val images)",
}


def table_of_run(cfg: dict[str, Any]) -> str | None:
    """The paper table a run's config belongs to (``paper.table``), or None."""
    return (cfg.get("paper") or {}).get("table")


def is_demo(cfg: dict[str, Any]) -> bool:
    """A run of the built-in synthetic data (``demo_*`` experiments, ``*_synthetic`` data)."""
    name = str((cfg.get("data") or {}).get("name") or "")
    return not table_of_run(cfg) and (
        name.endswith("_synthetic") or str(cfg.get("run_name") or "").startswith(DEMO)
    )
