#!/usr/bin/env python
"""Download MSCOCO 2014 (train/val images + instance annotations) into ``--root``.

    python scripts/download_coco.py --root data/coco [--skip-images] [--keep-zips]

Resumable: each archive is fetched into ``<name>.part`` with HTTP Range requests, so a rerun
continues where the last one stopped; the finished archive is checked against its known MD5
before it is extracted (a ``.done_<name>`` marker makes reruns skip finished archives).
Needs about 20 GB extracted plus the largest archive at a time (13.5 GB; zips are deleted after
a successful extraction unless ``--keep-zips``: then 40 GB); the free space is checked first
and a shortfall is refused (exit 2) saying how much is needed and how much is free. Final layout (what ``CocoRegions`` reads)::

    <root>/annotations/instances_{train,val}2014.json
    <root>/train2014/COCO_train2014_*.jpg  (82,783 images)
    <root>/val2014/COCO_val2014_*.jpg      (40,504 images)

Exit codes: 0 done, 2 no network / a failed or corrupt download / an incomplete layout (one
message naming the URL or file and the fix, no traceback), 1 a bug (traceback).

The MD5s and sizes below are the values published with the 2014 release; each agrees across
several independent public download scripts (checked for this project, not re-downloaded).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from matbackprop.cli import call_cli
from matbackprop.data.download import CHUNK, DownloadError, download, file_hash, human
from matbackprop.errors import DataError

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


def md5sum(path: Path, chunk: int = CHUNK, progress: bool = False) -> str:
    """Hex MD5 of a file, read in chunks."""
    return file_hash(path, "md5", progress, chunk)


def verify(path: Path, md5: str) -> None:
    """Raise :class:`DownloadError` (an ``OSError``) and move the file aside to ``<name>.bad``
    if ``path`` does not have the expected MD5."""
    got = md5sum(path, progress=True)
    if got != md5:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise DownloadError(
            f"MD5 mismatch for {path.name}: got {got}, expected {md5}; moved to {bad}. "
            "Rerun to download it again (delete the .bad file once done)"
        )


def extract(zip_path: Path, root: Path) -> None:
    """Unzip ``zip_path`` into ``root`` with a progress bar (a corrupt zip: DownloadError)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for member in tqdm(members, desc=f"unzip {zip_path.name}", unit="file", disable=None):
                zf.extract(member, root)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DownloadError(
            f"cannot unzip {zip_path}: {e}. Delete it and rerun to download it again"
        ) from e


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


def space_needed(root: Path, names: list[str], keep_zips: bool) -> int:
    """Bytes still to be written for ``names``: each unfinished archive (less what is already
    downloaded) plus its extracted copy (about its size: JPEGs do not compress); without
    ``keep_zips`` archives are deleted after extraction, so only the largest one is held at
    a time."""
    todo = [n for n in names if not (root / f".done_{n}").exists()]
    sizes = [ARCHIVES[n][2] for n in todo]
    have = 0
    for n in todo:
        for f in (root / n, root / f"{n}.part"):
            have += f.stat().st_size if f.is_file() else 0
    held = sum(sizes) if keep_zips else max(sizes, default=0)
    return max(0, sum(sizes) + held - have)


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
    """Entry point: 0 done, 2 a data / download problem (message on stderr)."""
    return call_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
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
    need = space_needed(root, names, args.keep_zips)
    free = shutil.disk_usage(root).free
    print(
        f"COCO 2014 into {root}: {len(names)} archive(s), {human(need)} needed, {human(free)} free"
    )
    if need > free:
        raise DataError(
            f"not enough free disk space in {root}: {human(need)} needed (archives + extracted "
            f"images), {human(free)} free; free {human(need - free)} or choose another --root"
        )
    for name in names:
        fetch(name, root, args.keep_zips)
    problems = check_layout(root, args.skip_images)
    if problems:
        raise DataError(
            f"layout check of {root} FAILED:\n  " + "\n  ".join(problems) + "\nRerun this "
            f"script; if it persists, delete the .done_* markers in {root} to extract again."
        )
    print(f"done: {root} is ready (annotations{'' if args.skip_images else ' + images'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
