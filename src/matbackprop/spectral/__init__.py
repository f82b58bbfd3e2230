"""Structured (spectral) layers with exact matrix backpropagation — pure torch, self-contained.

Ops are batched over leading dimensions, float32/float64 (bf16/fp16 cast up), CPU/CUDA; each has a functional form
and (where it makes sense) an ``nn.Module``:

- :func:`eig_layer`, :func:`svd_layer` — decompositions with the paper's backward (SPEC §2).
- :func:`sym_matfun`, :func:`sym_logm`, :func:`sym_sqrtm`, :func:`sym_powm`, :func:`sym_expm` —
  matrix functions with the exact Daleckii–Krein backward (finite at ties).
- :func:`log_cov_pool`, :func:`triu_vec` — DeepO2P second-order pooling.
- :func:`projector` — Π = Z Z⁺.
- :func:`ncut_alignment_loss`, :func:`spectral_embedding` — DeepNCut, O(m d²), no m × m matrix.

Mixed precision: every op runs with autocast off and casts bfloat16/float16 inputs up to
float32 (the trunk may run under ``torch.autocast``; its gradient comes back in its dtype).
Host syncs: only input validation synchronises (one fused check per call);
:func:`set_validation` ``(False)`` turns the checks off for trusted hot loops.
"""

from ._common import InvalidValuesError, set_validation, sym, validation_enabled
from .eig import EigLayer, eig_layer
from .matfun import (
    SymExpm,
    SymLogm,
    SymPowm,
    SymSqrtm,
    sym_expm,
    sym_logm,
    sym_matfun,
    sym_powm,
    sym_sqrtm,
)
from .ncut import NCutAlignmentLoss, degrees, ncut_alignment_loss, spectral_embedding
from .pooling import LogCovPool, log_cov_pool, triu_vec
from .projector import Projector, numerical_rank, projector
from .svd import SVDLayer, svd_layer

__all__ = [
    "InvalidValuesError",
    "EigLayer",
    "LogCovPool",
    "NCutAlignmentLoss",
    "Projector",
    "SVDLayer",
    "SymExpm",
    "SymLogm",
    "SymPowm",
    "SymSqrtm",
    "degrees",
    "eig_layer",
    "log_cov_pool",
    "ncut_alignment_loss",
    "numerical_rank",
    "projector",
    "set_validation",
    "spectral_embedding",
    "svd_layer",
    "sym",
    "sym_expm",
    "sym_logm",
    "sym_matfun",
    "sym_powm",
    "sym_sqrtm",
    "triu_vec",
    "validation_enabled",
]
