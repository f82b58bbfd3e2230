"""DeepNCut inference: features -> multi-scale label maps, and the BSDS ``segs`` file format."""

import numpy as np
import pytest
import scipy.io as sio
import torch

from matbackprop.evaluation import covering as C
from matbackprop.evaluation.segment import (
    embed,
    merge_small_regions,
    read_segs,
    segment_from_features,
    upsample_nearest,
    write_segs,
)


def two_region_features(h=12, w=16, d=6, seed=0):
    """Left third uses channels 0-2, the rest channels 3-5, with small non-negative noise."""
    rng = np.random.default_rng(seed)
    f = 0.05 * rng.random((h, w, d))
    region = np.zeros((h, w), int)
    region[:, : w // 3] = 1
    f[region == 1, :3] += 1.0 + 0.1 * rng.random(((region == 1).sum(), 3))
    f[region == 0, 3:] += 1.0 + 0.1 * rng.random(((region == 0).sum(), 3))
    return torch.tensor(f), region


def same_partition(a, b):
    pairs = np.unique(np.c_[a.ravel(), b.ravel()], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_embedding_equals_row_normalised_dense_eigenvectors():
    f, _ = two_region_features(5, 6)
    x = f.reshape(30, -1).double().numpy()
    deg = x @ x.sum(0) + 1e-6
    a = x @ x.T / np.sqrt(np.outer(deg, deg))  # dense D^-1/2 W D^-1/2 (m × m), test only
    _, vec = np.linalg.eigh(a)
    top = vec[:, ::-1][:, :2]  # leading 2 eigenvectors
    ref = top / np.linalg.norm(top, axis=1, keepdims=True)
    e = embed(f, 2)
    assert e.shape == (30, 2)
    q = np.linalg.lstsq(ref, e, rcond=None)[0]  # e = ref · Q with Q orthogonal (signs)
    np.testing.assert_allclose(ref @ q, e, atol=1e-8)
    np.testing.assert_allclose(q.T @ q, np.eye(2), atol=1e-8)


def test_two_regions_recovered_at_k2_and_upsampled():
    f, region = two_region_features()
    segs = segment_from_features(f, (48, 64), ks=(2,), min_size=10)
    assert len(segs) == 1 and segs[0].shape == (48, 64) and segs[0].dtype == np.uint16
    assert segs[0].min() == 1 and segs[0].max() == 2
    assert same_partition(segs[0], upsample_nearest(region, (48, 64)))


def test_scales_have_consecutive_labels_and_respect_min_size():
    f, _ = two_region_features(10, 10, 6, seed=3)
    segs = segment_from_features(f, (40, 40), ks=(2, 4, 8), min_size=64, seed=1)
    assert len(segs) == 3
    for s in segs:
        labels = np.unique(s)
        np.testing.assert_array_equal(labels, np.arange(1, len(labels) + 1))
        assert np.bincount(s.ravel())[1:].min() >= 64
    again = segment_from_features(f, (40, 40), ks=(2, 4, 8), min_size=64, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(segs, again))  # seeded


def test_small_piece_merges_into_the_neighbour_with_most_shared_border():
    lab = np.ones((6, 8), int)
    lab[:, 5:] = 2  # big regions 1 and 2
    lab[2:4, 3:5] = 3  # 2×2 piece: shares 6 pixel pairs with 1 (top, bottom, left), 2 with 2
    out = merge_small_regions(lab, min_size=5)
    assert same_partition(out, np.where(lab == 3, 1, lab))
    lab2 = np.ones((6, 8), int)
    lab2[:, 4:] = 2
    lab2[2:4, 2:4] = 3  # piece at rows 2-3, cols 2-3
    lab2[1, 2:4] = 2  # region 2 wraps over the top ...
    lab2[4, 2:4] = 2  # ... and the bottom: 6 pairs with 2, 2 pairs with 1 (left)
    out2 = merge_small_regions(lab2, min_size=5)
    assert out2[2, 2] == out2[2, 4] != out2[0, 0]


def test_merge_splits_disconnected_pieces_and_merges_smallest_first():
    lab = np.zeros((4, 9), int)
    lab[:, 3:6] = 1  # middle stripe of label 1 ...
    lab[0, 8] = 1  # ... plus a disconnected single pixel with the same label
    out = merge_small_regions(lab, min_size=1)
    assert len(np.unique(out)) == 4  # 0-left, 1-middle, 0-right, 1-corner: 4 pieces
    out = merge_small_regions(lab, min_size=2)
    assert len(np.unique(out)) == 3 and out[0, 8] == out[0, 7]
    np.testing.assert_array_equal(np.unique(out), [1, 2, 3])
    assert out[0, 0] == 1  # raster order of first appearance


def test_pieces_are_4_connected():
    out = merge_small_regions(np.array([[1, 2], [2, 1]]), min_size=1)  # diagonal touches only
    assert sorted(np.unique(out)) == [1, 2, 3, 4]


def test_isolated_small_region_is_kept():
    out = merge_small_regions(np.zeros((3, 3), int), min_size=100)
    assert out.tolist() == np.ones((3, 3), int).tolist()


def test_bad_inputs():
    f, _ = two_region_features()
    with pytest.raises(ValueError, match="non-negative"):
        segment_from_features(-f, (10, 10))
    with pytest.raises(ValueError, match=r"\(h, w, d\)"):
        segment_from_features(f[0], (10, 10))
    with pytest.raises(ValueError, match="ks"):
        segment_from_features(f, (10, 10), ks=())
    with pytest.raises(ValueError, match="uint16|label map"):
        write_segs("/tmp/never_written.mat", [np.full((2, 2), 70000)])


def test_write_read_roundtrip_and_evaluator_reads_it(tmp_path):
    f, region = two_region_features()
    segs = segment_from_features(f, (24, 32), ks=(2, 3), min_size=4)
    path = write_segs(tmp_path / "res" / "img1.mat", segs)
    raw = sio.loadmat(path)["segs"]
    assert raw.shape == (1, 2) and raw.dtype == object and raw[0, 0].dtype == np.uint16
    back = read_segs(path)
    assert all(np.array_equal(a, b) for a, b in zip(segs, back))
    gt = np.empty((1, 1), dtype=object)
    truth = upsample_nearest(region + 1, (24, 32)).astype(np.uint16)
    gt[0, 0] = {"Segmentation": truth, "Boundaries": np.zeros((24, 32), np.uint8)}
    (tmp_path / "gt").mkdir()
    sio.savemat(tmp_path / "gt" / "img1.mat", {"groundTruth": gt})
    res = C.evaluate_dir(tmp_path / "res", tmp_path / "gt", tmp_path / "out", workers=1)
    assert res["cover_ods"] == pytest.approx(1.0) and res["cover_ods_t"] == 1
