"""scripts/bench_loader.py runs end to end on a tiny set and ends with the speedup line."""

import re

import pytest
from tests.conftest import load_script

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_bench_loader_tiny(tmp_path, capsys, monkeypatch):
    bench = load_script("bench_loader")
    monkeypatch.setitem(bench.PARAMS, "n_val", 6)
    monkeypatch.setitem(bench.PARAMS, "image_size", (240, 320))
    monkeypatch.setattr(bench, "ITEM", dict(bench.ITEM, crop_size=64, max_side=56, jitter=4))
    bench.main(["--work", str(tmp_path), "--regions", "4", "--rounds", "1", "--workers", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\dx", lines[-1])
    assert any(line.startswith("| prepared |") for line in lines)
    assert any("needs 667 regions/s" in line for line in lines)  # 100 / 0.150 s
