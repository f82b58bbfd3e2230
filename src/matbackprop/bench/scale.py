"""What scaling out costs, as data: DDP overhead per step, and the mid-epoch checkpoint's time and size.

    row = ddp_step(world=2, threads=1, batch_size=32, steps=5)     # {"median_s": ..., ...}
    row = checkpoint_cost(Path("outputs/bench"))                   # {"seconds": ..., "mib": ...}

1. DDP overhead (CPU, gloo): the same global batch of 227×227 crops through the real step of
   ``table1_deepo2p_bn`` (AlexNet conv5 -> log-cov -> BN -> linear, random init), launched by
   ``torchrun`` as 1 process with T threads and as N processes with T / N threads each. Each
   process runs the trainer's path (``engine.distributed``): the process group from the torchrun
   environment, the task built on rank 0 first (``rank0_first``), synchronised BatchNorm +
   ``DistributedDataParallel`` (``wrap_model``), its contiguous part of the global batch with
   the loss weight (``shard_batches``), ``OptimStep`` (clip,
   non-finite all-reduce). Median seconds per step over ``steps`` after one warm-up step;
   rank 0 writes the figures to a JSON file that the caller reads back.
2. Checkpoint: ``last.pt`` of the real DeepO2P-FC row (AlexNet conv5 -> 32,896-d log-cov
   descriptor -> fc6 4096 -> fc7 4096 -> 80 classes; SGD momentum buffers filled by one real
   step), written with the trainer's atomic writer (temp file, fsync, rename): seconds and MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from matbackprop.bench.harness import time_call
from matbackprop.bench.real_step import WORK, build_step, build_task, compose_row
from matbackprop.engine import distributed as D
from matbackprop.engine.checkpoint import save_checkpoint, write_json_atomic

DDP_EXPERIMENT = "table1_deepo2p_bn"  # DeepO2P with descriptor BatchNorm: SyncBN is exercised
CKPT_EXPERIMENT = "table1_deepo2p_fc"


def ddp_step(
    world: int,
    threads: int,
    batch_size: int = 32,
    steps: int = 5,
    work: str | Path = WORK,
    timeout: float = 1800.0,
) -> dict:
    """Seconds per real step of the global batch over ``world`` gloo processes of ``threads``
    threads each (``torchrun --standalone``). Returns rank 0's figures: median_s, mean_s,
    min_s, times, loss, grad_norm, world, threads, batch_size.

    Raises:
        RuntimeError: a process failed (its output is in the message).
    """
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={world}", "-m", "matbackprop.bench.scale"]
        cmd += ["--threads", str(threads), "--batch-size", str(batch_size)]
        cmd += ["--steps", str(steps), "--work", str(Path(work).resolve()), "--json", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return json.loads(out.read_text())


def _ddp_child(args: argparse.Namespace) -> None:
    """One torchrun process of :func:`ddp_step`."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    D.init_distributed(device.type)
    rank, world = D.rank(), D.world_size()
    cfg = compose_row(DDP_EXPERIMENT, batch_size=args.batch_size, work=args.work)

    def wrap(module: nn.Module) -> tuple[nn.Module, nn.Module]:
        return D.wrap_model(module, device)  # SyncBatchNorm + DDP under torchrun, as the trainer

    task = D.rank0_first(build_task, cfg)  # rank 0 generates the data first, as the trainer
    [(mine, weight)] = D.shard_batches([task.train_batches(0)[0]], rank, world)  # global batch
    torch.manual_seed(0)
    step = build_step(cfg, device, wrap=wrap, indices=mine, task=task)
    step.weight = weight

    def one() -> object:
        D.barrier()
        return step()

    t = time_call(one, device, args.steps, warmup=1)
    if rank == 0:
        figures = dict(median_s=t.median, mean_s=t.mean, min_s=t.min, times=t.times)
        figures.update(loss=t.last.loss, grad_norm=t.last.grad_norm, world=world)
        figures.update(threads=args.threads, batch_size=args.batch_size)
        write_json_atomic(figures, args.json)
    D.destroy()


def checkpoint_cost(folder: str | Path, work: str | Path = WORK) -> dict:
    """Write ``last.pt`` of the DeepO2P-FC row after one real step (batch 2) into ``folder``
    (a temporary file there, removed): ``seconds`` (atomic write with fsync) and ``mib``."""
    torch.manual_seed(0)
    step = build_step(compose_row(CKPT_EXPERIMENT, batch_size=2, work=work), torch.device("cpu"))
    step()  # fills the momentum buffers (as large as the weights)
    state = {
        "model": step.module.state_dict(),
        "optimizer": step.optim_step.optimizer.state_dict(),
        "scaler": step.optim_step.scaler.state_dict(),
        "epoch": 0,
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as d:
        path = Path(d) / "last.pt"
        t0 = time.perf_counter()
        save_checkpoint(state, path)
        seconds = time.perf_counter() - t0
        return dict(seconds=seconds, mib=path.stat().st_size / 2**20)


def measure(
    batch_size: int = 32,
    steps: int = 5,
    threads: int | None = None,
    folder: str | Path = "outputs/bench",
    work: str | Path = WORK,
) -> list[dict]:
    """The table of ``scripts/bench_scale.py``: rows (what, threads, seconds, ratio, mib)."""
    threads = threads or torch.get_num_threads()
    one = ddp_step(1, threads, batch_size, steps, work)
    rows = [
        dict(
            what="DeepO2P step, 1 process",
            threads=threads,
            seconds=one["median_s"],
            ratio=1.0,
            grad_norm=one["grad_norm"],
        )
    ]
    if threads >= 2:
        two = ddp_step(2, threads // 2, batch_size, steps, work)
        rows.append(
            dict(
                what="DeepO2P step, DDP 2 processes (gloo)",
                threads=threads // 2,
                seconds=two["median_s"],
                ratio=two["median_s"] / one["median_s"],
                grad_norm=two["grad_norm"],
            )
        )
    ckpt = checkpoint_cost(folder, work)
    rows.append(
        dict(
            what="DeepO2P-FC last.pt write (model + SGD momentum)",
            seconds=ckpt["seconds"],
            mib=ckpt["mib"],
        )
    )
    return rows


if __name__ == "__main__":  # a torchrun process of ddp_step
    p = argparse.ArgumentParser(description="one process of matbackprop.bench.scale.ddp_step")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    _ddp_child(p.parse_args())
