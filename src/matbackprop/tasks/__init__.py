"""Tasks: what to train on and how to score it, plugged into the task-agnostic engine.

A task lives in ``matbackprop/tasks/<name>.py`` and exposes ``build_task(cfg) -> Task`` (the
protocol is in :mod:`matbackprop.tasks.base`); the config key ``task: <name>`` picks it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from matbackprop.errors import DataError  # noqa: F401  (re-exported: tasks raise it)


def task_factory(name: str) -> Callable[[Any], Any]:
    """``build_task`` of ``matbackprop.tasks.<name>``.

    Raises:
        ValueError: no such task module.
    """
    try:
        module = importlib.import_module(f"matbackprop.tasks.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"matbackprop.tasks.{name}":
            raise
        raise ValueError(f"unknown task {name!r}: no module matbackprop.tasks.{name}") from err
    return module.build_task
