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
