#!/usr/bin/env python
"""Download MSCOCO 2014 (train/val images + instance annotations) into ``--root``.

    python scripts/download_coco.py --root data/coco [--skip-images] [--keep-zips]

Resumable: each archive is fetched into ``<name>.part`` with HTTP Range requests, so a rerun
continues where the last one stopped; the finished archive is checked against its known MD5
before it is extracted (a ``.done_<name>`` marker makes reruns skip finished archives).
Needs about 20 GB for the archives plus 20 GB extracted (zips are deleted after a successful
extraction unless ``--keep-zips``). Final layout (what ``CocoRegions`` reads)::

    <root>/annotations/instances_{train,val}2014.json
    <root>/train2014/COCO_train2014_*.jpg  (82,783 images)
    <root>/val2014/COCO_val2014_*.jpg      (40,504 images)

The MD5s and sizes below are the values published with the 2014 release; each agrees across
several independent public download scripts (checked for this project, not re-downloaded).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

BASE = "http://images.cocodataset.org"
# name: (url, md5, size in bytes, what it unpacks to)
ARCHIVES = {
    "annotations_trainval2014.zip": (
        f"{BASE}/annotations/annotations_trainval2014.zip",
        "0a379cfc70b0e71301e0f377548639bd",
        252_872_794,
        "annotations",
    ),
    "train2014.zip": (
        f"{BASE}/zips/train2014.zip",
        "0da8c0bd3d6becc4dcb32757491aca88",
        13_510_573_713,
        "train2014",
    ),
    "val2014.zip": (
        f"{BASE}/zips/val2014.zip",
        "a3d79f5ed8d289b7a7554ce06a5782b3",
        6_645_013_297,
        "val2014",
    ),
}
IMAGE_COUNTS = {"train2014": 82_783, "val2014": 40_504}
ANN_FILES = ("annotations/instances_train2014.json", "annotations/instances_val2014.json")
CHUNK = 1 << 20


def human(n: float) -> str:
    """Bytes as a short human string (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def md5sum(path: Path, chunk: int = CHUNK, progress: bool = False) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"md5 {path.name}",
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
        raise
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
    got = part.stat().st_size
    if (size is not None and got != size) or (total is not None and got != total):
        raise OSError(
            f"{dest.name}: got {human(got)} ({got} bytes), expected {total or size} bytes; "
            "rerun to resume"
        )
    part.replace(dest)
    return dest


def _total_size(resp, have: int) -> int | None:
    """Total file size from Content-Range (``bytes a-b/total``) or Content-Length."""
    headers = getattr(resp, "headers", None) or {}
    cr = headers.get("Content-Range")
    if cr and "/" in cr and cr.rsplit("/", 1)[1].strip().isdigit():
        return int(cr.rsplit("/", 1)[1])
    cl = headers.get("Content-Length")
    return int(cl) + have if cl and cl.isdigit() else None


def verify(path: Path, md5: str) -> None:
    """Raise ``OSError`` (and remove the file) if ``path`` does not have the expected MD5."""
    got = md5sum(path, progress=True)
    if got != md5:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise OSError(f"MD5 mismatch for {path.name}: got {got}, expected {md5}; moved to {bad}")


def extract(zip_path: Path, root: Path) -> None:
    """Unzip ``zip_path`` into ``root`` with a progress bar."""
    with zipfile.ZipFile(zip_path) as zf:
        for member in tqdm(zf.infolist(), desc=f"unzip {zip_path.name}", unit="file", disable=None):
            zf.extract(member, root)


def check_layout(root: Path, skip_images: bool = False) -> list[str]:
    """Problems with the final layout under ``root`` (empty list = ready)."""
    problems = [f"missing {root / a}" for a in ANN_FILES if not (root / a).is_file()]
    if skip_images:
        return problems
    for folder, n in IMAGE_COUNTS.items():
        d = root / folder
        if not d.is_dir():
            problems.append(f"missing folder {d}")
            continue
        have = sum(1 for e in d.iterdir() if e.name.endswith(".jpg"))
        if have != n:
            problems.append(f"{d} has {have} images, expected {n}")
    return problems


def fetch(name: str, root: Path, keep_zip: bool, opener=urllib.request.urlopen) -> None:
    """Download, verify and extract one archive unless its ``.done_<name>`` marker exists."""
    url, md5, size, _ = ARCHIVES[name]
    marker = root / f".done_{name}"
    if marker.exists():
        print(f"{name}: already extracted, skipping")
        return
    dest = root / name
    if dest.exists():
        print(f"{name}: found {human(dest.stat().st_size)}, verifying")
    else:
        print(f"{name}: downloading {human(size)} from {url}")
        download(url, dest, size, opener)
    verify(dest, md5)
    extract(dest, root)
    marker.touch()
    if not keep_zip:
        dest.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/coco"), help="target folder")
    p.add_argument("--skip-images", action="store_true", help="annotations only (~250 MB)")
    p.add_argument("--keep-zips", action="store_true", help="keep archives after extraction")
    args = p.parse_args(argv)
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    names = ["annotations_trainval2014.zip"]
    if not args.skip_images:
        names += ["val2014.zip", "train2014.zip"]
    need = sum(ARCHIVES[n][2] for n in names if not (root / f".done_{n}").exists())
    free = shutil.disk_usage(root).free
    print(
        f"COCO 2014 into {root}: {len(names)} archive(s), up to {human(2 * need)} needed, {human(free)} free"
    )
    if 2 * need > free:
        print("warning: probably not enough disk space (archive + extracted copy)", file=sys.stderr)
    for name in names:
        fetch(name, root, args.keep_zips)
    problems = check_layout(root, args.skip_images)
    if problems:
        print("layout check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"done: {root} is ready (annotations{'' if args.skip_images else ' + images'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
