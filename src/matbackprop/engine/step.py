"""One optimizer step: autocast, backward, clipping, GradScaler, one host sync, non-finite policy.

In the spirit of MAE's ``NativeScalerWithGradNormCount`` (``util/misc.py``)::

    step = OptimStep(model, optimizer, device, precision="bf16", clip=10.0)
    result = step(lambda: task.train_step(model, batch), weight=1.0, flags=lambda: [stop.local_code()])
    if result.skipped: ...            # non-finite loss / gradient under on_nonfinite=skip_step

The loss, the gradient norm, the task's tensor logs and the caller's ``flags`` (e.g. a stop
signal) are read in ONE host synchronisation, and the non-finite decision and the flags are
agreed by all ranks in one small all-reduce. Nothing non-finite reaches the optimizer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from matbackprop.engine import distributed as D
from matbackprop.errors import ConfigError, DivergedError
from matbackprop.spectral import InvalidValuesError

PRECISIONS = ("32", "bf16", "16")  # trainer.precision ("fp16", "fp32", "float32" are aliases)

ADVICE = (
    "Training diverged: lower optim.lr (e.g. by 10x) or set trainer.clip (e.g. 10); "
    "both may change when resuming the same run folder from its last finite checkpoint. "
    "trainer.on_nonfinite=skip_step skips such steps instead (up to trainer.max_nonfinite)."
)


def autocast_context(device: torch.device, precision: str):
    """``trainer.precision``: ``"32"`` (no autocast), ``bf16`` (CUDA and CPU autocast) or
    ``"16"`` / ``fp16`` (CUDA only, with a GradScaler). The structured layers leave autocast
    themselves and run in float32/float64 (``matbackprop.spectral``)."""
    if precision in ("32", "fp32", "float32"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16, "fp16": torch.float16}[precision]
    if device.type != "cuda" and dtype == torch.float16:
        raise ConfigError("trainer.precision=16 needs CUDA; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors in (nested) dicts / lists / tuples to ``device`` (4-d float tensors, i.e.
    image batches, in channels-last layout when asked)."""
    if isinstance(batch, Tensor):
        out = batch.to(device, non_blocking=True)
        if channels_last and out.dim() == 4 and out.is_floating_point():
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


@dataclass
class StepResult:
    """What one step did: ``loss`` and ``grad_norm`` (floats), the task's ``logs`` as floats,
    ``skipped`` (non-finite, skipped by the policy; ``what`` says which) and the caller's
    ``flags`` reduced by max over ranks."""

    loss: float
    grad_norm: float
    logs: dict[str, float]
    skipped: bool = False
    what: str = ""
    flags: list[float] = field(default_factory=list)


def host_values(loss: Tensor, gnorm: Tensor, logs: Mapping[str, Any]) -> tuple[float, float, dict]:
    """The one host synchronisation of a step: the loss, the gradient norm (both checked for
    non-finite values before the optimizer steps) and the task's tensor logs, read together."""
    keys = [k for k, v in logs.items() if isinstance(v, Tensor)]
    vals = torch.stack(
        [
            loss.detach().float().reshape(()),
            gnorm.detach().float().reshape(()),
            *(logs[k].detach().float().reshape(()).to(loss.device) for k in keys),
        ]
    ).tolist()
    out = {k: float(v) for k, v in logs.items() if not isinstance(v, Tensor)}
    out.update(zip(keys, vals[2:]))
    return vals[0], vals[1], out


class OptimStep:
    """Owns the optimizer, the GradScaler, clipping and the non-finite policy.

    Args:
        module: the bare model (its trainable parameters are clipped).
        optimizer: over ``module``'s parameter groups.
        device: where the step runs (autocast device type; NCCL needs CUDA tensors).
        precision: ``trainer.precision``.
        clip: max gradient norm (``None``: no clipping; the norm is still measured).
        on_nonfinite: ``raise`` (DivergedError) or ``skip_step`` (skip, at most
            ``max_nonfinite`` per epoch, then raise).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: str = "32",
        clip: float | None = None,
        on_nonfinite: str = "raise",
        max_nonfinite: int = 20,
    ) -> None:
        self.optimizer, self.device, self.precision = optimizer, device, str(precision)
        autocast_context(device, self.precision)  # validates precision for this device
        self.clip = float(clip) if clip else math.inf
        self.on_nonfinite, self.max_nonfinite = str(on_nonfinite), int(max_nonfinite)
        self.params = [p for p in module.parameters() if p.requires_grad]
        use_scaler = device.type == "cuda" and self.precision in ("16", "fp16")
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.comm_device = device if device.type == "cuda" else "cpu"

    @classmethod
    def from_config(
        cls, module: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, tcfg
    ) -> OptimStep:
        """From a ``trainer`` config section (precision, clip, on_nonfinite, max_nonfinite)."""
        return cls(
            module,
            optimizer,
            device,
            precision=str(tcfg.precision),
            clip=tcfg.clip,
            on_nonfinite=str(tcfg.on_nonfinite),
            max_nonfinite=int(tcfg.max_nonfinite),
        )

    def __call__(
        self,
        compute: Callable[[], tuple[Tensor, Mapping[str, Any]]],
        weight: float = 1.0,
        flags: Sequence[float] | Callable[[], Sequence[float]] = (),
        where: str = "",
        skipped: int = 0,
    ) -> StepResult:
        """Run ``compute() -> (loss, logs)`` under autocast, backward ``loss * weight``, clip,
        and step unless non-finite. ``where`` (e.g. "epoch 2, step 5") goes into messages;
        ``skipped``: steps already skipped this epoch (for ``max_nonfinite``); ``flags`` (or a
        callable giving them, read after the backward pass: e.g. a signal that arrived during
        this step) are reduced by max over ranks in the same all-reduce.

        Raises:
            DivergedError: non-finite loss / gradient (policy ``raise``, or too many skipped),
                or a structured layer refusing its input (:class:`InvalidValuesError`).
        """
        try:
            with autocast_context(self.device, self.precision):
                loss, logs = compute()
        except InvalidValuesError as err:  # the structured layer's input blew up
            raise DivergedError(
                f"{where}: the structured layer's input became invalid ({err}). {ADVICE}"
            ) from err
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        self.scaler.unscale_(self.optimizer)
        gnorm = (
            nn.utils.clip_grad_norm_(self.params, self.clip) if self.params else loss.new_zeros(())
        )
        value, gvalue, logs = host_values(loss, gnorm, logs)
        bad_loss = not math.isfinite(value)
        bad_grad = not math.isfinite(gvalue) and not self.scaler.is_enabled()
        flags = flags() if callable(flags) else flags
        reduced = D.all_reduce_max(
            [float(bad_loss or bad_grad), *map(float, flags)], self.comm_device
        )
        result = StepResult(value, gvalue, logs, flags=reduced[1:])
        if reduced[0] > 0:
            result.what = (
                f"loss {value}" if bad_loss else f"gradient norm {gvalue} (loss {value:.4g})"
            )
            if self.on_nonfinite != "skip_step" or skipped >= self.max_nonfinite:
                cap = (
                    f" (more than trainer.max_nonfinite={self.max_nonfinite} skipped this epoch)"
                    if self.on_nonfinite == "skip_step"
                    else ""
                )
                raise DivergedError(
                    f"non-finite {result.what} at {where}{cap}; no checkpoint was written "
                    f"from it. {ADVICE}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            result.skipped = True
            return result
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return result
