"""The one timing / CSV / device / precision helper of every benchmark.

    device = check_device("cuda", "bf16")          # ConfigError when it cannot run here
    t = time_call(lambda: step(compute), device, steps=10, warmup=3)
    t.median, t.mean, t.min, t.peak_mib            # seconds; CUDA peak memory (None on CPU)
    add_ratio(rows, "median_s", "model", "AlexNet", "ratio")   # row["ratio"] = × AlexNet
    print_table(rows, [("model", "s"), ("median_s", ".3f"), ("ratio", ".2f", "× AlexNet")])
    write_rows(rows, "training.csv")               # -> outputs/bench/training.csv

Warm-up calls are not timed; on CUDA each timed call is bracketed by ``synchronize`` so a
time covers the work the call queued, and the peak memory is reset before the timed calls.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from matbackprop.engine.records import write_csv
from matbackprop.engine.step import PRECISIONS
from matbackprop.errors import ConfigError, UserError

BENCH_DIR = Path("outputs/bench")


@dataclass
class Timing:
    """Seconds of each timed call (warm-up excluded) and the CUDA peak memory (MiB) over them;
    ``last``: what the last call returned (e.g. a :class:`~matbackprop.engine.step.StepResult`)."""

    times: list[float]
    peak_mib: float | None = None
    last: Any = field(default=None, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def min(self) -> float:
        return min(self.times)


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any],
    device: torch.device,
    steps: int,
    warmup: int = 1,
    progress: Callable[[int, float], None] | None = None,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``steps`` times timed (``steps`` >= 1).
    ``progress(i, seconds)`` is called after each timed call (i from 1)."""
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    last = None
    for _ in range(warmup):
        last = fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        last = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if progress:
            progress(i + 1, times[-1])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Timing(times, peak, last)


def check_device(name: str, precision: str = "32") -> torch.device:
    """``--device`` / ``--precision`` as a device this machine can run (ConfigError if not)."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a device (cpu | cuda | cuda:1)") from err
    if str(precision) not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} but CUDA is not available here; use --device cpu")
    if str(precision) == "16" and device.type != "cuda":
        raise ConfigError("--precision 16 needs CUDA; use bf16 on CPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as trainer.cudnn_benchmark (fixed input size)
    return device


def describe(device: torch.device) -> str:
    """``cuda (NVIDIA H200)`` / ``cpu (x86_64, 2 threads)``: for table headers and CSV rows."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    cpu = platform.processor() or platform.machine()
    return f"{device} ({cpu}, {torch.get_num_threads()} threads)"


def add_common_args(
    parser: argparse.ArgumentParser, steps: int, warmup: int = 1, out: str | None = None
) -> argparse.ArgumentParser:
    """``--device``, ``--precision``, ``--steps``, ``--warmup`` (and ``--out`` under
    ``outputs/bench/`` when ``out`` names a CSV file)."""
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1")
    parser.add_argument(
        "--precision",
        default="32",
        choices=list(PRECISIONS),
        help="trainer.precision: 32 (no autocast), bf16 (CPU/CUDA), 16 (CUDA, GradScaler)",
    )
    parser.add_argument("--steps", type=int, default=steps, help="timed steps (median of them)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps first")
    if out:
        parser.add_argument("--out", type=Path, default=BENCH_DIR / out, help="CSV written")
    return parser


def write_rows(rows: Sequence[dict], path: str | Path) -> Path:
    """Write ``rows`` as CSV (columns: the union of their keys, in first-seen order); a bare
    file name goes under ``outputs/bench/``."""
    path = Path(path)
    if path.parent == Path("."):
        path = BENCH_DIR / path
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    write_csv(path, rows, columns)
    return path


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and fmt != "s":
        return format(value, fmt)
    return str(value)


def add_ratio(rows: Sequence[dict], value: str, key: str, reference: Any, name: str) -> None:
    """Set ``row[name]`` = ``row[value]`` over the ``value`` of the row whose ``key`` is
    ``reference`` (NaN when no row is)."""
    ref = next((r[value] for r in rows if r.get(key) == reference), None)
    for r in rows:
        r[name] = r[value] / ref if ref else float("nan")


def print_table(rows: Sequence[dict], columns: Sequence[tuple], file=None) -> None:
    """Print ``rows`` as a Markdown table; ``columns``: (key, format[, header]) tuples."""
    out = file or sys.stdout
    print("| " + " | ".join(c[2] if len(c) > 2 else c[0] for c in columns) + " |", file=out)
    print("|" + "|".join("---" for _ in columns) + "|", file=out)
    for r in rows:
        print("| " + " | ".join(_cell(r.get(c[0]), c[1]) for c in columns) + " |", file=out)


def cli(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a benchmark ``main``: a :class:`UserError` prints one line and returns its exit
    code (2) instead of a traceback."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code

    wrapped.__doc__ = main.__doc__
    return wrapped
