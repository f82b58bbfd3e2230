"""Every GPU figure of the project in one report (``make gpu-report``, ``scripts/gpu_report.py``).

    python scripts/gpu_report.py [--device cuda] [--out-dir outputs/bench] [--quick]
                                 [--only spectral training deepncut eigh loader steps]

On the CUDA device present it runs each piece (a failing piece is recorded with its
traceback under ``gpu_report_logs/``, the others still run; every piece runs alone with
``--only``). The pieces call the benchmark functions and get their figures back as data:

- ``spectral``: ``scripts/bench_spectral.py --device cuda`` in its own process, read back from
  the CSV it writes (log_cov_pool vs eigh+autograd, ncut_alignment_loss time/memory);
- ``training``: :func:`matbackprop.bench.training.measure` — the real DeepO2P vs AlexNet
  training step (``OptimStep``) at batch 100, in fp32 and bf16;
- ``deepncut``: :func:`matbackprop.bench.deepncut.measure` — DeepNCut images/s at 481×321
  (fp32, bf16);
- ``eigh``: ``torch.linalg.eigh`` of a (100, 169, 169) float64 batch (DeepO2P's Gram matrices
  for AlexNet conv5) on the GPU vs on the CPU including the pinned non-blocking copies there
  and back, and log_cov_pool fwd+bwd with ``model.pool_device`` same vs cpu: the figure that
  decides ``POOL_DEVICE_AUTO`` in ``matbackprop/models/o2p.py``;
- ``loader``: :func:`matbackprop.bench.loader.measure` (``scripts/bench_loader.py``'s figures);
- ``steps``: 50 real steps of ``table1_deepo2p`` (``++trainer.max_steps=50``) when
  ``data/coco`` exists, in a fresh run folder under ``<out-dir>/gpu_report_runs/``.

Writes ``<out-dir>/gpu_report.md`` and ``<out-dir>/gpu_report.csv`` (section, figure, value,
unit) with the device name and the torch/CUDA/cuDNN versions; logs under
``<out-dir>/gpu_report_logs/``. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from matbackprop.bench import deepncut as bench_deepncut
from matbackprop.bench import loader as bench_loader
from matbackprop.bench import training as bench_training

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ("spectral", "training", "deepncut", "eigh", "loader", "steps")


# ----------------------------------------------------------------------------- pieces


def _run(name: str, cmd: list[str], logs: Path, timeout: float) -> tuple[int, float, str]:
    """Run one piece as a subprocess; returns (exit code, seconds, output). Output -> log file."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    print(f"[gpu-report] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"{e.stdout or ''}{e.stderr or ''}\n[timed out after {timeout:.0f} s]"
    seconds = time.perf_counter() - t0
    (logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{out}")
    print(f"[gpu-report] {name}: exit {rc} in {seconds:.0f} s", flush=True)
    return rc, seconds, out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _row(section: str, figure: str, value, unit: str = "") -> dict:
    return dict(section=section, figure=figure, value=value, unit=unit)


def _failed(section: str, rc: int, log: str) -> list[dict]:
    return [_row(section, "failed", f"exit {rc}", f"see gpu_report_logs/{log}.log")]


def spectral(args, py: str) -> list[dict]:
    out = args.out_dir / "gpu_spectral.csv"
    cmd = [py, "scripts/bench_spectral.py", "--device", args.device, "--out", str(out)]
    rc, _, _ = _run("spectral", cmd + (["--quick"] if args.quick else []), args.logs, args.timeout)
    if rc != 0:
        return _failed("spectral", rc, "spectral")
    rows = []
    for r in _read_csv(out):
        rows.append(_row("spectral", f"{r['config']}: {r['method']}", r["time_s"], "s"))
        if r.get("grad_rel_err") not in (None, "", "nan"):
            rows.append(
                _row("spectral", f"{r['config']}: {r['method']} grad rel err", r["grad_rel_err"])
            )
    return rows


def _piece(section: str, args, fn) -> list[dict]:
    """``fn() -> rows``; an exception becomes one ``failed`` row, its traceback a log file."""
    print(f"[gpu-report] {section} ...", flush=True)
    t0 = time.perf_counter()
    try:
        rows = fn()
    except Exception as e:  # a report, not a test: record and go on
        (args.logs / f"{section}.log").write_text(traceback.format_exc())
        return [_row(section, "failed", type(e).__name__, f"see gpu_report_logs/{section}.log")]
    print(f"[gpu-report] {section}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def training(args, py: str) -> list[dict]:
    def one(precision: str) -> list[dict]:
        kw = dict(batch_size=100, steps=10, warmup=3)
        kw.update(dict(batch_size=4, steps=1, warmup=0) if args.quick else {})
        device = torch.device(args.device)
        got = bench_training.measure(["AlexNet", "DeepO2P"], device, precision=precision, **kw)
        out = []
        for r in got:
            fig = f"{r['model']} step, batch {r['batch_size']}, {precision}"
            out.append(_row("training", fig, r["median_s"], "s"))
            out.append(_row("training", f"{fig}: × AlexNet", r["ratio_vs_alexnet"], "×"))
        return out

    return [
        row for p in ("32", "bf16") for row in _piece(f"training_{p}", args, lambda p=p: one(p))
    ]


def deepncut(args, py: str) -> list[dict]:
    def one(precision: str) -> list[dict]:
        kw = dict(steps=1, warmup=0) if args.quick else {}
        settings = [0] if args.quick else None
        got = bench_deepncut.measure(settings, torch.device(args.device), precision=precision, **kw)
        return [
            _row(
                "deepncut",
                f"DeepNCut 481×321, {r['setting']}, batch {r['batch']}, {precision}",
                r["images_per_s"],
                "images/s",
            )
            for r in got
        ]

    return [
        row for p in ("32", "bf16") for row in _piece(f"deepncut_{p}", args, lambda p=p: one(p))
    ]


def _median_time(fn, device: torch.device, runs: int) -> float:
    fn()  # warm-up (cuSOLVER handles, caching allocator, pinned pool)
    times = []
    for _ in range(runs):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def eigh_gpu_vs_cpu(device: torch.device, batch: int, n: int, runs: int) -> list[dict]:
    """eigh of (batch, n, n) float64 SPD on the GPU vs CPU + pinned copies; pool_device."""
    from matbackprop.models.o2p import POOL_DEVICE_AUTO, pool_on
    from matbackprop.spectral import LogCovPool

    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, n, 2 * n, generator=g, dtype=torch.float64)
    x_host = a @ a.mT / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)  # (B, n, n)
    x = x_host.to(device)

    def cpu_round_trip():
        h = x.to("cpu", non_blocking=True)  # pinned destination
        torch.cuda.current_stream(device).synchronize()
        lam, v = torch.linalg.eigh(h)
        return lam.pin_memory().to(device, non_blocking=True), v.pin_memory().to(
            device, non_blocking=True
        )

    t_gpu = _median_time(lambda: torch.linalg.eigh(x), device, runs)
    t_trip = _median_time(cpu_round_trip, device, runs)
    t0 = time.perf_counter()
    for _ in range(runs):
        torch.linalg.eigh(x_host)
    t_cpu = (time.perf_counter() - t0) / runs
    shape = f"({batch}, {n}, {n}) float64"
    rows = [
        _row("eigh", f"eigh {shape} on GPU", t_gpu, "s"),
        _row("eigh", f"eigh {shape} on CPU incl. pinned copies", t_trip, "s"),
        _row("eigh", f"eigh {shape} on CPU, data already there", t_cpu, "s"),
        _row("eigh", "CPU incl. copies / GPU", t_trip / t_gpu, "×"),
    ]
    # the whole structured layer as DeepO2P runs it: features (B, 256, 13, 13) float32
    pool = LogCovPool()
    feats = torch.relu(torch.randn(batch, 256, 13, 13, generator=g)).to(device)
    masks = torch.rand(batch, 13, 13, generator=g).to(device)
    for where in ("same", "cpu"):
        f = feats.clone().requires_grad_()

        def step(where=where, f=f):
            pool_on(pool, where, f, masks).sum().backward()

        rows.append(
            _row(
                "eigh",
                f"log_cov_pool fwd+bwd, pool_device={where}",
                _median_time(step, device, runs),
                "s",
            )
        )
    faster = "cpu" if rows[-1]["value"] < rows[-2]["value"] else "same"
    rows.append(
        _row("eigh", "pool_device measured fastest", faster, f"auto = {POOL_DEVICE_AUTO} now")
    )
    return rows


