"""Training at scale, for real: torchrun DDP (gloo, 2 processes), kill -9 and SIGTERM inside an
epoch then resume, Hydra sweeps through submitit_local, the device refusal.

Every run here is the tiny synthetic COCO set (tests/engine/coco_tiny.py) in a subprocess with
one thread, so that two runs compare bitwise. Signal tests wait for a log line, never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from matbackprop.engine.checkpoint import load_checkpoint
from matbackprop.engine.distributed import resolve_device, shard_batches
from matbackprop.engine.records import read_csv
from matbackprop.errors import EXIT_PREEMPTED, ConfigError
from tests.engine.coco_tiny import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "WANDB_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("scale") / "coco_tiny"


def overrides(run_dir: Path, data_root: Path, *extra: str) -> list[str]:
    """The demo DeepO2P config on 32 tiny regions: 8 steps of batch 4 per epoch, 2 epochs."""
    return [
        "experiment=demo_coco_deepo2p",
        *tiny_overrides(run_dir, data_root),
        "data.synthetic.n_train=32",
        "trainer.epochs=2",
        *extra,
    ]


def train(args: list[str], module: str = "matbackprop.train", timeout: float = 300, **kw):
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env={**ENV, **kw.pop("env", {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def comparable(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.endswith("time_s") and k != "changed"}
        for r in read_csv(run_dir / "metrics.csv")
    ]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def start_slow(args: list[str], **env: str) -> subprocess.Popen:
    """The trainer with each step slowed down (tests/engine/slow_train.py), output piped;
    ``env``: e.g. MATBACKPROP_TEST_PAUSE_AT_STEP (the wrapper pauses there until signalled)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "engine" / "slow_train.py"), *args],
        cwd=ROOT,
        env={**ENV, "MATBACKPROP_TEST_STEP_S": "0.1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 240) -> list[str]:
    seen, t0 = [], time.time()
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
        assert time.time() - t0 < timeout, "".join(seen)
    raise AssertionError(f"{needle!r} never printed:\n" + "".join(seen))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """One uninterrupted single-process run (every other run compares with it)."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = train(overrides(run_dir, data_root, "trainer.checkpoint_every=2"))
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_shard_batches_weights_make_the_global_mean():
    batches = [[0, 1, 2, 3], [4, 5, 6], [7]]
    parts = [shard_batches(batches, r, 2) for r in range(2)]
    assert [b for b, _ in parts[0]] == [[0, 1], [4]] and [b for b, _ in parts[1]] == [
        [2, 3],
        [5, 6],
    ]
    # mean over ranks of weight × local mean == global mean, for any per-item values
    x = torch.arange(8.0) ** 2
    for j, full in enumerate(batches[:2]):
        local = [w * x[b].mean() for b, w in (parts[0][j], parts[1][j])]
        assert torch.isclose(sum(local) / 2, x[full].mean())
    assert shard_batches(batches, 0, 1) == [(b, 1.0) for b in batches]


def torchrun(run_dir: Path, data_root: Path, *extra: str, nproc: int = 2):
    args = ["--standalone", f"--nproc_per_node={nproc}", "-m", "matbackprop.train",
            *overrides(run_dir, data_root, "trainer.checkpoint_every=2", *extra)]  # fmt: skip
    proc = train(args, module="torch.distributed.run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory, data_root):
    """One uninterrupted run of 2 gloo processes."""
    run_dir = tmp_path_factory.mktemp("ddp") / "ddp"
    torchrun(run_dir, data_root)
    return run_dir


def test_ddp_two_processes_equal_one_process(data_root, reference, ddp_reference):
    run_dir = ddp_reference
    one, two = read_csv(reference / "metrics.csv"), read_csv(run_dir / "metrics.csv")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-3)
        assert b["val_error"] == a["val_error"]
        assert float(b["val_loss"]) == pytest.approx(float(a["val_loss"]), rel=1e-3)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["finished"] and status["runtime"]["world_size"] == 2
    # only rank 0 wrote: one header + one row per epoch
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_ddp_resume_inside_an_epoch_keeps_the_epoch_metrics(tmp_path, data_root, ddp_reference):
    # 2 processes stop inside epoch 2 (step 4 of 8), then resume with 2 and with 1 process:
    # the partial epoch sums of every rank are saved, so epoch 2's train metrics are right
    cut = tmp_path / "cut"
    torchrun(cut, data_root, "trainer.max_steps=12")
    ckpt = load_checkpoint(cut / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (2, 4) and len(ckpt["sums"]) == 2
    one = tmp_path / "one"
    shutil.copytree(cut, one)
    torchrun(cut, data_root, "trainer.max_steps=null")  # 2 -> 2
    proc = train(overrides(one, data_root, "trainer.checkpoint_every=2"))  # 2 -> 1
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = read_csv(ddp_reference / "metrics.csv")
    assert comparable(cut) == comparable(ddp_reference)  # exact
    assert_same_weights(ddp_reference, cut)
    for a, b in zip(ref, read_csv(one / "metrics.csv")):
        for key in ("train_loss", "train_count_bad_items"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5), key


def test_kill9_inside_an_epoch_then_resume_is_bitwise(tmp_path, data_root, reference):
    run_dir = tmp_path / "killed"
    args = overrides(run_dir, data_root, "trainer.checkpoint_every=2")
    proc = start_slow(args)
    wait_for_line(proc, "checkpoint: epoch 1, step 4/")
    proc.kill()  # SIGKILL, wherever the run is now (a step, a write, ...)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] in (4, 6)  # inside epoch 1
    done = train(args)
    assert done.returncode == 0, done.stderr
    assert "resuming at epoch 1, step" in done.stdout
    assert_same_weights(reference, run_dir)
    assert comparable(reference) == comparable(run_dir)


def test_sigterm_checkpoints_exits_and_resume_is_bitwise(tmp_path, data_root, reference):
    run_dir = tmp_path / "preempted"
    args = overrides(run_dir, data_root, "trainer.checkpoint_every=100")
    # the 11th step is step 3 of epoch 2 (8 per epoch): the wrapper pauses inside it until the
    # signal has arrived, so the stop lands inside the epoch on any machine, loaded or not
    proc = start_slow(args, MATBACKPROP_TEST_PAUSE_AT_STEP="11")
    wait_for_line(proc, "[slow_train] paused at step 11")
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert time.time() - t0 < 30
    assert proc.returncode == EXIT_PREEMPTED, out
    assert "SIGTERM" in out and "checkpoint written" in out
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step_in_epoch"] == 3  # inside epoch 2, at the step
    status = json.loads((run_dir / "status.json").read_text())
    assert not status["finished"] and status["step_in_epoch"] == ckpt["step_in_epoch"]
    done = train(args)
    assert done.returncode == 0, done.stderr
    assert_same_weights(reference, run_dir)
    assert comparable(reference) == comparable(run_dir)


def test_submitit_local_sweep_gives_one_finished_folder_per_job(tmp_path, data_root):
    out = tmp_path / "out"
    base = [o for o in overrides(out / "x", data_root) if not o.startswith("run_dir=")]
    args = ["-m", "hydra/launcher=local", f"output_root={out}", *base, "optim.lr=0.01,0.02"]
    proc = train(args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = sorted(p.name for p in (out / "coco" / "demo_coco_deepo2p").iterdir())
    assert runs == ["optim.lr=0.01", "optim.lr=0.02"]
    for name in runs:
        status = json.loads((out / "coco" / "demo_coco_deepo2p" / name / "status.json").read_text())
        assert status["finished"] and status["epochs_done"] == 2
    assert "[sweep] 2 job(s): 2 completed, 0 failed" in proc.stdout
    # each job's monitored metric and changed override, in jobs.jsonl and the report, by best
    jobs = [
        json.loads(x) for x in next(out.glob("coco/multirun/*/jobs.jsonl")).read_text().splitlines()
    ]
    assert sorted(j["changed"][0] for j in jobs) == ["optim.lr=0.01", "optim.lr=0.02"]
    assert all(j["monitor"] == "val_error" and isinstance(j["best"], float) for j in jobs)
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith("[sweep] ok")]
    best = [float(ln.split(" best ")[1].split()[0]) for ln in shown]
    assert len(shown) == 2 and best == sorted(best) and "last" in shown[0]


@pytest.mark.slow
def test_sigterm_to_a_local_sweep_stops_its_jobs_and_reports(tmp_path, data_root):
    from matbackprop.engine.sweep import _alive, _children

    out = tmp_path / "out"
    base = [o for o in overrides(out / "x", data_root) if not o.startswith("run_dir=")]
    args = ["-m", "hydra/launcher=local", f"output_root={out}", *base, "trainer.epochs=300",
            "optim.lr=0.01,0.02"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "matbackprop.train", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    runs = [out / "coco" / "demo_coco_deepo2p" / f"optim.lr={v}" for v in ("0.01", "0.02")]
    t0 = time.time()
    while not all((r / "metrics.csv").is_file() for r in runs):  # both jobs are training
        assert proc.poll() is None and time.time() - t0 < 300, proc.stdout.read()
        time.sleep(0.2)
    kids = _children(proc.pid)
    assert len(kids) >= 2  # the job processes
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_PREEMPTED, text
    assert "[sweep] 2 job(s): 0 completed, 0 failed, 2 stopped" in text, text
    assert text.count("[sweep] STOP") == 2
    for r in runs:  # each job checkpointed inside its run and is not finished
        status = json.loads((r / "status.json").read_text())
        assert not status["finished"] and (r / "last.pt").is_file()
    assert not [p for p in kids if _alive(p)]  # no orphans


def test_sweep_goes_on_after_a_failing_job_and_reports_it(tmp_path, data_root):
    out = tmp_path / "out"
    base = [o for o in overrides(out / "x", data_root) if not o.startswith("run_dir=")]
    args = ["-m", f"output_root={out}", *base, "trainer.epochs=1", "optim.lr=1e6,0.01"]
    proc = train(args)
    assert proc.returncode != 0  # Hydra re-raises the first failure after all jobs ran
    text = proc.stdout + proc.stderr
    assert "[sweep] 2 job(s): 1 completed, 1 failed" in text
    assert "diverged" in text.lower()
    ok = out / "coco" / "demo_coco_deepo2p" / "optim.lr=0.01" / "status.json"
    assert json.loads(ok.read_text())["finished"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without a GPU")
def test_no_silent_cpu_fallback_on_real_data(tmp_path):
    with pytest.raises(ConfigError, match="CUDA is not available.*TORCH_SPEC"):
        resolve_device("auto", real_data=True)
    assert resolve_device("auto", real_data=False).type == "cpu"  # synthetic data: fine
    assert resolve_device("cpu", real_data=True).type == "cpu"  # asked for explicitly
    proc = train([f"output_root={tmp_path}", "logger=none"])  # real COCO config
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "trainer.device=cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    if torch.version.cuda is not None:  # a CUDA build on a machine without a visible GPU
        assert "no GPU is visible" in proc.stderr and "install a CUDA build" not in proc.stderr
    # the missing data is reported in the same message (one rerun, not two)
    assert "Also, the data folder" in proc.stderr and "make data-coco" in proc.stderr
