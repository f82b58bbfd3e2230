"""Progress of an epoch on the console: a tqdm bar on a terminal; off a terminal (SLURM logs,
``nohup``, pipes) one line every ``trainer.progress_every_s`` seconds, so a slow job can be
told from a hung one::

    [train] epoch 2/10, step 300/5000 (6%): 251.3 items/s, loss 1.2345, ETA 12m30s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    h, m = s // 3600, (s % 3600) // 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s"


class Progress:
    """Wrap an epoch's batches: iterate it, and call :meth:`step` after each step.

    Args:
        it: the batches still to run.
        total / initial: steps in the epoch / already done (a resume).
        desc: e.g. ``epoch 2/10``.
        items_per_step: the global batch size (for items/s).
        every_s: seconds between lines off a terminal (0: never).
        show: False on ranks other than 0.
    """

    def __init__(self, it: Iterable[Any], total: int, initial: int, desc: str,
                 items_per_step: int, every_s: float = 60.0, show: bool = True) -> None:  # fmt: skip
        self.total, self.done, self.desc = total, initial, desc
        self.items_per_step, self.every_s = items_per_step, float(every_s or 0)
        self.tty = show and sys.stdout.isatty()
        self.lines = show and not self.tty and self.every_s > 0
        self.bar = tqdm(it, total=total, initial=initial, leave=False, desc=desc,
                        disable=not self.tty)  # fmt: skip
        self.t0 = self.last = time.time()
        self.steps_now = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def step(self, loss: float) -> None:
        self.done, self.steps_now = self.done + 1, self.steps_now + 1
        if self.tty:
            self.bar.set_postfix(loss=f"{loss:.4f}")
        now = time.time()
        if self.lines and now - self.last >= self.every_s:
            self.last = now
            print(self.line(loss, now), flush=True)

    def line(self, loss: float, now: float | None = None) -> str:
        elapsed = max((now or time.time()) - self.t0, 1e-9)
        rate = self.steps_now / elapsed  # steps/s since this process started the epoch
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / max(self.total, 1)
        return (f"[train] {self.desc}, step {self.done}/{self.total} ({pct:.0f}%): "
                f"{rate * self.items_per_step:.1f} items/s, loss {loss:.4f}, ETA "
                f"{_duration(eta) if eta != float('inf') else '?'}")  # fmt: skip
