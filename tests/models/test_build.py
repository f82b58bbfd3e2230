"""build_model from configs, the paper's lr multipliers, and the trunk taps."""

import pytest
import torch

from matbackprop.models.backbones import Trunk, alexnet_trunk, build_trunk, tiny_trunk, vgg16_trunk
from matbackprop.models.build import build_model, param_groups
from matbackprop.models.o2p import AlexNetClassifier, AvgPoolClassifier, DeepO2P, DeepO2PFC

TINY = dict(trunk="tiny", pretrained=False, tiny_width=8, tiny_out=6)


@pytest.mark.parametrize(
    "arch, cls",
    [
        ("deepo2p", DeepO2P),
        ("deepo2p_fc", DeepO2PFC),
        ("alexnet", AlexNetClassifier),
        ("avgpool", AvgPoolClassifier),
    ],
)
def test_build_model_tiny(arch, cls):
    model = build_model(dict(arch=arch, fc_dim=16, head_norm="batchnorm", **TINY), num_classes=7)
    assert type(model) is cls
    out = model(torch.randn(2, 3, 32, 32), torch.rand(2, 8, 8))
    assert out.shape == (2, 7)


def test_build_model_options_and_errors():
    m = build_model(dict(arch="deepo2p", pool_dtype="float32", pool_eps=0.1, **TINY), 3)
    assert m.pool.compute_dtype == torch.float32 and m.pool.eps == 0.1
    with pytest.raises(ValueError, match="model.arch"):
        build_model(dict(arch="resnet", **TINY), 3)
    with pytest.raises(ValueError, match="pool_dtype"):
        build_model(dict(arch="deepo2p", pool_dtype="float16", **TINY), 3)
    with pytest.raises(ValueError, match="pretrained"):
        build_trunk("tiny", pretrained=True)
    with pytest.raises(ValueError, match="unknown trunk"):
        build_trunk("resnet50")


def _lr_and_wd(model, groups):
    """{param name: (lr, weight_decay)} from optimizer-style groups (each param exactly once)."""
    by_id = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in by_id, "parameter in two groups"
            by_id[id(p)] = (g["lr"], g["weight_decay"])
    names = dict(model.named_parameters())
    assert len(by_id) == len(names), "parameter missing from the groups"
    return {n: by_id[id(p)] for n, p in names.items()}


def test_param_groups_pretrained_trunk():
    base = tiny_trunk(width=4, out_channels=3)
    model = DeepO2P(Trunk(base.module, 3, pretrained=True), num_classes=2, head_norm="batchnorm")
    got = _lr_and_wd(model, param_groups(model, lr=0.01, weight_decay=5e-4))
    # pretrained conv: ×1 with decay; its bias: ×2, no decay; its BN scale: ×1, no decay
    assert got["trunk.0.weight"] == pytest.approx((0.01, 5e-4))
    assert got["trunk.7.bias"] == pytest.approx((0.02, 0.0))
    assert got["trunk.1.weight"] == pytest.approx((0.01, 0.0))
    # new layers: ×10; new biases ×10×2, no decay
    assert got["classifier.weight"] == pytest.approx((0.1, 5e-4))
    assert got["classifier.bias"] == pytest.approx((0.2, 0.0))
    assert got["norm.weight"] == pytest.approx((0.1, 0.0))


def test_param_groups_scratch_all_at_base_lr():
    model = DeepO2P(tiny_trunk(width=4, out_channels=3), num_classes=2)
    got = _lr_and_wd(model, param_groups(model, lr=0.01, weight_decay=5e-4))
    for name, (lr, wd) in got.items():
        if name.endswith("bias"):
            assert (lr, wd) == pytest.approx((0.02, 0.0)), name
        elif name in ("trunk.0.weight", "trunk.4.weight", "trunk.7.weight", "classifier.weight"):
            assert (lr, wd) == pytest.approx((0.01, 5e-4)), name


def test_alexnet_baseline_new_last_layer_only():
    model = AlexNetClassifier("alexnet", num_classes=80, pretrained=False)
    assert model.net.classifier[6].out_features == 80
    model.pretrained_prefixes = ("net.features.", "net.classifier.0.", "net.classifier.3.")
    got = _lr_and_wd(model, param_groups(model, lr=1e-3, weight_decay=5e-4, new_lr_mult=10))
    assert got["net.features.0.weight"][0] == pytest.approx(1e-3)
    assert got["net.classifier.0.weight"][0] == pytest.approx(1e-3)  # fc6
    assert got["net.classifier.3.weight"][0] == pytest.approx(1e-3)  # fc7
    assert got["net.classifier.6.weight"][0] == pytest.approx(1e-2)
    assert got["net.classifier.6.bias"][0] == pytest.approx(2e-2)


