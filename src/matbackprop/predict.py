"""Inference entry point: a trained run on your own images (DeepO2P classes, DeepNCut segmentations).

    python -m matbackprop.predict --run outputs/coco/demo_coco_deepo2p \\
        --images a.jpg --box 10,20,120,80 --box 0,0,64,64 --out preds.csv --top-k 3
    python -m matbackprop.predict --run RUN --coco-json ann.json --image-dir DIR --out preds.json
    python -m matbackprop.predict --run outputs/bsds/demo_bsds_deepncut --images a.jpg --out segs/

Weights: ``--run DIR`` (its ``config.yaml``; ``--weights best`` falls back to ``last.pt``) or
``--checkpoint X.pt --config config.yaml`` (default: the ``config.yaml`` next to ``X.pt``).

COCO runs (``task: coco``: DeepO2P, AlexNet, avg-pool): each region (a ``--box x,y,w,h`` in
pixels, COCO order: one per image, or several with one image; none = the whole image; or every
annotation of a COCO-format instances JSON, its mask from ``segmentation``, its box when that
is absent) goes through the validation pipeline itself (:class:`CocoRegions` with
``train=False``, then :meth:`CocoTask.grid_mask`); output: top-k classes with softmax
probabilities (``--out x.csv``; ``x.json`` also holds every class's probability; stdout CSV
without ``--out``). Class names: ``status.json`` (``class_names``), else the run's
``tables/per_class.csv``, else its val annotation file.

BSDS runs (``task: bsds``: DeepNCut): per image ``<stem>.mat`` (the benchmark's ``segs``: one
uint16 label map 1..n per k) and ``<stem>.png`` (image | boundaries at each k) in ``--out DIR``,
at ``--k K ...`` or the ODS scale of those weights (``final.json``, else ``metrics.csv``
``val_cover_ods_k``); ``predict.json`` lists what was written.

Exit codes (:mod:`matbackprop.cli`): 0 done; 2 a missing / unreadable image, a box outside its
image or degenerate, a run folder without weights or config, weights that do not fit the
config (one line naming the file, no traceback).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from matbackprop.cli import call_cli
from matbackprop.data.bad_items import read_rgb
from matbackprop.data.coco_regions import CocoRegions
from matbackprop.engine.checkpoint import atomic_open, write_json_atomic
from matbackprop.engine.distributed import no_cuda_reason
from matbackprop.engine.records import read_csv, read_status
from matbackprop.errors import ConfigError, DataError, RunFolderError
from matbackprop.evaluation.segment import segment_from_features, write_segs
from matbackprop.models.build import build_model
from matbackprop.tasks.bsds import BsdsTask, to_tensor
from matbackprop.tasks.coco import CocoTask
from matbackprop.weights import NAMES, load_model_weights, resolve_checkpoint

READ_FIX = "pass an image file PIL can read (JPEG, PNG, ...)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matbackprop-predict", description=__doc__.split("\n")[0])
    w = p.add_argument_group("weights")
    w.add_argument("--run", type=Path, help="run folder (config.yaml + best.pt / last.pt)")
    w.add_argument("--checkpoint", type=Path, help="a .pt file (or run folder) instead of --run")
    w.add_argument("--config", type=Path, help="config.yaml for --checkpoint (default: beside it)")
    w.add_argument("--weights", choices=NAMES, default="best", help="default best (else last)")
    i = p.add_argument_group("input")
    i.add_argument("--images", nargs="+", type=Path, default=[], metavar="IMAGE")
    i.add_argument("--box", action="append", default=[], metavar="X,Y,W,H",
                   help="COCO runs: a region in pixels (one per image, or several, one image)")  # fmt: skip
    i.add_argument("--coco-json", type=Path, help="COCO runs: instances JSON (bbox, segmentation)")
    i.add_argument("--image-dir", type=Path, help="folder of --coco-json's file_name entries")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="COCO: preds.csv | preds.json; BSDS: a folder")
    o.add_argument("--top-k", type=int, default=5, help="COCO: classes per region (default 5)")
    o.add_argument("--k", type=int, nargs="+", help="BSDS: segments per image (default: ODS k)")
    o.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    o.add_argument("--batch-size", type=int, default=32, help="COCO regions per forward pass")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m matbackprop.predict`` / ``matbackprop-predict``: exit status (see above)."""
    return call_cli(predict, build_parser().parse_args(argv))


