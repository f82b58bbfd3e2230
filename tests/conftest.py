"""Shared test helpers."""

import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import ``scripts/<name>.py`` as the module ``scripts.<name>`` (the repository root is on
    ``sys.path`` under pytest: ``tests`` is a package)."""
    return importlib.import_module(f"scripts.{name}")
