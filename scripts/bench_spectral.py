"""Benchmark the spectral layers against the alternatives, side by side in one run.

    python scripts/bench_spectral.py [--device cpu|cuda] [--quick]     (make bench)

1. ``log_cov_pool`` fwd+bwd, d = 256, 13×13 positions, float32 input, B ∈ {32, 128}:
   ours (default settings) vs ``torch.linalg.eigh`` + autograd in float64 and in float32.
   For each: median time, our speed-up over it, relative gradient error (Frobenius, w.r.t. the
   input features) against a float64 Daleckii–Krein reference on the d × d matrix, and the
   number of runs whose gradient had a non-finite entry.
2. ``ncut_alignment_loss`` fwd+bwd at m ∈ {10³, 10⁴, 154,401} pixels, d ∈ {64, 256}, float32:
   time and peak extra memory (each case in a fresh subprocess; CPU: peak RSS growth, CUDA:
   ``max_memory_allocated``), and the dense m × m formula alongside where it fits.

Prints a table and writes ``outputs/bench/spectral.csv``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from matbackprop.engine.records import write_csv
from matbackprop.spectral import log_cov_pool, ncut_alignment_loss, sym_logm

OUT = Path("outputs/bench/spectral.csv")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- log_cov_pool


def _eigh_autograd(x: torch.Tensor, g: torch.Tensor, dtype: torch.dtype, eps: float = 1e-3):
    """The alternative: C in `dtype`, eigh, U diag(log λ) Uᵀ, PyTorch autograd."""
    f = x.to(dtype).flatten(2)  # (B, d, N)
    c = f @ f.mT / f.shape[-1] + eps * torch.eye(f.shape[1], dtype=dtype, device=x.device)
    lam, u = torch.linalg.eigh(c)
    y = ((u * lam.log().unsqueeze(-2)) @ u.mT).to(x.dtype)
    return torch.autograd.grad((y * g).sum(), x)[0]


def _ours(x: torch.Tensor, g: torch.Tensor):
    return torch.autograd.grad((log_cov_pool(x) * g).sum(), x)[0]


def _reference(x: torch.Tensor, g: torch.Tensor, eps: float = 1e-3):
    """float64 Daleckii–Krein on the d × d matrix (the exact gradient)."""
    x64 = x.detach().double().requires_grad_()
    f = x64.flatten(2)
    c = f @ f.mT / f.shape[-1] + eps * torch.eye(f.shape[1], dtype=torch.float64, device=x.device)
    return torch.autograd.grad((sym_logm(c, validate=False) * g.double()).sum(), x64)[0]


def bench_log_cov_pool(device: str, batches: list[int], runs: int) -> list[dict]:
    rows = []
    d, hw = 256, 13
    methods = {
        "ours (log_cov_pool)": _ours,
        "eigh+autograd float64": lambda x, g: _eigh_autograd(x, g, torch.float64),
        "eigh+autograd float32": lambda x, g: _eigh_autograd(x, g, torch.float32),
    }
    for b in batches:
        times = {k: [] for k in methods}
        errs = {k: [] for k in methods}
        bad = dict.fromkeys(methods, 0)
        for r in range(runs + 1):  # run 0 is warm-up (not timed, still checked)
            gen = torch.Generator(device=device).manual_seed(1000 * b + r)
            x = torch.relu(torch.randn(b, d, hw, hw, generator=gen, device=device))
            x.requires_grad_()
            g = torch.randn(b, d, d, generator=gen, device=device)
            ref = _reference(x, g)
            for name, fn in methods.items():
                dt, grad = _timed(lambda fn=fn, x=x, g=g: fn(x, g), device)
                if r == 0:
                    continue
                times[name].append(dt)
                if not bool(torch.isfinite(grad).all()):
                    bad[name] += 1
                else:
                    errs[name].append(((grad.double() - ref).norm() / ref.norm()).item())
        ours_t = statistics.median(times["ours (log_cov_pool)"])
        for name in methods:
            t = statistics.median(times[name])
            rows.append(
                dict(
                    bench="log_cov_pool",
                    config=f"B={b} d={d} {hw}x{hw} float32-in",
                    method=name,
                    time_s=t,
                    speedup_of_ours=t / ours_t,
                    grad_rel_err=max(errs[name]) if errs[name] else float("nan"),
                    nonfinite_runs=f"{bad[name]}/{runs}",
                    peak_extra_mib=float("nan"),
                )
            )
    return rows


# ----------------------------------------------------------------------------- ncut


def _dense_ncut(f: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    k = int(labels.max()) + 1
    e = torch.nn.functional.one_hot(labels, k).to(f.dtype)
    d = (f @ f.mT).sum(-1, keepdim=True) + eps  # W = F Fᵀ formed explicitly
    z, t = f * d.rsqrt(), e * d.sqrt()
    pz = z @ torch.linalg.pinv(z)
    pt = t @ torch.linalg.pinv(t)
    return 0.5 * (pz - pt).square().sum((-2, -1))


def _proc_status(key: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux clear_refs 5); return the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux or not permitted: growth over the earlier peak only
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return _proc_status("VmRSS")


def _ncut_case(m: int, d: int, dense: bool, device: str, reps: int, queue) -> None:
    """Runs in a fresh process: time and peak extra memory of one fwd+bwd configuration."""
    torch.manual_seed(0)
    f = torch.relu(torch.randn(1, m, d, device=device)).requires_grad_()
    labels = (torch.arange(m, device=device) * 12 // m).unsqueeze(0)  # 12 segments
    fn = _dense_ncut if dense else ncut_alignment_loss
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_peak_rss()
    times = []
    for _ in range(reps + 1):
        f.grad = None
        dt, _ = _timed(lambda: fn(f, labels).sum().backward(), device)
        times.append(dt)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _proc_status("VmHWM") - base
    queue.put((statistics.median(times[1:]), peak / 2**20))


def bench_ncut(device: str, sizes: list[int], dims: list[int], reps: int) -> list[dict]:
    rows = []
    ctx = mp.get_context("spawn")
    for m in sizes:
        for d in dims:
            variants = [("ours (ncut_alignment_loss)", False)]
            # dense: m×m float32 matrices (W, Π_Z, Π_T, products): skip when ≳ 6 GiB
            if 6 * m * m * 4 < 6 * 2**30:
                variants.append(("dense m x m formula", True))
            for name, dense in variants:
                q = ctx.Queue()
                p = ctx.Process(target=_ncut_case, args=(m, d, dense, device, reps, q))
                p.start()
                p.join()
                t, mib = q.get() if p.exitcode == 0 else (float("nan"), float("nan"))
                rows.append(
                    dict(
                        bench="ncut_alignment_loss",
                        config=f"m={m} d={d} float32",
                        method=name,
                        time_s=t,
                        speedup_of_ours=float("nan"),
                        grad_rel_err=float("nan"),
                        nonfinite_runs="",
                        peak_extra_mib=mib,
                    )
                )
            ours_t = rows[-len(variants)]["time_s"]
            for row in rows[-len(variants) :]:
                row["speedup_of_ours"] = row["time_s"] / ours_t
    return rows


# ----------------------------------------------------------------------------- main


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.3g}"
    return str(v)


def print_table(rows: list[dict]) -> None:
    cols = [
        "config",
        "method",
        "time_s",
        "speedup_of_ours",
        "grad_rel_err",
        "nonfinite_runs",
        "peak_extra_mib",
    ]
    head = [
        "config",
        "method",
        "time [s]",
        "ours faster by",
        "grad rel err",
        "non-finite",
        "peak extra MiB",
    ]
    table = [head] + [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per log_cov_pool case")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    dev_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    )
    print(
        f"torch {torch.__version__} on {args.device} ({dev_name}), {torch.get_num_threads()} threads"
    )

    batches = [4] if args.quick else [32, 128]
    runs = 2 if args.quick else args.runs
    rows = bench_log_cov_pool(args.device, batches, runs)
    sizes = [1000] if args.quick else [1000, 10_000, 154_401]
    rows += bench_ncut(args.device, sizes, [64, 256], reps=1 if args.quick else 3)

    print_table(rows)
    device = f"{args.device} ({dev_name})"
    write_csv(args.out, [{**r, "device": device} for r in rows], [*rows[0], "device"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
