"""scripts/download_coco.py helpers, offline: md5, resumable download, layout check, fetch."""

import hashlib
import io
import json
import urllib.error
import zipfile

import pytest
from tests.conftest import load_script

from matbackprop.data.download import DownloadError
from matbackprop.errors import DataError

dl = load_script("download_coco")

CONTENT = bytes(range(256)) * 9000  # 2.3 MB, more than two 1 MiB chunks


class FakeResponse(io.BytesIO):
    def __init__(self, body, status, headers):
        super().__init__(body)
        self.status, self.headers = status, headers

    def getcode(self):
        return self.status


class FakeServer:
    """urlopen stand-in serving CONTENT; honours Range unless told not to; can cut transfers."""

    def __init__(self, content=CONTENT, honour_range=True, cut_at=None):
        self.content, self.honour_range, self.cut_at, self.ranges = (
            content,
            honour_range,
            cut_at,
            [],
        )

    def __call__(self, req):
        rng = req.get_header("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.honour_range else 0
        n = len(self.content)
        if start >= n:
            raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable", {}, None)
        body = self.content[start : self.cut_at or n]
        if start:
            return FakeResponse(body, 206, {"Content-Range": f"bytes {start}-{n - 1}/{n}"})
        return FakeResponse(body, 200, {"Content-Length": str(n)})


def test_md5sum_and_human(tmp_path):
    f = tmp_path / "abc"
    f.write_bytes(b"abc")
    assert dl.md5sum(f) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321 test vector
    f.write_bytes(CONTENT)
    assert dl.md5sum(f, chunk=1000) == hashlib.md5(CONTENT).hexdigest()
    assert dl.human(252_872_794) == "252.9 MB" and dl.human(13_510_573_713) == "13.5 GB"


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(CONTENT)
    dest = dl.download(src.as_uri(), tmp_path / "out.bin", size=len(CONTENT))
    assert dest.read_bytes() == CONTENT and not (tmp_path / "out.bin.part").exists()


def test_download_resumes_from_part(tmp_path):
    dest = tmp_path / "x.zip"
    (tmp_path / "x.zip.part").write_bytes(CONTENT[:1_000_000])
    server = FakeServer()
    dl.download("http://example/x.zip", dest, size=len(CONTENT), opener=server)
    assert server.ranges == ["bytes=1000000-"]
    assert dest.read_bytes() == CONTENT


def test_download_restarts_when_range_ignored(tmp_path):
    dest = tmp_path / "x.zip"
    (tmp_path / "x.zip.part").write_bytes(b"garbage")
    dl.download("http://example/x.zip", dest, opener=FakeServer(honour_range=False))
    assert dest.read_bytes() == CONTENT  # restarted, nothing appended to the stale part


def test_interrupted_download_then_resume(tmp_path):
    dest = tmp_path / "x.zip"
    with pytest.raises(OSError, match="rerun to resume"):
        dl.download(
            "http://example/x.zip", dest, size=len(CONTENT), opener=FakeServer(cut_at=1_500_000)
        )
    assert (tmp_path / "x.zip.part").stat().st_size == 1_500_000 and not dest.exists()
    server = FakeServer()
    dl.download("http://example/x.zip", dest, size=len(CONTENT), opener=server)
    assert server.ranges == ["bytes=1500000-"] and dest.read_bytes() == CONTENT
    # a part that is already complete: the server answers 416 and the part is promoted
    dest.rename(tmp_path / "x.zip.part")
    dl.download("http://example/x.zip", dest, size=len(CONTENT), opener=FakeServer())
    assert dest.read_bytes() == CONTENT


def test_verify_rejects_bad_md5(tmp_path):
    f = tmp_path / "a.zip"
    f.write_bytes(b"abc")
    dl.verify(f, "900150983cd24fb0d6963f7d28e17f72")
    with pytest.raises(OSError, match="MD5 mismatch for a.zip"):
        dl.verify(f, "0" * 32)
    assert not f.exists() and (tmp_path / "a.zip.bad").exists()


def _annotation_zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        for name in dl.ANN_FILES:
            zf.writestr(name, json.dumps({"images": [], "annotations": [], "categories": []}))
    return path


def test_check_layout(tmp_path, monkeypatch):
    assert len(dl.check_layout(tmp_path)) == 4  # 2 annotation files + 2 image folders
    with zipfile.ZipFile(_annotation_zip(tmp_path / "a.zip")) as zf:
        zf.extractall(tmp_path)
    assert dl.check_layout(tmp_path, skip_images=True) == []
    monkeypatch.setattr(dl, "IMAGE_COUNTS", {"train2014": 2, "val2014": 1})
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "COCO_train2014_1.jpg").touch()
    problems = dl.check_layout(tmp_path)
    assert problems == [
        f"{tmp_path / 'train2014'} has 1 images, expected 2",
        f"missing folder {tmp_path / 'val2014'}",
    ]


