"""scripts/download_bsds.py offline: a file:// archive end to end; user errors exit 2."""

import hashlib
import io
import tarfile

import pytest
from tests.conftest import load_script

dl = load_script("download_bsds")
COUNTS = {"train": 2, "val": 1, "test": 1}


def _archive(path, counts=COUNTS, extra=()):
    """A BSR_bsds500.tgz look-alike: <counts> images with their ground truth (+ extra members)."""
    with tarfile.open(path, "w:gz") as tar:
        names = [
            f"BSR/BSDS500/data/{kind}/{split}/{i}.{ext}"
            for split, n in counts.items()
            for i in range(n)
            for kind, ext in (("images", "jpg"), ("groundTruth", "mat"))
        ]
        for name in [*names, *extra]:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return path


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(dl, "EXPECTED_COUNTS", COUNTS)
    monkeypatch.setattr(dl.check_layout, "__defaults__", (COUNTS,))


def test_end_to_end_from_file_url(tmp_path, small, capsys):
    src = _archive(tmp_path / "src.tgz")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    root = tmp_path / "bsds"
    assert dl.main(["--root", str(root), "--url", src.as_uri(), "--sha256", digest]) == 0
    assert (root / "BSR/BSDS500/data/images/test/0.jpg").read_bytes() == b"abc"
    assert (root / "BSR_bsds500.tgz.sha256").read_text().startswith(digest)
    assert dl.main(["--root", str(root)]) == 0  # complete: nothing to do
    assert "already present" in capsys.readouterr().out


def test_user_errors_exit_2_with_one_message(tmp_path, small, capsys):
    root = tmp_path / "bsds"
    missing = (tmp_path / "nowhere.tgz").as_uri()
    assert dl.main(["--root", str(root), "--url", missing]) == 2
    err = capsys.readouterr().err
    assert "error: could not download BSDS500" in err and missing in err and "--url" in err
    assert "Traceback" not in err

    src = _archive(tmp_path / "src.tgz")
    args = ["--root", str(root), "--url", src.as_uri()]
    assert dl.main([*args, "--sha256", "0" * 64]) == 2
    assert "error: checksum mismatch for" in capsys.readouterr().err

    (root / dl.ARCHIVE).write_bytes(b"\x1f\x8b garbage, not a gzip stream")
    assert dl.main(args) == 2
    assert "cannot unpack" in capsys.readouterr().err

    _archive(root / dl.ARCHIVE, counts={"train": 1, "val": 1, "test": 1})
    assert dl.main([*args, "--force"]) == 2
    err = capsys.readouterr().err
    assert "unexpected layout after extracting" in err and "1 images, expected 2" in err

    _archive(root / dl.ARCHIVE, extra=["../escape.txt"])
    assert dl.main([*args, "--force"]) == 2
    assert "unsafe member path '../escape.txt'" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists()