def eigh(args, py: str) -> list[dict]:
    batch, n = (4, 16) if args.quick else (100, 169)
    print(f"[gpu-report] eigh: ({batch}, {n}, {n}) float64, GPU vs CPU", flush=True)
    try:
        return eigh_gpu_vs_cpu(torch.device(args.device), batch, n, runs=2 if args.quick else 10)
    except Exception as e:  # a report, not a test: record and go on
        (args.logs / "eigh.log").write_text(repr(e))
        return [_row("eigh", "failed", type(e).__name__, str(e)[:200])]


def loader(args, py: str) -> list[dict]:
    def one() -> list[dict]:
        kw = dict(regions=20, rounds=1) if args.quick else {}
        f = bench_loader.measure(args.out_dir / "loader", workers=os.cpu_count() or 1, **kw)
        return [_row("loader", "prepared vs on-the-fly regions/s, one worker", f["speedup"], "×")]

    return _piece("loader", args, one)


def steps(args, py: str) -> list[dict]:
    if not (ROOT / "data" / "coco").is_dir():
        return [_row("steps", "not run", "-", "data/coco does not exist (make data-coco)")]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 5 if args.quick else 50
    cmd = [py, "-m", "matbackprop.train", "experiment=table1_deepo2p", f"++trainer.max_steps={n}"]
    cmd += ["run_name=gpu_report_steps", f"output_root={args.out_dir / 'gpu_report_runs' / stamp}"]
    cmd += [f"trainer.device={args.device}", "logger=none"]
    rc, seconds, _ = _run("steps", cmd, args.logs, args.timeout)
    if rc != 0:
        return _failed("steps", rc, "steps")
    return [
        _row("steps", f"table1_deepo2p, {n} steps, wall incl. start-up and indexing", seconds, "s"),
        _row("steps", "steps/s (same, lower bound)", n / seconds, "steps/s"),
    ]


