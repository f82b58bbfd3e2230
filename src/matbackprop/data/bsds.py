"""Berkeley Segmentation Dataset (BSDS500 / BSDS300 protocol) with all human segmentations.

Layouts understood (``layout="auto"`` detects them):

- official: ``root/BSR/BSDS500/data/{images,groundTruth}/{train,val,test}/<id>.{jpg,mat}``;
  ``root`` may also point at ``.../BSR`` or at ``.../BSDS500/data`` directly;
- flat: ``root/images/<id>.jpg`` and ``root/groundTruth/<id>.mat`` (e.g. the five-image sample
  in ``shared/bsds500-sample``); only ``split="all"``.

Splits: BSDS500 (``version=500``) → ``train`` (200), ``val`` (100), ``test`` (200), plus
``trainval``. BSDS300 protocol (``version=300``) → ``train`` = BSDS500 train (200 images),
``test`` = BSDS500 val (100 images): BSDS500's train + val ARE the 300 BSDS300 images.

Each item is a dict: ``image`` — uint8 numpy array (H, W, 3) RGB (321×481 or 481×321);
``gts`` — list of uint16 (H, W) human segmentations (labels from 1); ``id`` — str; ``bad`` —
1 if the requested image was unreadable and replaced (``on_error="skip"``), else 0. A
``transform`` receives the dict and returns what the dataset yields. A truncated or garbage
JPEG, a garbage ``.mat`` or a size mismatch raises :class:`~matbackprop.errors.DataError`
naming the file and the image id.

Get the data with ``make data-bsds`` (``scripts/download_bsds.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from matbackprop import matio
from matbackprop.data.bad_items import bad_file, check_on_error, fetch, read_rgb
from matbackprop.data.validate import check_labels

SPLITS = {
    500: {"train": ("train",), "val": ("val",), "test": ("test",), "trainval": ("train", "val")},
    300: {"train": ("train",), "test": ("val",)},
}
_HINT = "run `make data-bsds` (scripts/download_bsds.py --root data/bsds) to download BSDS500"


def load_groundtruth(path: str | os.PathLike) -> list[np.ndarray]:
    """All human segmentations of one image from a BSDS ``groundTruth`` .mat file.

    The variable ``groundTruth`` is a 1×K (or K×1) cell of structs with a ``Segmentation``
    field (read by :func:`matbackprop.matio.load_groundtruth`). Shape: -> K × (H, W) uint16.

    Raises:
        MatFileError: a segmentation whose labels are not finite integers in 0..65535 or are all
            zero (:func:`matbackprop.data.validate.check_labels`), naming the file and entry.
    """
    out = []
    for s, seg in enumerate(matio.load_groundtruth(path)):
        why = check_labels(seg)
        if why is not None:
            raise matio.MatFileError(f"{path}: groundTruth entry {s + 1} `Segmentation`: {why}")
        out.append(seg.astype(np.uint16))
    return out


def find_data_dir(root: str | os.PathLike) -> tuple[Path, str]:
    """Locate the BSDS data under ``root`` → (folder holding images/ and groundTruth/, layout).

    ``layout`` is ``"official"`` (split sub-folders) or ``"flat"``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BSDS root folder not found: {root}; {_HINT}")
    for cand in (root / "BSR" / "BSDS500" / "data", root / "BSDS500" / "data", root / "data", root):
        if (cand / "images").is_dir() and (cand / "groundTruth").is_dir():
            split_dirs = any((cand / "images" / s).is_dir() for s in ("train", "val", "test"))
            return cand, "official" if split_dirs else "flat"
    raise FileNotFoundError(
        f"no BSDS images/ and groundTruth/ folders under {root} (looked in BSR/BSDS500/data, "
        f"BSDS500/data, data and the root itself); {_HINT}"
    )


class BSDS(Dataset):
    """BSDS500 images with every human segmentation.

    Args:
        root: folder containing ``BSR/`` (or the ``BSR``, ``BSDS500/data`` or flat folder).
        split: ``train``/``val``/``test``/``trainval`` (version 500), ``train``/``test`` (version
            300, the BSDS300 protocol), ``all`` for a flat folder.
        version: 500 or 300.
        transform: optional callable applied to the item dict.
        layout: ``auto``, ``official`` or ``flat``.
        on_error: ``raise`` or ``skip`` (replace a bad item by the next index that loads).

    Shape: item["image"] (H, W, 3) uint8; item["gts"] K × (H, W) uint16.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        version: int = 500,
        transform: Callable[[dict], object] | None = None,
        layout: str = "auto",
        on_error: str = "raise",
    ) -> None:
        self.on_error = check_on_error(on_error)
        if version not in SPLITS:
            raise ValueError(f"version must be 500 or 300, got {version!r}")
        if layout not in ("auto", "official", "flat"):
            raise ValueError(f"layout must be 'auto', 'official' or 'flat', got {layout!r}")
        self.data_dir, found = find_data_dir(root)
        self.layout = found if layout == "auto" else layout
        self.split, self.version, self.transform = split, version, transform
        if self.layout == "flat":
            if split != "all":
                raise ValueError(
                    f"{self.data_dir} has a flat layout (no split folders): use split='all'"
                )
            folders = [""]
        else:
            if split not in SPLITS[version]:
                raise ValueError(
                    f"split {split!r} is not one of {sorted(SPLITS[version])} for BSDS{version}"
                )
            folders = list(SPLITS[version][split])
        self.items: list[tuple[str, Path, Path]] = []
        for sub in folders:
            img_dir, gt_dir = self.data_dir / "images" / sub, self.data_dir / "groundTruth" / sub
            for d in (img_dir, gt_dir):
                if not d.is_dir():
                    raise FileNotFoundError(f"BSDS folder not found: {d}; {_HINT}")
            images = sorted(img_dir.glob("*.jpg"))
            if not images:
                raise FileNotFoundError(f"no .jpg images in {img_dir}; {_HINT}")
            for img in images:
                gt = gt_dir / f"{img.stem}.mat"
                if not gt.is_file():
                    raise FileNotFoundError(f"ground truth missing for image {img}: {gt}")
                self.items.append((img.stem, img, gt))

    @property
    def ids(self) -> list[str]:
        return [i for i, _, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, idx: int) -> dict:
        """Item ``idx`` without replacement (raises :class:`DataError` naming file and id)."""
        iid, img_path, gt_path = self.items[idx]
        image = read_rgb(img_path, f"BSDS image {img_path} (image id {iid})", _HINT)  # (H, W, 3)
        try:
            gts = load_groundtruth(gt_path)
        except (FileNotFoundError, ValueError) as e:
            raise bad_file(f"{e} (BSDS image id {iid}); {_HINT}", gt_path) from e
        for s, g in enumerate(gts):
            if g.shape != image.shape[:2]:
                raise bad_file(
                    f"{gt_path}: segmentation {s + 1} is {g.shape}, image {img_path} is "
                    f"{image.shape[:2]} (image id {iid}); the files are from different "
                    f"releases: {_HINT}",
                    gt_path,
                )
        return {"image": image, "gts": gts, "id": iid}

    def __getitem__(self, idx: int):
        item = fetch(self.load, idx, len(self), self.on_error)
        return self.transform(item) if self.transform is not None else item
