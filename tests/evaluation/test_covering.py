"""BSDS region benchmark (covering / PRI / VI) against hand-computed cases and independent references."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from skimage.measure import label as sk_label
from skimage.metrics import variation_of_information
from sklearn.metrics import rand_score

from matbackprop.evaluate_segmentation import main as cli_main
from matbackprop.evaluation import covering as C

SAMPLE = Path("/work/shared/bsds500-sample")


# ---------------------------------------------------------------- independent dense reference


def ref_covering(segs, gts):
    """Literal dense transliteration of match_segmentations.m + evaluation_reg_image.m."""
    gts = [np.asarray(g, dtype=np.int64) for g in gts]
    areas_gt = np.concatenate([np.bincount(g.ravel(), minlength=g.max() + 1)[1:] for g in gts])
    best = np.zeros(len(areas_gt))
    out = []
    for seg in segs:
        seg = np.asarray(seg, dtype=np.int64)
        matches = np.zeros((len(areas_gt), seg.max()))
        cnt = 0
        for g in gts:
            conf = np.zeros((g.max() + 1, seg.max() + 1))
            np.add.at(conf, (g.ravel(), seg.ravel()), 1)
            with np.errstate(invalid="ignore"):
                acc = conf / (conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf)
            matches[cnt : cnt + g.max()] = acc[1:, 1:]
            cnt += g.max()
        m_seg, m_gt = np.nanmax(matches, axis=0), np.nanmax(matches, axis=1)
        a_seg = np.bincount(seg.ravel(), minlength=seg.max() + 1)[1:]
        out.append((np.sum(areas_gt * m_gt), areas_gt.sum(), np.sum(a_seg * m_seg), a_seg.sum()))
        best = np.maximum(best, m_gt)
    return np.array(out), float(np.sum(areas_gt * best))


def ref_ri_vi(seg, gts):
    ri = np.mean([rand_score(g.ravel(), seg.ravel()) for g in gts])
    vi = np.mean([variation_of_information(g, seg).sum() for g in gts])  # log2: bits
    return ri, vi


def random_case(rng, h=12, w=10, nh=3):
    gts = [
        np.kron(rng.integers(1, 5, (h // 2, w // 2)), np.ones((2, 2), int)) for _ in range(nh - 1)
    ]
    gts.append(rng.integers(0, 4, (h, w)))  # label 0 in the GT too
    segs = [rng.integers(0, k, (h, w)) * (rng.random((h, w)) > 0.1) + 1 for k in (1, 3, 7)]
    segs[1][0, 0] = 0  # a label-0 machine pixel
    segs[2][segs[2] == 3] = 9  # gaps in the machine labels
    return segs, gts


def synthetic_ucm(rng, h, w, n_seeds=12, zero_pixels=False):
    """A random ultrametric contour map from a random hierarchy of Voronoi cells."""
    from scipy.cluster.hierarchy import cophenet, linkage
    from scipy.spatial.distance import squareform

    seeds = rng.random((n_seeds, 2)) * [h, w]
    yy, xx = np.mgrid[:h, :w]
    lab = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, -1)
    coph = squareform(cophenet(linkage(rng.random((n_seeds, 3)), "average")))
    coph = np.round(coph / coph.max() * 0.98 + 0.01, 2)  # values on the threshold grid too
    u = np.zeros((2 * h + 1, 2 * w + 1))
    u[1::2, 2:-1:2] = coph[lab[:, :-1], lab[:, 1:]]  # between horizontal neighbours
    u[2:-1:2, 1::2] = coph[lab[:-1, :], lab[1:, :]]  # between vertical neighbours
    v = np.zeros_like(u)
    v[2:-1:2, 2:-1:2] = np.max(
        [u[1:-2:2, 2:-1:2], u[3::2, 2:-1:2], u[2:-1:2, 1:-2:2], u[2:-1:2, 3::2]], axis=0
    )
    u = np.maximum(u, v)
    if zero_pixels:  # some pixel cells above some thresholds -> label-0 pixels
        u[1::2, 1::2] = np.where(rng.random((h, w)) < 0.05, rng.random((h, w)) * 0.5, 0.0)
    return u


# ---------------------------------------------------------------- per-image values by hand


def test_identical_partitions_are_perfect():
    gt = np.array([[1, 1, 2], [1, 3, 2], [3, 3, 2]])
    r = C.evaluate_segs([gt + 4], [gt, gt])  # different label values, same partition
    assert r.cntR[0] == pytest.approx(r.sumR[0]) and r.sumR[0] == 18
    assert r.cntP[0] == pytest.approx(9) and r.sumP[0] == 9
    assert r.ri[0] == pytest.approx(1.0) and r.voi[0] == pytest.approx(0.0, abs=1e-12)
    res = C.collect([r])
    assert res["cover_ods"] == res["cover_ois"] == res["cover_best"] == pytest.approx(1.0)
    assert res["pri_ods"] == pytest.approx(1.0) and res["vi_ods"] == pytest.approx(0.0, abs=1e-9)


def test_one_region_against_two_halves():
    gt = np.array([[1, 1, 2, 2]] * 4)  # two halves of 8 pixels
    r = C.evaluate_segs([np.ones((4, 4), int)], [gt])
    # each half: IoU = 8 / 16; the single machine region's best IoU is 1/2 too
    assert (r.cntR[0], r.sumR[0], r.cntP[0], r.sumP[0]) == pytest.approx((8, 16, 8, 16))
    assert r.ri[0] == pytest.approx(56 / 120)  # 2·C(8,2) agreeing pairs of C(16,2)
    assert r.voi[0] == pytest.approx(1.0)  # H(gt) = 1 bit, H(seg) = 0, MI = 0


def test_label_zero_gt_pixels_count_in_unions():
    gt = np.array([[0, 1, 1], [0, 2, 2]])
    seg = np.array([[1, 1, 1], [2, 2, 2]])
    r = C.evaluate_segs([seg], [gt])
    # IoU(gt1, seg1) = 2 / (2 + 3 - 2): the label-0 pixel of seg1 is in the union
    assert r.sumR[0] == 4 and r.cntR[0] == pytest.approx(2 * 2 / 3 + 2 * 2 / 3)
    assert r.sumP[0] == 6 and r.cntP[0] == pytest.approx(3 * 2 / 3 * 2)
    ri, vi = ref_ri_vi(seg, [gt])  # label 0 is a regular cluster for RI / VI
    assert r.ri[0] == pytest.approx(ri) and r.voi[0] == pytest.approx(vi)


def test_random_cases_match_dense_reference_and_sklearn_skimage():
    rng = np.random.default_rng(0)
    for _ in range(5):
        segs, gts = random_case(rng)
        r = C.evaluate_segs(segs, gts)
        ref, ref_best = ref_covering(segs, gts)
        np.testing.assert_allclose(np.c_[r.cntR, r.sumR, r.cntP, r.sumP], ref, rtol=1e-12)
        assert r.cntR_best == pytest.approx(ref_best, rel=1e-12)
        for k, s in enumerate(segs):
            ri, vi = ref_ri_vi(s, gts)
            assert r.ri[k] == pytest.approx(ri, rel=1e-12)
            assert r.voi[k] == pytest.approx(vi, rel=1e-10)


def test_best_takes_each_gt_region_at_its_own_threshold():
    gt = np.array([[1, 1, 2, 2, 2, 2]])
    segs = [np.array([[1, 1, 2, 2, 3, 3]]), np.array([[1, 2, 2, 2, 2, 2]])]
    r = C.evaluate_segs(segs, [gt])
    # GT1 best IoU 1 (seg 0), GT2 best IoU 4/5 (seg 1): Best = (2·1 + 4·0.8) / 6
    assert r.cntR_best == pytest.approx(2 * 1 + 4 * 0.8)
    assert C.collect([r], text_roundtrip=False)["cover_best"] == pytest.approx(5.2 / 6)


# ---------------------------------------------------------------- collection (ODS / OIS / ties)


def make_eval(cnt_r, sum_r, ri=None, voi=None, cnt_p=None, sum_p=None, best=0.0):
    cnt_r = np.asarray(cnt_r, float)
    t = len(cnt_r)
    return C.ImageEval(
        thresh=np.arange(1.0, t + 1), cntR=cnt_r, sumR=np.full(t, float(sum_r)),
        cntP=np.asarray(cnt_p if cnt_p is not None else cnt_r, float),
        sumP=np.asarray(sum_p if sum_p is not None else np.full(t, sum_r), float),
        ri=np.asarray(ri if ri is not None else np.zeros(t), float),
        voi=np.asarray(voi if voi is not None else np.zeros(t), float), cntR_best=best,
    )  # fmt: skip


def test_ods_is_a_ratio_of_sums_over_images_with_different_humans():
    a = make_eval([90, 60], 100, best=95)  # 1 human, 100 px: R = .9, .6
    b = make_eval([100, 350], 500, best=400)  # 5 humans, 100 px: R = .2, .7
    res = C.collect([a, b], text_roundtrip=False)
    # t=1: 190/600, t=2: 410/600 -> ODS at t=2; a mean of ratios would pick t=1 (.55 vs .65 ...)
    assert res["cover_ods"] == pytest.approx(410 / 600) and res["cover_ods_t"] == 2
    assert np.mean([0.6, 0.7]) != pytest.approx(410 / 600)
    assert res["cover_ois"] == pytest.approx((90 + 350) / 600)
    assert res["cover_best"] == pytest.approx(495 / 600)


def test_tie_breaking_first_for_ods_last_for_ois():
    # R ties at t=1 and t=3 in the image: OIS takes the LAST (visible through the precision side)
    a = make_eval([50, 10, 50], 100, cnt_p=[10, 20, 30], sum_p=[100, 100, 100])
    res = C.collect([a], text_roundtrip=False)
    assert res["cover_ods_t"] == 1  # first max
    assert res["cover_p_at_ods"] == pytest.approx(0.1)
    assert res["cover_p_ois"] == pytest.approx(0.3)  # ff(end)
    # PRI: first max of the image-mean curve; VI: first min
    b = make_eval([1, 1, 1], 1, ri=[0.5, 0.8, 0.8], voi=[2.0, 1.0, 1.0])
    res = C.collect([b, b], text_roundtrip=False)
    assert res["pri_ods_t"] == 2 and res["vi_ods_t"] == 2
    assert res["pri_ods"] == pytest.approx(0.8) and res["vi_ods"] == pytest.approx(1.0)


def test_pri_vi_ois_are_means_of_per_image_optima():
    a = make_eval([1, 1], 1, ri=[0.9, 0.5], voi=[1.0, 3.0])
    b = make_eval([1, 1], 1, ri=[0.4, 0.6], voi=[4.0, 2.0])
    res = C.collect([a, b], text_roundtrip=False)
    assert res["pri_ods"] == pytest.approx(0.65) and res["pri_ois"] == pytest.approx(0.75)
    assert res["vi_ods"] == pytest.approx(2.5) and res["vi_ois"] == pytest.approx(1.5)


def test_text_roundtrip_rounds_like_g10():
    a = make_eval([2 / 3 * 1e6 + 0.123], 1e6, ri=[1 / 3])
    exact, rounded = C.collect([a], text_roundtrip=False), C.collect([a])
    assert rounded["cover_ods"] == 666667 / 1e6 and rounded["pri_ods"] == 0.333333
    assert exact["cover_ods"] == pytest.approx(2 / 3 + 0.123e-6, rel=1e-12)
    assert exact["cover_ods"] != rounded["cover_ods"]


def test_collect_rejects_mismatched_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        C.collect([make_eval([1, 2], 3), make_eval([1, 2, 3], 3)])
    with pytest.raises(ValueError, match="no image"):
        C.collect([])


# ---------------------------------------------------------------- ucm thresholding


def test_thresholds_are_matlab_linspace():
    t = C.ucm_thresholds(99)
    assert len(t) == 99 and t[0] == 1 / 100 and t[-1] == 1 - 1 / 100
    k = np.arange(99)
    np.testing.assert_array_equal(t[1:-1], (0.01 + k * (0.98) / 98)[1:-1])


def test_ucm_eight_connectivity_through_a_diagonal_vertex():
    u = np.ones((5, 5))  # 2 × 2 pixels, every contour cell high...
    u[1::2, 1::2] = 0
    u[2, 2] = 0.3  # ...but the central vertex: all 4 pixels touch it diagonally
    assert C.label_ucm(u, 0.5).max() == 1  # 8-connectivity: one region
    assert C.label_ucm(u, 0.2).max() == 4
    gt = np.array([[1, 2], [3, 4]])
    r = C.evaluate_ucm(u, [gt], nthresh=3)  # thresholds .25 .5 .75
    assert r.sumR[0] == 4 and r.cntR.tolist() == pytest.approx([4, 1, 1])


def test_ucm_value_equal_to_threshold_is_below():
    u = np.zeros((3, 5))
    u[:, 2] = 0.5  # contour between the two pixels at exactly t = 0.5
    r = C.evaluate_ucm(u, [np.array([[1, 2]])], nthresh=3)
    assert r.cntR.tolist() == pytest.approx([2, 1, 1])  # merged from t = 0.5 on


@pytest.mark.parametrize("zero_pixels", [False, True])
def test_fast_ucm_partitions_equal_skimage_labelling(zero_pixels):
    rng = np.random.default_rng(1)
    for h, w in ((9, 13), (14, 7)):
        u = synthetic_ucm(rng, h, w, zero_pixels=zero_pixels)
        thresh = C.ucm_thresholds(49)
        groups, _ = C.ucm_base_groups(u, thresh)
        for t, (col, m) in zip(thresh, C.ucm_partitions(u, thresh)):
            ref = sk_label(u <= t, connectivity=2)[1::2, 1::2]
            mine = col[groups]
            # same partition <=> the joint labelling has as many classes as each side
            pairs = np.unique(np.c_[ref.ravel(), mine.ravel()], axis=0)
            assert len(pairs) == len(np.unique(ref)) == len(np.unique(mine))
            np.testing.assert_array_equal(mine == 0, ref == 0)
            assert m == len(np.unique(mine[mine > 0]))


def test_ucm_evaluation_equals_segs_of_thresholded_maps():
    rng = np.random.default_rng(2)
    u = synthetic_ucm(rng, 16, 12, n_seeds=15, zero_pixels=True)
    gts = [rng.integers(1, 4, (16, 12)), rng.integers(0, 3, (16, 12))]
    fast = C.evaluate_ucm(u, gts, nthresh=25)
    segs = [sk_label(u <= t, connectivity=2)[1::2, 1::2] for t in C.ucm_thresholds(25)]
    ref, ref_best = ref_covering(segs, gts)
    np.testing.assert_allclose(np.c_[fast.cntR, fast.sumR, fast.cntP, fast.sumP], ref, rtol=1e-12)
    assert fast.cntR_best == pytest.approx(ref_best)
    slow = C.evaluate_segs(segs, gts)
    np.testing.assert_allclose(fast.ri, slow.ri, rtol=1e-12)
    np.testing.assert_allclose(fast.voi, slow.voi, rtol=1e-12)


# ---------------------------------------------------------------- input checks


def test_bad_inputs_raise_clear_errors():
    gt = np.ones((3, 4), int)
    with pytest.raises(ValueError, match="shape"):
        C.evaluate_segs([np.ones((4, 3), int)], [gt])
    with pytest.raises(ValueError, match="negative"):
        C.evaluate_segs([-np.ones((3, 4), int)], [gt])
    with pytest.raises(ValueError, match="integer"):
        C.evaluate_segs([np.full((3, 4), 0.5)], [gt])
    with pytest.raises(ValueError, match="no human"):
        C.evaluate_segs([gt], [])
    with pytest.raises(ValueError, match="no pixel with a label"):
        C.evaluate_segs([np.zeros((3, 4), int)], [gt])
    with pytest.raises(ValueError, match=r"expected \(7, 9\)"):
        C.evaluate_ucm(np.zeros((5, 5)), [gt])


# ---------------------------------------------------------------- files and CLI


def write_case(root: Path, n_img=3, nthresh=7, seed=0):
    """Results as ucm2 and as the equivalent segs, plus GT with 1..3 humans per image."""
    rng = np.random.default_rng(seed)
    for d in ("ucm2", "segs", "gt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n_img):
        h, w = (18, 12) if i % 2 else (12, 18)
        u = synthetic_ucm(rng, h, w, n_seeds=10)
        segs = np.empty((1, nthresh), dtype=object)
        for k, t in enumerate(C.ucm_thresholds(nthresh)):
            segs[0, k] = sk_label(u <= t, connectivity=2)[1::2, 1::2].astype(np.uint16)
        gt = np.empty((1, i + 1), dtype=object)
        for s in range(i + 1):
            seg = sk_label(u <= rng.uniform(0.2, 0.8), connectivity=2)[1::2, 1::2]
            gt[0, s] = {
                "Segmentation": seg.astype(np.uint16),
                "Boundaries": np.zeros((h, w), np.uint8),
            }
        sio.savemat(root / "ucm2" / f"{100 + i}.mat", {"ucm2": u})
        sio.savemat(root / "segs" / f"{100 + i}.mat", {"segs": segs})
        sio.savemat(root / "gt" / f"{100 + i}.mat", {"groundTruth": gt})


def test_cli_segs_and_equivalent_ucm_give_identical_numbers(tmp_path, capsys):
    write_case(tmp_path)
    assert cli_main([str(tmp_path / "ucm2"), str(tmp_path / "gt"), "--out", str(tmp_path / "o1"),
                     "--nthresh", "7", "--workers", "1"]) == 0  # fmt: skip
    assert "cover" in capsys.readouterr().out
    assert cli_main([str(tmp_path / "segs"), str(tmp_path / "gt"), "--out", str(tmp_path / "o2"),
                     "--kind", "segs", "--workers", "2"]) == 0  # fmt: skip
    s1 = json.loads((tmp_path / "o1" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert list(s1) == list(C.SUMMARY_KEYS)
    assert s1 == pytest.approx(s2, abs=1e-12)
    cover = np.loadtxt(tmp_path / "o1" / "eval_cover.txt")
    assert cover.shape == (4,) and cover[1] == pytest.approx(s1["cover_ods"], abs=1e-6)
    ri_voi = np.loadtxt(tmp_path / "o2" / "eval_RI_VOI.txt")
    assert ri_voi.shape == (6,) and ri_voi[4] == pytest.approx(s2["vi_ods"], abs=1e-5)
    ev2 = np.loadtxt(tmp_path / "o2" / "100_ev2.txt")
    assert ev2.shape == (7, 5) and ev2[:, 0].tolist() == list(range(1, 8))


def test_cli_errors_name_the_problem(tmp_path):
    write_case(tmp_path, n_img=2)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        C.evaluate_dir(tmp_path / "nowhere", tmp_path / "gt", tmp_path / "o")
    (tmp_path / "gt" / "101.mat").unlink()
    with pytest.raises(FileNotFoundError, match="101"):
        C.evaluate_dir(tmp_path / "segs", tmp_path / "gt", tmp_path / "o")
    (tmp_path / "segs" / "100.mat").write_bytes(b"not a mat file")
    (tmp_path / "segs" / "101.mat").unlink()
    with pytest.raises(ValueError, match="100.mat"):
        C.evaluate_dir(tmp_path / "segs", tmp_path / "gt", tmp_path / "o", workers=1)
    with pytest.raises(ValueError, match="'ucm2'"):
        C.evaluate_dir(tmp_path / "ucm2", tmp_path / "gt", tmp_path / "o", kind="bogus")
    assert cli_main([str(tmp_path / "x"), str(tmp_path / "gt"), "--out", str(tmp_path / "o")]) == 2


def test_cli_kind_forcing_reports_missing_variable(tmp_path):
    write_case(tmp_path, n_img=1)
    with pytest.raises(ValueError, match=r"no variable 'ucm2'.*segs"):
        C.evaluate_dir(tmp_path / "segs", tmp_path / "gt", tmp_path / "o", kind="ucm2", workers=1)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="BSDS500 sample not present")
def test_real_sample_plausible_and_segs_match_ucm(tmp_path):
    res = C.evaluate_dir(SAMPLE / "ucm2", SAMPLE / "groundTruth", tmp_path / "u", nthresh=99)
    s = {k: res[k] for k in C.SUMMARY_KEYS}
    assert 0.5 < s["cover_ods"] <= s["cover_ois"] <= s["cover_best"] < 0.95
    assert 0.7 < s["pri_ods"] <= s["pri_ois"] < 1 and 0.5 < s["vi_ois"] <= s["vi_ods"] < 2.5
    segs = C.evaluate_dir(SAMPLE / "segs", SAMPLE / "groundTruth", tmp_path / "s")
    assert 0.5 < segs["cover_ods"] <= segs["cover_ois"] <= segs["cover_best"] < 0.95
    # one real image: the ucm at 9 thresholds == its 9 thresholded maps given as segs
    gts = C.load_gt_mat(SAMPLE / "groundTruth" / "2018.mat")
    assert len(gts) >= 5 and gts[0].dtype == np.uint16
    _, u = C.load_result_mat(SAMPLE / "ucm2" / "2018.mat")
    a = C.evaluate_ucm(u, gts, nthresh=9)
    b = C.evaluate_segs([C.label_ucm(u, t) for t in C.ucm_thresholds(9)], gts)
    for f in ("cntR", "sumR", "cntP", "sumP", "ri", "voi"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12)


def test_human_equal_to_a_ucm_level_is_covered_exactly_there():
    rng = np.random.default_rng(5)
    u = synthetic_ucm(rng, 15, 11, n_seeds=14)
    thresh = C.ucm_thresholds(9)
    gt = sk_label(u <= thresh[4], connectivity=2)[1::2, 1::2]
    r = C.evaluate_ucm(u, [gt], nthresh=9)
    assert r.cntR[4] == pytest.approx(r.sumR[4]) and r.cntP[4] == pytest.approx(r.sumP[4])
    assert r.ri[4] == pytest.approx(1.0) and r.voi[4] == pytest.approx(0.0, abs=1e-12)
    res = C.collect([r], text_roundtrip=False)
    assert res["cover_ois"] == pytest.approx(1.0) and res["cover_best"] == pytest.approx(1.0)
