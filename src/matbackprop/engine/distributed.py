"""Distributed setup and the few collectives the engine and tasks need (one code path for 1 and N).

``torchrun --nproc_per_node=N -m matbackprop.train ...`` sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (``nccl`` on CUDA,
``gloo`` on CPU). Without those variables everything here is a no-op on one process, so tasks
call :func:`shard` / :func:`gather` unconditionally::

    idx = shard(len(val_set))                 # this rank's items: rank, rank + N, ...
    out = gather(local_results, len(val_set)) # every rank: the list in the original item order

Only rank 0 writes files and W&B (:func:`is_main`).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun). A job of several
    SLURM tasks started by submitit (``hydra/launcher=slurm``) exports torchrun's variables
    from SLURM's first."""
    _export_submitit_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _export_submitit_env() -> None:
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    if not any(k.startswith("SUBMITIT_") for k in os.environ):
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes files."""
    return rank() == 0


def init_distributed(device_type: str, timeout_s: float = 1800.0) -> bool:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1); returns whether.

    ``device_type`` ``cuda`` uses NCCL and pins this process to ``cuda:LOCAL_RANK``; anything
    else uses gloo. Idempotent.
    """
    if env_world_size() <= 1 or is_initialized():
        return is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shard(n: int) -> list[int]:
    """This rank's share of items ``0..n-1`` (strided: rank, rank + N, ...)."""
    return list(range(rank(), n, world_size()))


def gather(local: list[Any], n: int) -> list[Any]:
    """Inverse of :func:`shard`: every rank gets all ``n`` items in the original order.

    ``local`` holds this rank's results for ``shard(n)`` in that order (picklable objects,
    e.g. CPU tensors or dicts).
    """
    if not is_initialized():
        return list(local)
    parts: list[list[Any]] = [[] for _ in range(world_size())]
    dist.all_gather_object(parts, list(local))
    out: list[Any] = [None] * n
    for r, part in enumerate(parts):
        for j, value in enumerate(part):
            out[r + j * len(parts)] = value
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not is_initialized():
        return [obj]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def any_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is True on any rank (one tiny all-reduce)."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_max(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise maximum over ranks (one small all-reduce; identity on one process)."""
    if not is_initialized():
        return list(values)
    t = torch.tensor(
        values, dtype=torch.float64 if device == "cpu" else torch.float32, device=device
    )
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


# ---------------------------------------------------------------------- the trainer's setup
TORCH_HINT = (
    "install a CUDA build of torch matching your driver, e.g. "
    '`make install TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 '
    "--index-url https://download.pytorch.org/whl/cu126\"` (see the Makefile's TORCH_SPEC), "
    "or pass trainer.device=cpu to train on the CPU on purpose"
)
NO_GPU_HINT = (
    "check `nvidia-smi` and CUDA_VISIBLE_DEVICES (and that the job asked for a GPU), "
    "or pass trainer.device=cpu to train on the CPU on purpose"
)


def no_cuda_reason() -> str:
    """Why CUDA is not available: a torch build without CUDA, or no GPU visible."""
    if torch.version.cuda is None:
        return (
            f"CUDA is not available: this torch ({torch.__version__}) is a CPU-only build; "
            f"{TORCH_HINT}"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return (
        f"CUDA is not available: torch {torch.__version__} is built for CUDA "
        f"{torch.version.cuda}, but no GPU is visible{shown}; {NO_GPU_HINT} (a torch build "
        "that does not match the driver also looks like this: see the Makefile's TORCH_SPEC)"
    )


def resolve_device(name: str, real_data: bool = False) -> torch.device:
    """``auto`` -> cuda (this rank's GPU under torchrun) if available, else cpu — but with
    ``real_data`` a missing GPU is an error (a multi-day CPU run is never what was meant).

    Raises:
        ConfigError: CUDA asked for (or ``auto`` on real data) but not available.
    """
    from matbackprop.errors import ConfigError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() if env_world_size() > 1 else 0)
        if real_data:
            raise ConfigError(f"trainer.device=auto: {no_cuda_reason()}")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name!r}: {no_cuda_reason()}")
        if env_world_size() > 1 and dev.index is None:
            dev = torch.device("cuda", local_rank())
    return dev


def runtime_info(device: torch.device, precision: str) -> dict[str, Any]:
    """Where this run executes: recorded in ``status.json`` and printed at start."""
    import platform
    import socket

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "device": str(device),
        "world_size": world_size(),
        "precision": precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpus"] = all_gather_objects(torch.cuda.get_device_name(device))
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def rank0_first(build: Any, *args: Any) -> Any:
    """``build(*args)`` on rank 0 first (e.g. generating synthetic data once), then on the
    others; a failure on rank 0 is broadcast so the others stop with its message."""
    from matbackprop.errors import UserError

    if world_size() == 1:
        return build(*args)
    if is_main():
        try:
            out = build(*args)
        except Exception as err:
            broadcast_object(f"{type(err).__name__}: {err}")
            raise
        broadcast_object(None)
        return out
    failed = broadcast_object(None)
    if failed:
        raise UserError(f"rank 0 could not set up the task: {failed}")
    return build(*args)


def wrap_model(module: torch.nn.Module, device: torch.device, find_unused: bool = False):
    """(bare module, module to train): under DDP, BatchNorm synchronised (gloo-capable on CPU)
    and the model wrapped in ``DistributedDataParallel``; else both are ``module``."""
    if world_size() == 1:
        return module, module
    from matbackprop.engine.sync_bn import convert_sync_batchnorm

    module = convert_sync_batchnorm(module, device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )
    return module, ddp


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[tuple[list[int], float]]:
    """This rank's contiguous part of each global batch, with the loss weight that makes the
    DDP gradient average equal the mean over the global batch (``n_r · N / n``; 1 when even).
    Global batches smaller than the world size are dropped (a rank would get nothing)."""
    if world == 1:
        return [(b, 1.0) for b in batches]
    out = []
    for b in batches:
        n = len(b)
        if n < world:
            continue
        lo, hi = rank * n // world, (rank + 1) * n // world
        out.append((b[lo:hi], (hi - lo) * world / n))
    return out
