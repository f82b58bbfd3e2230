"""Resumable, verified downloads for the dataset scripts (``scripts/download_*.py``).

- :func:`download`: HTTP(S)/file URL to a file, resuming a ``.part`` file with ``Range``.
- :func:`file_hash`: MD5 / SHA-256 of a file, chunked, with an optional progress bar.

Failures the user fixes (no network, an HTTP error, a transfer cut short, a checksum mismatch)
raise :class:`DownloadError`, a :class:`~matbackprop.errors.DataError` (exit 2 in the scripts)
that is also an ``OSError``, naming the URL or file and what to do.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from matbackprop.errors import DataError

CHUNK = 1 << 20


class DownloadError(DataError, OSError):
    """A download failed or is incomplete, or an archive is corrupt (names URL / file, fix)."""


def human(n: float) -> str:
    """Bytes as a short human string (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def file_hash(path: Path, algo: str = "sha256", progress: bool = False, chunk: int = CHUNK) -> str:
    """Hex digest (``md5``, ``sha256``, ...) of a file, read in chunks; optional progress bar."""
    h = hashlib.new(algo)
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"{algo} {path.name}",
            disable=None if progress else True,
        ) as bar,
    ):
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def download(url: str, dest: Path, size: int | None = None, opener=urllib.request.urlopen) -> Path:
    """Fetch ``url`` to ``dest``, resuming from ``dest.with_suffix(suffix + '.part')``.

    Sends ``Range: bytes=<have>-`` when a partial file exists. A 206 reply is appended; a 200
    reply (server ignored the range) restarts from zero; a 416 reply means the part file is
    already complete. The part file is renamed to ``dest`` only once all bytes are there.

    Args:
        url: http(s) or file URL.
        dest: final path.
        size: expected total size in bytes, if known (checked at the end).
        opener: ``urlopen``-like callable (injectable for offline tests).

    Raises:
        DownloadError: the server cannot be reached or answers with an error, or the transfer
            stops early (the part file is kept: rerunning resumes it).
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()  # longer than the real file: cannot be a prefix of it
        have = 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = opener(req)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and (size is None or have == size):
            part.replace(dest)
            return dest
        raise DownloadError(
            f"cannot download {url}: HTTP {e.code} {e.reason}. Check the URL, or retry later"
        ) from e
    except OSError as e:  # URLError (DNS, refused, no network), timeouts
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot download {url}: {reason}. Check the network connection (or proxy "
            "settings) and rerun"
        ) from e
    try:
        total = _fetch(resp, part, dest, have, size)
    except OSError as e:
        if isinstance(e, DownloadError):
            raise
        got = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"download of {url} interrupted at {human(got)}: {e}; rerun to resume"
        ) from e
    got = part.stat().st_size
    if (size is not None and got != size) or (total is not None and got != total):
        raise DownloadError(
            f"{dest.name}: got {human(got)} ({got} bytes), expected {total or size} bytes; "
            "rerun to resume"
        )
    part.replace(dest)
    return dest


def _fetch(resp, part: Path, dest: Path, have: int, size: int | None) -> int | None:
    """Write the response body to ``part`` (appending after ``have`` bytes on a 206 reply);
    returns the total size (announced by the server, else ``size``)."""
    with resp:
        status = getattr(resp, "status", None) or resp.getcode() or 200
        if status != 206:  # full body follows: start over
            have = 0
        total = _total_size(resp, have) or size
        mode = "ab" if have else "wb"
        if have:
            print(f"  resuming {dest.name} at {human(have)} of {human(total or 0)}")
        with (
            open(part, mode) as f,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=None
            ) as bar,
        ):
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    return total


def _total_size(resp, have: int) -> int | None:
    """Total file size from Content-Range (``bytes a-b/total``) or Content-Length."""
    headers = getattr(resp, "headers", None) or {}
    cr = headers.get("Content-Range")
    if cr and "/" in cr and cr.rsplit("/", 1)[1].strip().isdigit():
        return int(cr.rsplit("/", 1)[1])
    cl = headers.get("Content-Length")
    return int(cl) + have if cl and cl.isdigit() else None
