"""Region-crop transforms for MSCOCO region classification (SPEC §4), as small pure functions.

One region becomes an AlexNet-sized input in five steps, applied identically to the image and
to the instance mask so that the two stay pixel-aligned:

1. ``crop_resize``: resample the (float) bounding box so that its largest side is ``max_side``;
2. ``normalize``: ImageNet mean/std, so the mean colour maps to 0;
3. ``paste``: place the patch on a zero (= mean colour) ``crop_size`` canvas at an offset
   (``centered_offset`` + a random jitter when training; parts pushed past the edge are cut);
4. ``hflip`` (training only);
5. ``mean_fill`` (optional, SDS-style) and ``area_downsample`` of the canvas mask to the
   pooling grid (fraction of each cell covered by the instance).

Feature-grid alignment (``data.mask_grid``): a trunk's unit ``i`` is centred at input pixel
coordinate ``offset + i * stride`` (``models.backbones.trunk_geometry``), not at the centre of
the i-th of n equal cells. ``grid_cells`` gives each unit the input pixels nearest to its
centre; ``grid_downsample`` (masks: coverage of each unit's cell), ``grid_sample_index``
(labels onto the grid: the pixel under each unit's centre) and ``grid_upsample_index`` (labels
back to full resolution: each pixel takes its unit's label) all use these cells.
``uniform_grid`` gives the (stride, offset) of n equal cells, the old behaviour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_size(box_w: float, box_h: float, max_side: int) -> tuple[int, int]:
    """Size ``(w, h)`` of a ``box_w x box_h`` box scaled so that its largest side is ``max_side``.

    The short side is rounded and kept at least 1 pixel.
    """
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"box size must be positive, got w={box_w}, h={box_h}")
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    scale = max_side / max(box_w, box_h)
    return max(1, round(box_w * scale)), max(1, round(box_h * scale))


def crop_resize(
    array: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    """Bilinearly resample the float box ``(x0, y0, x1, y1)`` of an image or mask to ``size``.

    Uses PIL's ``resize(box=...)``, so sub-pixel box corners are honoured exactly (no rounding
    of the crop) and downscaling is antialiased. A mask is resampled as float, so edge pixels
    get their fractional coverage.

    Args:
        array: ``uint8`` RGB image or a 2-D mask (any numeric type; resampled as float32).
        box: crop box in pixel-corner coordinates, inside the array.
        size: output ``(w, h)``.

    Shape:
        array ``(H, W, 3)`` uint8 -> ``(h, w, 3)`` uint8; array ``(H, W)`` -> ``(h, w)`` float32.
    """
    if array.ndim == 3:
        pil = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB")
        return np.asarray(pil.resize(size, Image.BILINEAR, box=box))
    pil = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(pil.resize(size, Image.BILINEAR, box=box), dtype=np.float32)


def normalize(rgb: np.ndarray) -> np.ndarray:
    """ImageNet normalisation of a ``uint8`` RGB array, channels first.

    Shape:
        rgb ``(h, w, 3)`` uint8 -> ``(3, h, w)`` float32.
    """
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    x = (rgb.astype(np.float32) / 255.0 - mean) / std  # (h, w, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def centered_offset(canvas_size: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left ``(x, y)`` offset that centres a ``size = (w, h)`` patch on a square canvas."""
    w, h = size
    return (canvas_size - w) // 2, (canvas_size - h) // 2