def predict(args: argparse.Namespace) -> int:
    cfg, run_dir, ckpt = load_source(args)
    device = pick_device(args.device)
    task = str(cfg.get("task"))
    if task == "coco":
        predict_coco(args, cfg, run_dir, ckpt, device)
    elif task == "bsds":
        predict_bsds(args, cfg, run_dir, ckpt, device)
    else:
        raise RunFolderError(f"{run_dir / 'config.yaml'}: task {task!r} is not coco or bsds")
    return 0


# ---------------------------------------------------------------------- weights and config
def load_source(args: argparse.Namespace) -> tuple[DictConfig, Path, Path]:
    """(the run's config, the folder holding its records, the checkpoint file)."""
    if (args.run is None) == (args.checkpoint is None):
        raise ConfigError("give --run RUN_DIR, or --checkpoint X.pt [--config config.yaml]")
    if args.run is not None:
        if not args.run.is_dir():
            raise RunFolderError(f"run folder not found: {args.run} (--run)")
        config = args.run / "config.yaml"
        if not config.is_file():
            raise RunFolderError(
                f"{args.run} has no config.yaml: not a run folder of matbackprop.train (--run); "
                "or pass --checkpoint X.pt --config config.yaml"
            )
        ckpt = resolve_checkpoint(args.run, default=args.weights)
    else:
        config = args.config or args.checkpoint.parent / "config.yaml"
        if not config.is_file():
            raise ConfigError(
                f"config not found: {config}; pass --config with the config.yaml of the run "
                f"that trained {args.checkpoint}"
            )
        ckpt = resolve_checkpoint(args.checkpoint, default=args.weights)
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:  # YAML syntax / not a mapping
        raise RunFolderError(f"cannot read {config}: {err}") from err
    if not isinstance(cfg, DictConfig) or "model" not in cfg:
        raise RunFolderError(f"{config} is not a run's config.yaml (no model section)")
    return cfg, config.parent, ckpt


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r}: expected auto | cpu | cuda | cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: {no_cuda_reason()}")
    return dev


def load_model(cfg: DictConfig, ckpt: Path, num_classes: int | None, device) -> tuple:
    """The run's model with the checkpoint's weights (no ImageNet download: they are replaced)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["pretrained"] = False
    model = build_model(model_cfg, num_classes)
    info = load_model_weights(model, ckpt)
    print(f"[predict] weights {info['path']} (epoch {info['epoch']})", file=sys.stderr)
    return model.to(device).eval(), info


def grid_helpers(task_cls: type, cfg: DictConfig) -> Any:
    """A task holding only its feature-grid helpers (``grid_mask``, ``upsample_index``):
    they need the config, not the training data."""
    task = task_cls.__new__(task_cls)
    task.cfg = cfg
    task._init_grid()
    return task


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, or a DataError naming the file."""
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    return read_rgb(path, f"image {path}", READ_FIX)


# ---------------------------------------------------------------------- COCO: classes of regions
def class_names(cfg: DictConfig, run_dir: Path) -> list[str]:
    """Label order of the run's classifier (see the module docstring for the sources)."""
    status = read_status(run_dir) or {}
    names = status.get("class_names") or status.get("data", {}).get("class_names")
    if names:
        return [str(n) for n in names]
    rows = read_csv(run_dir / "tables" / "per_class.csv")
    if rows and "class" in rows[0]:
        return [r["class"] for r in rows]
    ann = Path(str(cfg.data.root)) / str(cfg.data.val_ann)
    if ann.is_file():
        cats = json.loads(ann.read_text()).get("categories", [])
        return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    raise RunFolderError(
        f"class names of {run_dir} not found (status.json class_names, tables/per_class.csv, "
        f"{ann}): copy the run's tables/ folder next to its config.yaml"
    )


