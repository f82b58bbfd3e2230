"""matbackprop.bench.plan: seconds per real step of rows (--time-steps) and wall estimates."""

import pytest
import torch

from matbackprop.bench.plan import CPU_MAX_BATCH, estimate, time_rows
from matbackprop.errors import ConfigError

SMALL_COCO = ["data.synthetic.n_train=12", "data.synthetic.n_val=2"]  # demo image/crop sizes
SMALL_BSDS = ["data.synthetic.n_train=9", "data.synthetic.n_val=1", "data.synthetic.n_test=1"]


def test_time_two_steps_of_the_demo_rows(tmp_path):
    rows = [
        {"experiment": "demo_coco_deepo2p", "overrides": SMALL_COCO, "table": "demo"},
        {"experiment": "demo_bsds_deepncut", "overrides": SMALL_BSDS},
        "table2_ncut_alexnet_relu5",  # no training: nothing built, nothing timed
    ]
    coco, bsds, ncut = time_rows(rows, 2, torch.device("cpu"), work=tmp_path)
    assert coco["table"] == "demo" and coco["steps_timed"] == 2  # the row's own keys are kept
    assert coco["batch"] == 32 and coco["timed_batch"] == CPU_MAX_BATCH and coco["scaled"]
    assert coco["s_per_step"] == pytest.approx(coco["timed_s_per_step"] * 32 / CPU_MAX_BATCH)
    assert coco["input"] == "64x64" and "scaled x4" in coco["note"]
    assert bsds["batch"] == bsds["timed_batch"] == 4 and not bsds["scaled"]
    assert bsds["input"] == "144x96" and bsds["s_per_step"] > 0
    assert ncut["s_per_step"] is None and "epochs=0" in ncut["note"]
    with pytest.raises(ConfigError, match="time-steps"):
        time_rows(rows, 0, torch.device("cpu"))


def test_estimate_is_linear_in_gpus_and_nodes():
    assert estimate(6000, 10, 0.5) == 30000.0
    assert estimate(6000, 10, 0.5, gpus=8) == 3750.0
    assert estimate(6000, 10, 0.5, gpus=4, nodes=2) == 3750.0
    with pytest.raises(ConfigError, match="gpus"):
        estimate(6000, 10, 0.5, gpus=0)
