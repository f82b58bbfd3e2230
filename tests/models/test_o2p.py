"""DeepO2P heads: shapes, the pooled matrix against a dense scipy reference, the mask."""

import numpy as np
import pytest
import scipy.linalg
import torch

from matbackprop.models.backbones import Trunk, tiny_trunk
from matbackprop.models.o2p import (
    AvgPoolClassifier,
    DeepO2P,
    DeepO2PFC,
    masked_avg_pool,
    resize_mask,
)
from matbackprop.spectral import triu_vec


def _identity_trunk(d: int) -> Trunk:
    """A trunk that passes its input through, so tests control the feature map exactly."""
    return Trunk(torch.nn.Identity(), d, pretrained=False)


def _reference_logcov(x: np.ndarray, m: np.ndarray, eps: float) -> np.ndarray:
    """Dense log(Σ m_p f_p f_pᵀ / Σ m + εI) with scipy.linalg.logm. x (d, H, W), m (H, W)."""
    f = x.reshape(x.shape[0], -1)  # (d, N)
    w = m.reshape(-1) / m.sum()
    c = (f * w) @ f.T + eps * np.eye(x.shape[0])
    return scipy.linalg.logm(c).real


@pytest.mark.parametrize("hw", [(3, 3), (5, 4)])  # N < d (rank-deficient) and N ≥ d
def test_pooled_matches_dense_reference(hw):
    torch.manual_seed(0)
    d, eps = 9, 1e-3
    x = torch.relu(torch.randn(2, d, *hw, dtype=torch.float64))
    mask = torch.rand(2, *hw, dtype=torch.float64)
    mask[0, 0] = 0  # some positions left out
    model = DeepO2P(_identity_trunk(d), num_classes=3, eps=eps)
    y = model.pooled(x, mask)  # (2, d, d)
    assert y.shape == (2, d, d)
    for b in range(2):
        ref = _reference_logcov(x[b].numpy(), mask[b].numpy(), eps)
        np.testing.assert_allclose(y[b].numpy(), ref, atol=1e-8, rtol=1e-6)


def test_forward_shapes_and_descriptor_size():
    trunk = tiny_trunk(width=8, out_channels=6)
    model = DeepO2P(trunk, num_classes=5, head_norm="batchnorm")
    images, mask = torch.randn(4, 3, 32, 32), torch.rand(4, 8, 8)
    assert model(images, mask).shape == (4, 5)
    assert model.feature_dim == 6 * 7 // 2
    assert model.pooled(images, mask).dtype == torch.float32  # cast back from float64
    fc = DeepO2PFC(tiny_trunk(width=8, out_channels=6), num_classes=5, fc_dim=16, dropout=0.5)
    assert fc(images, mask).shape == (4, 5)
    assert fc.head[0].in_features == 21 and fc.head[3].out_features == 16
    assert fc.classifier.in_features == 16


def test_heads_are_the_papers():
    """DeepO2P: log-cov -> triu_vec -> linear (nothing else by default); DeepO2P-FC: dropout
    after relu6 and relu7 (Caffe / MatConvNet AlexNet), nothing on the descriptor."""
    plain = DeepO2P(_identity_trunk(4), num_classes=3)
    assert isinstance(plain.norm, torch.nn.Identity) and plain.head.p == 0.0
    x = torch.relu(torch.randn(2, 4, 3, 3))
    ref = plain.classifier(triu_vec(plain.pooled(x)))  # the whole head, by hand
    torch.testing.assert_close(plain(x), ref)
    fc = DeepO2PFC(_identity_trunk(4), num_classes=3, fc_dim=8, dropout=0.5)
    kinds = [type(m).__name__ for m in fc.head]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert isinstance(fc.norm, torch.nn.Identity)
    fc.train()  # dropout acts after the ReLUs: zeros appear in fc7's output, none before fc6
    z = torch.randn(64, fc.feature_dim)
    after_fc6 = fc.head[:2](z)
    assert (fc.head[:3](z) == 0).float().mean() > (after_fc6 == 0).float().mean()


def test_mask_matters():
    torch.manual_seed(1)
    d = 4
    x = torch.relu(torch.randn(1, d, 6, 6))
    model = DeepO2P(_identity_trunk(d), num_classes=2)
    half = torch.zeros(1, 6, 6)
    half[:, :, :3] = 1.0
    masked, unmasked = model.pooled(x, half), model.pooled(x, None)
    assert not torch.allclose(masked, unmasked, atol=1e-3)
    # an all-ones mask is the unmasked pooling; an all-zero (degenerate) mask falls back to it
    torch.testing.assert_close(model.pooled(x, torch.ones(1, 6, 6)), unmasked)
    torch.testing.assert_close(model.pooled(x, torch.zeros(1, 6, 6)), unmasked)
    # use_mask=False ignores the mask
    off = DeepO2P(_identity_trunk(d), num_classes=2, use_mask=False)
    torch.testing.assert_close(off.pooled(x, half), unmasked)
    # the masked descriptor is the one of the left half alone
    torch.testing.assert_close(masked, model.pooled(x[..., :3], None))


def test_resize_mask_block_average_and_upsampling():
    mask = torch.zeros(1, 8, 8)
    mask[0, :2, :2] = 1.0  # one 2×2 block -> one full cell of a 4×4 grid
    mask[0, 4, 4] = 1.0  # a quarter of a cell
    small = resize_mask(mask, (4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 0], expected[0, 2, 2] = 1.0, 0.25
    torch.testing.assert_close(small, expected)
    up = resize_mask(torch.ones(2, 13, 13), (14, 14))
    assert up.shape == (2, 14, 14)
    torch.testing.assert_close(up, torch.ones(2, 14, 14))
    with pytest.raises(ValueError, match="mask must be"):
        resize_mask(torch.ones(13, 13), (13, 13))


def test_pool_dtype_float32_close_to_float64_and_gradients_reach_trunk():
    torch.manual_seed(2)
    trunk = tiny_trunk(width=8, out_channels=8)
    m64 = DeepO2P(trunk, num_classes=3, pool_dtype=torch.float64)
    m32 = DeepO2P(trunk, num_classes=3, pool_dtype=torch.float32)
    images, mask = torch.randn(3, 3, 16, 16), torch.rand(3, 4, 4)
    y64, y32 = m64.pooled(images, mask), m32.pooled(images, mask)
    torch.testing.assert_close(y32, y64, atol=1e-3, rtol=1e-3)
    m32(images, mask).square().sum().backward()
    grad = trunk.module[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_avgpool_classifier_matches_masked_mean():
    torch.manual_seed(3)
    x, mask = torch.randn(2, 5, 4, 4), torch.rand(2, 4, 4)
    ref = (x * mask[:, None]).sum((2, 3)) / mask.sum((1, 2))[:, None]
    torch.testing.assert_close(masked_avg_pool(x, mask), ref)
    torch.testing.assert_close(masked_avg_pool(x, None), x.mean((2, 3)))
    model = AvgPoolClassifier(_identity_trunk(5), num_classes=3)
    logits = model(x, mask)
    torch.testing.assert_close(logits, model.classifier(ref))
    with pytest.raises(ValueError, match="head_norm"):
        AvgPoolClassifier(_identity_trunk(5), num_classes=3, head_norm="layernorm")
