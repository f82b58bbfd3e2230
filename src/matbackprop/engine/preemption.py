"""Stop signals and the one stop policy: continue, checkpoint or stop, asked at step boundaries
and inside evaluation loops.

    policy = StopPolicy(checkpoint_every=500, max_steps=None)
    with policy.installed():                      # SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT
        result = step(..., flags=[policy.local_code()])        # agreed by all ranks
        decision = policy.poll(global_step, result.flags[0], last_step=False)
        ...
    # in a task's evaluation loop (one item at a time):
    poll_evaluation()        # raises EvaluationInterrupted once a stop signal has arrived

A signal only sets a flag: the loop writes ``last.pt`` at the next step boundary and raises
:class:`Preempted` (exit 75; SIGINT: 130). A previous Python handler (e.g. submitit's requeue
on SLURM) is called after the checkpoint (:meth:`StopPolicy.chain`).
"""

from __future__ import annotations

import contextlib
import enum
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matbackprop.errors import EXIT_PREEMPTED, Stopped

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): the shell's convention, 128 + 2


class Decision(enum.Enum):
    CONTINUE = "continue"
    CHECKPOINT = "checkpoint"  # write last.pt inside the epoch, then go on
    STOP = "stop"  # write last.pt, then raise Preempted (signal) or end (max_steps)


class Preempted(Stopped):
    """A stop signal arrived; ``last.pt`` holds the step reached. Rerun to continue."""

    def __init__(self, signame: str, run_dir: Path, epoch: int, step: int, what: str = ""):
        where = what or f"epoch {epoch + 1}, step {step}"
        super().__init__(
            f"{signame}: checkpoint written at {where} in {run_dir}; "
            "the same command continues from there"
        )
        self.signame = signame
        self.exit_code = EXIT_INTERRUPTED if signame == "SIGINT" else EXIT_PREEMPTED


class EvaluationInterrupted(Exception):
    """Raised inside an evaluation loop by :func:`poll_evaluation` after a stop signal."""

    def __init__(self, signame: str):
        super().__init__(f"{signame} during evaluation")
        self.signame = signame


_ACTIVE: list[StopPolicy] = []  # the installed policy (a stack: nested fits in tests)


def stop_requested() -> str | None:
    """The stop signal this process has received during the current fit, if any."""
    return _ACTIVE[-1].received if _ACTIVE else None


def poll_evaluation() -> None:
    """Call once per item in an evaluation loop: raises :class:`EvaluationInterrupted` when a
    stop signal has arrived (a no-op outside :meth:`StopPolicy.installed`). Every rank receives
    the signal (torchrun and SLURM forward it), so no collective is needed here."""
    if _ACTIVE and _ACTIVE[-1].received:
        raise EvaluationInterrupted(_ACTIVE[-1].received)


class StopPolicy:
    """When to write ``last.pt`` inside an epoch and when to stop.

    Args:
        checkpoint_every: also checkpoint every N global steps (0/None: epoch ends only).
        max_steps: stop after N optimizer steps in total (0/None: no limit).
        names: the signals that request a stop.
    """

    def __init__(self, checkpoint_every: int | None = None, max_steps: int | None = None,
                 names: tuple[str, ...] = STOP_SIGNALS) -> None:  # fmt: skip
        self.checkpoint_every = int(checkpoint_every or 0)
        self.max_steps = int(max_steps or 0)
        self.names = tuple(n for n in names if hasattr(signal, n))
        self.received: str | None = None  # this process's signal
        self.agreed: str | None = None  # the signal all ranks agreed on at a step boundary
        self.previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ signals
    @contextlib.contextmanager
    def installed(self) -> Iterator[StopPolicy]:
        """Install the handlers (main thread only) for the duration of the block."""
        for name in self.names:
            sig = getattr(signal, name)
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): no handler
                pass
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)
            self.restore()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            print(f"[train] {self.received} received: checkpointing at the next step", flush=True)

    def restore(self) -> None:
        for sig, prev in self.previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev)

    def chain(self) -> None:
        """Call the handler installed before ours for the received signal (e.g. submitit's
        requeue); Python's default SIGINT handler is not called (we exit 130 ourselves)."""
        if self.received is None:
            return
        prev = self.previous.get(getattr(signal, self.received))
        if callable(prev) and prev is not signal.default_int_handler:
            prev(getattr(signal, self.received), None)

    # ------------------------------------------------------------------ decisions
    def local_code(self) -> float:
        """This process's signal as a number for the step's all-reduce (0: none)."""
        return float(self.names.index(self.received) + 1) if self.received in self.names else 0.0

    def poll(self, global_step: int, agreed_code: float = 0.0, last_step: bool = False) -> Decision:
        """After a step: ``agreed_code`` is :meth:`local_code` reduced by max over ranks.

        ``STOP`` for a signal or ``max_steps`` reached; ``CHECKPOINT`` every
        ``checkpoint_every`` steps; else ``CONTINUE``. On an epoch's last step the epoch's end
        writes the checkpoint, so ``CHECKPOINT`` becomes ``CONTINUE`` there.
        """
        if agreed_code > 0:
            self.agreed = self.names[int(agreed_code) - 1]
            self.received = self.received or self.agreed
            return Decision.STOP
        if self.max_steps and global_step >= self.max_steps:
            return Decision.STOP
        due = self.checkpoint_every and global_step % self.checkpoint_every == 0
        return Decision.CHECKPOINT if due and not last_step else Decision.CONTINUE

    @property
    def signalled(self) -> str | None:
        """The stop signal (agreed, or received by this process), if any."""
        return self.agreed or self.received