PIECES = dict(
    spectral=spectral, training=training, deepncut=deepncut, eigh=eigh, loader=loader, steps=steps
)


# ----------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "cpu threads": str(torch.get_num_threads()),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def write_report(out_dir: Path, env: dict[str, str], rows: list[dict]) -> tuple[Path, Path]:
    """``gpu_report.md`` (environment + one table) and ``gpu_report.csv`` (one row per figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "gpu_report.md", out_dir / "gpu_report.csv"
    lines = ["# GPU report (`make gpu-report`)", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    lines += ["", "| section | figure | value | unit |", "|---|---|---:|---|"]
    lines += [
        f"| {r['section']} | {r['figure']} | {_fmt(r['value'])} | {r['unit']} |" for r in rows
    ]
    md.write_text("\n".join(lines) + "\n")
    fields = [*env, "section", "figure", "value", "unit"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({**env, **r} for r in rows)
    return md, csv_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="a CUDA device: cuda | cuda:1")
    ap.add_argument("--out-dir", type=Path, default=Path("outputs/bench"))
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run of the report)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds per piece run as a process (spectral, steps)",
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu-report: no CUDA device here (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda}); nothing measured. Run `make gpu-report` on a GPU machine; "
            "the CPU figures come from `make bench`."
        )
        return 0
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"gpu-report: --device must be a CUDA device, got {args.device!r}")
        return 2
    torch.backends.cudnn.benchmark = True
    args.out_dir = args.out_dir.resolve()
    args.logs = args.out_dir / "gpu_report_logs"
    args.logs.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    print("[gpu-report] " + ", ".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    rows: list[dict] = []
    for name in SECTIONS:
        if name in args.only:
            rows += PIECES[name](args, sys.executable)
            write_report(args.out_dir, env, rows)  # partial report survives a later crash
    md, csv_path = write_report(args.out_dir, env, rows)
    print(md.read_text())
    print(f"[gpu-report] wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