def test_main_annotations_only_end_to_end(tmp_path, monkeypatch, capsys):
    z = _annotation_zip(tmp_path / "served.zip")
    md5 = hashlib.md5(z.read_bytes()).hexdigest()
    archive = (z.as_uri(), md5, z.stat().st_size, "annotations")
    monkeypatch.setitem(dl.ARCHIVES, "annotations_trainval2014.zip", archive)
    root = tmp_path / "coco"
    assert dl.main(["--root", str(root), "--skip-images"]) == 0
    assert (root / "annotations" / "instances_val2014.json").is_file()
    assert (root / ".done_annotations_trainval2014.zip").exists()
    assert not (root / "annotations_trainval2014.zip").exists()  # zip removed after extraction
    assert "is ready" in capsys.readouterr().out
    z.unlink()  # a rerun must not download again
    assert dl.main(["--root", str(root), "--skip-images"]) == 0
    assert "already extracted" in capsys.readouterr().out


def test_network_errors_are_download_errors_naming_the_url(tmp_path):
    def offline(req):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DownloadError, match=r"cannot download http://example/x.zip: .*network"):
        dl.download("http://example/x.zip", tmp_path / "x.zip", opener=offline)

    def not_found(req):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", {}, None)

    with pytest.raises(DownloadError, match="HTTP 404 Not Found") as info:
        dl.download("http://example/x.zip", tmp_path / "x.zip", opener=not_found)
    assert isinstance(info.value, DataError) and isinstance(info.value, OSError)


def _main_with_archive(tmp_path, monkeypatch, capsys, url, md5, size):
    archive = (url, md5, size, "annotations")
    monkeypatch.setitem(dl.ARCHIVES, "annotations_trainval2014.zip", archive)
    code = dl.main(["--root", str(tmp_path / "coco"), "--skip-images"])
    return code, capsys.readouterr().err


def test_main_user_errors_exit_2_with_one_message(tmp_path, monkeypatch, capsys):
    missing = (tmp_path / "nowhere.zip").as_uri()
    code, err = _main_with_archive(tmp_path, monkeypatch, capsys, missing, "0" * 32, 10)
    assert code == 2 and err.startswith(f"error: cannot download {missing}")
    assert "Traceback" not in err
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    md5 = hashlib.md5(junk.read_bytes()).hexdigest()
    code, err = _main_with_archive(tmp_path, monkeypatch, capsys, junk.as_uri(), md5, 16)
    assert code == 2 and "cannot unzip" in err and "Delete it and rerun" in err
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README", "no annotations here")
    md5 = hashlib.md5(empty.read_bytes()).hexdigest()
    (tmp_path / "coco" / "annotations_trainval2014.zip").unlink()
    code, err = _main_with_archive(
        tmp_path, monkeypatch, capsys, empty.as_uri(), md5, empty.stat().st_size
    )
    assert code == 2 and "layout check of" in err and "instances_train2014.json" in err


def _usage(free):
    import collections

    return lambda path: collections.namedtuple("usage", "total used free")(10**13, 0, free)


def test_not_enough_disk_space_is_refused_before_any_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl.shutil, "disk_usage", _usage(30 * 10**9))
    monkeypatch.setattr(dl, "fetch", lambda *a, **k: pytest.fail("must not download"))
    assert dl.main(["--root", str(tmp_path / "coco")]) == 2
    err = capsys.readouterr().err
    # 20.4 GB extracted + the largest archive held at a time (13.5 GB) = 33.9 GB
    assert "not enough free disk space" in err and "33.9 GB needed" in err
    assert "30.0 GB free" in err and "--root" in err
    assert dl.main(["--root", str(tmp_path / "coco"), "--keep-zips"]) == 2
    assert "40.8 GB needed" in capsys.readouterr().err  # archives kept: twice their size


def test_disk_space_counts_what_is_done_or_downloaded(tmp_path, monkeypatch, capsys):
    root = tmp_path / "coco"
    root.mkdir()
    (root / ".done_train2014.zip").touch()
    (root / "val2014.zip.part").write_bytes(b"x" * 1000)
    names = list(dl.ARCHIVES)
    size = {n: dl.ARCHIVES[n][2] for n in names}
    need = dl.space_needed(root, names, keep_zips=False)
    assert need == size["annotations_trainval2014.zip"] + 2 * size["val2014.zip"] - 1000
    calls = []
    monkeypatch.setattr(dl.shutil, "disk_usage", _usage(need))  # exactly enough: goes on
    monkeypatch.setattr(dl, "fetch", lambda name, *a, **k: calls.append(name))
    assert dl.main(["--root", str(root)]) == 2  # nothing was really extracted: layout check
    assert calls == ["annotations_trainval2014.zip", "val2014.zip", "train2014.zip"]
    assert "layout check" in capsys.readouterr().err
