"""DeepNCut (SPEC §5): a conv trunk tapped at chosen layers, two new conv3×3 + ReLU pairs, and
non-negative features F (B, d, h, w) for the normalized-cuts alignment loss.

    trunk taps ──(resize to the first tap's grid, concat)──> conv3×3 + ReLU ─> dropout ─>
    conv3×3 + ReLU ─> F ≥ 0 ─> ncut_alignment_loss(F, ground truth on the feature grid)

Tap names: AlexNet ``relu1``…``relu5``; VGG-16 ``relu1_1``…``relu5_3`` (e.g. ``relu4_3`` +
``relu5_3``); tiny ``out``. ``freeze_through`` freezes the trunk up to and including a layer
(run without autograd), a CPU-friendly choice; by default everything is trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matbackprop.models.backbones import build_trunk
from matbackprop.spectral import ncut_alignment_loss

ALEXNET_TAPS = {"relu1": 1, "relu2": 4, "relu3": 7, "relu4": 9, "relu5": 11}
VGG16_TAPS = {
    f"relu{b}_{i}": idx
    for (b, i), idx in zip(
        [
            (1, 1),
            (1, 2),
            (2, 1),
            (2, 2),
            (3, 1),
            (3, 2),
            (3, 3),
            (4, 1),
            (4, 2),
            (4, 3),
            (5, 1),
            (5, 2),
            (5, 3),
        ],
        [1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29],
    )
}
ALEXNET_CHANNELS = {"relu1": 64, "relu2": 192, "relu3": 384, "relu4": 256, "relu5": 256}
VGG16_CHANNELS = {name: (64, 128, 256, 512, 512)[int(name[4]) - 1] for name in VGG16_TAPS}


def tap_table(trunk: str, tiny_out: int = 32) -> tuple[dict[str, int], dict[str, int]]:
    """(layer index, channels) by tap name for a trunk."""
    if trunk == "alexnet":
        return ALEXNET_TAPS, ALEXNET_CHANNELS
    if trunk == "vgg16":
        return VGG16_TAPS, VGG16_CHANNELS
    if trunk == "tiny":
        return {"out": 8}, {"out": tiny_out}
    raise ValueError(f"unknown trunk {trunk!r}; expected alexnet, vgg16 or tiny")


class DeepNCut(nn.Module):
    """Features for normalized cuts.

    Args:
        trunk: ``alexnet`` | ``vgg16`` | ``tiny``.
        taps: trunk layers whose outputs are concatenated (resized to the first tap's grid).
        pretrained: ImageNet weights for the trunk (downloaded by torchvision on first use).
        hidden: channels of the first new conv layer.
        out_dim: d, channels of the output features.
        dropout: element-wise dropout probability before the last layer.
        freeze_through: freeze trunk layers up to and including this tap name (None: train all).
        head: False = no new layers: the features are the (ReLU) tap outputs themselves, as for
            the paper's "NCut on non-finetuned AlexNet features" baselines.

    Shape:
        images (B, 3, H, W) -> features (B, out_dim, h, w), h, w = the first tap's grid.
    """

    def __init__(
        self,
        trunk: str = "alexnet",
        taps: Sequence[str] = ("relu5",),
        pretrained: bool = False,
        hidden: int = 256,
        out_dim: int = 64,
        dropout: float = 0.5,
        freeze_through: str | None = None,
        head: bool = True,
        tiny_width: int = 32,
        tiny_out: int = 32,
    ) -> None:
        super().__init__()
        index, channels = tap_table(trunk, tiny_out)
        taps = list(taps)
        unknown = [t for t in taps if t not in index]
        if not taps or unknown:
            raise ValueError(
                f"model.taps: unknown {unknown or taps} for trunk {trunk}; choose from {list(index)}"
            )
        if freeze_through is not None and freeze_through not in index:
            raise ValueError(
                f"model.freeze_through: unknown layer {freeze_through!r}; choose from {list(index)}"
            )
        t = build_trunk(trunk, pretrained, width=tiny_width, out_channels=tiny_out)
        last = max(index[n] for n in taps)
        self.trunk = t.module[: last + 1]  # nothing past the deepest tap is computed
        self.tap_index = [index[n] for n in taps]
        self.frozen = -1 if freeze_through is None else index[freeze_through]
        for i, layer in enumerate(self.trunk):
            if i <= self.frozen:
                layer.requires_grad_(False)
        self.pretrained_prefixes = ("trunk.",) if pretrained else ()
        d_in = sum(channels[n] for n in taps)
        self.head = head
        if not head:
            self.out_dim = d_in
            return
        self.out_dim = out_dim
        self.conv1 = nn.Conv2d(d_in, hidden, 3, padding=1)
        # element-wise (Caffe / MatConvNet dropout), not channel-wise Dropout2d
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(hidden, out_dim, 3, padding=1)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.constant_(conv.bias, 0.01)  # a small positive bias keeps ReLU units alive

    def forward(self, images: Tensor) -> Tensor:
        feats, x = [], images
        for i, layer in enumerate(self.trunk):
            if i <= self.frozen:
                with torch.no_grad():
                    x = layer(x)
            else:
                x = layer(x)
            if i in self.tap_index:
                feats.append(x)
        size = feats[0].shape[-2:]
        feats = [
            f
            if f.shape[-2:] == size
            else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in feats
        ]
        x = torch.cat(feats, 1)  # (B, Σ channels, h, w)
        if not self.head:
            return x
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(self.drop(x)))  # (B, out_dim, h, w) ≥ 0
        return x

    def train(self, mode: bool = True) -> DeepNCut:
        super().train(mode)
        for i, layer in enumerate(self.trunk):  # frozen BatchNorm statistics stay fixed
            if i <= self.frozen:
                layer.eval()
        return self


def downsample_labels(seg: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest (cell-centre) sampling of label maps onto the feature grid (uniform cells; the
    identity when ``seg`` is already at ``size``: the BSDS task samples at the trunk's unit
    centres first, ``data.label_grid: receptive``).

    Shape: seg (B, H, W) int -> (B, h, w) int64.
    """
    b, h_in, w_in = seg.shape
    h, w = size
    rows = ((torch.arange(h, device=seg.device) + 0.5) * h_in / h).long().clamp_max(h_in - 1)
    cols = ((torch.arange(w, device=seg.device) + 0.5) * w_in / w).long().clamp_max(w_in - 1)
    return seg[:, rows][:, :, cols].long()


def ncut_loss_on_grid(
    features: Tensor, seg: Tensor, eps: float = 1e-6, return_rank: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """ncut_alignment_loss of features (B, d, h, w) against label maps (B, H, W) with labels ≥ 1
    (0 = unlabelled, ignored), downsampled to the feature grid. Returns per-item loss (B,)."""
    b, d, h, w = features.shape
    labels = downsample_labels(seg, (h, w)) - 1  # 0-based; unlabelled → −1 (ignored)
    # compact the labels present in each item to 0..k−1 (keeps k, the one-hot width, small)
    flat = labels.reshape(b, -1)
    compact = torch.full_like(flat, -1)
    for i in range(b):
        valid = flat[i] >= 0
        _, inv = torch.unique(flat[i][valid], return_inverse=True)
        compact[i][valid] = inv
    f = features.flatten(2).mT  # (B, m, d)
    return ncut_alignment_loss(f, compact, eps=eps, return_rank=return_rank)
