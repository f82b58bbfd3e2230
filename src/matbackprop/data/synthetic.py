"""Synthetic data in the exact real formats (MSCOCO instances, BSDS500 layout), and a helper that
generates a set once and reuses it.

- :func:`make_synthetic_coco` — JPEGs + ``instances_*.json`` (see ``synthetic_coco.py``).
- :func:`make_synthetic_bsds` — ``BSR/BSDS500/data/{images,groundTruth}/…`` (``synthetic_bsds.py``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .synthetic_bsds import make_synthetic_bsds
from .synthetic_coco import make_synthetic_coco

__all__ = ["ensure_generated", "make_synthetic_bsds", "make_synthetic_coco"]


def ensure_generated(root: str | Path, params: Mapping[str, Any], make: Callable[..., Any]) -> Path:
    """The folder of a set made by ``make(folder, **params)``, generated once; returns it.

    ``root`` holds the first set generated there; a set with other parameters goes to the
    sibling ``<root>-<hash of params>`` (so a sweep over synthetic sizes never deletes the data
    another job is reading). Generation runs under a file lock (``.<name>.lock`` beside it):
    concurrent jobs (a local sweep) wait for the first and reuse its set. The set is written to
    a temporary sibling folder and renamed into place (a crash never leaves half a set), and
    marked with ``synthetic.json``.

    Raises:
        FileExistsError: ``root`` exists but is not a generated set (no marker): never deleted.
    """
    from filelock import FileLock

    root = Path(root)
    plain = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        folder = root
        if root.exists() and not (root / "synthetic.json").is_file():
            raise FileExistsError(
                f"{root} exists but is not a generated synthetic set (no synthetic.json); "
                "choose another data.root"
            )
        if root.exists() and _marker(root) != plain:
            digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:10]
            folder = root.parent / f"{root.name}-{digest}"
        if folder.exists() and _marker(folder) == plain:
            return folder
        if folder.exists():  # a set under this name with other parameters: left alone
            raise FileExistsError(f"{folder} holds another synthetic set; choose another data.root")
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
        try:
            make(tmp, **params)
            (tmp / "synthetic.json").write_text(json.dumps(plain))
            tmp.replace(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return folder


def _marker(folder: Path) -> Any:
    try:
        return json.loads((folder / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None
