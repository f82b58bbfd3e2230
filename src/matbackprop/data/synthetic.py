"""Synthetic data in the exact real formats (MSCOCO instances, BSDS500 layout), and a helper that
generates a set once and reuses it.

- :func:`make_synthetic_coco` — JPEGs + ``instances_*.json`` (see ``synthetic_coco.py``).
- :func:`make_synthetic_bsds` — ``BSR/BSDS500/data/{images,groundTruth}/…`` (``synthetic_bsds.py``).
"""

from __future__ import annotations

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
    """Generate ``make(root, **params)`` unless ``root`` already holds a set made with ``params``.

    The set is written to a temporary sibling folder and renamed into place (a crash never
    leaves half a set), and marked with ``synthetic.json``; a folder with another marker is
    replaced.

    Raises:
        FileExistsError: ``root`` exists but is not a generated set (no marker): never deleted.
    """
    root = Path(root)
    marker = root / "synthetic.json"
    plain = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
    if marker.is_file():
        if json.loads(marker.read_text()) == plain:
            return root
        shutil.rmtree(root)
    elif root.exists():
        raise FileExistsError(
            f"{root} exists but is not a generated synthetic set (no synthetic.json); "
            "choose another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp", dir=root.parent))
    try:
        make(tmp, **params)
        (tmp / "synthetic.json").write_text(json.dumps(plain))
        tmp.replace(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root
