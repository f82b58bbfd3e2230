"""Convolutional trunks for the structured heads: AlexNet / VGG-16 taps and a tiny CPU trunk.

- ``alexnet``: torchvision AlexNet ``features[:12]`` = conv1 … conv5 + ReLU, before the last
  max-pool. 227×227 input → 13×13 grid, d = 256 (SPEC §3).
- ``vgg16``: torchvision VGG-16 ``features[:30]`` = conv1_1 … conv5_3 + ReLU, before pool5.
  227×227 input → 14×14 grid, d = 512.
- ``tiny``: three small conv layers for demos and tests (random init only), stride 4 overall.

``pretrained=True`` downloads ImageNet weights through the torchvision weights API on first
use (needs internet); tests never ask for it.

These are torchvision's nets, not the original Caffe / MatConvNet AlexNet the paper used:
conv1–conv5 have 64 / 192 / 384 / 256 / 256 channels (Caffe: 96 / 256 / 384 / 384 / 256, with
groups), and there is no local response normalisation.

:func:`grid_geometry` / :func:`trunk_geometry` give where each unit of a trunk's output grid
looks in the input (stride, centre of unit 0, receptive-field size), computed from the layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from matbackprop.errors import DataError

TRUNKS = ("alexnet", "vgg16", "tiny")


@dataclass
class Trunk:
    """A feature extractor and what the heads need to know about it.

    Attributes:
        module: maps images ``(B, 3, S, S)`` to a ReLU feature map ``(B, d, H, W)``.
        out_channels: d.
        pretrained: whether ``module`` holds ImageNet weights.
    """

    module: nn.Module
    out_channels: int
    pretrained: bool


def imagenet_net(name: str, pretrained: bool) -> nn.Module:
    """torchvision ``alexnet`` / ``vgg16``, with its ImageNet weights when ``pretrained``.

    The weights come from ``$TORCH_HOME`` (``make weights`` pre-fetches them), else are
    downloaded once (SHA-256-prefix checked).

    Raises:
        DataError: the weights are neither cached nor downloadable (no internet on a cluster
            node, a truncated file): names the file and ``make weights``.
    """
    builder, weights = {
        "alexnet": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
        "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    }[name]
    net = builder(weights=None)
    if pretrained:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError / HTTPError / a truncated or corrupt file
            raise DataError(
                f"cannot load the ImageNet weights of {name} ({path}): {err}. Run `make weights` "
                "on a machine with internet and share TORCH_HOME with this one (or delete a "
                "corrupt file there), or set model.pretrained=false"
            ) from err
        net.load_state_dict(state)
    return net


def alexnet_trunk(pretrained: bool = False) -> Trunk:
    """AlexNet conv1–conv5 + ReLU (torchvision ``features[:12]``), d = 256.

    Shape: (B, 3, 227, 227) -> (B, 256, 13, 13).
    """
    net = imagenet_net("alexnet", pretrained)
    return Trunk(net.features[:12], 256, pretrained)


def vgg16_trunk(pretrained: bool = False) -> Trunk:
    """VGG-16 conv1_1–conv5_3 + ReLU (torchvision ``features[:30]``), d = 512.

    Shape: (B, 3, S, S) -> (B, 512, S // 16, S // 16).
    """
    net = imagenet_net("vgg16", pretrained)
    return Trunk(net.features[:30], 512, pretrained)


def tiny_trunk(width: int = 32, out_channels: int = 32) -> Trunk:
    """Three conv layers (stride 2, max-pool 2, stride 1) with BatchNorm and ReLU; random init.

    Shape: (B, 3, S, S) -> (B, out_channels, S // 4, S // 4).
    """
    module = nn.Sequential(
        nn.Conv2d(3, width, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )
    return Trunk(module, out_channels, pretrained=False)


def build_trunk(
    name: str, pretrained: bool = False, width: int = 32, out_channels: int = 32
) -> Trunk:
    """Trunk by name (``alexnet`` | ``vgg16`` | ``tiny``); ``width``/``out_channels`` are tiny-only.

    Raises:
        ValueError: unknown name, or ``pretrained=True`` for the tiny trunk.
    """
    if name == "alexnet":
        return alexnet_trunk(pretrained)
    if name == "vgg16":
        return vgg16_trunk(pretrained)
    if name == "tiny":
        if pretrained:
            raise ValueError("model.pretrained=true is not available for trunk 'tiny'")
        return tiny_trunk(width, out_channels)
    raise ValueError(f"unknown trunk {name!r}; expected one of {TRUNKS}")


@dataclass(frozen=True)
class GridGeometry:
    """Where the units of a feature grid sit in the input image (same along both axes).

    Continuous pixel coordinates: pixel ``p`` spans ``[p, p + 1)``, so its centre is ``p + 0.5``.

    Attributes:
        stride: input pixels between neighbouring units.
        offset: centre of unit 0's receptive field (unit ``i`` is centred at
            ``offset + i * stride``).
        rf: receptive-field side in pixels (before clipping at the image border).
        size: ``(H, W)`` of the grid for the input size asked for.
    """

    stride: int
    offset: float
    rf: int
    size: tuple[int, int]


def _pair(v) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise ValueError(f"non-square kernel/stride/padding {v!r}: grid geometry needs square ones")
    return int(a)


def grid_geometry(layers: Iterable[nn.Module], input_size: tuple[int, int]) -> GridGeometry:
    """Receptive-field geometry of a stack of layers, walked layer by layer.

    ``Conv2d`` / ``MaxPool2d`` / ``AvgPool2d`` change the grid (kernel, stride, padding,
    dilation, ``ceil_mode``); every other layer (ReLU, BatchNorm, Dropout, ...) keeps it.
    Per layer with kernel k, stride s, padding p, dilation δ, input jump j and centre c:
    ``c += ((δ (k − 1)) / 2 − p) j``, ``rf += δ (k − 1) j``, ``j *= s``.

    Args:
        layers: the trunk's modules in order (e.g. ``trunk.module`` or a slice of it).
        input_size: ``(H, W)`` of the input image.

    Raises:
        ValueError: a layer the walk does not know changes the grid (nested containers other
            than ``nn.Sequential``), or a non-square kernel.
    """
    jump, centre, rf = 1, 0.5, 1  # input: unit p centred at p + 0.5
    h, w = (int(v) for v in input_size)
    for layer in layers:
        if isinstance(layer, nn.Sequential):
            inner = grid_geometry(layer, (h, w))
            centre += (inner.offset - 0.5) * jump
            rf += (inner.rf - 1) * jump
            jump *= inner.stride
            h, w = inner.size
            continue
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
            dil = _pair(getattr(layer, "dilation", 1))
            ceil = bool(getattr(layer, "ceil_mode", False))
            span = dil * (k - 1)
            rnd = math.ceil if ceil else math.floor
            h, w = (rnd((n + 2 * p - span - 1) / s) + 1 for n in (h, w))
            centre += (span / 2 - p) * jump
            rf += span * jump
            jump *= s
        elif isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)):
            raise ValueError(f"{type(layer).__name__} has no fixed grid geometry")
    return GridGeometry(jump, centre, rf, (h, w))


def trunk_geometry(
    name: str,
    input_size: tuple[int, int],
    depth: int | None = None,
    width: int = 32,
    out_channels: int = 32,
) -> GridGeometry:
    """:func:`grid_geometry` of a named trunk's first ``depth`` layers (``None``: all of it).

    The layers are built on the ``meta`` device: no weights are made or downloaded.
    Example: AlexNet conv5 at 227 × 227 -> stride 16, offset 15.5, rf 163, size (13, 13).
    """
    with torch.device("meta"):
        module = build_trunk(name, False, width=width, out_channels=out_channels).module
    return grid_geometry(list(module)[:depth], input_size)
