"""Download and unpack the official BSDS500 archive (``BSR_bsds500.tgz``, ~70 MB).

Run::

    python scripts/download_bsds.py --root data/bsds        # or: make data-bsds

Result: ``data/bsds/BSR/BSDS500/data/{images,groundTruth}/{train,val,test}`` (200/100/200
images), the layout :class:`matbackprop.data.bsds.BSDS` reads. The download is resumable
(HTTP Range into ``<archive>.part``); the archive is kept so that re-running only re-checks it.

Checksum: we could not find a published reference hash for ``BSR_bsds500.tgz``, so none is
built in (UNVERIFIED). The script prints the SHA-256 of the archive and records it in
``<root>/BSR_bsds500.tgz.sha256``; pass ``--sha256 HEX`` to enforce a known value (e.g. the one
recorded on a previous machine). The unpacked tree is checked for the expected image counts.
Exit codes: 0 done, 2 no network / a failed, corrupt or mismatching download / an incomplete
layout (one message naming the URL or file and the fix, no traceback), 1 a bug (traceback).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from matbackprop.cli import call_cli
from matbackprop.data.download import DownloadError, file_hash
from matbackprop.data.download import download as _download
from matbackprop.errors import DataError

URLS = (
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
)
ARCHIVE = "BSR_bsds500.tgz"
EXPECTED_SHA256: str | None = None  # unverified: no published reference hash was found
EXPECTED_COUNTS = {"train": 200, "val": 100, "test": 200}


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return file_hash(path, "sha256", chunk=chunk)


def check_layout(root: Path, counts: dict[str, int] = EXPECTED_COUNTS) -> list[str]:
    """Problems with the unpacked tree under ``root`` (empty list = fine).

    Checks ``root/BSR/BSDS500/data/images/<split>/*.jpg`` counts and that every image has a
    ``groundTruth/<split>/<id>.mat``.
    """
    data = root / "BSR" / "BSDS500" / "data"
    problems = []
    for split, n in counts.items():
        img_dir, gt_dir = data / "images" / split, data / "groundTruth" / split
        if not img_dir.is_dir() or not gt_dir.is_dir():
            problems.append(f"missing folder {img_dir if not img_dir.is_dir() else gt_dir}")
            continue
        ids = sorted(p.stem for p in img_dir.glob("*.jpg"))
        if len(ids) != n:
            problems.append(f"{img_dir}: {len(ids)} images, expected {n}")
        missing = [i for i in ids if not (gt_dir / f"{i}.mat").is_file()]
        if missing:
            problems.append(
                f"{gt_dir}: no ground truth for {len(missing)} images ({missing[:3]}...)"
            )
    return problems


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Resumable download of ``url`` to ``dest`` via ``dest.part`` (HTTP Range)."""
    print(f"downloading {url}")
    return _download(url, dest, opener=lambda req: urllib.request.urlopen(req, timeout=timeout))


def extract(archive: Path, root: Path) -> None:
    """Unpack the tarball into ``root`` (refusing members that escape it).

    Raises:
        DownloadError: the archive is corrupt or holds a member outside ``root``.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            base = root.resolve()
            for m in tar.getmembers():
                if not (base / m.name).resolve().is_relative_to(base):
                    raise DownloadError(
                        f"{archive}: unsafe member path {m.name!r}; this is not the BSDS "
                        "archive: delete it and rerun"
                    )
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: safe extraction
                tar.extractall(root, filter="data")
            else:
                tar.extractall(root)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DownloadError(
            f"cannot unpack {archive}: {e}. Delete it and rerun to download it again"
        ) from e


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 done, 2 a data / download problem (message on stderr)."""
    return call_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description="Download BSDS500 (BSR_bsds500.tgz) and unpack it.")
    p.add_argument("--root", default="data/bsds", help="target folder (default data/bsds)")
    p.add_argument("--sha256", default=EXPECTED_SHA256, help="expected SHA-256 of the archive")
    p.add_argument("--url", default=None, help="download from this URL instead of the defaults")
    p.add_argument("--force", action="store_true", help="re-extract even if the tree looks fine")
    args = p.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if not args.force and not check_layout(root):
        print(f"BSDS500 already present and complete under {root / 'BSR'}")
        return 0
    archive = root / ARCHIVE
    if not archive.exists():
        errors = []
        for url in [args.url] if args.url else URLS:
            try:
                download(url, archive)
                break
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {e}")
                print(f"download failed: {url}: {e}", file=sys.stderr)
        else:
            raise DownloadError(
                "could not download BSDS500:\n  " + "\n  ".join(errors) + "\nCheck the "
                "network connection and rerun (partial downloads resume), or pass --url."
            )
    digest = sha256sum(archive)
    (root / f"{ARCHIVE}.sha256").write_text(f"{digest}  {ARCHIVE}\n")
    print(f"SHA-256 {digest}  {archive}")
    if args.sha256 and digest != args.sha256.lower():
        raise DownloadError(
            f"checksum mismatch for {archive}: SHA-256 {digest}, expected {args.sha256}; "
            "delete it and rerun"
        )
    if not args.sha256:
        print("(no reference checksum known: the hash above is recorded but UNVERIFIED)")
    if args.force and (root / "BSR").exists():
        shutil.rmtree(root / "BSR")
    print(f"extracting {archive} -> {root}")
    extract(archive, root)
    problems = check_layout(root)
    if problems:
        raise DataError(
            f"unexpected layout after extracting {archive}:\n  "
            + "\n  ".join(problems)
            + "\nDelete the archive and rerun with --force to download and extract it again."
        )
    print(f"BSDS500 ready: {root / 'BSR' / 'BSDS500' / 'data'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
