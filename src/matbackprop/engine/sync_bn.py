"""BatchNorm over the *global* batch under DDP, on CUDA and on CPU (gloo).

``torch.nn.SyncBatchNorm`` supports CUDA only; on CPU (the gloo backend, which the tests and
small debugging runs use) :class:`GlooSyncBatchNorm` does the same with the autograd-aware
``torch.distributed.nn.functional.all_reduce``: per-channel sums of x and x² and the count are
summed over ranks, so the normalisation — and, through the all-reduce's backward, the
gradient — equal one process's over the concatenated batch.

    model = convert_sync_batchnorm(model, device)   # before wrapping in DDP
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics are reduced over all ranks (any device).

    Shape: x (B, C, *) -> (B, C, *); eval mode and a single process: plain ``F.batch_norm``.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        sync = self.training and dist.is_available() and dist.is_initialized()
        if not sync:
            return super().forward(x)
        with warnings.catch_warnings():  # deprecated in favour of an API without autograd
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=xf.dtype, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])  # (2C + 1,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)  # summed over ranks, differentiable
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n  # (C,)
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)  # biased, (C,)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` -> ``nn.SyncBatchNorm`` (CUDA) or :class:`GlooSyncBatchNorm`
    (CPU), keeping weights, running statistics and ``requires_grad`` (frozen layers stay frozen)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlooSyncBatchNorm
    ):
        out = GlooSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
        return out
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
