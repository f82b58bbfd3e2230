"""scripts/screenshot_tables.py: the HTML pages rendered by a real headless Chromium."""

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import ROOT
from tests.results.test_pages import _tree

from matbackprop.results import tables

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="no /usr/bin/chromium (apt-get install chromium)"
)
def test_screenshots_of_both_pages(tmp_path):
    from PIL import Image

    _tree(tmp_path / "runs")
    assert tables.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t")]) == 0
    cmd = [sys.executable, str(ROOT / "scripts" / "screenshot_tables.py"), "--tables"]
    proc = subprocess.run(
        [*cmd, str(tmp_path / "t"), "--window-size", "1400,2400"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for page in ("table1", "table2"):
        png = tmp_path / "t" / "shots" / f"{page}.png"
        assert f"[screenshot] {png}" in proc.stdout
        img = Image.open(png).convert("L")
        assert img.size == (1400, 2400)
        dark = sum(img.histogram()[:128])  # text and plot lines: the page was rendered
        assert dark > 10_000, (page, dark)


def test_without_pages_or_chromium_it_is_exit_2(tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "screenshot_tables.py")]
    proc = subprocess.run([*script, "--tables", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "make tables" in proc.stderr
    (tmp_path / "table1.html").write_text("<p>x</p>")
    args = ["--tables", str(tmp_path), "--chromium", str(tmp_path / "none")]
    proc = subprocess.run([*script, *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "apt-get install chromium" in proc.stderr
