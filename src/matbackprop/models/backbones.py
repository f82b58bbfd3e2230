"""Convolutional trunks for the structured heads: AlexNet / VGG-16 taps and a tiny CPU trunk.

- ``alexnet``: torchvision AlexNet ``features[:12]`` = conv1 … conv5 + ReLU, before the last
  max-pool. 227×227 input → 13×13 grid, d = 256 (SPEC §3).
- ``vgg16``: torchvision VGG-16 ``features[:30]`` = conv1_1 … conv5_3 + ReLU, before pool5.
  227×227 input → 14×14 grid, d = 512.
- ``tiny``: three small conv layers for demos and tests (random init only), stride 4 overall.

``pretrained=True`` downloads ImageNet weights through the torchvision weights API on first
use (needs internet); tests never ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torchvision

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


def alexnet_trunk(pretrained: bool = False) -> Trunk:
    """AlexNet conv1–conv5 + ReLU (torchvision ``features[:12]``), d = 256.

    Shape: (B, 3, 227, 227) -> (B, 256, 13, 13).
    """
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1 if pretrained else None
    net = torchvision.models.alexnet(weights=weights)
    return Trunk(net.features[:12], 256, pretrained)


def vgg16_trunk(pretrained: bool = False) -> Trunk:
    """VGG-16 conv1_1–conv5_3 + ReLU (torchvision ``features[:30]``), d = 512.

    Shape: (B, 3, S, S) -> (B, 512, S // 16, S // 16).
    """
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1 if pretrained else None
    net = torchvision.models.vgg16(weights=weights)
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
