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
printed. Hydra's own composition errors (unknown experiment, group option or key, bad override
syntax) become one-line :class:`ConfigError` s too: the Hydra entry points compose the command's
config first (:func:`precheck`), before Hydra would print its own message and exit 1.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from matbackprop.errors import EXIT_USER_ERROR, ConfigError, Stopped, UserError

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


# ---------------------------------------------------------------------------- Hydra front end
@dataclass
class HydraArgs:
    """A Hydra command line: ``config_name``, the ``overrides``, ``multirun``; ``checked``
    False when it holds other Hydra flags (``--cfg``, ``--help``, ...): Hydra handles those."""

    config_name: str
    overrides: list[str]
    multirun: bool
    checked: bool


def parse_hydra_args(argv: list[str], default_config: str) -> HydraArgs:
    """Split ``argv`` (without the program) into config name, overrides and flags."""
    name, overrides, multirun, checked = default_config, [], False, True
    args = iter(argv)
    for arg in args:
        if arg in ("--config-name", "-cn"):
            name = next(args, name)
        elif arg.startswith("--config-name="):
            name = arg.split("=", 1)[1]
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):
            checked = False
        else:
            overrides.append(arg)
    return HydraArgs(name, overrides, multirun, checked)


def compose_checked(config_dir: str, config_name: str, overrides: list[str]) -> Any:
    """``hydra.compose`` whose errors (unknown experiment or group option, misspelled key, bad
    override syntax) are a one-line :class:`ConfigError` naming the key and the choices."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    except Exception as err:
        if not _is_config_exception(err):
            raise
        raise ConfigError(_hydra_message(err, config_dir, config_name, overrides)) from err


def precheck(config_dir: str, args: HydraArgs) -> Any:
    """Compose the command's config before Hydra does (so its errors exit 2, not 1). A sweep
    is composed once per swept value (the other keys at their first value); returns the
    config of a single run, ``None`` for a sweep."""
    if not args.multirun:
        return compose_checked(config_dir, args.config_name, args.overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as err:
        if not _is_config_exception(err):
            raise
        raise ConfigError(_hydra_message(err, config_dir, args.config_name, [])) from err
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else None for o in parsed]

    def line(o: Any, value: str | None) -> str:
        return o.input_line if value is None else f"{o.input_line.split('=', 1)[0]}={value}"

    first = [line(o, v and v[0]) for o, v in zip(parsed, values)]
    compose_checked(config_dir, args.config_name, first)
    for i, (o, vals) in enumerate(zip(parsed, values)):
        for value in (vals or [])[1:]:
            compose_checked(
                config_dir, args.config_name, [*first[:i], line(o, value), *first[i + 1 :]]
            )
    return None


def run_overrides(
    config_dir: str, argv: list[str], training: bool = True, default_config: str = "coco"
) -> list[str]:
    """Check the config of a command line (Hydra's errors and every value, as ConfigError)
    and return the overrides to add so that a single run lands in its default folder:
    :func:`~matbackprop.engine.schema.run_folder_name` (``[]`` when it is ``run_dir`` already,
    for sweeps, whose jobs are named by ``engine.sweep``, and for Hydra's own flags)."""
    from matbackprop.engine.schema import override_suffix, run_folder_name, validate

    args = parse_hydra_args(argv, default_config)
    if not args.checked:
        return []
    cfg = precheck(config_dir, args)
    if cfg is None:
        return []
    validate(cfg, training)  # before Hydra creates the run folder
    folder = run_folder_name(str(cfg.run_dir), args.overrides)
    check_writable(Path(folder))  # before Hydra opens its log file there
    if folder == str(cfg.run_dir):
        return []
    name = f"{cfg.run_name}/{override_suffix(args.overrides)}"
    return [f"run_name={_quoted(name)}", f"run_dir={_quoted(folder)}"]


def check_writable(folder: Path) -> None:
    """Raise a one-line RunFolderError (exit 2) when ``folder`` (or the nearest existing folder
    above it) refuses a file: a read-only file system, a full disk, no permission."""
    import os
    import tempfile

    from matbackprop.engine.checkpoint import unwritable

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-test.")
    except OSError as err:
        raise unwritable(folder / ".write-test", err) from err
    os.close(fd)
    os.unlink(tmp)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _is_config_exception(err: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (HydraException, OmegaConfBaseException))


def _hydra_message(err: Exception, config_dir: str, config_name: str, overrides: list[str]) -> str:
    """One line for a Hydra composition error: the override, what is wrong, the choices."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    given = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides}
    missing = re.search(r"Could not find '([^']+)'", text)
    if isinstance(err, MissingConfigException) and missing and "/" in missing.group(1):
        group, option = missing.group(1).rsplit("/", 1)
        options = sorted(getattr(err, "options", None) or [])
        what = "experiment" if group == "experiment" else f"{group} option"
        return (
            f"{given.get(group, f'{group}={option}')}: no such {what} {option!r}; "
            f"available: {', '.join(options) or '(none)'} (conf/{group}/)"
        )
    unknown = re.search(r"Could not override '([^']+)'\.\s*To append", text)
    if unknown:
        return _unknown_key(unknown.group(1), config_dir, config_name, overrides, given)
    if isinstance(err, OverrideParseException):
        bad = [o for o in overrides if not _parses(o)] or overrides
        first = text.strip().splitlines()[0]
        return f"cannot parse the override {bad[0]!r}: {first} (syntax: key=value, see Hydra's override grammar)"
    return " ".join(s.strip() for s in text.strip().splitlines() if s.strip())


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return True


def _unknown_key(
    key: str, config_dir: str, config_name: str, overrides: list[str], given: dict[str, str]
) -> str:
    """``optim.lrr=0.1: no such key ...; did you mean optim.lr? keys of optim: ...``."""
    from omegaconf import DictConfig, OmegaConf

    override = given.get(key, key + "=...")
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose_checked(config_dir, config_name, rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # noqa: BLE001  (the other overrides fail too: list nothing)
        node = None
    keys = sorted(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, keys, n=1)
    guess = f"did you mean {'.'.join([parent, close[0]]).lstrip('.')}? " if close else ""
    where = f"keys of {parent}" if parent else "top-level keys"
    listed = f"{where}: {', '.join(keys)}; " if keys else ""
    return (
        f"{override}: no such config key {key!r}; {guess}{listed}"
        f"to add a new key on purpose use +{override.lstrip('+')}"
    )
