"""The error contract of every entry point (a leaf module: imports nothing of ours).

A :class:`UserError` is a problem the user fixes — missing or unreadable data, a bad
checkpoint, a bad configuration value, a run folder in use or of another experiment. Entry
points (``train``, ``evaluate``, ``evaluate_segmentation``, ``scripts/*``) print its message
(naming the file or key, and the fix) and exit with :data:`EXIT_USER_ERROR`, no traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user fixes; the message names the file / key and the fix."""


class DataError(UserError):
    """Data missing or unreadable (names the path, the image / annotation id, and the fix)."""


class ConfigError(UserError, ValueError):
    """A configuration value of the wrong type or range (names the key)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, or holds non-finite values."""


class RunFolderError(UserError, ValueError):
    """The run folder holds another experiment, is locked by another command, or is corrupt."""


class DivergedError(UserError, FloatingPointError):
    """Training diverged (non-finite loss or gradient, or the structured layer's input blew up);
    the message gives the step and what to change (``optim.lr``, ``trainer.clip``)."""

    exit_code = 3


UserError.exit_code = EXIT_USER_ERROR  # entry points exit with ``err.exit_code``

EXIT_DIVERGED = DivergedError.exit_code
EXIT_PREEMPTED = (
    75  # EX_TEMPFAIL: stopped by SIGTERM / SIGUSR1 / SIGUSR2 after a checkpoint; rerun to continue
)


class Stopped(Exception):
    """A stop signal arrived and a checkpoint was written: exit :data:`EXIT_PREEMPTED`."""

    exit_code = EXIT_PREEMPTED
