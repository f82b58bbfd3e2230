"""SGD parameter groups and the per-epoch schedules against hand-computed values."""

import math

import pytest
import torch

from matbackprop.engine.optim import build_optimizer, build_scheduler
from matbackprop.models.backbones import Trunk
from matbackprop.models.o2p import DeepO2P


def _model(pretrained=True):
    trunk = Trunk(torch.nn.Conv2d(3, 4, 1), 4, pretrained=pretrained)
    return DeepO2P(trunk, num_classes=2)


def _lrs(opt):
    return {g["name"]: g["lr"] for g in opt.param_groups}


def test_optimizer_groups_and_momentum():
    opt = build_optimizer(_model(), dict(lr=0.001, momentum=0.9, weight_decay=5e-4))
    assert _lrs(opt) == pytest.approx(
        {"pretrained_weight": 0.001, "pretrained_bias": 0.002, "new_weight": 0.01, "new_bias": 0.02}
    )
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(_model(), dict(name="adam", lr=0.1))
    with pytest.raises(ValueError, match="optim.lr"):
        build_optimizer(_model(), dict(lr=0.0))


def _run(cfg, epochs):
    opt = build_optimizer(_model(), dict(lr=0.1, momentum=0.9, weight_decay=0.0))
    sched = build_scheduler(opt, cfg, epochs)
    seen = []
    for _ in range(epochs):
        seen.append(_lrs(opt)["new_weight"])  # base 0.1 × 10
        opt.step()
        sched.step()
    return seen


def test_step_schedule():
    assert _run(dict(schedule="step", step_size=2, gamma=0.1), 5) == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01]
    )


def test_cosine_schedule_with_floor():
    got = _run(dict(schedule="cosine", min_lr_mult=0.1), 4)
    want = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert got == pytest.approx(want)


def test_constant_and_unknown_schedule():
    assert _run(dict(schedule="constant"), 3) == pytest.approx([1.0, 1.0, 1.0])
    opt = build_optimizer(_model(), dict(lr=0.1))
    with pytest.raises(ValueError, match="optim.schedule"):
        build_scheduler(opt, dict(schedule="poly"), 3)