def parse_box(text: str) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ConfigError(f"--box {text!r}: expected x,y,w,h (4 numbers, pixels)")
    return box


def check_box(box: tuple[float, ...], size: tuple[int, int], path: Path) -> None:
    (x, y, w, h), (height, width) = box, size
    shown = ",".join(f"{v:g}" for v in box)
    if w < 1 or h < 1:
        raise DataError(f"box {shown} of {path} is degenerate: w and h must be >= 1 pixel")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise DataError(f"box {shown} is outside image {path} ({width}x{height}; x,y,w,h)")


def box_regions(images: list[Path], boxes: list[str]) -> list[dict]:
    """Command-line regions: ``{"path", "size", "bbox", "segmentation"}`` (the box as mask)."""
    parsed = [parse_box(b) for b in boxes]
    if parsed and len(parsed) != len(images) and len(images) != 1:
        raise ConfigError(
            f"{len(parsed)} --box for {len(images)} images: give one --box per image, or "
            "several --box with one image"
        )
    regions = []
    for k, path in enumerate(images):
        size = read_image(path).shape[:2]
        mine = parsed if len(images) == 1 else parsed[k : k + 1]
        for box in mine or [(0.0, 0.0, float(size[1]), float(size[0]))]:
            check_box(box, size, path)
            regions.append({"path": path, "size": size, "bbox": list(box)})
    return regions


