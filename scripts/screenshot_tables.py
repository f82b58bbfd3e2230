#!/usr/bin/env python
"""Screenshots of the HTML pages of ``make tables`` in a real headless browser (Chromium).

    python scripts/screenshot_tables.py --tables outputs/tables --out outputs/tables/shots

Takes ``<out>/<page>.png`` of every ``table*.html`` under ``--tables`` with Debian's
``chromium --headless --screenshot`` (``apt-get install chromium``), at ``--window-size``
(width,height in CSS pixels; the part of the page below the height is cut off). Exit 2 when
Chromium or the pages are missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def screenshot(chromium: str, page: Path, png: Path, size: str, timeout: float = 120) -> Path:
    """One page -> one PNG (raises RuntimeError with Chromium's output when none is written)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={size}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(
            f"chromium wrote no {png} (exit {proc.returncode}): {proc.stderr[-800:]}"
        )
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=Path, default=Path("outputs/tables"), help="pages")
    parser.add_argument("--out", type=Path, default=None, help="default: <tables>/shots")
    parser.add_argument("--window-size", default="1400,2400", help="width,height")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    pages = sorted(args.tables.glob("table*.html"))
    if not pages:
        print(f"error: no table*.html in {args.tables} (run `make tables` first)", file=sys.stderr)
        return 2
    if not Path(args.chromium).is_file():
        print(
            f"error: no Chromium at {args.chromium} (`apt-get install chromium`, or --chromium)",
            file=sys.stderr,
        )
        return 2
    out = args.out or args.tables / "shots"
    for page in pages:
        print(
            f"[screenshot] {screenshot(args.chromium, page, out / f'{page.stem}.png', args.window_size)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
