#!/usr/bin/env python
"""DeepNCut training throughput at full BSDS resolution (481×321), images per second.

    python scripts/bench_deepncut.py --device cpu [--steps 4] [--precision bf16] [--settings 0 1]

One step = forward through the trunk and the two new conv pairs + ncut_alignment_loss against
a ground-truth segmentation + backward + SGD update, on random images with a 12-segment
ground truth, random init (no download). Settings: AlexNet relu5 fine-tuned end to end, and
with conv1–conv2 frozen (``model.freeze_through=relu2``), at 1 and 4 images per step (batches
of one orientation, as the BSDS task groups them). The paper reports about 2–3 images/s for
training on a Titan Z GPU (MATLAB). Prints a table and writes ``outputs/bench/deepncut.csv``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from matbackprop.engine.optim import build_optimizer
from matbackprop.engine.records import write_csv
from matbackprop.engine.step import PRECISIONS, autocast_context
from matbackprop.models.deepncut import DeepNCut, ncut_loss_on_grid

SETTINGS = [  # (label, trunk, taps, freeze_through, batch)
    ("AlexNet relu5, end to end", "alexnet", ["relu5"], None, 1),
    ("AlexNet relu5, end to end", "alexnet", ["relu5"], None, 4),
    ("AlexNet relu5, conv1-2 frozen", "alexnet", ["relu5"], "relu2", 1),
    ("AlexNet relu5, conv1-2 frozen", "alexnet", ["relu5"], "relu2", 4),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(trunk, taps, freeze, batch, args, device) -> tuple[float, float]:
    torch.manual_seed(0)
    model = DeepNCut(trunk, taps, freeze_through=freeze).to(device).train()
    opt = build_optimizer(model, dict(lr=1e-4, momentum=0.9, weight_decay=5e-4))
    h, w = 321, 481
    images = torch.randn(batch, 3, h, w, device=device)
    seg = (torch.arange(h * w, device=device).reshape(h, w) * 12 // (h * w) + 1).expand(batch, h, w)
    precision = getattr(args, "precision", "32")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast_context(device, precision):  # as the trainer does
            feats = model(images)
        loss = ncut_loss_on_grid(feats, seg).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return batch / med, med


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--precision", default="32", choices=list(PRECISIONS), help="autocast of the trunk"
    )
    parser.add_argument(
        "--settings", type=int, nargs="+", default=None, help="indices into SETTINGS (default all)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/deepncut.csv"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.precision == "16" and device.type != "cuda":
        print("error: --precision 16 needs CUDA; use bf16 on CPU")
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available")
        return 2
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"[bench] DeepNCut training at 481x321, {args.device} ({where or platform.machine()}, "
        f"{torch.get_num_threads()} threads), median of {args.steps} steps, "
        f"precision {args.precision}"
    )
    rows = []
    chosen = SETTINGS if args.settings is None else [SETTINGS[i] for i in args.settings]
    for label, trunk, taps, freeze, batch in chosen:
        ips, step = images_per_second(trunk, taps, freeze, batch, args, device)
        rows.append(
            dict(
                setting=label,
                batch=batch,
                s_per_step=step,
                images_per_s=ips,
                device=args.device,
                precision=args.precision,
            )
        )
        print(f"  {label:<32} batch {batch}: {step:.3f} s/step, {ips:.2f} images/s", flush=True)
    print(f"\n{'setting':<32} {'batch':>5} {'s/step':>8} {'images/s':>9}")
    for r in rows:
        print(
            f"{r['setting']:<32} {r['batch']:>5} {r['s_per_step']:>8.3f} {r['images_per_s']:>9.2f}"
        )
    print("target: >= 4 images/s on a 2-core CPU (paper: about 2-3 images/s on a Titan Z GPU)")
    write_csv(args.out, rows, list(rows[0]))
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
