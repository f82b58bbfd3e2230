"""A prepared store of MSCOCO region patches: decode each image once, crop every region once.

``scripts/prepare_coco.py`` (``make prepare-coco``) writes, per region, what
:class:`~matbackprop.data.coco_regions.CocoRegions` computes before its random placement: the
box resampled to largest side ``max_side`` (RGB patch) and its soft instance mask at the same
size. :class:`PreparedCocoRegions` reads them back and applies the SAME normalise / jitter /
flip / paste / mean-fill / mask-downsample code, so only the decoding differs.

Format (a folder, e.g. ``data/coco/prepared/train2014/``), chosen to be simple and robust
rather than another dependency:

- ``chunk-NNNNN.bin`` — the records of a fixed group of images, back to back: per region the
  patch (JPEG, or raw uint8 RGB with ``fmt="raw"``) then the mask (uint8 = round(255 * m),
  zlib-compressed);
- ``chunk-NNNNN.npy`` — its index, one row per region: the annotation id and the clipped box
  ``(x, y, bw, bh)`` it was cut from, offset, lengths, patch ``w``/``h``, a CRC-32 of the
  record seeded with (annotation id, box) — so a record is bound to its annotation — and a
  bad-image flag;
- ``chunk-NNNNN.json`` — written last, atomically: the SHA-256 and size of the ``.bin``, the
  SHA-256 of the ``.npy``, the row count and the SHA-256 of the build parameters. A chunk is
  done when all of these match (a rerun also re-hashes the ``.bin``): an interrupted prepare
  resumes at the first missing chunk, and a damaged or edited chunk is rebuilt;
- ``manifest.json`` — written when every chunk is done: the build parameters (format,
  quality, ``max_side``, ``chunk_images``, image folder), the annotation file's name and
  SHA-256, and each chunk's ``.bin`` SHA-256 and size, ``.npy`` SHA-256 and rows. A store
  without it is incomplete and never read.

Opening a store (:class:`PreparedCocoRegions`) checks, before any item is read: the manifest
(readable, this version, the annotation file's SHA-256, ``max_side``), each index against
its SHA-256, each ``.bin``'s size, and every row against the annotation it serves (id, box,
patch size). Any mismatch or damage is a :class:`~matbackprop.errors.DataError` naming the
file and ``make prepare-coco`` (a rerun repairs it). ``prepare_coco.py`` stopped by
SIGTERM / SIGINT removes its temporary ``*.<pid>.tmp`` files (and those of dead processes).

Random access by index (the seeded epoch order) is one ``os.pread`` per item; the reader
checks each record's CRC-32 against the item's own annotation id and box (a corrupt record is
a bad item, see ``data.on_error``). WebDataset
tar shards would give sequential reads only, and a single huge memory map would make
resumption and checksumming all-or-nothing.

Patches are stored as JPEG (quality 97, 4:4:4) by default: measured on the synthetic
640×480 texture set (gratings + noise, a hard case for JPEG) the patch PSNR against the
on-the-fly crop is 43.3 dB at worst (45.9 mean; quality 95 gave 41.0 worst) at ~21 kB per
region, 3.8× less than raw RGB (~80 kB; raw for MSCOCO 2014's ~900k regions would be ~70 GB,
more than the 19 GB of source JPEGs), and a 200-px JPEG decodes in a fraction of a
millisecond. ``tests/data/test_region_store.py`` checks PSNR ≥ 40 dB per region.
``fmt="raw"`` is lossless: its items equal the on-the-fly ones exactly (tested). The soft
mask is quantised to 1/255 (error ≤ 1/510 per pixel, also after area downsampling).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from matbackprop.data.coco_regions import CocoRegions, crop_region
from matbackprop.errors import DataError

VERSION = 2  # 2: rows carry their box, CRCs are bound to (ann_id, box), indexes are hashed
PREPARE_HINT = "run `make prepare-coco` (scripts/prepare_coco.py)"
REPAIR_HINT = "rerun `make prepare-coco` (scripts/prepare_coco.py): it rebuilds damaged chunks"
ROW = np.dtype(
    [
        ("ann_id", "<i8"),
        ("x", "<f8"),
        ("y", "<f8"),
        ("bw", "<f8"),
        ("bh", "<f8"),
        ("offset", "<i8"),
        ("img_len", "<i4"),
        ("mask_len", "<i4"),
        ("w", "<i2"),
        ("h", "<i2"),
        ("crc", "<u4"),
        ("bad", "u1"),
    ]
)


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def ann_sha256(path: str | Path) -> str:
    """:func:`sha256_file` of an annotation file, memoised per (path, size, mtime): hashed once
    per process, not at every dataset construction (chunk checks never use the memo)."""
    st = os.stat(path)
    return _ann_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _ann_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:  # interrupted (SIGTERM / SIGINT) or failed: leave no temp file
        tmp.unlink(missing_ok=True)
        raise


_TMP = re.compile(r".*\.(\d+)\.tmp")


def sweep_tmp(out: Path) -> list[Path]:
    """Remove the temporary files in ``out`` written by this process or a dead one."""
    gone = []
    for f in out.glob("*.tmp"):
        m = _TMP.fullmatch(f.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # alive: another prepare is writing it
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        f.unlink(missing_ok=True)
        gone.append(f)
    return gone


def record_crc(ann_id: int, box, data: bytes) -> int:
    """CRC-32 of a record seeded with its annotation id and box: bound to the annotation."""
    key = np.array([ann_id], "<i8").tobytes() + np.asarray(box, "<f8").tobytes()
    return zlib.crc32(data, zlib.crc32(key))


def patch_sizes(box: np.ndarray, max_side: int) -> np.ndarray:
    """Vectorised :func:`~matbackprop.data.transforms.resized_size`. Shape: (N, 4) -> (N, 2)."""
    bw, bh = box[:, 2], box[:, 3]
    scale = max_side / np.maximum(np.maximum(bw, bh), 1e-300)
    return np.stack([np.maximum(1, np.round(bw * scale)), np.maximum(1, np.round(bh * scale))], 1)


def check_rows(rows: np.ndarray, ann_id: np.ndarray, box: np.ndarray, max_side: int) -> str | None:
    """Why index rows do not serve the annotations ``ann_id`` / ``box`` (None if they do):
    another id or box, a patch size that is not the box resized to ``max_side``, lengths that
    do not match the patch. Shape: rows (N,), ann_id (N,), box (N, 4)."""
    if len(rows) != len(ann_id):
        return f"{len(rows)} rows for {len(ann_id)} regions"
    rbox = np.stack([rows["x"], rows["y"], rows["bw"], rows["bh"]], 1)  # (N, 4)
    good = rows["bad"] == 0
    size = np.stack([rows["w"], rows["h"]], 1).astype(np.float64)
    checks = {
        "annotation id": rows["ann_id"] != ann_id,
        "box": (rbox != box).any(1),
        "patch size": good & (size != patch_sizes(box, max_side)).any(1),
        "record length": good & ((rows["img_len"] <= 0) | (rows["mask_len"] <= 0)),
    }
    for what, wrong in checks.items():
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            return (
                f"row {i} (annotation {int(ann_id[i])}) has the wrong {what} "
                f"({int(wrong.sum())} rows differ)"
            )
    return None


def load_index(path: Path, sha256: str | None = None) -> np.ndarray:
    """The rows of an index ``.npy``, checked against its SHA-256 when given.

    Raises:
        DataError: missing, damaged (checksum, header) or of another row layout; names the
            file and ``make prepare-coco``.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the store index {path}: {e}; {REPAIR_HINT}") from e
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(
            f"the store index {path} does not match its SHA-256 (damaged or edited); {REPAIR_HINT}"
        )
    try:
        rows = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, SyntaxError, OSError, EOFError) as e:
        raise DataError(f"the store index {path} is damaged ({e}); {REPAIR_HINT}") from e
    if rows.dtype != ROW or rows.ndim != 1:
        raise DataError(f"the store index {path} has another row layout; {REPAIR_HINT}")
    return rows


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({e}); {REPAIR_HINT}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a JSON object; {REPAIR_HINT}")
    return data


