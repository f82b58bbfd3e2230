"""evaluate_segmentation: the last column is the segs index at ODS for segs files (issue 16)."""

from matbackprop.evaluate_segmentation import main
from tests.evaluation.test_covering import write_case


def _header(capsys) -> str:
    return next(li for li in capsys.readouterr().out.splitlines() if "ODS" in li and "OIS" in li)


def test_segs_index_and_ucm_threshold_are_labelled_as_such(tmp_path, capsys):
    write_case(tmp_path)
    gt, o = str(tmp_path / "gt"), str(tmp_path / "o")
    assert main([str(tmp_path / "segs"), gt, "--out", o, "--workers", "1"]) == 0  # auto: segs
    assert _header(capsys).endswith("segs index(ODS)")
    assert main([str(tmp_path / "segs"), gt, "--out", o, "--kind", "segs", "--workers", "1"]) == 0
    assert _header(capsys).endswith("segs index(ODS)")
    args = ["--out", o, "--nthresh", "7", "--workers", "1"]
    assert main([str(tmp_path / "ucm2"), gt, *args]) == 0
    assert _header(capsys).endswith("threshold(ODS)")
