"""DeepNCut model: taps, shapes, freezing, raw-feature mode, label downsampling, grid loss."""

import pytest
import torch

from matbackprop.models.deepncut import DeepNCut, downsample_labels, ncut_loss_on_grid
from matbackprop.spectral import ncut_alignment_loss


def test_alexnet_taps_shapes_and_nonnegative():
    torch.manual_seed(0)
    model = DeepNCut("alexnet", taps=["relu4", "relu5"], hidden=16, out_dim=8).eval()
    x = torch.randn(2, 3, 99, 131)
    f = model(x)
    # AlexNet conv1 (k11 s4 p2) -> pool -> conv2 -> pool: 99 -> 23 -> 11 -> 11 -> 5; 131 -> 31 -> 15 -> 7
    assert f.shape == (2, 8, 5, 7)
    assert (f >= 0).all()


def test_raw_features_mode_returns_tap_outputs():
    torch.manual_seed(0)
    model = DeepNCut("alexnet", taps=["relu3"], head=False).eval()
    x = torch.randn(1, 3, 67, 67)
    ref = model.trunk[:8](x)  # conv1..relu3
    torch.testing.assert_close(model(x), ref)
    assert model.out_dim == 384


def test_freeze_through_stops_gradients_and_keeps_bn_stats():
    torch.manual_seed(0)
    model = DeepNCut("tiny", taps=["out"], freeze_through="out", hidden=8, out_dim=4)
    assert not any(p.requires_grad for p in model.trunk.parameters())
    model.train()
    assert not model.trunk[1].training  # frozen BatchNorm stays in eval mode
    before = model.trunk[1].running_mean.clone()
    f = model(torch.randn(2, 3, 32, 32))
    f.sum().backward()
    torch.testing.assert_close(model.trunk[1].running_mean, before)
    assert model.conv1.weight.grad is not None


def test_bad_taps_raise():
    with pytest.raises(ValueError, match="unknown"):
        DeepNCut("alexnet", taps=["relu9"])
    with pytest.raises(ValueError, match="freeze_through"):
        DeepNCut("tiny", taps=["out"], freeze_through="relu2")


def test_downsample_labels_cell_centres():
    seg = torch.arange(24).reshape(1, 4, 6)
    out = downsample_labels(seg, (2, 3))
    # cell centres: rows (0.5, 1.5) * 4/2 -> 1, 3; cols (0.5, 1.5, 2.5) * 6/3 -> 1, 3, 5
    assert out.tolist() == [[[7, 9, 11], [19, 21, 23]]]


def test_ncut_loss_on_grid_matches_direct_call_and_ignores_label0():
    torch.manual_seed(0)
    feats = torch.rand(1, 5, 3, 4, dtype=torch.float64)
    seg = torch.tensor([[[5, 5, 9, 9], [5, 5, 9, 9], [0, 7, 7, 7]]])  # labels ≥ 1, 0 = unlabelled
    loss = ncut_loss_on_grid(feats, seg)
    labels = torch.tensor([[0, 0, 2, 2, 0, 0, 2, 2, -1, 1, 1, 1]])  # 5->0, 7->1, 9->2, 0->ignored
    ref = ncut_alignment_loss(feats.flatten(2).mT, labels)
    torch.testing.assert_close(loss, ref)