def paste(patch: np.ndarray, canvas_size: int, offset: tuple[int, int]) -> np.ndarray:
    """Place ``patch`` on a zero canvas with its top-left corner at ``offset = (x, y)``.

    The offset may be negative or push the patch past the far edge: what falls outside the
    canvas is cut off.

    Shape:
        patch ``(C, h, w)`` -> ``(C, canvas_size, canvas_size)``, same dtype.
    """
    c, h, w = patch.shape
    out = np.zeros((c, canvas_size, canvas_size), dtype=patch.dtype)
    ox, oy = offset
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + w, canvas_size), min(oy + h, canvas_size)
    if x1 > x0 and y1 > y0:
        out[:, y0:y1, x0:x1] = patch[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return out


def hflip(x: np.ndarray) -> np.ndarray:
    """Mirror the last (width) axis. Shape: ``(..., H, W)`` -> same."""
    return np.ascontiguousarray(x[..., ::-1])


def mean_fill(image: np.ndarray, mask: np.ndarray, fill: float | np.ndarray = 0.0) -> np.ndarray:
    """Blend ``image`` towards ``fill`` outside the (soft) instance mask: ``m*x + (1-m)*fill``.

    On a normalised image the dataset mean colour is ``fill = 0``.

    Shape:
        image ``(C, H, W)``, mask ``(H, W)`` in [0, 1], fill scalar or ``(C,)`` -> ``(C, H, W)``.
    """
    fill = np.asarray(fill, dtype=image.dtype).reshape(-1, 1, 1)
    m = mask[None].astype(image.dtype)  # (1, H, W)
    return m * image + (1 - m) * fill


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Area-averaging operator: row ``i`` averages input pixels over output cell ``i``.

    Cell ``i`` spans ``[i * n_in / n_out, (i + 1) * n_in / n_out)`` in input pixels; each input
    pixel ``[p, p + 1)`` contributes its overlap length. Rows sum to 1.

    Shape:
        ``(n_out, n_in)`` float64.
    """
    cell = n_in / n_out
    edges = np.arange(n_out + 1) * cell  # (n_out + 1,)
    pix = np.arange(n_in)  # (n_in,)
    lo = np.maximum(edges[:-1, None], pix[None, :])  # (n_out, n_in)
    hi = np.minimum(edges[1:, None], pix[None, :] + 1)
    return np.clip(hi - lo, 0.0, None) / cell


def area_downsample(mask: np.ndarray, out_size: int | tuple[int, int]) -> np.ndarray:
    """Exact area average of a mask onto a coarser grid (fraction of each cell covered).

    Works for non-integer ratios (227 -> 13): ``A_h @ mask @ A_wᵀ`` with ``area_matrix``.

    Shape:
        mask ``(H, W)`` -> ``(out_h, out_w)`` float32.
    """
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    h, w = mask.shape
    if (oh, ow) == (h, w):  # the identity (a full-resolution mask, data.mask_size = crop_size)
        return mask.astype(np.float32)
    a_h, a_w = area_matrix(h, oh), area_matrix(w, ow)  # (oh, H), (ow, W)
    return (a_h @ mask.astype(np.float64) @ a_w.T).astype(np.float32)


def _normalize_table() -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    v = np.arange(256, dtype=np.uint8)[:, None].astype(np.float32)  # (256, 1)
    return np.ascontiguousarray(((v / 255.0 - mean) / std).T)  # (3, 256)


_NORMALIZE_TABLE = _normalize_table()


def normalize_lut(rgb: np.ndarray) -> np.ndarray:
    """:func:`normalize` through a 256-entry table per channel: the same float32 values
    (bit for bit), about 4× faster.

    Shape:
        rgb ``(h, w, 3)`` uint8 -> ``(3, h, w)`` float32.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"normalize_lut needs a (h, w, 3) uint8 array, got {rgb.shape} {rgb.dtype}"
        )
    return np.stack([_NORMALIZE_TABLE[c][rgb[..., c]] for c in range(3)])


def normalize_paste(rgb: np.ndarray, canvas_size: int, offset: tuple[int, int]) -> np.ndarray:
    """``paste(normalize(rgb), canvas_size, offset)`` in one pass (bit for bit the same): only
    the visible part of the patch is normalised, straight into the zero canvas.

    Shape:
        rgb ``(h, w, 3)`` uint8 (any strides, e.g. a flipped view) -> ``(3, S, S)`` float32.
    """
    h, w = rgb.shape[:2]
    out = np.zeros((3, canvas_size, canvas_size), dtype=np.float32)
    ox, oy = offset
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + w, canvas_size), min(oy + h, canvas_size)
    if x1 > x0 and y1 > y0:
        sub = rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox]  # (y1 - y0, x1 - x0, 3)
        for c in range(3):
            out[c, y0:y1, x0:x1] = _NORMALIZE_TABLE[c][sub[..., c]]
    return out


