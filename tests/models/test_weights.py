"""Pretrained trunks without reachable weights stop with a DataError naming `make weights`
(a cluster node without internet), never a traceback from deep inside torch.hub."""

import urllib.error

import pytest
import torchvision

from matbackprop.errors import DataError
from matbackprop.models.backbones import alexnet_trunk, imagenet_net
from matbackprop.models.build import build_model


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached

    def fail(url, *a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fail)
    return tmp_path


def test_missing_weights_name_the_file_and_make_weights(offline):
    with pytest.raises(DataError, match=r"make weights") as err:
        alexnet_trunk(pretrained=True)
    assert str(offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in str(err.value)
    assert "name resolution" in str(err.value)
    with pytest.raises(DataError, match="vgg16"):
        imagenet_net("vgg16", True)
    with pytest.raises(DataError, match="model.pretrained=false"):
        build_model(dict(arch="alexnet", trunk="alexnet", pretrained=True), num_classes=3)


def test_random_init_needs_no_weights(offline):
    assert alexnet_trunk(pretrained=False).out_channels == 256  # no download attempted
