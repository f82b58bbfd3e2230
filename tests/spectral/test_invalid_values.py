"""Value errors (what divergence looks like to a layer) are InvalidValuesError; shape and type
errors stay plain ValueError, so a training loop can tell them apart without reading messages."""

import pytest
import torch

from matbackprop.spectral import InvalidValuesError, log_cov_pool, ncut_alignment_loss, sym_logm


def test_values_raise_invalid_values_error():
    with pytest.raises(InvalidValuesError, match="not positive definite"):
        sym_logm(-torch.eye(3, dtype=torch.float64))
    with pytest.raises(InvalidValuesError, match="non-finite"):
        sym_logm(torch.full((3, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(InvalidValuesError, match="non-finite"):
        log_cov_pool(torch.full((1, 4, 3, 3), float("inf")))
    feats = torch.rand(1, 50, 4) * 1e30  # float32: the degrees overflow
    with pytest.raises(InvalidValuesError, match="overflowed"):
        ncut_alignment_loss(feats, torch.randint(0, 3, (1, 50)))


def test_shape_errors_are_not_invalid_values():
    with pytest.raises(ValueError) as err:
        log_cov_pool(torch.rand(4, 3, 3))
    assert not isinstance(err.value, InvalidValuesError)
