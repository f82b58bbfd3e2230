"""Value checks of config keys: each returns what is allowed, or ``None`` when the value is
fine (used by :mod:`matbackprop.engine.schema`, which declares every key once)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from omegaconf import ListConfig

Check = Callable[[Any], str | None]  # value -> what is allowed (None: fine)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    rng = " and ".join(
        s for s in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if s
    )
    want = f"an integer {rng}".strip()

    def check(v: Any) -> str | None:
        ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
        return None if ok else want

    return check


def number(
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Check:
    bounds = {">": gt, ">=": ge, "<": lt, "<=": le}
    want = "a number " + " and ".join(f"{op} {b:g}" for op, b in bounds.items() if b is not None)
    tests = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}

    def check(v: Any) -> str | None:
        ok = _is_number(v) and v == v  # not NaN
        ok = ok and all(b is None or tests[op](float(v), b) for op, b in bounds.items())
        return None if ok else want.strip()

    return check


def choice(*allowed: Any, as_str: bool = False) -> Check:
    want = "one of " + " | ".join(str(a) for a in allowed)

    def check(v: Any) -> str | None:
        return None if (str(v) if as_str else v) in allowed else want

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def optional(check: Check) -> Check:
    def opt(v: Any) -> str | None:
        if v is None:
            return None
        want = check(v)
        return None if want is None else f"null or {want}"

    return opt


def int_list(lo: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple, ListConfig)) and len(v) > 0
        ok = ok and all(_is_int(x) and x >= lo for x in v)
        return None if ok else f"a non-empty list of integers >= {lo}"

    return check


def device(v: Any) -> str | None:
    want = "auto | cpu | cuda | cuda:N"
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        return want
    if v.startswith("cuda"):
        import torch  # here: the entry points check a command line without loading torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(v.split(":")[1]) if ":" in v else 0
        if index >= n:
            return f"{want}, a device this machine has ({n} CUDA device(s); use auto or cpu)"
    return None


def checkpoint_source(v: Any) -> str | None:
    """``eval.checkpoint``: a name, or a path (with a ``/`` or ending in ``.pt``; a bare word
    like ``bset`` is a typo, not a folder), checked for existence when loaded."""
    ok = v in ("none", "best", "last") or (isinstance(v, str) and ("/" in v or v.endswith(".pt")))
    return None if ok else "one of none | best | last, or a .pt file or run folder (with a /)"


def weights_source(v: Any) -> str | None:
    """``model.init_from``: null, or a run folder / ``.pt`` file (checked when loaded)."""
    return None if v is None or (isinstance(v, str) and v.strip()) else "null or a path"