MANIFEST_KEYS = {
    "version": int, "ann_file": str, "ann_sha256": str, "max_side": int, "format": str,
    "chunks": int, "regions": int, "chunk_sha256": list, "chunk_bytes": list,
    "chunk_npy_sha256": list, "chunk_rows": list,
}  # fmt: skip


def read_manifest(path: str | Path) -> dict:
    """``<store>/manifest.json``, checked for its keys and types (a DataError naming it)."""
    man = Path(path) / "manifest.json"
    m = _read_json(man)
    if m.get("version") != VERSION:
        raise DataError(
            f"{man} is of store version {m.get('version')!r}, not {VERSION}: delete "
            f"{Path(path)} and {PREPARE_HINT}"
        )
    bad = [k for k, t in MANIFEST_KEYS.items() if not isinstance(m.get(k), t)]
    bad += [
        k
        for k in MANIFEST_KEYS
        if MANIFEST_KEYS[k] is list and len(m.get(k) or ()) != m.get("chunks")
    ]
    if bad:
        raise DataError(f"{man} is damaged (bad or missing {sorted(set(bad))}); {REPAIR_HINT}")
    return m


def encode_patch(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    """Bytes of a ``(h, w, 3)`` uint8 patch: JPEG (4:4:4) or raw."""
    if fmt == "raw":
        return np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_patch(data: bytes, fmt: str, w: int, h: int) -> np.ndarray:
    """Inverse of :func:`encode_patch`. Shape: -> ``(h, w, 3)`` uint8."""
    if fmt == "raw":
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


class StoreSpec:
    """What a store holds: the regions of one annotation file and how they are encoded.

    Built from a ``CocoRegions`` index with ``min_area=0`` (every non-crowd, non-degenerate
    region), grouped by image into chunks of ``chunk_images`` images.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        image_dir: str | Path | None,
        out: str | Path,
        max_side: int = 200,
        fmt: str = "jpeg",
        quality: int = 97,
        chunk_images: int = 256,
    ):
        if fmt not in ("jpeg", "raw"):
            raise ValueError(f"store format must be 'jpeg' or 'raw', got {fmt!r}")
        self.regions = CocoRegions(
            root, ann_file, train=False, image_dir=image_dir, crop_size=max_side,
            max_side=max_side, jitter=0, min_area=0,
        )  # fmt: skip
        self.out, self.max_side, self.fmt, self.quality = Path(out), max_side, fmt, quality
        self.chunk_images = chunk_images
        img = self.regions._img  # (N,) image position of every region
        used = np.unique(img)  # images with at least one region, sorted
        self.chunks = [used[j : j + chunk_images] for j in range(0, len(used), chunk_images)]
        self.params = {
            "version": VERSION,
            "ann_file": self.regions.ann_file.name,
            "ann_sha256": ann_sha256(self.regions.ann_file),
            "image_dir": self.regions.image_dir.name,
            "max_side": max_side,
            "min_area": 0,
            "format": fmt,
            "quality": quality if fmt == "jpeg" else None,
            "chunk_images": chunk_images,
            "regions": len(self.regions),
            "chunks": len(self.chunks),
        }
        blob = json.dumps(self.params, sort_keys=True).encode()
        self.params_sha256 = hashlib.sha256(blob).hexdigest()

    def chunk_path(self, c: int, ext: str) -> Path:
        return self.out / f"chunk-{c:05d}.{ext}"

    def members(self, c: int) -> list[int]:
        """Regions of chunk ``c`` (their dataset indices, in file order)."""
        return np.flatnonzero(np.isin(self.regions._img, self.chunks[c])).tolist()

    def chunk_problem(self, c: int, verify: bool) -> str | None:
        """Why chunk ``c`` is not done (None if it is): missing, of other parameters, an index
        that fails its SHA-256 or does not serve the chunk's regions, a ``.bin`` of the wrong
        size or (``verify``) SHA-256."""
        meta = self.chunk_path(c, "json")
        if not meta.is_file():
            return "not written"
        try:
            info = _read_json(meta)
            if info.get("params_sha256") != self.params_sha256:
                return "built with other parameters"
            rows = load_index(self.chunk_path(c, "npy"), info.get("npy_sha256"))
        except DataError as e:
            return str(e)
        m = self.members(c)
        why = check_rows(rows, self.regions._ann_id[m], self.regions._box[m], self.max_side)
        if why is not None:
            return why
        bin_ = self.chunk_path(c, "bin")
        if not bin_.is_file() or bin_.stat().st_size != info.get("bin_size"):
            return f"{bin_.name} is missing or of the wrong size"
        if verify and sha256_file(bin_) != info.get("sha256"):
            return f"{bin_.name} fails its SHA-256"
        return None

    def is_done(self, c: int, verify: bool) -> bool:
        """Chunk ``c`` is finished and intact (see :meth:`chunk_problem`)."""
        return self.chunk_problem(c, verify) is None


def prepare_chunk(spec: StoreSpec, c: int) -> int:
    """Write chunk ``c``: decode each of its images once, crop all its regions. Returns rows.

    A bad image (missing, truncated, wrong size) is recorded with ``bad = 1`` and no bytes;
    reading it raises a DataError naming the file and ids (``check_data.py`` lists them).
    """
    ds = spec.regions
    members = spec.members(c)  # file order
    by_image: dict[int, list[int]] = {}
    for i in members:
        by_image.setdefault(int(ds._img[i]), []).append(i)
    rows = np.zeros(len(members), ROW)
    parts, offset, r = [], 0, 0
    for k in sorted(by_image):
        try:
            rgb = ds._load_image(by_image[k][0])  # (H, W, 3), decoded once per image
        except DataError:
            rgb = None
        for i in by_image[k]:
            row = rows[r]
            row["ann_id"], row["offset"] = ds._ann_id[i], offset
            row["x"], row["y"], row["bw"], row["bh"] = ds._box[i]
            r += 1
            if rgb is None:
                row["bad"] = 1
                continue
            patch, mpatch = crop_region(rgb, mask_utils.decode(ds._rle(i)), ds._box[i],
                                        spec.max_side)  # fmt: skip
            img = encode_patch(patch, spec.fmt, spec.quality)
            q = np.rint(np.clip(mpatch, 0.0, 1.0) * 255.0).astype(np.uint8)  # (h', w')
            msk = zlib.compress(q.tobytes(), 1)
            row["img_len"], row["mask_len"] = len(img), len(msk)
            row["h"], row["w"] = mpatch.shape
            row["crc"] = record_crc(ds._ann_id[i], ds._box[i], img + msk)
            parts += [img, msk]
            offset += len(img) + len(msk)
    blob = b"".join(parts)
    _atomic_write(spec.chunk_path(c, "bin"), blob)
    buf = io.BytesIO()
    np.save(buf, rows)
    _atomic_write(spec.chunk_path(c, "npy"), buf.getvalue())
    info = {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bin_size": len(blob),
        "npy_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "rows": len(rows),
        "params_sha256": spec.params_sha256,
    }
    _atomic_write(spec.chunk_path(c, "json"), json.dumps(info).encode())
    return len(rows)


_SPEC: StoreSpec | None = None  # the spec in a pool worker (set by the initializer)


def _init_worker(spec: StoreSpec) -> None:
    import signal

    global _SPEC
    _SPEC = spec
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and SIGTERM,
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # then terminates the pool and cleans up


def _work(c: int) -> tuple[int, int]:
    return c, prepare_chunk(_SPEC, c)


def prepare_store(
    spec: StoreSpec,
    workers: int = 1,
    verify: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write every missing or damaged chunk of ``spec`` (in parallel), then ``manifest.json``.

    Resumable: finished chunks are kept when intact (:meth:`StoreSpec.chunk_problem`;
    their ``.bin`` re-hashed when ``verify``), any other is rebuilt; a store of other
    parameters in ``spec.out`` is refused. Temporary files are removed when interrupted.

    Returns the manifest dict (plus ``"done_now"``: the chunks written by this call).
    """
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    sweep_tmp(out)  # left by a killed earlier run
    params_file = out / "params.json"
    try:
        old = json.loads(params_file.read_text()) if params_file.is_file() else None
    except ValueError:
        old = None  # damaged: every chunk is checked against the parameters' hash anyway
    if old is not None and old != spec.params:
        raise DataError(
            f"{out} holds a store prepared with other parameters ({old}); delete the folder "
            "or choose another --out"
        )
    if old is None:
        _atomic_write(params_file, json.dumps(spec.params, indent=1).encode())
    todo = [c for c in range(len(spec.chunks)) if not spec.is_done(c, verify)]
    if todo:  # the store is not complete until every chunk is done again
        (out / "manifest.json").unlink(missing_ok=True)
    for c in todo:  # a redone chunk loses its old completion mark first
        spec.chunk_path(c, "json").unlink(missing_ok=True)
    done = len(spec.chunks) - len(todo)
    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers, _init_worker, (spec,)) as pool:
                for _ in pool.imap_unordered(_work, todo):
                    done += 1
                    if progress:
                        progress(done, len(spec.chunks))
        else:
            for c in todo:
                prepare_chunk(spec, c)
                done += 1
                if progress:
                    progress(done, len(spec.chunks))
    except BaseException:
        sweep_tmp(out)  # the pool's workers are terminated and joined by now
        raise
    chunks = [_read_json(spec.chunk_path(c, "json")) for c in range(len(spec.chunks))]
    manifest = dict(
        spec.params,
        chunk_sha256=[ch["sha256"] for ch in chunks],
        chunk_bytes=[ch["bin_size"] for ch in chunks],
        chunk_npy_sha256=[ch["npy_sha256"] for ch in chunks],
        chunk_rows=[ch["rows"] for ch in chunks],
    )
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return dict(manifest, done_now=len(todo))


