"""Decode every image and ``.mat`` of a data set once, in parallel, and list the bad ones
(``scripts/check_data.py``, ``make check-data``). Functions live here, not in the script, so
that worker processes can import them."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from matbackprop.data.bsds import BSDS, find_data_dir
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.errors import UserError

_DS = {}  # datasets shared with forked workers: key -> dataset


def _coco_image(key_k: tuple[str, int]) -> str | None:
    key, k = key_k
    ds = _DS[key]
    path = ds.image_dir / ds._files[k]
    ann = ds._ann_id[ds._img == k][:5].tolist()
    what = f"{path} (image id {ds._image_ids[k]}, annotations {ann})"
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            size = (im.height, im.width)
    except Exception as e:  # noqa: BLE001  (every decode failure is a finding)
        return f"{what}: {type(e).__name__}: {e}"
    if size != tuple(int(v) for v in ds._hw[k]):
        return (
            f"{what}: image is {size[1]}x{size[0]}, annotations say {ds._hw[k][1]}x{ds._hw[k][0]}"
        )
    return None


def _bsds_item(key_k: tuple[str, int]) -> str | None:
    key, k = key_k
    try:
        _DS[key].load(k)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def coco_jobs(root: Path, bad: list[str]) -> list[tuple]:
    """Index every ``instances_*.json`` (listing every broken validation rule, see
    :mod:`matbackprop.data.validate`) and return a decode job per valid image entry."""
    jobs = []
    for ann in sorted((root / "annotations").glob("instances_*.json")):
        try:
            ds = CocoRegions(
                root, ann, train=False, crop_size=8, max_side=8, min_area=0, on_error="skip"
            )
        except (UserError, ValueError, FileNotFoundError) as e:
            bad.extend(getattr(e, "problems", None) or [f"{ann}: {e}"])
            continue
        bad.extend(ds.problems.lines)
        key = f"coco:{ann.name}"
        _DS[key] = ds
        invalid = ds.problems.bad_images  # never opened: their file_name may point anywhere
        jobs += [
            (_coco_image, (key, k))
            for k in range(len(ds._files))
            if int(ds._image_ids[k]) not in invalid
        ]
    if not jobs and not bad:
        bad.append(f"{root}: no annotations/instances_*.json found")
    return jobs


def bsds_jobs(root: Path, bad: list[str]) -> list[tuple]:
    try:
        _, layout = find_data_dir(root)
    except FileNotFoundError as e:
        bad.append(str(e))
        return []
    jobs = []
    for split in ["all"] if layout == "flat" else ["train", "val", "test"]:
        try:
            ds = BSDS(root, split)
        except (FileNotFoundError, ValueError) as e:
            bad.append(f"{root} split {split}: {e}")
            continue
        _DS[f"bsds:{split}"] = ds
        jobs += [(_bsds_item, (f"bsds:{split}", k)) for k in range(len(ds))]
    return jobs


def _run(job: tuple) -> str | None:
    fn, arg = job
    return fn(arg)


def check(
    coco: str | Path | None, bsds: str | Path | None, workers: int = 1
) -> tuple[int, list[str]]:
    """Check the COCO and/or BSDS roots; return (files checked, bad lines ``file (ids): error``)."""
    bad: list[str] = []
    jobs = (coco_jobs(Path(coco), bad) if coco else []) + (
        bsds_jobs(Path(bsds), bad) if bsds else []
    )
    bar = dict(total=len(jobs), desc="check data", unit="file", disable=None)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_run, jobs, chunksize=16), **bar))
    else:
        results = [_run(j) for j in tqdm(jobs, **bar)]
    return len(jobs), bad + [r for r in results if r is not None]
