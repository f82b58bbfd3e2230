"""DeepO2P region classifiers (SPEC §3) and the first-order baselines they are compared with.

    DeepO2P      trunk -> log(Fᵀ M F / Σm + εI) -> triu_vec -> [norm] -> [dropout] -> linear
    DeepO2P-FC   trunk -> log-cov -> triu_vec -> [norm] -> fc6 -> relu6 -> drop6 -> fc7 -> relu7
                 -> drop7 -> linear   (the paper's Caffe / MatConvNet AlexNet classifier)
    AlexNet      torchvision's AlexNet conv1–pool5 -> the same fc6 … drop7 stack (ImageNet fc6 /
                 fc7) -> a new last layer (tiny trunk: global avg + linear)
    AvgPool      trunk -> masked average pooling -> [norm] -> [dropout] -> linear   (first order)

The Table 1 rows use no ``norm`` (``head_norm: none``, the paper's heads); ``batchnorm`` is for
the demos and the clearly named extra rows.

Every model takes ``(images, mask)``; ``mask`` is the region's coverage map at any resolution,
resized here to the trunk's feature grid. Every model lists the parameter-name prefixes that
hold ImageNet weights in ``pretrained_prefixes`` (used by ``build.param_groups``).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matbackprop.models.backbones import Trunk, imagenet_net
from matbackprop.spectral import LogCovPool, triu_vec

HEAD_NORMS = ("none", "batchnorm")
POOL_DEVICES = ("auto", "same", "cpu")
# What ``pool_device: auto`` means where nothing is measured: a trunk on the CPU (the two
# choices are then one computation). On an accelerator ``auto`` times both choices on first
# use, on the user's machine and batch shape (:func:`decide_pool_device`).
POOL_DEVICE_AUTO = "same"
AUTO_RUNS = 3  # timed fwd+bwd runs per choice (after one warm-up each), interleaved

_DECISIONS: dict[tuple, dict] = {}  # (device name, shape, dtype, masked) -> decision
_LAST_DECISION: dict | None = None


def pool_device_decision() -> dict | None:
    """What ``model.pool_device=auto`` chose most recently in this process, for status.json:
    ``{"choice": "same" | "cpu", "key": {"device", "shape", "dtype", "masked"},
    "timings_s": {"same": s, "cpu": s} | None, "reason": str}``; None if ``auto`` has not run.
    (Every decision so far: :func:`pool_device_decisions`.)"""
    return None if _LAST_DECISION is None else dict(_LAST_DECISION)


def pool_device_decisions() -> list[dict]:
    """All ``auto`` decisions of this process (one per device, batch shape and dtype)."""
    return [dict(d) for d in _DECISIONS.values()]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_choice(pool: nn.Module, where: str, x: Tensor, mask: Tensor | None, g: Tensor) -> float:
    """Seconds for one forward + backward of ``pool`` run ``where`` on copies of x (the
    caller's graph is untouched)."""
    xx = x.detach().clone().requires_grad_()
    _sync(x.device)
    t0 = time.perf_counter()
    y = _pool_where(pool, where, xx, mask)
    torch.autograd.grad((y * g).sum(), xx)
    _sync(x.device)
    return time.perf_counter() - t0


def decide_pool_device(
    pool: nn.Module, x: Tensor, mask: Tensor | None, runs: int = AUTO_RUNS, measure: bool = False
) -> str:
    """``same`` or ``cpu`` for ``pool_device=auto``: decided once per (device name, batch shape,
    dtype, masked) and cached. A trunk on the CPU: ``same`` (nothing to measure). Otherwise
    both choices run forward + backward on a copy of this very batch (one warm-up each, then
    ``runs`` interleaved timed runs; the ``cpu`` choice with its pinned non-blocking copies),
    the faster median wins; the decision is printed once (to stderr). ``measure=True`` times
    the two choices even on the CPU (tests)."""
    global _LAST_DECISION
    key = (
        _device_name(x.device),
        tuple(x.shape),
        str(x.dtype).replace("torch.", ""),
        mask is not None,
    )
    if key in _DECISIONS:
        _LAST_DECISION = _DECISIONS[key]
        return _LAST_DECISION["choice"]
    keyd = dict(zip(("device", "shape", "dtype", "masked"), key))
    if torch.is_inference_mode_enabled() and (x.device.type != "cpu" or measure):
        return "same"  # nothing can be timed with a backward here: decide on a training step
    if x.device.type == "cpu" and not measure:
        decision = dict(choice="same", key=keyd, timings_s=None, reason="the trunk runs on the CPU")
    else:
        with torch.enable_grad():
            gen = torch.Generator(device=x.device).manual_seed(0)  # leaves the global RNG alone
            g = torch.randn(x.shape[0], x.shape[1], x.shape[1], device=x.device, generator=gen)
            samples: dict[str, list[float]] = {"same": [], "cpu": []}
            for r in range(runs + 1):
                for where in ("same", "cpu") if r % 2 else ("cpu", "same"):
                    t = _time_choice(pool, where, x, mask, g)
                    if r:
                        samples[where].append(t)
        timings = {k: statistics.median(v) for k, v in samples.items()}
        choice = "cpu" if timings["cpu"] < timings["same"] else "same"
        decision = dict(
            choice=choice,
            key=keyd,
            timings_s=timings,
            reason=f"median of {runs} fwd+bwd runs each on this batch",
        )
    _DECISIONS[key] = _LAST_DECISION = decision
    t = decision["timings_s"]
    if t is None:  # a CPU trunk: nothing was decided, nothing to say (still recorded)
        return decision["choice"]
    detail = f" (same {t['same']:.4g} s, cpu {t['cpu']:.4g} s per fwd+bwd)"
    print(
        f"model.pool_device=auto: {decision['choice']} for {keyd['device']} {keyd['shape']} "
        f"{keyd['dtype']}{detail}: {decision['reason']}",
        file=sys.stderr,
        flush=True,
    )
    return decision["choice"]


def _copy_to_host(x: Tensor) -> Tensor:
    """Non-blocking copy into pinned CPU memory, complete on return (the CPU reads it next)."""
    y = x.to("cpu", non_blocking=True)  # pinned destination for a CUDA source
    if x.device.type == "cuda":
        torch.cuda.current_stream(x.device).synchronize()
    return y


class _ToHost(torch.autograd.Function):
    """Device -> CPU copy into pinned memory, non-blocking; the gradient goes back the same way."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.device = x.device
        return _copy_to_host(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.pin_memory().to(ctx.device, non_blocking=True)


class _ToDevice(torch.autograd.Function):
    """CPU -> device copy from pinned memory, non-blocking; the gradient comes back to the CPU."""

    @staticmethod
    def forward(ctx, y: Tensor, device: torch.device) -> Tensor:
        return y.pin_memory().to(device, non_blocking=True)

    @staticmethod
    def backward(ctx, g: Tensor):
        return _copy_to_host(g), None


def pool_on(pool: nn.Module, device: str, x: Tensor, mask: Tensor | None) -> Tensor:
    """Run ``pool(x, mask)`` where ``model.pool_device`` says: ``same`` (x's device) or ``cpu``
    (pinned non-blocking copies there and back, the paper's CPU structured layer); ``auto``
    measures both on first use for this device, batch shape and dtype and keeps the faster
    (:func:`decide_pool_device`; ``same`` on a CPU trunk). Values and gradients equal those of
    ``same``.

    Shape: x (B, d, H, W), mask (B, H, W) or None -> (B, d, d) on x's device.
    """
    if device == "auto":
        device = decide_pool_device(pool, x, mask)
    return _pool_where(pool, device, x, mask)


def _pool_where(pool: nn.Module, device: str, x: Tensor, mask: Tensor | None) -> Tensor:
    if device == "same" or x.device.type == "cpu":
        return pool(x, mask)
    m = None if mask is None else _ToHost.apply(mask)
    return _ToDevice.apply(pool(_ToHost.apply(x), m), x.device)


def resize_mask(mask: Tensor | None, size: tuple[int, int]) -> Tensor | None:
    """Resize region masks to the feature grid; an all-zero mask becomes uniform.

    Downsampling averages the coverage over each output cell (``adaptive_avg_pool2d``: exact
    block means for integer ratios); upsampling is bilinear.

    Shape: mask (B, h, w) -> (B, H, W) with ``(H, W) = size``; ``None`` passes through.
    """
    if mask is None:
        return None
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, h, w), got shape {tuple(mask.shape)}")
    mask = mask.float()
    (h, w), (H, W) = mask.shape[-2:], size
    if (h, w) != (H, W):
        if h >= H and w >= W:  # coarser grid: average coverage over each cell
            mask = F.adaptive_avg_pool2d(mask[:, None], (H, W))[:, 0]
        else:  # finer grid (e.g. 13 -> 14 for VGG): interpolate
            mask = F.interpolate(mask[:, None], size=(H, W), mode="bilinear")[:, 0]
        mask = mask.clamp_min(0)  # (B, H, W)
    empty = mask.sum(dim=(1, 2), keepdim=True) <= 1e-6  # (B, 1, 1) degenerate regions
    return torch.where(empty, torch.ones_like(mask), mask)


def masked_avg_pool(x: Tensor, mask: Tensor | None) -> Tensor:
    """First-order pooling ``Σ m_p f_p / Σ m_p`` (plain mean without a mask).

    Shape: x (B, d, H, W), mask (B, H, W) or None -> (B, d).
    """
    if mask is None:
        return x.mean(dim=(2, 3))
    w = mask.to(x.dtype)[:, None]  # (B, 1, H, W)
    return (x * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1e-12)


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batchnorm":
        return nn.BatchNorm1d(dim)
    raise ValueError(f"unknown model.head_norm {kind!r}; expected one of {HEAD_NORMS}")


def _new_classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    nn.init.normal_(layer.weight, 0.0, 0.01)  # as torchvision's AlexNet classifier
    nn.init.zeros_(layer.bias)
    return layer


def fc67(in_dim: int, fc_dim: int = 4096, dropout: float = 0.5) -> nn.Sequential:
    """AlexNet's fully connected stack as Caffe / MatConvNet have it (the paper's nets):
    ``fc6 -> relu6 -> drop6 -> fc7 -> relu7 -> drop7`` (indices 0 = fc6, 3 = fc7).

    torchvision's AlexNet puts dropout before fc6 and fc7 instead (on pool5, none after relu7).

    Shape: (B, in_dim) -> (B, fc_dim).
    """
    return nn.Sequential(
        nn.Linear(in_dim, fc_dim),  # fc6
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc_dim, fc_dim),  # fc7
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


class DeepO2P(nn.Module):
    """Trunk -> masked log-covariance pooling -> upper triangle -> linear classifier.

    Args:
        trunk: feature extractor (``Trunk.out_channels`` = d).
        num_classes: K.
        eps: ε added to the covariance before the log (SPEC §3: 1e-3).
        centered: subtract the (masked) mean before the second moment.
        pool_dtype: precision of the structured layer (float64 as in the paper, or float32).
        use_mask: pool with the region mask (else over the whole crop).
        head_norm: ``none`` | ``batchnorm`` on the d(d+1)/2 descriptor.
        dropout: without ``fc_dim``: dropout on the descriptor before the classifier (the
            paper's DeepO2P has none: 0); with ``fc_dim``: after relu6 and relu7.
        fc_dim: ``None`` for a linear classifier on the descriptor; else the width of an
            fc6 -> relu6 -> drop6 -> fc7 -> relu7 -> drop7 stack before it (:func:`fc67`).
        pool_device: where the structured layer runs: ``same`` (the trunk's device), ``cpu``
            or ``auto`` (see :func:`pool_on`).

    Precision: under ``torch.autocast`` the trunk and the head run in low precision, the
    structured layer in float32 products / ``pool_dtype`` spectrum (autocast off inside).

    Shape:
        images (B, 3, S, S), mask (B, h, w) or None -> logits (B, K).
    """

    def __init__(
        self,
        trunk: Trunk,
        num_classes: int,
        eps: float = 1e-3,
        centered: bool = False,
        pool_dtype: torch.dtype = torch.float64,
        use_mask: bool = True,
        head_norm: str = "none",
        dropout: float = 0.0,
        fc_dim: int | None = None,
        pool_device: str = "auto",
    ):
        super().__init__()
        if pool_device not in POOL_DEVICES:
            raise ValueError(
                f"model.pool_device must be one of {POOL_DEVICES}, got {pool_device!r}"
            )
        self.pool_device = pool_device
        d = trunk.out_channels
        self.trunk = trunk.module
        self.pool = LogCovPool(eps=eps, centered=centered, compute_dtype=pool_dtype)
        self.use_mask = use_mask
        self.feature_dim = d * (d + 1) // 2
        self.norm = _norm(head_norm, self.feature_dim)
        if fc_dim is None:
            self.head = nn.Dropout(dropout)
        else:
            self.head = fc67(self.feature_dim, fc_dim, dropout)
        self.classifier = _new_classifier(fc_dim or self.feature_dim, num_classes)
        self.pretrained_prefixes: tuple[str, ...] = ("trunk.",) if trunk.pretrained else ()

    def pooled(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """The log-covariance matrices, Shape: (B, 3, S, S), (B, h, w) -> (B, d, d)."""
        x = self.trunk(images)  # (B, d, H, W)
        m = resize_mask(mask, x.shape[-2:]) if self.use_mask else None
        return pool_on(self.pool, self.pool_device, x, m)  # (B, d, d), float32/64

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        z = triu_vec(self.pooled(images, mask))  # (B, d(d+1)/2)
        return self.classifier(self.head(self.norm(z)))  # (B, K)


class DeepO2PFC(DeepO2P):
    """DeepO2P with AlexNet's fully connected stack (fc6 -> fc7, width ``fc_dim``) before the
    classifier.

    fc6/fc7 are newly initialised: fc6's input is the d(d+1)/2 descriptor, so ImageNet's fc6
    does not fit, and ImageNet's fc7 expects ImageNet's fc6 features.

    Shape:
        images (B, 3, S, S), mask (B, h, w) or None -> logits (B, K).
    """

    def __init__(self, trunk: Trunk, num_classes: int, fc_dim: int = 4096, **kwargs):
        super().__init__(trunk, num_classes, fc_dim=fc_dim, **kwargs)


class AvgPoolClassifier(nn.Module):
    """First-order baseline: trunk -> masked average pooling -> [norm] -> [dropout] -> linear.

    Shape:
        images (B, 3, S, S), mask (B, h, w) or None -> logits (B, K).
    """

    def __init__(
        self,
        trunk: Trunk,
        num_classes: int,
        use_mask: bool = True,
        head_norm: str = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.trunk = trunk.module
        self.use_mask = use_mask
        self.norm = _norm(head_norm, trunk.out_channels)
        self.head = nn.Dropout(dropout)
        self.classifier = _new_classifier(trunk.out_channels, num_classes)
        self.pretrained_prefixes: tuple[str, ...] = ("trunk.",) if trunk.pretrained else ()

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.trunk(images)  # (B, d, H, W)
        m = resize_mask(mask, x.shape[-2:]) if self.use_mask else None
        return self.classifier(self.head(self.norm(masked_avg_pool(x, m))))  # (B, K)


class AlexNetClassifier(nn.Module):
    """The standard network with a new K-way last layer (the Table 1 ``AlexNet`` baseline).

    ``trunk='alexnet'`` / ``'vgg16'``: the torchvision net's conv layers and fc6 / fc7 (ImageNet
    weights when asked), its classifier re-ordered to the paper's (Caffe) dropout placement,
    :func:`fc67` (``net.classifier`` = fc6, relu6, drop6, fc7, relu7, drop7, new fc8 at index
    6). ``trunk='tiny'``: tiny trunk -> global average -> linear.
    The mask is ignored (the standard net sees the crop only; use ``data.mean_fill`` for SDS-style
    masking).

    Shape:
        images (B, 3, S, S) -> logits (B, K).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        pretrained: bool = False,
        dropout: float = 0.5,
        tiny: Trunk | None = None,
    ):
        super().__init__()
        if arch == "tiny":
            if tiny is None:
                raise ValueError("AlexNetClassifier(arch='tiny') needs the tiny trunk")
            self.net = nn.Sequential(
                tiny.module,
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Dropout(dropout),
                _new_classifier(tiny.out_channels, num_classes),
            )
            self.pretrained_prefixes: tuple[str, ...] = ()
            return
        if arch == "alexnet":
            self.net = imagenet_net("alexnet", pretrained)
            fc6, fc7 = self.net.classifier[1], self.net.classifier[4]
        elif arch == "vgg16":
            self.net = imagenet_net("vgg16", pretrained)
            fc6, fc7 = self.net.classifier[0], self.net.classifier[3]
        else:
            raise ValueError(f"unknown trunk {arch!r} for the AlexNet baseline")
        head = fc67(fc6.in_features, fc6.out_features, dropout)
        head[0].load_state_dict(fc6.state_dict())  # ImageNet (or torchvision's random) fc6 / fc7
        head[3].load_state_dict(fc7.state_dict())
        self.net.classifier = nn.Sequential(*head, _new_classifier(fc7.out_features, num_classes))
        old = ("net.features.", "net.classifier.0.", "net.classifier.3.")
        self.pretrained_prefixes = old if pretrained else ()

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(images)  # (B, K)
