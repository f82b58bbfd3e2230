"""Build a model from its Hydra config, and its SGD parameter groups.

Config keys (``conf/model/*.yaml``): ``arch`` (deepo2p | deepo2p_fc | alexnet | avgpool),
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
from matbackprop.models.o2p import AlexNetClassifier, AvgPoolClassifier, DeepO2P, DeepO2PFC

ARCHS = ("deepo2p", "deepo2p_fc", "alexnet", "avgpool")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """Model from ``cfg`` (a ``model`` config section) for ``num_classes`` classes.

    ``freeze_trunk: true`` keeps the trunk's weights as initialised (no gradient; BatchNorm
    still normalises with batch statistics): only the pooling head learns, which isolates what
    the pooling itself contributes.

    Raises:
        ValueError: unknown ``arch``, ``trunk``, ``pool_dtype`` or ``head_norm``.
    """
    model = _build_model(cfg, num_classes)
    if bool(cfg.get("freeze_trunk", False)):
        if not hasattr(model, "trunk"):
            raise ValueError(f"model.freeze_trunk is not available for arch {cfg['arch']!r}")
        model.trunk.requires_grad_(False)
    return model


def _build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    arch = cfg["arch"]
    trunk_name, pretrained = cfg.get("trunk", "alexnet"), bool(cfg.get("pretrained", False))
    tiny = dict(width=int(cfg.get("tiny_width", 32)), out_channels=int(cfg.get("tiny_out", 32)))
    dropout = float(cfg.get("dropout", 0.0))
    if arch == "alexnet":
        trunk = build_trunk("tiny", **tiny) if trunk_name == "tiny" else None
        return AlexNetClassifier(trunk_name, num_classes, pretrained, dropout, tiny=trunk)
    trunk = build_trunk(trunk_name, pretrained, **tiny)
    head = dict(
        use_mask=bool(cfg.get("use_mask", True)),
        head_norm=cfg.get("head_norm", "none"),
        dropout=dropout,
    )
    if arch == "avgpool":
        return AvgPoolClassifier(trunk, num_classes, **head)
    dtype_name = cfg.get("pool_dtype", "float64")
    if dtype_name not in DTYPES:
        raise ValueError(f"model.pool_dtype must be one of {list(DTYPES)}, got {dtype_name!r}")
    pool = dict(
        eps=float(cfg.get("pool_eps", 1e-3)),
        centered=bool(cfg.get("pool_centered", False)),
        pool_dtype=DTYPES[dtype_name],
        pool_device=str(cfg.get("pool_device", "auto")),
    )
    if arch == "deepo2p":
        return DeepO2P(trunk, num_classes, **pool, **head)
    if arch == "deepo2p_fc":
        return DeepO2PFC(trunk, num_classes, fc_dim=int(cfg.get("fc_dim", 4096)), **pool, **head)
    raise ValueError(f"unknown model.arch {arch!r}; expected one of {ARCHS}")


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