def store_status(path: str | Path, ann_file: str | Path, max_side: int) -> str | None:
    """``None`` if ``path`` holds a complete store for ``ann_file`` at ``max_side``, else why
    not (no store, or one of other parameters: ``data.store=auto`` crops on the fly then).

    Raises:
        DataError: the manifest is damaged or of another store version.
    """
    path = Path(path)
    if not (path / "manifest.json").is_file():
        return f"{path} holds no complete prepared store (no manifest.json)"
    m = read_manifest(path)
    if m["max_side"] != max_side:
        return f"{path} was prepared with max_side={m['max_side']}, not {max_side}"
    if m["ann_sha256"] != ann_sha256(ann_file):
        return f"{path} was prepared from another version of {Path(ann_file).name}"
    return None


def loader_identity(dataset) -> str:
    """What a run's region loader reads, for the run's identity: ``"on-the-fly"`` or
    ``"store <folder> sha256:<manifest's first 16 hex digits>"`` (a rebuilt store differs)."""
    store = getattr(dataset, "store", None)
    if store is None:
        return "on-the-fly"
    return f"store {store} sha256:{sha256_file(Path(store) / 'manifest.json')[:16]}"


class PreparedCocoRegions(CocoRegions):
    """:class:`CocoRegions` reading each region's patch and mask from a prepared store.

    Args:
        store: the store folder (``scripts/prepare_coco.py --out``).
        *args, **kwargs: as :class:`CocoRegions` (``max_side`` must match the store's).

    Items equal the on-the-fly ones up to the store's encoding: exactly for ``raw`` stores,
    JPEG re-encoding for ``jpeg`` (PSNR ≥ 40 dB on the patch), masks to ±1/510. Opening
    checks the store is intact and bound to these annotations (see the module docstring).
    """

    def __init__(self, store: str | Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = Path(store)
        why = store_status(self.store, self.ann_file, self.max_side)
        if why is not None:
            raise DataError(f"{why}; {PREPARE_HINT}")
        m = read_manifest(self.store)
        self.fmt = m["format"]
        tables = []
        for c in range(m["chunks"]):
            npy, bin_ = (self.store / f"chunk-{c:05d}.{ext}" for ext in ("npy", "bin"))
            tables.append(load_index(npy, m["chunk_npy_sha256"][c]))
            size = bin_.stat().st_size if bin_.is_file() else None
            if size != m["chunk_bytes"][c]:
                got = "missing" if size is None else f"{size} bytes, not {m['chunk_bytes'][c]}"
                raise DataError(f"the store chunk {bin_} is {got}; {REPAIR_HINT}")
        rows = np.concatenate(tables) if tables else np.zeros(0, ROW)
        chunk = np.repeat(np.arange(len(tables)), [len(t) for t in tables])
        order = np.argsort(rows["ann_id"], kind="stable")
        pos = np.searchsorted(rows["ann_id"][order], self._ann_id)
        pos = np.minimum(pos, max(len(order) - 1, 0))
        found = np.zeros(len(self._ann_id), bool)  # (N,)
        if len(order):
            found = rows["ann_id"][order][pos] == self._ann_id
        if not found.all():
            miss = self._ann_id[~found][:5].tolist()
            raise DataError(f"{self.store} lacks annotations {miss}; {REPAIR_HINT}")
        self._rows = rows[order[pos]]  # (N,) aligned with the items
        self._chunk = chunk[order[pos]].astype(np.int32)  # (N,)
        why = check_rows(self._rows, self._ann_id, self._box, self.max_side)
        if why is None and len(np.unique(rows["ann_id"])) != len(rows):
            why = "an annotation id appears in two rows"
        if why is None:
            ends = self._rows["offset"] + self._rows["img_len"] + self._rows["mask_len"]
            if len(ends) and (ends > np.asarray(m["chunk_bytes"])[self._chunk]).any():
                why = "a record lies past the end of its chunk"
        if why is not None:
            raise DataError(
                f"the store {self.store} does not match {self.ann_file.name}: {why}; {REPAIR_HINT}"
            )
        self._fds: dict[int, int] = {}
        self._pid = -1

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, -1  # file descriptors are per process
        return state

    def _read(self, c: int, offset: int, n: int) -> bytes:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(c)
        if fd is None:
            path = self.store / f"chunk-{c:05d}.bin"
            try:
                fd = self._fds[c] = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise DataError(f"cannot read the store chunk {path}: {e}; {REPAIR_HINT}") from e
        return os.pread(fd, n, offset)

    def _patch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self._rows[i]
        if row["bad"]:
            self._load_image(i)  # raises the DataError naming the file and ids
            raise DataError(f"{self.describe(i)} was unreadable when {self.store} was prepared")
        n_img, n_msk = int(row["img_len"]), int(row["mask_len"])
        data = self._read(int(self._chunk[i]), int(row["offset"]), n_img + n_msk)
        crc = record_crc(self._ann_id[i], self._box[i], data)
        if len(data) != n_img + n_msk or crc != int(row["crc"]):
            raise DataError(
                f"corrupt record of {self.describe(i)} in {self.store} (CRC mismatch); "
                f"{REPAIR_HINT}"
            )
        w, h = int(row["w"]), int(row["h"])
        rgb = decode_patch(data[:n_img], self.fmt, w, h)  # (h', w', 3)
        q = np.frombuffer(zlib.decompress(data[n_img:]), np.uint8).reshape(h, w)
        return rgb, q.astype(np.float32) * np.float32(1 / 255)
