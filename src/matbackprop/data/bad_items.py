"""Bad data items (``data.on_error``) and per-sample randomness (``set_epoch``), shared by the
COCO and BSDS datasets.

- :func:`item_generator` — the ``torch.Generator`` of one item's augmentation, a function of
  (seed, epoch, index) only, so an item is the same whatever the number of ranks, DataLoader
  workers or the resume point.
- :func:`fetch` — ``on_error="raise"`` re-raises a :class:`DataError`; ``"skip"`` replaces the
  item by the next index that loads (wrapping around), warns once per file, and marks the
  returned item ``"bad": 1``.
- :class:`BadItemCounter` — per-split, per-epoch totals of the ``"bad"`` flags, counted in the
  main process from the batches; a :class:`DataError` once ``data.max_skipped`` is exceeded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from matbackprop.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
SKIP_HINT = (
    "set data.on_error=skip to replace bad items by the next good one (counted as "
    "count_bad_items / val_bad_items), or list every bad file with `make check-data`"
)
_warned: set[str] = set()  # per process: one warning per bad file


def bad_file(message: str, path) -> DataError:
    """A :class:`DataError` remembering the bad file (``.path``): warnings are per file."""
    err = DataError(message)
    err.path = str(path)
    return err


DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_rgb(path, what: str, fix: str) -> np.ndarray:
    """Decode the image file ``path`` as RGB.

    Shape: -> (H, W, 3) uint8.

    Raises:
        DataError: the file cannot be decoded (truncated, garbage); names ``what`` (the file
            and its ids) and ``fix``.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except DECODE_ERRORS as e:
        raise bad_file(
            f"cannot decode {what}: {e}; the file is truncated or corrupt: {fix}", path
        ) from e


def check_on_error(on_error: str) -> str:
    """Validate ``data.on_error`` (:class:`ConfigError` naming the key)."""
    if on_error not in ON_ERROR:
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


def item_seed(seed: int, epoch: int, index: int) -> int:
    """63-bit seed of one item's augmentation from (seed, epoch, index).

    The three integers go through NumPy's ``SeedSequence`` (a hash designed for exactly this:
    nearby inputs give unrelated outputs); its first 64-bit word, top bit cleared, seeds a
    ``torch.Generator``. Raises ValueError for negative values (``SeedSequence`` takes none).
    """
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    word = np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
    return int(word) & (2**63 - 1)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`item_seed`."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))


def fetch(
    load: Callable[[int], dict[str, Any]],
    i: int,
    n: int,
    on_error: str,
    accept: Callable[[int], bool] | None = None,
    max_tries: int = 1000,
) -> dict[str, Any]:
    """``load(i)``, or with ``on_error="skip"`` the first of ``load(i+1)``, ``load(i+2)``, ...
    (modulo ``n``, only indices where ``accept(j)``) that raises no :class:`DataError`.

    Returns the item dict with ``"bad"``: 0 when ``i`` itself loaded, 1 when replaced.

    Raises:
        DataError: ``on_error="raise"`` (the message suggests ``skip``), or none of the
            ``max_tries`` candidates loads (the data is gone, not damaged).
    """
    first, tries = None, 0
    for k in range(n):
        j = (i + k) % n
        if k and accept is not None and not accept(j):
            continue
        if tries == max_tries:
            break
        tries += 1
        try:
            item = load(j)
        except DataError as err:
            if on_error == "raise":
                raise DataError(f"{err}; {SKIP_HINT}") from err
            first = first or err
            key = getattr(err, "path", str(err))
            if key not in _warned:
                _warned.add(key)
                log.warning("skipping a bad item (data.on_error=skip): %s", err)
            continue
        item["bad"] = int(k > 0)
        return item
    raise DataError(
        f"no item could replace bad item {i}: {tries} candidates failed to load "
        f"(data.on_error=skip); the first error: {first}"
    )


class BadItemCounter:
    """Totals of bad (replaced) items per split and epoch, with a cap.

    Args:
        max_skipped: stop when a split's count within one epoch exceeds this.
    """

    def __init__(self, max_skipped: int = 100):
        if max_skipped < 0:
            raise ConfigError(f"data.max_skipped must be >= 0, got {max_skipped}")
        self.max_skipped = int(max_skipped)
        self.counts: dict[tuple[str, int], int] = {}

    def reset(self, split: str, epoch: int) -> None:
        """Forget a split's count in ``epoch`` (before a repeated pass, e.g. a final evaluation)."""
        self.counts.pop((split, epoch), None)

    def add(self, split: str, epoch: int, flags) -> int:
        """Add a batch's ``"bad"`` flags (tensor, list or int); return the batch's count.

        Raises:
            DataError: the split's total in ``epoch`` exceeds ``max_skipped``.
        """
        n = int(torch.as_tensor(flags).sum()) if not isinstance(flags, int) else flags
        total = self.counts.get((split, epoch), 0) + n
        self.counts[(split, epoch)] = total
        if total > self.max_skipped:
            raise DataError(
                f"{total} bad {split} items replaced in epoch {epoch}, more than "
                f"data.max_skipped={self.max_skipped}: the data is badly damaged; list the bad "
                "files with `make check-data` and re-download them (or raise data.max_skipped)"
            )
        return n
