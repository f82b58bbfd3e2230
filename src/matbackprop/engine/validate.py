"""Check a composed config's values (types and ranges) before any data is read.

    validate_config(cfg)                   # train: trainer.epochs >= 1
    validate_config(cfg, training=False)   # evaluate: trainer.epochs may be 0

Every rule names a key of ``conf/``; keys that are absent are skipped unless marked required
(experiment files and other tasks may leave groups out). All problems are reported together
in one :class:`~matbackprop.errors.ConfigError`, one line per key: the key, the value given and
what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from matbackprop.errors import ConfigError

Check = Callable[[Any], str | None]  # value -> what is allowed (None: fine)

_ABSENT = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    rng = " and ".join(
        s for s in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if s
    )
    want = f"an integer {rng}".strip()

    def check(v: Any) -> str | None:
        ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
        return None if ok else want

    return check


def number(
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Check:
    bounds = {">": gt, ">=": ge, "<": lt, "<=": le}
    want = "a number " + " and ".join(f"{op} {b:g}" for op, b in bounds.items() if b is not None)
    tests = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}

    def check(v: Any) -> str | None:
        ok = _is_number(v) and v == v  # not NaN
        ok = ok and all(b is None or tests[op](float(v), b) for op, b in bounds.items())
        return None if ok else want.strip()

    return check


def choice(*allowed: Any, as_str: bool = False) -> Check:
    want = "one of " + " | ".join(str(a) for a in allowed)

    def check(v: Any) -> str | None:
        return None if (str(v) if as_str else v) in allowed else want

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def checkpoint_source(v: Any) -> str | None:
    """``eval.checkpoint``: a name, or a path (with a ``/`` or ending in ``.pt``; a bare word
    like ``bset`` is a typo, not a folder), checked for existence when loaded."""
    ok = v in ("none", "best", "last") or (isinstance(v, str) and ("/" in v or v.endswith(".pt")))
    return None if ok else "one of none | best | last, or a .pt file or run folder (with a /)"


def optional(check: Check) -> Check:
    def opt(v: Any) -> str | None:
        if v is None:
            return None
        want = check(v)
        return None if want is None else f"null or {want}"

    return opt


def int_list(lo: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple, ListConfig)) and len(v) > 0
        ok = ok and all(_is_int(x) and x >= lo for x in v)
        return None if ok else f"a non-empty list of integers >= {lo}"

    return check


def device(v: Any) -> str | None:
    want = "auto | cpu | cuda | cuda:N"
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        return want
    if v.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(v.split(":")[1]) if ":" in v else 0
        if index >= n:
            return f"{want}, a device this machine has ({n} CUDA device(s); use auto or cpu)"
    return None


# key -> check; keys absent from the config are skipped (see REQUIRED)
RULES: dict[str, Check] = {
    "task": text,
    "run_name": text,
    "run_dir": text,
    # trainer (conf/trainer/*.yaml); trainer.epochs is checked in validate_config
    "trainer.batch_size": integer(1),
    "trainer.eval_batch_size": optional(integer(1)),
    "trainer.workers": integer(0),
    "trainer.device": device,
    "trainer.seed": integer(),
    "trainer.clip": optional(number(gt=0)),
    "trainer.precision": choice("32", "bf16", "16", "fp16", "fp32", "float32", as_str=True),
    "trainer.log_every": integer(1),
    "trainer.eval_every": integer(1),
    "trainer.save_best": boolean,
    "trainer.checkpoint_every": optional(integer(1)),
    "trainer.max_steps": optional(integer(1)),
    "trainer.on_nonfinite": choice("raise", "skip_step"),
    "trainer.max_nonfinite": integer(0),
    "trainer.find_unused_parameters": boolean,
    "trainer.cudnn_benchmark": boolean,
    "trainer.channels_last": boolean,
    # optim (conf/optim/sgd.yaml)
    "optim.name": choice("sgd"),
    "optim.lr": number(gt=0),
    "optim.momentum": number(ge=0),
    "optim.weight_decay": number(ge=0),
    "optim.new_lr_mult": number(gt=0),
    "optim.bias_lr_mult": number(gt=0),
    "optim.schedule": choice("step", "cosine", "constant"),
    "optim.step_size": integer(1),
    "optim.gamma": number(gt=0),
    "optim.min_lr_mult": number(ge=0, le=1),
    # data (conf/data/*.yaml)
    "data.root": text,
    "data.on_error": choice("raise", "skip"),
    "data.max_skipped": optional(integer(0)),
    "data.crop_size": integer(1),
    "data.max_side": integer(1),
    "data.jitter": integer(0),
    "data.hflip": boolean,
    "data.mean_fill": boolean,
    "data.mask_size": integer(1),
    "data.min_area": integer(0),
    "data.max_train_items": optional(integer(1)),
    "data.max_val_items": optional(integer(1)),
    "data.subset_seed": integer(),
    "data.version": choice(500, 300),
    "data.human": choice("random", "first"),
    "data.max_train_images": optional(integer(1)),
    "data.max_val_images": optional(integer(1)),
    # model (conf/model/*.yaml)
    "model.arch": choice("deepo2p", "deepo2p_fc", "alexnet", "avgpool", "deepncut"),
    "model.trunk": choice("alexnet", "vgg16", "tiny"),
    "model.pretrained": boolean,
    "model.dropout": number(ge=0, lt=1),
    "model.pool_eps": number(gt=0),
    "model.pool_centered": boolean,
    "model.pool_dtype": choice("float64", "float32"),
    "model.pool_device": choice("auto", "same", "cpu"),
    "model.use_mask": boolean,
    "model.head_norm": choice("none", "batchnorm"),
    "model.tiny_width": integer(1),
    "model.tiny_out": integer(1),
    "model.fc_dim": integer(1),
    "model.freeze_trunk": boolean,
    "model.head": boolean,
    "model.hidden": integer(1),
    "model.out_dim": integer(1),
    "model.ncut_eps": number(gt=0),
    # logger (conf/logger/*.yaml)
    "logger.name": choice("wandb", "none"),
    "logger.mode": choice("offline", "online", "disabled"),
    # eval (the eval: blocks of conf/coco.yaml, conf/bsds.yaml)
    "eval.checkpoint": checkpoint_source,
    "eval.eig_samples": integer(0),
    "eval.ks": int_list(1),
    "eval.min_size": integer(0),
    "eval.overlays": integer(0),
}
REQUIRED = ("trainer.epochs", "trainer.batch_size", "optim.lr")
EXAMPLES = {
    "optim.lr": "optim.lr=0.01",
    "trainer.epochs": "trainer.epochs=10 (an untrained model is scored by matbackprop.evaluate)",
}


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def config_problems(cfg: DictConfig, training: bool = True) -> list[str]:
    """One line per invalid key (``key=value: expected ...``); empty when the config is fine."""
    rules = {"trainer.epochs": integer(1 if training else 0), **RULES}
    problems = []
    for key, check in rules.items():
        try:
            value = _select(cfg, key)
        except OmegaConfBaseException as err:  # ??? / an interpolation that does not resolve
            problems.append(f"{key}: cannot be resolved ({type(err).__name__}: {err})")
            continue
        if value is _ABSENT:
            if key in REQUIRED:
                problems.append(f"{key}: missing (set {EXAMPLES.get(key, key + '=...')})")
            continue
        want = check(value)
        if want is not None:
            example = f"; e.g. {EXAMPLES[key]}" if key in EXAMPLES else ""
            problems.append(f"{key}={value!r}: expected {want}{example}")
    return problems


def validate_config(cfg: DictConfig, training: bool = True) -> None:
    """Raise if any known key has a value of the wrong type or range.

    Args:
        cfg: the composed config (``conf/coco.yaml`` or ``conf/bsds.yaml`` + overrides).
        training: ``True`` for ``train`` (``trainer.epochs >= 1``); ``False`` for ``evaluate``
            (``trainer.epochs >= 0``: the not-fine-tuned rows set 0).

    Raises:
        ConfigError: names every bad key, the value given and what is allowed.
    """
    problems = config_problems(cfg, training)
    if problems:
        head = "invalid configuration value" + ("s" if len(problems) > 1 else "")
        raise ConfigError(
            f"{head}:\n  " + "\n  ".join(problems) + "\nFix it on the command line (key=value) "
            "or in the experiment file."
        )
