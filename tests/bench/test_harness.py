"""The bench harness times the real training step: OptimStep's clipping and non-finite check
act on what it times, and the figures come back as data (no timing assertions)."""

import math

import pytest
import torch

from matbackprop.bench.harness import Timing, add_ratio, check_device, time_call, write_rows
from matbackprop.bench.real_step import build_step, compose_row
from matbackprop.errors import ConfigError, DivergedError

CPU = torch.device("cpu")
TINY = [  # the demo's own (synthetic) data, smaller
    "data.synthetic.n_train=12",
    "data.synthetic.n_val=2",
    "data.synthetic.image_size=[64,64]",
    "trainer.batch_size=4",
]


def _step(tmp_path, *over):
    cfg = compose_row("demo_coco_deepo2p", [*TINY, *over], work=tmp_path)
    torch.manual_seed(0)
    return build_step(cfg, CPU)


def _grad_norm(module):
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return torch.cat(grads).norm().item()


def test_the_timed_step_is_optim_step_with_the_configured_clip(tmp_path):
    clipped = _step(tmp_path, "trainer.clip=0.001")
    assert clipped.cfg.trainer.clip == 0.001 and clipped.optim_step.clip == 0.001
    t = time_call(clipped, CPU, steps=2, warmup=1)
    assert isinstance(t, Timing) and len(t.times) == 2 and t.median > 0 and t.peak_mib is None
    assert t.last.grad_norm > 0.01  # the norm before clipping, as StepResult reports it
    assert _grad_norm(clipped.module) == pytest.approx(0.001, rel=1e-3)  # what SGD applied

    free = _step(tmp_path, "trainer.clip=null")
    r = time_call(free, CPU, steps=1, warmup=0).last
    assert math.isinf(free.optim_step.clip)
    assert _grad_norm(free.module) == pytest.approx(r.grad_norm, rel=1e-4)  # not clipped


def test_a_non_finite_loss_raises_diverged_through_the_bench_path(tmp_path):
    step = _step(tmp_path)
    before = [p.detach().clone() for p in step.module.parameters()]
    step.batch["image"][0] = float("nan")  # a NaN image in the real batch
    with pytest.raises(DivergedError, match="bench step"):
        time_call(step, CPU, steps=1, warmup=0)
    after = list(step.module.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the optimizer never stepped


def test_checks_and_data_helpers(tmp_path):
    with pytest.raises(ConfigError, match="needs CUDA"):
        check_device("cpu", "16")
    with pytest.raises(ConfigError, match="--precision"):
        check_device("cpu", "fp8")
    with pytest.raises(ConfigError, match="--steps"):
        time_call(lambda: None, CPU, steps=0)
    rows = [dict(model="AlexNet", s=2.0), dict(model="DeepO2P", s=3.0, extra=1)]
    add_ratio(rows, "s", "model", "AlexNet", "ratio")
    assert [r["ratio"] for r in rows] == [1.0, 1.5]
    path = write_rows(rows, tmp_path / "x.csv")
    assert path.read_text().splitlines()[0] == "model,s,ratio,extra"