def json_regions(ann_file: Path, image_dir: Path | None) -> list[dict]:
    """The annotations of a COCO-format instances file (crowd ones skipped, with a note)."""
    if image_dir is None:
        raise ConfigError("--coco-json needs --image-dir (the folder of its file_name entries)")
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir} (--image-dir)")
    if not ann_file.is_file():
        raise DataError(f"COCO annotation file not found: {ann_file} (--coco-json)")
    try:
        data = json.loads(ann_file.read_text())
        images = {im["id"]: im for im in data["images"]}
        anns = list(data["annotations"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{ann_file} is not a COCO instances file (images with id/file_name, annotations): "
            f"{type(err).__name__}: {err}"
        ) from err
    sizes, regions, crowd = {}, [], 0
    for ann in anns:
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        im = images.get(ann.get("image_id"))
        if im is None or "bbox" not in ann:
            raise DataError(f"{ann_file}: annotation {ann.get('id')} has no bbox or known image")
        path = image_dir / im["file_name"]
        if path not in sizes:
            sizes[path] = read_image(path).shape[:2]
            stated = (im.get("height"), im.get("width"))
            if stated != (None, None) and tuple(stated) != sizes[path]:
                raise DataError(
                    f"image {path} is {sizes[path][1]}x{sizes[path][0]} but {ann_file} says "
                    f"{stated[1]}x{stated[0]} (image id {im['id']})"
                )
        region = {"path": path, "size": sizes[path], "bbox": ann["bbox"], "id": ann.get("id")}
        if "segmentation" in ann:
            region["segmentation"] = ann["segmentation"]
        regions.append(region)
    if crowd:
        print(f"[predict] {ann_file}: {crowd} crowd annotation(s) skipped", file=sys.stderr)
    return regions


def region_dataset(regions: list[dict], cfg: DictConfig, tmp: Path, source: str) -> CocoRegions:
    """The regions as the validation set of the run (``CocoRegions(train=False)``)."""
    images, anns, ids = [], [], {}
    for k, r in enumerate(regions, 1):
        ids.setdefault(r["path"], len(ids) + 1)
        x, y, w, h = (float(v) for v in r["bbox"])
        square = [
            [x, y, x + w, y, x + w, y + h, x, y + h]
        ]  # a box-only region: its box is the mask
        anns.append({"id": k, "image_id": ids[r["path"]], "category_id": 1, "bbox": [x, y, w, h],
                     "segmentation": r.get("segmentation", square), "iscrowd": 0})  # fmt: skip
    for path, iid in ids.items():
        h, w = next(r["size"] for r in regions if r["path"] == path)
        link = tmp / f"image_{iid}{Path(path).suffix}"  # file names stay inside the image
        link.symlink_to(Path(path).resolve())  # folder (the data validation refuses others)
        images.append({"id": iid, "file_name": link.name, "height": h, "width": w})
    ann_file = tmp / "instances_predict.json"
    cats = [{"id": 1, "name": "region"}]
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    d = cfg.data
    ds = CocoRegions(tmp, ann_file, train=False, image_dir=tmp, crop_size=int(d.crop_size),
                     max_side=int(d.max_side), mean_fill=bool(d.get("mean_fill", False)),
                     mask_size=int(d.mask_size), min_area=0)  # fmt: skip
    kept = set(ds._ann_id.tolist())
    dropped = [r for k, r in enumerate(regions, 1) if k not in kept]
    if dropped:
        shown = "; ".join(f"{r['path']} box {r['bbox']} (id {r.get('id')})" for r in dropped[:3])
        raise DataError(
            f"{len(dropped)} region(s) of {source} are degenerate (box < 1 pixel inside the "
            f"image, or an empty mask): {shown}"
        )
    return ds


def predict_coco(args, cfg: DictConfig, run_dir: Path, ckpt: Path, device) -> None:
    if args.k:
        raise ConfigError("--k is for DeepNCut (BSDS) runs; a COCO run takes --top-k")
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: expected an integer >= 1")
    if bool(args.images) == (args.coco_json is not None):
        raise ConfigError(
            "give --images IMAGE ... [--box X,Y,W,H ...] or --coco-json + --image-dir"
        )
    if args.out is not None and args.out.suffix not in (".csv", ".json"):
        raise ConfigError(f"--out {args.out}: expected a .csv or .json file")
    if args.coco_json is not None:
        regions, source = json_regions(args.coco_json, args.image_dir), str(args.coco_json)
    else:
        regions, source = box_regions(args.images, args.box), "the command line"
    if not regions:
        raise DataError(f"no regions to classify in {source}")
    names = class_names(cfg, run_dir)
    model, info = load_model(cfg, ckpt, len(names), device)
    grid = grid_helpers(CocoTask, cfg)
    probs = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ds = region_dataset(regions, cfg, Path(tmp), source)
        for batch in torch.utils.data.DataLoader(ds, batch_size=max(1, args.batch_size)):
            logits = model(batch["image"].to(device), grid.grid_mask(batch["mask"].to(device)))
            probs.append(torch.softmax(logits.double(), 1).cpu())  # (B, K)
    rows = prediction_rows(regions, torch.cat(probs), names, min(args.top_k, len(names)))
    write_predictions(rows, args.out)
    where = args.out or "stdout"
    print(f"[predict] {len(rows)} region(s), {info['which']} weights -> {where}", file=sys.stderr)


def prediction_rows(regions, probs, names, top_k) -> list[dict]:
    rows = []
    for r, p in zip(regions, probs):
        order = torch.argsort(p, descending=True)[:top_k].tolist()
        rows.append({
            "image": str(r["path"]), "annotation_id": r.get("id"),
            "box": [float(v) for v in r["bbox"]],
            "top_k": [{"class": names[c], "probability": float(p[c])} for c in order],
            "probabilities": {n: float(v) for n, v in zip(names, p.tolist())},
        })  # fmt: skip
    return rows


def write_predictions(rows: list[dict], out: Path | None) -> None:
    if out is not None and out.suffix == ".json":
        write_json_atomic(rows, out)
        return
    k = len(rows[0]["top_k"])
    header = ["image", "annotation_id", "x", "y", "w", "h"]
    header += [f"{c}{r}" for r in range(1, k + 1) for c in ("class", "prob")]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    for row in rows:
        ranked = [v for t in row["top_k"] for v in (t["class"], f"{t['probability']:.6g}")]
        writer.writerow([row["image"], row["annotation_id"] or "", *row["box"], *ranked])
    if out is None:
        sys.stdout.write(text.getvalue())
        return
    with atomic_open(out, "w") as fh:
        fh.write(text.getvalue())


# ---------------------------------------------------------------------- BSDS: segmentations
def ods_k(run_dir: Path, which: str) -> int:
    """The ODS scale recorded for these weights: ``final.json``, else ``metrics.csv``."""
    final = run_dir / "final.json"
    if final.is_file():
        scores = json.loads(final.read_text())
        for name in (which, *NAMES):
            if isinstance(scores.get(name), dict) and "val_cover_ods_k" in scores[name]:
                return int(scores[name]["val_cover_ods_k"])
    ks = [
        r["val_cover_ods_k"] for r in read_csv(run_dir / "metrics.csv") if r.get("val_cover_ods_k")
    ]
    if ks:
        return int(float(ks[-1]))
    raise RunFolderError(
        f"no ODS scale recorded in {run_dir} (final.json / metrics.csv val_cover_ods_k): pass --k K"
    )


def overlay(rgb: np.ndarray, segs: list[np.ndarray]) -> np.ndarray:
    """Image | its boundaries at each scale, side by side. Shape: (H, W·(1 + len(segs)), 3)."""
    from skimage.segmentation import mark_boundaries

    panels = [rgb] + [(mark_boundaries(rgb, s) * 255).round().astype(np.uint8) for s in segs]
    return np.concatenate(panels, axis=1)


def predict_bsds(args, cfg: DictConfig, run_dir: Path, ckpt: Path, device) -> None:
    if args.box or args.coco_json is not None:
        raise ConfigError("--box / --coco-json are for COCO runs; a DeepNCut run takes --images")
    if not args.images or args.out is None:
        raise ConfigError("a DeepNCut run needs --images IMAGE ... and --out DIR")
    if args.out.suffix in (".csv", ".json") or args.out.is_file():
        raise ConfigError(f"--out {args.out}: a DeepNCut run writes a folder (<stem>.mat, .png)")
    if args.k and min(args.k) < 1:
        raise ConfigError(f"--k {args.k}: expected integers >= 1")
    stems: dict[str, Path] = {}
    for path in args.images:
        if path.stem in stems:
            raise ConfigError(f"images {stems[path.stem]} and {path} would write the same files")
        stems[path.stem] = path
    images = [(path, read_image(path)) for path in args.images]  # every file checked first
    model, info = load_model(cfg, ckpt, None, device)
    ks = list(args.k or [ods_k(run_dir, info["which"])])
    grid = grid_helpers(BsdsTask, cfg)
    ev, eps = cfg.get("eval", {}), float(cfg.model.get("ncut_eps", 1e-6))
    written = []
    for path, rgb in images:
        with torch.no_grad():
            feats = model(to_tensor(rgb).unsqueeze(0).to(device)).float()  # (1, d, h, w)
        h, w = rgb.shape[:2]
        segs = segment_from_features(
            feats[0].permute(1, 2, 0).cpu(), (h, w), ks=ks, min_size=int(ev.get("min_size", 1024)),
            eps=eps, seed=0, index=grid.upsample_index(feats.shape[-2:], (h, w)),
        )  # fmt: skip
        mat = write_segs(args.out / f"{path.stem}.mat", segs)
        png = args.out / f"{path.stem}.png"
        Image.fromarray(overlay(rgb, segs)).save(png)
        segments = [int(s.max()) for s in segs]
        written.append(
            {"image": str(path), "segs": str(mat), "overlay": str(png), "segments": segments}
        )
    write_json_atomic(
        {"checkpoint": str(info["path"]), "epoch": info["epoch"], "ks": ks, "images": written},
        args.out / "predict.json",
    )
    print(f"[predict] {len(written)} image(s) at k={ks} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
