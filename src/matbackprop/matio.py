"""Reading the BSDS MATLAB files (``scipy.io.loadmat``): ground truth, cells, checked loading.

Shared by :mod:`matbackprop.data.bsds` (the loader) and :mod:`matbackprop.evaluation` (the
region benchmark); depends only on the leaf :mod:`matbackprop.errors`. Unreadable or malformed
files raise :class:`MatFileError` — a :class:`~matbackprop.errors.DataError` (exit 2, no
traceback) that is also a ``ValueError`` — naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io as sio

from matbackprop.errors import DataError


class MatFileError(DataError, ValueError):
    """A MATLAB file that cannot be read or lacks what BSDS files hold (names the file)."""


def loadmat(path: str | os.PathLike) -> dict:
    """``scipy.io.loadmat`` with errors that name the file.

    Raises:
        FileNotFoundError: no such file.
        MatFileError: not a readable MATLAB file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return sio.loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise MatFileError(
            f"could not read MATLAB file {path}: {e}; the file is truncated or corrupt: "
            "re-download it (e.g. `make data-bsds`)"
        ) from e


def cell_items(cell) -> list:
    """Entries of a MATLAB cell or struct array loaded by ``loadmat`` (1×K or K×1)."""
    a = np.asarray(cell)
    if a.dtype == object or a.dtype.names:
        return [a.flat[i] for i in range(a.size)]
    return [a]


def unwrap(x):
    """Strip the 1×1 object/struct wrappers ``loadmat`` puts around MATLAB values."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.flat[0]
    return x


def load_groundtruth(path: str | os.PathLike) -> list[np.ndarray]:
    """Every human segmentation in a BSDS ``groundTruth`` .mat (a cell of structs with a
    ``Segmentation`` field), as stored (uint16 in the official files).

    Shape: -> S × (H, W).

    Raises:
        FileNotFoundError, MatFileError: missing or unreadable file, no ``groundTruth`` variable,
            an entry without a 2-D ``Segmentation``, an empty cell (the message names the file).
    """
    path = Path(path)
    d = loadmat(path)
    if "groundTruth" not in d:
        found = sorted(k for k in d if not k.startswith("__"))
        raise MatFileError(f"{path}: no variable 'groundTruth' (found {found})")
    out = []
    for s, e in enumerate(cell_items(d["groundTruth"])):
        e = unwrap(e)
        if "Segmentation" not in (getattr(getattr(e, "dtype", None), "names", None) or ()):
            raise MatFileError(f"{path}: groundTruth entry {s + 1} has no 'Segmentation' field")
        seg = np.asarray(unwrap(e["Segmentation"]))
        if seg.ndim != 2:
            raise MatFileError(
                f"{path}: groundTruth entry {s + 1} Segmentation has shape {seg.shape}"
            )
        out.append(seg)
    if not out:
        raise MatFileError(f"{path}: groundTruth cell is empty")
    return out