def test_trunk_taps():
    """AlexNet: conv5+ReLU at 13×13 for 227 input, d = 256; VGG-16: conv5_3+ReLU, d = 512."""
    a = alexnet_trunk(pretrained=False)
    assert a.out_channels == 256 and isinstance(a.module[-1], torch.nn.ReLU)
    assert isinstance(a.module[-2], torch.nn.Conv2d) and a.module[-2].out_channels == 256
    with torch.no_grad():
        assert a.module(torch.randn(1, 3, 227, 227)).shape == (1, 256, 13, 13)
    v = vgg16_trunk(pretrained=False)
    assert v.out_channels == 512 and isinstance(v.module[-1], torch.nn.ReLU)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in v.module) == 13  # conv1_1 … conv5_3
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in v.module) == 4  # pool5 cut off
    with torch.no_grad():
        assert v.module(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_freeze_trunk_keeps_trunk_weights_and_trains_head():
    from matbackprop.models.build import build_model, param_groups

    cfg = {
        "arch": "deepo2p",
        "trunk": "tiny",
        "pretrained": False,
        "freeze_trunk": True,
        "pool_eps": 1e-3,
    }
    model = build_model(cfg, num_classes=3)
    assert not any(p.requires_grad for p in model.trunk.parameters())
    n_train = sum(len(g["params"]) for g in param_groups(model, lr=0.1, weight_decay=0.0))
    assert n_train == sum(1 for p in model.parameters() if p.requires_grad) > 0
    with pytest.raises(ValueError, match="freeze_trunk"):
        build_model({"arch": "alexnet", "trunk": "tiny", "freeze_trunk": True}, num_classes=3)


def test_alexnet_baseline_caffe_dropout_order_keeps_torchvision_fc_weights():
    """fc6 -> relu6 -> drop6 -> fc7 -> relu7 -> drop7 -> fc8, with torchvision's fc6 / fc7."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None)
    torch.manual_seed(0)
    model = AlexNetClassifier("alexnet", num_classes=5, pretrained=False, dropout=0.3).eval()
    kinds = [type(m).__name__ for m in model.net.classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.net.classifier[2].p == model.net.classifier[5].p == 0.3
    torch.testing.assert_close(model.net.classifier[0].weight, ref.classifier[1].weight)
    torch.testing.assert_close(model.net.classifier[3].weight, ref.classifier[4].weight)
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():  # in eval mode the order of dropout does not matter: the same fc7 output
        ref.eval()
        feats = torch.flatten(ref.avgpool(ref.features(x)), 1)
        fc7 = ref.classifier[:6](feats)
        torch.testing.assert_close(model.net.classifier[:6](feats), fc7)


@pytest.mark.parametrize(
    "name, size", [("alexnet", (99, 131)), ("vgg16", (67, 45)), ("tiny", (33, 64))]
)
def test_trunk_geometry_grid_size_matches_a_forward_pass(name, size):
    from matbackprop.models.backbones import grid_geometry, trunk_geometry

    g = trunk_geometry(name, size)
    trunk = build_trunk(name, width=4, out_channels=3).module
    with torch.no_grad():
        assert tuple(trunk(torch.randn(1, 3, *size)).shape[-2:]) == g.size
    # nested containers walk the same; a grid-free layer is refused
    nested = torch.nn.Sequential(trunk[:3], torch.nn.Sequential(trunk[3:]))
    assert grid_geometry(nested, size) == grid_geometry(trunk, size)
    with pytest.raises(ValueError, match="no fixed grid"):
        grid_geometry([torch.nn.AdaptiveAvgPool2d(1)], size)


def test_trunk_geometry_hand_values():
    """By hand: VGG-16 conv4_3 (depth 23) stride 8, 3×3 convs keep the centre, each 2×2 pool
    moves it by half its input jump: 0.5 + 0.5 + 1 + 2 = 4; tiny: 0.5 + 0 + 1 = 1.5."""
    from matbackprop.models.backbones import trunk_geometry

    v = trunk_geometry("vgg16", (224, 224), depth=23)
    assert (v.stride, v.offset, v.rf, v.size) == (8, 4.0, 92, (28, 28))
    t = trunk_geometry("tiny", (64, 64))
    assert (t.stride, t.offset, t.rf, t.size) == (4, 1.5, 23, (16, 16))
