#!/usr/bin/env python
"""What scaling out costs: DDP overhead per step, and the mid-epoch checkpoint's time and size.

    python scripts/bench_scale.py [--batch-size 32] [--steps 5] [--out outputs/bench/scale.csv]

1. DDP overhead (CPU, gloo): the same global batch of 227×227 crops through DeepO2P (AlexNet
   conv5 -> log-cov -> BN -> linear, random init) as one process with T threads and as
   ``torch.multiprocessing`` ranks with T / N threads each, wrapped in
   ``DistributedDataParallel`` with synchronised BatchNorm exactly as the trainer does; median
   seconds per step over ``--steps`` after one warm-up step. With the threads split evenly the
   ratio is the cost of the all-reduces and of the smaller per-process matrices.
2. Checkpoint: ``last.pt`` of the real DeepO2P-FC model (AlexNet conv5 -> 32,896-d log-cov
   descriptor -> fc6 4096 -> fc7 4096 -> 80 classes; SGD momentum buffers filled by one step),
   written with the trainer's atomic writer (temp file, fsync, rename): seconds and MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from matbackprop.engine.checkpoint import save_checkpoint
from matbackprop.engine.optim import build_optimizer
from matbackprop.engine.records import write_csv
from matbackprop.engine.sync_bn import convert_sync_batchnorm
from matbackprop.models.build import build_model

DEEPO2P = dict(arch="deepo2p", trunk="alexnet", pretrained=False, head_norm="batchnorm")
DEEPO2P_FC = dict(
    arch="deepo2p_fc",
    trunk="alexnet",
    pretrained=False,
    head_norm="batchnorm",
    dropout=0.5,
    fc_dim=4096,
)


def _worker(rank: int, world: int, threads: int, args, port: int, out) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(DEEPO2P, num_classes=80).train()
    if world > 1:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model.module if world > 1 else model, dict(lr=1e-3, momentum=0.9))
    b = args.batch_size // world
    g = torch.Generator().manual_seed(rank)
    images = torch.randn(b, 3, 227, 227, generator=g)
    masks = torch.rand(b, 13, 13, generator=g)
    labels = torch.randint(0, 80, (b,), generator=g)
    times = []
    for i in range(args.steps + 1):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(images, masks), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(statistics.median(times))
    if world > 1:
        dist.destroy_process_group()


def step_time(world: int, threads: int, args) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = 29500 + os.getpid() % 1000 + world
    procs = [
        ctx.Process(target=_worker, args=(r, world, threads, args, port, q)) for r in range(world)
    ]
    for p in procs:
        p.start()
    value = q.get(timeout=1800)
    for p in procs:
        p.join()
    return value


def checkpoint_cost(folder: Path) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(DEEPO2P_FC, num_classes=80).train()
    opt = build_optimizer(model, dict(lr=1e-3, momentum=0.9))
    loss = F.cross_entropy(
        model(torch.randn(2, 3, 227, 227), torch.rand(2, 13, 13)), torch.tensor([0, 1])
    )
    loss.backward()
    opt.step()  # fills the momentum buffers (as large as the weights)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 0}
    path = folder / "last.pt"
    t0 = time.perf_counter()
    save_checkpoint(state, path)
    return time.perf_counter() - t0, path.stat().st_size / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/scale.csv"))
    args = parser.parse_args(argv)
    rows = []
    one = step_time(1, args.threads, args)
    rows.append(dict(what="DeepO2P step, 1 process", threads=args.threads, seconds=one, ratio=1.0))
    if args.threads >= 2:
        two = step_time(2, args.threads // 2, args)
        rows.append(
            dict(
                what="DeepO2P step, DDP 2 processes (gloo)",
                threads=args.threads // 2,
                seconds=two,
                ratio=two / one,
            )
        )
    with tempfile.TemporaryDirectory(
        dir=args.out.parent if args.out.parent.exists() else None
    ) as d:
        secs, mib = checkpoint_cost(Path(d))
    rows.append(
        dict(
            what="DeepO2P-FC last.pt write (model + SGD momentum)",
            threads="",
            seconds=secs,
            ratio="",
            mib=mib,
        )
    )
    print("| what | threads/process | seconds | × 1 process | MiB |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if isinstance(r["ratio"], float) else ""
        print(
            f"| {r['what']} | {r['threads']} | {r['seconds']:.3f} | {ratio} | "
            f"{r.get('mib', 0):.0f} |".replace("| 0 |", "|  |")
        )
    write_csv(args.out, rows, ["what", "threads", "seconds", "ratio", "mib"])
    print(f"batch {args.batch_size} (global), {args.steps} steps; wrote {args.out}")


if __name__ == "__main__":
    main()
