"""Build a model from its Hydra config, and its SGD parameter groups.

Config keys (``conf/model/*.yaml``): ``arch`` (deepo2p | deepo2p_fc | alexnet | avgpool | deepncut),
``trunk`` (alexnet | vgg16 | tiny), ``pretrained``, ``pool_eps``, ``pool_centered``,
``pool_dtype`` (float64 | float32), ``use_mask``, ``head_norm``, ``dropout``, ``fc_dim``,
``tiny_width``, ``tiny_out``, ``freeze_trunk``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from matbackprop.models.backbones import build_trunk
from matbackprop.models.deepncut import DeepNCut
from matbackprop.models.o2p import AlexNetClassifier, AvgPoolClassifier, DeepO2P, DeepO2PFC

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_model(cfg: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """Model from ``cfg`` (a ``model`` config section); ``num_classes`` for the classifiers
    (DeepNCut has none). One registry, :data:`ARCHS`, holds every architecture.

    ``freeze_trunk: true`` keeps the trunk's weights as initialised (no gradient; BatchNorm
    still normalises with batch statistics): only the pooling head learns, which isolates what
    the pooling itself contributes.

    Raises:
        ValueError: unknown ``arch``, ``trunk``, ``pool_dtype`` or ``head_norm``.
    """
    arch = cfg["arch"]
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; expected one of {tuple(ARCHS)}")
    model = ARCHS[arch](cfg, num_classes)
    if bool(cfg.get("freeze_trunk", False)):
        if not hasattr(model, "trunk"):
            raise ValueError(f"model.freeze_trunk is not available for arch {arch!r}")
        model.trunk.requires_grad_(False)
    return model


def _tiny(cfg: Mapping[str, Any]) -> dict[str, int]:
    return dict(width=int(cfg.get("tiny_width", 32)), out_channels=int(cfg.get("tiny_out", 32)))


def _head(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        use_mask=bool(cfg.get("use_mask", True)),
        head_norm=cfg.get("head_norm", "none"),
        dropout=float(cfg.get("dropout", 0.0)),
    )


def _trunk(cfg: Mapping[str, Any]) -> nn.Module:
    return build_trunk(
        cfg.get("trunk", "alexnet"), bool(cfg.get("pretrained", False)), **_tiny(cfg)
    )


def _pool(cfg: Mapping[str, Any]) -> dict[str, Any]:
    dtype_name = cfg.get("pool_dtype", "float64")
    if dtype_name not in DTYPES:
        raise ValueError(f"model.pool_dtype must be one of {list(DTYPES)}, got {dtype_name!r}")
    return dict(
        eps=float(cfg.get("pool_eps", 1e-3)),
        centered=bool(cfg.get("pool_centered", False)),
        pool_dtype=DTYPES[dtype_name],
        pool_device=str(cfg.get("pool_device", "auto")),
    )


def _alexnet(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    trunk_name, pretrained = cfg.get("trunk", "alexnet"), bool(cfg.get("pretrained", False))
    trunk = build_trunk("tiny", **_tiny(cfg)) if trunk_name == "tiny" else None
    dropout = float(cfg.get("dropout", 0.0))
    return AlexNetClassifier(trunk_name, num_classes, pretrained, dropout, tiny=trunk)


def _avgpool(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    return AvgPoolClassifier(_trunk(cfg), num_classes, **_head(cfg))


def _deepo2p(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    return DeepO2P(_trunk(cfg), num_classes, **_pool(cfg), **_head(cfg))


def _deepo2p_fc(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    fc_dim = int(cfg.get("fc_dim", 4096))
    return DeepO2PFC(_trunk(cfg), num_classes, fc_dim=fc_dim, **_pool(cfg), **_head(cfg))


def _deepncut(cfg: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """DeepNCut (``head: false`` = raw trunk features)."""
    return DeepNCut(
        trunk=cfg.get("trunk", "alexnet"),
        taps=list(cfg.get("taps", ["relu5"])),
        pretrained=bool(cfg.get("pretrained", False)),
        hidden=int(cfg.get("hidden", 256)),
        out_dim=int(cfg.get("out_dim", 64)),
        dropout=float(cfg.get("dropout", 0.5)),
        freeze_through=cfg.get("freeze_through"),
        head=bool(cfg.get("head", True)),
        tiny_width=int(cfg.get("tiny_width", 32)),
        tiny_out=int(cfg.get("tiny_out", 32)),
    )


ARCHS = {  # model.arch -> builder(cfg, num_classes)
    "deepo2p": _deepo2p,
    "deepo2p_fc": _deepo2p_fc,
    "alexnet": _alexnet,
    "avgpool": _avgpool,
    "deepncut": _deepncut,
}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    new_lr_mult: float = 10.0,
    bias_lr_mult: float = 2.0,
) -> list[dict[str, Any]]:
    """SGD parameter groups with the paper's (Caffe-style) learning-rate multipliers.

    - layers holding ImageNet weights (names under ``model.pretrained_prefixes``): lr × 1;
    - newly initialised layers: lr × ``new_lr_mult``;
    - biases (names ending in ``bias``): lr × ``bias_lr_mult`` on top, no weight decay;
      other 1-d parameters (norm scales): no weight decay.

    "(S)" / scratch models have no pretrained layer. Then every layer is new and *the base lr is
    the new layers' lr*: the ×``new_lr_mult`` boost only means something relative to pretrained
    layers, so it is not applied (all weights at lr × 1, biases at lr × ``bias_lr_mult``).

    Each group carries ``name`` (``{pretrained|new}_{weight|bias|norm}``) and ``lr_mult``;
    empty groups are dropped.
    """
    prefixes = tuple(getattr(model, "pretrained_prefixes", ()))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    has_pretrained = any(n.startswith(prefixes) for n, _ in params) if prefixes else False
    groups: dict[str, dict[str, Any]] = {}
    for name, p in params:
        old = bool(prefixes) and name.startswith(prefixes)
        mult = 1.0 if (old or not has_pretrained) else new_lr_mult
        if name.endswith("bias"):
            kind, mult, wd = "bias", mult * bias_lr_mult, 0.0
        elif p.ndim <= 1:
            kind, wd = "norm", 0.0
        else:
            kind, wd = "weight", weight_decay
        key = f"{'pretrained' if old else 'new'}_{kind}"
        group = groups.setdefault(
            key, dict(name=key, params=[], lr=lr * mult, lr_mult=mult, weight_decay=wd)
        )
        group["params"].append(p)
    return list(groups.values())
