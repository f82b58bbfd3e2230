"""`make help`: plain text into files and pipes, colours only on a terminal (issue 16)."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="no make")


def test_help_is_plain_when_not_on_a_terminal():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "reproduce-coco" in out.stdout and "tables" in out.stdout
    assert "\x1b" not in out.stdout


def test_help_is_coloured_on_a_terminal():
    main, child = os.openpty()
    proc = subprocess.run(["make", "-s", "help"], cwd=ROOT, stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    data = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child side is closed and drained
            break
        if not chunk:
            break
        data += chunk
    os.close(main)
    assert proc.returncode == 0
    assert b"\x1b[36mreproduce-coco" in data
