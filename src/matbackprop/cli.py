"""The error contract of every entry point, in one place.

    def main(cfg):
        run_cli(run, cfg)            # train.py, evaluate.py, evaluate_segmentation.py, scripts/*

Exit status:

- 0: done.
- 2: a :class:`~matbackprop.errors.UserError` (data, checkpoint, configuration, run folder) or
  a missing file (``FileNotFoundError``): ``error: <message>`` on stderr, no traceback.
- 3: the training diverged (:class:`~matbackprop.errors.DivergedError`), with the advice.
- 75: stopped by SIGTERM / SIGUSR1 / SIGUSR2 after writing a checkpoint
  (:class:`~matbackprop.errors.Stopped`): rerun to continue.
- 1: anything else (a bug): the traceback.

An error raised in a DataLoader worker reaches the main process with the worker's traceback
folded into its message ("Original Traceback ..."); only the worker's exception message is
printed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from matbackprop.errors import EXIT_USER_ERROR, Stopped, UserError

T = TypeVar("T")

_TRACEBACK = "Traceback (most recent call last):"
_EXC_PREFIX = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)?: ")


def user_message(err: BaseException) -> str:
    """The message to print for a user error: the worker's own message if it comes from a
    DataLoader worker (no traceback lines), else ``str(err)``."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    tail = text[text.rfind(_TRACEBACK) + len(_TRACEBACK) :].splitlines()
    # frames are indented ("  File ...", "    code", "    ^^^"); the exception starts after them
    start = next((i for i, line in enumerate(tail) if line and not line[0].isspace()), None)
    if start is None:
        return text.strip().splitlines()[-1]
    lines = tail[start:]
    lines[0] = _EXC_PREFIX.sub("", lines[0], count=1)
    return "\n".join(lines).strip()


def is_user_error(err: BaseException) -> bool:
    """Errors the user fixes (exit 2): :class:`UserError` and missing files."""
    return isinstance(err, (UserError, FileNotFoundError))


def report(err: BaseException) -> int:
    """Print a user error as ``error: <message>`` on stderr; returns the exit status (2; 3 for
    a diverged training: ``err.exit_code``)."""
    print(f"error: {user_message(err)}", file=sys.stderr, flush=True)
    return int(getattr(err, "exit_code", EXIT_USER_ERROR))


def call_cli(fn: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """For ``main(argv) -> int`` functions: ``fn``'s exit status, or, on a user error,
    ``error: <message>`` on stderr and 2; anything else propagates with its traceback."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        if not is_user_error(err):
            raise
        return report(err)


def run_cli(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``; a user error prints ``error: <message>`` to stderr and
    exits with status 2 (no traceback); anything else propagates with its traceback.

    Returns:
        What ``fn`` returned.
    """
    try:
        return fn(*args, **kwargs)
    except Stopped as err:  # a signal-triggered checkpoint: rerun to continue
        print(f"stopped: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except Exception as err:
        if not is_user_error(err):
            raise
        sys.exit(report(err))