def uniform_grid(n_in: float, n_out: int) -> tuple[float, float]:
    """``(stride, offset)`` of ``n_out`` equal cells over ``n_in`` pixels (``area_matrix``'s)."""
    return n_in / n_out, n_in / (2 * n_out)


def grid_cells(n_in: int, n_out: int, stride: float, offset: float) -> np.ndarray:
    """Edges of the input interval each grid unit represents (nearest unit centre).

    Unit ``i`` is centred at ``c_i = offset + i * stride`` (continuous pixel coordinates, pixel
    ``p`` spans ``[p, p + 1)``); its cell runs from the midpoint with unit ``i − 1`` to the
    midpoint with unit ``i + 1``; the first and last cells extend to the image border. With
    :func:`uniform_grid`'s ``(stride, offset)`` these are the ``n_out`` equal cells.

    Shape: ``(n_out + 1,)`` float64, non-decreasing from 0 to ``n_in``.
    """
    if n_out < 1 or n_in < 1 or stride <= 0:
        raise ValueError(f"need n_in, n_out >= 1 and stride > 0, got {n_in}, {n_out}, {stride}")
    mids = offset + (np.arange(1, n_out) - 0.5) * stride  # (n_out - 1,)
    return np.concatenate([[0.0], np.clip(mids, 0.0, n_in), [float(n_in)]])


def cell_matrix(edges: np.ndarray, n_in: int) -> np.ndarray:
    """Averaging operator over cells ``[edges[i], edges[i+1])`` (pixel overlap lengths).

    Rows of empty cells (a unit centred outside the image) are zero.

    Shape: ``(len(edges) - 1, n_in)`` float64.
    """
    pix = np.arange(n_in)  # (n_in,)
    lo = np.maximum(edges[:-1, None], pix[None, :])  # (n_out, n_in)
    hi = np.minimum(edges[1:, None], pix[None, :] + 1)
    overlap = np.clip(hi - lo, 0.0, None)
    width = overlap.sum(1, keepdims=True)
    return np.divide(overlap, width, out=np.zeros_like(overlap), where=width > 0)


def grid_downsample(
    mask: np.ndarray,
    out_size: tuple[int, int],
    stride: float | tuple[float, float],
    offset: float | tuple[float, float],
) -> np.ndarray:
    """Fraction of each feature-grid unit's cell (:func:`grid_cells`) covered by a mask.

    ``stride`` / ``offset`` are in the mask's pixels (scale a trunk's geometry by
    ``mask side / image side`` for a mask of another resolution); per axis ``(h, w)`` or one
    value for both. With :func:`uniform_grid` values this is :func:`area_downsample`.

    Shape: mask ``(..., H, W)`` -> ``(..., out_h, out_w)`` float32.
    """
    (h, w), (oh, ow) = mask.shape[-2:], out_size
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    fh, fw = (offset, offset) if np.isscalar(offset) else offset
    a_h = cell_matrix(grid_cells(h, oh, sh, fh), h)  # (oh, H)
    a_w = cell_matrix(grid_cells(w, ow, sw, fw), w)  # (ow, W)
    return (a_h @ mask.astype(np.float64) @ a_w.T).astype(np.float32)


def grid_sample_index(n_in: int, n_out: int, stride: float, offset: float) -> np.ndarray:
    """Input pixel under each unit's centre (clamped into the image): labels onto the grid.

    Shape: ``(n_out,)`` int64.
    """
    centres = offset + np.arange(n_out) * stride
    return np.clip(np.floor(centres), 0, n_in - 1).astype(np.int64)


def grid_upsample_index(n_in: int, n_out: int, stride: float, offset: float) -> np.ndarray:
    """The unit whose cell (:func:`grid_cells`) holds each input pixel's centre.

    Shape: ``(n_in,)`` int64 in ``0..n_out-1``.
    """
    edges = grid_cells(n_in, n_out, stride, offset)
    idx = np.searchsorted(edges[1:-1], np.arange(n_in) + 0.5, side="right")
    return idx.astype(np.int64)
