"""The config schema, declared once: every key's default, allowed values, doc and resume rule.

    validate(cfg)                      # types and ranges, before any data is read (ConfigError)
    cfg = complete(cfg)                # every default filled in: read cfg.trainer.clip directly
    compare(saved_fingerprint, cfg)    # identity differences, may_change changes
    rule("optim.lr") == MAY_CHANGE

Resume rules: ``identity`` keys are what the run is (a run folder refuses a config that differs
in one); ``may_change`` keys are applied on resume and recorded in ``changes``; ``operational``
keys (where data lives, logging, devices, speed knobs) are free. Keys not declared here are
identity. Defaults are conf/'s (``coco``; ``bsds=`` where the BSDS groups differ): a test checks
that they match the YAML.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from matbackprop.engine.checks import (  # noqa: F401  (re-exported for old imports)
    Check,
    boolean,
    checkpoint_source,
    choice,
    device,
    int_list,
    integer,
    number,
    optional,
    text,
    weights_source,
)
from matbackprop.errors import ConfigError

IDENTITY, MAY_CHANGE, OPERATIONAL = "identity", "may_change", "operational"
TASKS = ("coco", "bsds")
NO_DEFAULT = object()  # required, or only present when an option sets it (data.synthetic.*)
_SAME = object()
_ABSENT = object()


# ---------------------------------------------------------------------------- the keys
@dataclass(frozen=True)
class Key:
    """One config key: ``default`` (COCO groups), ``bsds`` (BSDS groups' default if different),
    ``check``, ``doc``, resume ``rule``; ``tasks`` / ``archs`` where it applies (None: all);
    ``required`` keys are never filled in by :func:`complete`."""

    default: Any
    check: Check | None
    doc: str
    rule: str = IDENTITY
    bsds: Any = _SAME
    tasks: tuple[str, ...] = TASKS
    archs: tuple[str, ...] | None = None
    required: bool = False

    def default_for(self, task: str) -> Any:
        return self.default if task != "bsds" or self.bsds is _SAME else self.bsds


def _k(default, check, doc, rule=IDENTITY, **kw) -> Key:
    return Key(default, check, doc, rule, **kw)


M, O = MAY_CHANGE, OPERATIONAL
COCO, BSDS = ("coco",), ("bsds",)
POOLED = ("deepo2p", "deepo2p_fc")
ARCHS = ("deepo2p", "deepo2p_fc", "alexnet", "avgpool", "deepncut")
ND = NO_DEFAULT

SCHEMA: dict[str, Key] = {
    # entry config (conf/coco.yaml, conf/bsds.yaml, conf/task/*.yaml)
    "task": _k(ND, text, "coco | bsds: matbackprop.tasks.<task> (set by conf/task/)"),
    "run_name": _k(ND, text, "run folder name under outputs/<task>/", O),
    "run_dir": _k(ND, text, "the run folder (default ${output_root}/${task}/${run_name})", O),
    "output_root": _k(ND, None, "folder of all run folders", O),
    "paper": _k(None, None, "{table, row, extra}: the paper row (make_tables)", O),
    # trainer (conf/trainer/default.yaml; conf/trainer/bsds.yaml)
    "trainer.epochs": _k(10, None, "epochs in total", M, bsds=30, required=True),
    "trainer.batch_size": _k(100, integer(1), "global batch", bsds=1, required=True),
    "trainer.eval_batch_size": _k(None, optional(integer(1)), "null: batch_size", O, bsds=1),
    "trainer.workers": _k(8, integer(0), "DataLoader workers", O, bsds=2),
    "trainer.device": _k("auto", device, "auto | cpu | cuda | cuda:N", O),
    "trainer.seed": _k(0, integer(), "seed of data order, augmentation and init"),
    "trainer.clip": _k(None, optional(number(gt=0)), "max gradient norm", M, bsds=10.0),
    "trainer.precision": _k(
        "32",
        choice("32", "bf16", "16", "fp16", "fp32", "float32", as_str=True),
        "32 | bf16 | 16 (autocast; structured layers stay float32/64)",
        M,
    ),  # fmt: skip
    "trainer.log_every": _k(50, integer(1), "steps between train logs", O, bsds=20),
    "trainer.eval_every": _k(1, integer(1), "epochs between evaluations", O, bsds=5),
    "trainer.save_best": _k(True, boolean, "keep best.pt", O),
    "trainer.checkpoint_every": _k(
        2000, optional(integer(1)), "last.pt every N steps inside an epoch", O, bsds=500
    ),
    "trainer.max_steps": _k(None, optional(integer(1)), "stop after N steps in total", O),
    "trainer.on_nonfinite": _k("raise", choice("raise", "skip_step"), "non-finite policy", M),
    "trainer.max_nonfinite": _k(20, integer(0), "skip_step: skipped steps per epoch", O),
    "trainer.find_unused_parameters": _k(False, boolean, "DDP option", O),
    "trainer.cudnn_benchmark": _k(True, boolean, "cuDNN autotuning", O),
    "trainer.channels_last": _k(False, boolean, "NHWC layout", O),
    "trainer.progress_every_s": _k(
        60, number(ge=0), "off a terminal: a progress line every N seconds (0: none)", O
    ),
    # optim (conf/optim/sgd.yaml)
    "optim.name": _k("sgd", choice("sgd"), "optimizer"),
    "optim.lr": _k(0.001, number(gt=0), "base lr (pretrained layers)", M, required=True),
    "optim.momentum": _k(0.9, number(ge=0), "SGD momentum"),
    "optim.weight_decay": _k(5.0e-4, number(ge=0), "weight decay (not on biases)"),
    "optim.new_lr_mult": _k(10, number(gt=0), "lr multiplier of new layers"),
    "optim.bias_lr_mult": _k(2, number(gt=0), "lr multiplier of biases"),
    "optim.schedule": _k("step", choice("step", "cosine", "constant"), "lr schedule", M),
    "optim.step_size": _k(6, integer(1), "step: epochs between decays", M),
    "optim.gamma": _k(0.1, number(gt=0), "step: decay factor", M),
    "optim.min_lr_mult": _k(0.0, number(ge=0, le=1), "cosine: final lr fraction", M),
    # data (conf/data/*.yaml)
    "data.name": _k("coco", text, "data set", bsds="bsds"),
    "data.task": _k("coco", choice(*TASKS), "the task the data option belongs to", bsds="bsds"),
    "data.root": _k("data/coco", text, "data folder", O, bsds="data/bsds"),
    "data.synthetic": _k(None, None, "null, or the synthetic set's parameters"),
    "data.on_error": _k("raise", choice("raise", "skip"), "bad item: stop or skip"),
    "data.max_skipped": _k(100, optional(integer(0)), "skip: bad items per split and epoch"),
    "data.hflip": _k(True, boolean, "training flips"),
    "data.region": _k(
        ND, choice("box", "segment"), "region information (conf/region/)", tasks=COCO
    ),
    "data.train_ann": _k("annotations/instances_train2014.json", None, "", tasks=COCO),
    "data.val_ann": _k("annotations/instances_val2014.json", None, "", tasks=COCO),
    "data.train_images": _k("train2014", None, "", tasks=COCO),
    "data.val_images": _k("val2014", None, "", tasks=COCO),
    "data.crop_size": _k(227, integer(1), "input canvas", tasks=COCO),
    "data.max_side": _k(200, integer(1), "box resized to this largest side", tasks=COCO),
    "data.jitter": _k(16, integer(0), "training translation (px per axis)", tasks=COCO),
    "data.mean_fill": _k(False, boolean, "mean colour outside the mask", tasks=COCO),
    "data.mask_size": _k("${.crop_size}", integer(1), "mask resolution", tasks=COCO),
    "data.mask_grid": _k("receptive", choice("receptive", "uniform"), "mask -> grid", tasks=COCO),
    "data.min_area": _k(64, integer(0), "training instances smaller are skipped", tasks=COCO),
    "data.max_train_items": _k(None, optional(integer(1)), "random subset", tasks=COCO),
    "data.max_val_items": _k(None, optional(integer(1)), "random subset", tasks=COCO),
    "data.subset_seed": _k(0, integer(), "seed of the subsets", tasks=COCO),
    "data.store": _k("auto", text, "auto | none | PATH: the prepared region store", tasks=COCO),
    "data.version": _k(500, choice(500, 300), "BSDS500 or BSDS300 protocol", tasks=BSDS),
    "data.train_split": _k("trainval", text, "", tasks=BSDS),
    "data.val_split": _k("test", text, "", tasks=BSDS),
    "data.human": _k("random", choice("random", "first"), "human per step", tasks=BSDS),
    "data.max_train_images": _k(None, optional(integer(1)), "", tasks=BSDS),
    "data.max_val_images": _k(None, optional(integer(1)), "", tasks=BSDS),
    "data.holdout": _k(0.1, number(ge=0, lt=1), "held-out training fraction", tasks=BSDS),
    "data.holdout_seed": _k(0, integer(), "seed of the held-out images", tasks=BSDS),
    "data.label_grid": _k("receptive", choice("receptive", "uniform"), "", tasks=BSDS),
    # data.synthetic.* (conf/data/*_synthetic.yaml): only where an option sets them
    **{
        f"data.synthetic.{k}": _k(ND, None, "synthetic set parameter")
        for k in ("n_train", "n_val", "n_test", "size", "image_size", "num_classes")
        + ("objects_per_image", "n_humans", "seed")
    },
    # model (conf/model/*.yaml)
    "model.name": _k("deepo2p", text, "model name (default run_name)", bsds="deepncut_alexnet"),
    "model.task": _k("coco", choice(*TASKS), "the task the model option belongs to", bsds="bsds"),
    "model.arch": _k("deepo2p", choice(*ARCHS), "architecture", bsds="deepncut"),
    "model.trunk": _k("alexnet", choice("alexnet", "vgg16", "tiny"), "trunk"),
    "model.pretrained": _k(True, boolean, "ImageNet trunk"),
    "model.dropout": _k(0.0, number(ge=0, lt=1), "dropout rate", bsds=0.5),
    "model.tiny_width": _k(32, integer(1), "tiny trunk width"),
    "model.tiny_out": _k(32, integer(1), "tiny trunk channels"),
    "model.pool_eps": _k(1.0e-3, number(gt=0), "epsilon of log-cov pooling", archs=POOLED),
    "model.pool_centered": _k(False, boolean, "centred second moment", archs=POOLED),
    "model.pool_dtype": _k("float64", choice("float64", "float32"), "", archs=POOLED),
    "model.pool_device": _k("auto", choice("auto", "same", "cpu"), "", O, archs=POOLED),
    "model.use_mask": _k(True, boolean, "pool over the mask", archs=(*POOLED, "avgpool")),
    "model.head_norm": _k("none", choice("none", "batchnorm"), "", archs=(*POOLED, "avgpool")),
    "model.freeze_trunk": _k(False, boolean, "trunk stays as initialised", archs=ARCHS[:4]),
    "model.fc_dim": _k(4096, integer(1), "fc6 / fc7 width", archs=("deepo2p_fc",)),
    "model.taps": _k(["relu5"], None, "trunk layers tapped", tasks=BSDS),
    "model.head": _k(True, boolean, "false: raw tap features", tasks=BSDS),
    "model.hidden": _k(256, integer(1), "new conv width", tasks=BSDS),
    "model.out_dim": _k(64, integer(1), "feature dimension", tasks=BSDS),
    "model.freeze_through": _k(None, None, "freeze the trunk through this layer", tasks=BSDS),
    "model.ncut_eps": _k(1.0e-6, number(gt=0), "added to the degrees", tasks=BSDS),
    "model.init_from": _k(None, weights_source, "start from these weights (run folder / .pt)"),
    # logger (conf/logger/*.yaml)
    "logger.name": _k("wandb", choice("wandb", "none"), "experiment logger", O),
    "logger.mode": _k("offline", choice("offline", "online", "disabled"), "W&B mode", O),
    "logger.project": _k("matbackprop", None, "W&B project", O),
    "logger.entity": _k(None, None, "W&B entity", O),
    "logger.group": _k(None, None, "null: from the config", O),
    "logger.run_name": _k(None, None, "null: from the config", O),
    "logger.tags": _k([], None, "added to the derived tags", O),
    "logger.init_timeout": _k(30, None, "seconds before falling back to offline", O),
    # eval (conf/task/*.yaml)
    "eval.checkpoint": _k("none", checkpoint_source, "evaluate: none | best | last | a path", O),
    "eval.eig_samples": _k(8, integer(0), "val regions whose spectra are logged", O, tasks=COCO),
    "eval.monitor_items": _k(10000, None, "val subset that picks best.pt", O, tasks=COCO),
    "eval.monitor_seed": _k(0, None, "seed of that subset", O, tasks=COCO),
    "eval.ks": _k([2, 3, 4, 6, 8, 12, 16, 24, 32], int_list(1), "k per scale", O, tasks=BSDS),
    "eval.min_size": _k(1024, integer(0), "smaller pieces are merged", O, tasks=BSDS),
    "eval.overlays": _k(4, integer(0), "val images drawn", O, tasks=BSDS),
}
# Keys below these prefixes that are not declared: operational (free on resume).
OPERATIONAL_PREFIXES = ("logger", "paper", "eval")
EXAMPLES = {
    "optim.lr": "optim.lr=0.01",
    "trainer.epochs": "trainer.epochs=10 (an untrained model is scored by matbackprop.evaluate)",
}


def keys_with_rule(which: str) -> list[str]:
    """The declared keys with resume rule ``which`` (e.g. :data:`MAY_CHANGE`)."""
    return [k for k, key in SCHEMA.items() if key.rule == which]


def rule(key: str) -> str:
    """The resume rule of a flattened key (``identity`` when not declared)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in SCHEMA:
            return SCHEMA[prefix].rule
        if prefix in OPERATIONAL_PREFIXES:
            return OPERATIONAL
    return IDENTITY


def applies(key: str, task: str, arch: Any = None) -> bool:
    """Whether a declared key belongs to configs of ``task`` (and model ``arch``); a task of
    one's own (not coco / bsds) gets the keys every task has, with the COCO defaults."""
    spec = SCHEMA[key]
    ours = task in spec.tasks or (task not in TASKS and spec.tasks == TASKS)
    return ours and (spec.archs is None or arch is None or arch in spec.archs)


def defaults(task: str, arch: Any = None) -> dict[str, Any]:
    """The flattened defaults of ``task``'s groups (required keys included: the YAML's)."""
    out = {}
    for key, spec in SCHEMA.items():
        value = spec.default_for(task)
        if "." in key and value is not NO_DEFAULT and applies(key, task, arch):
            out[key] = value
    return out


# ---------------------------------------------------------------------------- configs
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _plain(cfg: DictConfig | Mapping[str, Any]) -> Mapping[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def fingerprint(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The flattened resolved config minus operational keys: what a run folder must agree
    with (identity keys) or records changes of (may_change keys)."""
    return {k: v for k, v in flatten(_plain(cfg)).items() if rule(k) != OPERATIONAL}


def compare(
    saved: Mapping[str, Any], cfg: DictConfig | Mapping[str, Any]
) -> tuple[list[str], dict[str, tuple[Any, Any]]]:
    """A run folder's saved fingerprint against a config.

    Returns:
        ``(identity, changes)``: identity differences as lines ``key: saved (run folder) != now
        (now)`` (sorted; a key absent on one side counts as its default), and the may_change
        keys that differ, ``{key: (old, new)}`` (a key absent from ``saved``, as in fingerprints
        written before ``trainer.epochs`` was recorded, counts as unchanged).
    """
    now = fingerprint(cfg)
    task = str(now.get("task", saved.get("task", "coco")))
    known = defaults(task, now.get("model.arch"))
    lines, changes = [], {}
    for key in sorted(set(saved) | set(now)):
        how = rule(key)
        if how == OPERATIONAL:  # older fingerprints kept some operational keys
            continue
        a, b = saved.get(key, _ABSENT), now.get(key, _ABSENT)
        if how == MAY_CHANGE:
            if a is not _ABSENT and b is not _ABSENT and a != b:
                changes[key] = (a, b)
            continue
        a = known.get(key, a) if a is _ABSENT else a
        b = known.get(key, b) if b is _ABSENT else b
        if a != b:
            shown = [repr(x) if x is not _ABSENT else "<absent>" for x in (a, b)]
            lines.append(f"{key}: {shown[0]} (run folder) != {shown[1]} (now)")
    return lines, changes


def complete(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every schema default filled in for absent keys of the groups it
    has (``trainer``, ``optim``, ``data``, ``model``, ``logger``, ``eval``), for its ``task``
    and ``model.arch``; required keys (``trainer.epochs``, ``trainer.batch_size``,
    ``optim.lr``) and ``data.synthetic.*`` are never filled in."""
    out = cfg.copy()
    task = str(OmegaConf.select(cfg, "task", default="coco"))
    arch = OmegaConf.select(cfg, "model.arch", default=None)
    with open_dict(out):
        for key, value in defaults(task, arch).items():
            group, _, rest = key.partition(".")
            if SCHEMA[key].required or not isinstance(out.get(group), DictConfig):
                continue
            if OmegaConf.select(out, key, default=_ABSENT) is _ABSENT:
                OmegaConf.update(out, key, value, force_add=True)
    return out


# ---------------------------------------------------------------------------- validate
def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _task_problems(cfg: DictConfig) -> list[str]:
    """A data / model group of the other task (``experiment=demo_bsds_deepncut data=coco``)."""
    task = OmegaConf.select(cfg, "task", default=None)
    out = []
    for group in ("data", "model"):
        belongs = OmegaConf.select(cfg, f"{group}.task", default=None)
        if task in TASKS and belongs in TASKS and belongs != task:
            name = OmegaConf.select(cfg, f"{group}.name", default="?")
            out.append(
                f"{group}.task={belongs!r}: the {group} group ({group}.name={name}) belongs to "
                f"the {belongs} task, this run is a {task} run (its experiment or task=...); "
                f"choose a {task} {group} option or drop the {group}=... override"
            )
    return out


def config_problems(cfg: DictConfig, training: bool = True) -> list[str]:
    """One line per invalid key (``key=value: expected ...``); empty when the config is fine.
    Keys that are absent are skipped unless required."""
    problems = []
    for key, spec in SCHEMA.items():
        check = integer(1 if training else 0) if key == "trainer.epochs" else spec.check
        if check is None:
            continue
        try:
            value = _select(cfg, key)
        except OmegaConfBaseException as err:  # ??? / an interpolation that does not resolve
            problems.append(f"{key}: cannot be resolved ({type(err).__name__}: {err})")
            continue
        if value is _ABSENT:
            if spec.required:
                problems.append(f"{key}: missing (set {EXAMPLES.get(key, key + '=...')})")
            continue
        want = check(value)
        if want is not None:
            example = f"; e.g. {EXAMPLES[key]}" if key in EXAMPLES else ""
            problems.append(f"{key}={value!r}: expected {want}{example}")
    return problems + _task_problems(cfg)


def validate(cfg: DictConfig, training: bool = True) -> None:
    """Raise if any known key has a value of the wrong type or range, or a group belongs to
    the other task.

    Args:
        cfg: the composed config (``conf/coco.yaml`` + overrides).
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


# ---------------------------------------------------------------------------- run folders
MAX_NAME = 200  # bytes of an overrides folder name
_NOT_NAMED = ("experiment", "hydra")  # the experiment names run_name; Hydra's own settings


def override_key(override: str) -> str:
    """``++trainer.max_steps=3`` -> ``trainer.max_steps``; ``~optim.lr`` -> ``optim.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def names_run(key: str) -> bool:
    """Whether an override of ``key`` goes into the run folder's name (identity and
    may_change keys and group choices; not operational ones, ``experiment``, ``hydra``)."""
    root = re.split(r"[./]", key, maxsplit=1)[0]
    return root not in _NOT_NAMED and rule(key) != OPERATIONAL


def override_suffix(overrides: list[str]) -> str:
    """The naming overrides, sorted by key, ``k=v`` joined by ``,``: ``optim.lr=0.005`` (past
    :data:`MAX_NAME` bytes: its start, ``~`` and a hash of the whole)."""
    named = {override_key(o): o.lstrip("+") for o in overrides if names_run(override_key(o))}
    suffix = ",".join(named[k] for k in sorted(named))
    if len(suffix.encode()) <= MAX_NAME:
        return suffix
    digest = hashlib.sha1(suffix.encode()).hexdigest()[:10]  # a file name has <= 255 bytes
    return suffix.encode()[: MAX_NAME - 11].decode(errors="ignore") + "~" + digest


def run_folder_name(base_run_dir: str, overrides: list[str]) -> str:
    """The default run folder of a command: ``base_run_dir`` (``outputs/<task>/<run_name>``)
    plus ``/<overrides>`` when the command line changes identity or may_change keys
    (``outputs/coco/table1_deepo2p/optim.lr=0.005``); ``base_run_dir`` as is when there are
    none or ``run_name=`` / ``run_dir=`` is given (that folder is used as is)."""
    if any(override_key(o) in ("run_name", "run_dir") for o in overrides):
        return base_run_dir
    suffix = override_suffix(overrides)
    return f"{base_run_dir}/{suffix}" if suffix else base_run_dir
