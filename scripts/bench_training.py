#!/usr/bin/env python
"""Training-step cost of DeepO2P against plain AlexNet (the structured layer's overhead).

    python scripts/bench_training.py --device cpu [--batch-size 100] [--steps 3] [--precision bf16]

One step = forward + backward + SGD update on a random batch of 227×227 crops with region
masks, 80 classes, random init (no download): AlexNet (torchvision, new last layer) vs DeepO2P
(AlexNet conv5 trunk -> log-cov pooling in ``--pool-dtype``, float64 by default -> linear, the Table 1 head),
and DeepO2P-FC on request (``--models AlexNet DeepO2P DeepO2P-FC``). Median over ``--steps`` timed steps after ``--warmup`` steps. Prints a table with
the ratio to AlexNet (target: DeepO2P ≤ 1.3×) and writes ``outputs/bench/training.csv``.
``--precision bf16`` (CPU or CUDA) / ``16`` (CUDA, with a GradScaler) runs the forward under
``torch.autocast`` as ``trainer.precision`` does (the structured layer stays in its dtype).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from matbackprop.engine.optim import build_optimizer
from matbackprop.engine.records import write_csv
from matbackprop.engine.step import PRECISIONS, autocast_context
from matbackprop.models.build import build_model

MODELS = {
    "AlexNet": dict(arch="alexnet", trunk="alexnet", pretrained=False, dropout=0.5),
    "DeepO2P": dict(arch="deepo2p", trunk="alexnet", pretrained=False, head_norm="none"),
    "DeepO2P-FC": dict(
        arch="deepo2p_fc", trunk="alexnet", pretrained=False, head_norm="none", dropout=0.5
    ),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(name: str, model_cfg: dict, args, device: torch.device) -> list[float]:
    """Seconds per training step (after warm-up) for one model."""
    precision = getattr(args, "precision", "32")
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes=80).to(device).train()
    opt = build_optimizer(model, dict(lr=1e-3, momentum=0.9, weight_decay=5e-4))
    b, s = args.batch_size, args.crop
    images = torch.randn(b, 3, s, s, device=device)  # (B, 3, S, S)
    masks = torch.rand(b, 13, 13, device=device)  # (B, 13, 13)
    labels = torch.randint(0, 80, (b,), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast_context(device, precision):  # as the trainer does
            loss = F.cross_entropy(model(images, masks).float(), labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        print(
            f"  {name} step {i + 1}/{args.warmup + args.steps}: {time.perf_counter() - t0:.3f}s",
            flush=True,
        )
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--crop", type=int, default=227)
    parser.add_argument("--pool-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument(
        "--precision",
        default="32",
        choices=list(PRECISIONS),
        help="autocast of the forward: 32 (none), bf16 (CPU/CUDA), 16 (CUDA, GradScaler)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["AlexNet", "DeepO2P"],
        choices=list(MODELS),
        help="DeepO2P-FC is slow on CPU: fc6 alone has d(d+1)/2 × 4096 = 135M weights",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/training.csv"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.precision == "16" and device.type != "cuda":
        print("error: --precision 16 needs CUDA; use bf16 on CPU")
        return 2
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: --device cuda but CUDA is not available")
            return 2
        torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"[bench] training step, batch {args.batch_size} at {args.crop}x{args.crop}, "
        f"{args.device} ({where or platform.machine()}, {torch.get_num_threads()} threads), "
        f"structured layer in {args.pool_dtype}, precision {args.precision}"
    )
    rows = []
    for name in args.models:
        cfg = dict(MODELS[name])
        if name != "AlexNet":
            cfg["pool_dtype"] = args.pool_dtype
        times = time_steps(name, cfg, args, device)
        rows.append({"model": name, "median_s": statistics.median(times), "min_s": min(times)})
    ref = next((r["median_s"] for r in rows if r["model"] == "AlexNet"), None)
    print(
        f"\n{'model':<12} {'median s/step':>14} {'min s/step':>11} {'× AlexNet':>10} {'img/s':>8}"
    )
    for r in rows:
        r["ratio_vs_alexnet"] = r["median_s"] / ref if ref else float("nan")
        r["images_per_s"] = args.batch_size / r["median_s"]
        r.update(
            device=args.device,
            batch_size=args.batch_size,
            crop=args.crop,
            pool_dtype=args.pool_dtype,
            precision=args.precision,
            steps=args.steps,
            threads=torch.get_num_threads(),
        )
        print(
            f"{r['model']:<12} {r['median_s']:>14.3f} {r['min_s']:>11.3f} "
            f"{r['ratio_vs_alexnet']:>10.2f} {r['images_per_s']:>8.1f}"
        )
    print("target: DeepO2P ≤ 1.3× AlexNet")
    write_csv(args.out, rows, list(rows[0]))
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
