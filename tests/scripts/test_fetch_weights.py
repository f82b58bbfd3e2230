"""`make weights`: reports what is cached, and a failed download is exit 2 with the path (no network)."""

import urllib.error

import torch
import torchvision
from tests.conftest import load_script


def test_check_reports_missing_and_present(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fetch = load_script("fetch_weights")
    assert fetch.main(["--check"]) == 2
    out = capsys.readouterr().out
    assert out.count("MISSING") == 2 and str(tmp_path) in out
    for w in fetch.WEIGHTS.values():  # where torchvision itself looks
        path = fetch.target(w)
        assert path.parent == tmp_path / "hub" / "checkpoints"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert fetch.main(["--check"]) == 0
    assert capsys.readouterr().out.count("present") == 2


def test_failed_download_is_exit_2_naming_the_target(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    fetch = load_script("fetch_weights")
    assert fetch.main(["alexnet"]) == 2
    err = capsys.readouterr().err
    assert "no route to host" in err and str(torch.hub.get_dir()) in err
    assert fetch.main(["resnet"]) == 2
