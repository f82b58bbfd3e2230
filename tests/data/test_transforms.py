"""Region-crop transforms: each pure function against a hand-computed or independent reference."""

import numpy as np
import pytest

from matbackprop.data import transforms as T


def test_resized_size_hand_values():
    assert T.resized_size(400, 200, 200) == (200, 100)
    assert T.resized_size(10, 30, 200) == (67, 200)  # 66.67 rounds up
    assert T.resized_size(1000, 1, 200) == (200, 1)  # short side kept >= 1 px
    assert T.resized_size(50, 50, 56) == (56, 56)  # upscaling too
    with pytest.raises(ValueError, match="positive"):
        T.resized_size(0, 10, 200)
    with pytest.raises(ValueError, match="max_side"):
        T.resized_size(10, 10, 0)


def test_crop_resize_identity_and_subpixel_box():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(T.crop_resize(rgb, (2, 3, 8, 9), (6, 6)), rgb[3:9, 2:8])
    # bilinear resampling of a linear ramp f(x) = x is exact: output pixel u samples the box at
    # x0 + (u + 0.5) * (box width / out width) - 0.5 (pixel centres)
    ramp = np.tile(np.arange(16, dtype=np.float32), (6, 1))  # (6, 16), value = column
    out = T.crop_resize(ramp, (2.25, 0, 6.25, 6), (8, 6))  # upsample x2 from a sub-pixel box
    expected = 2.25 + (np.arange(8) + 0.5) * 0.5 - 0.5
    np.testing.assert_allclose(out[3], expected, atol=1e-5)
    assert out.dtype == np.float32


def test_crop_resize_mask_is_soft_coverage():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1  # left half
    out = T.crop_resize(mask, (0, 0, 8, 8), (4, 4))  # x0.5
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 3], 0.0)
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_allclose(out.mean(), 0.5, atol=1e-6)  # coverage preserved by symmetry


def test_normalize_mean_colour_is_zero():
    mean = np.rint(np.array(T.IMAGENET_MEAN) * 255).astype(np.uint8)
    x = T.normalize(np.broadcast_to(mean, (2, 3, 3)).copy())
    assert x.shape == (3, 2, 3) and x.dtype == np.float32
    assert np.abs(x).max() < 0.01  # only the rounding of the mean to uint8 remains
    red = T.normalize(np.array([[[255, 0, 0]]], np.uint8))[:, 0, 0]
    expected = (np.array([1.0, 0.0, 0.0]) - T.IMAGENET_MEAN) / T.IMAGENET_STD
    np.testing.assert_allclose(red, expected, rtol=1e-6)


def test_centered_offset():
    assert T.centered_offset(227, (200, 150)) == (13, 38)
    assert T.centered_offset(64, (56, 56)) == (4, 4)


def test_paste_inside_and_clipped():
    patch = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)  # (1, h=3, w=4)
    out = T.paste(patch, 6, (1, 2))
    expected = np.zeros((1, 6, 6), np.float32)
    expected[0, 2:5, 1:5] = patch[0]
    np.testing.assert_array_equal(out, expected)
    # negative offset: the first column and row are cut
    out = T.paste(patch, 6, (-1, -1))
    np.testing.assert_array_equal(out[0, :2, :3], patch[0, 1:, 1:])
    assert out[0, 2:].sum() == 0 and out[0, :, 3:].sum() == 0
    # past the far edge
    out = T.paste(patch, 6, (4, 5))
    np.testing.assert_array_equal(out[0, 5, 4:], patch[0, 0, :2])
    assert T.paste(patch, 6, (10, 0)).sum() == 0  # entirely outside


def test_hflip_and_mean_fill():
    x = np.arange(6.0).reshape(1, 2, 3)
    np.testing.assert_array_equal(T.hflip(x), [[[2, 1, 0], [5, 4, 3]]])
    img = np.ones((3, 2, 2), np.float32) * np.array([1.0, 2.0, 3.0], np.float32)[:, None, None]
    mask = np.array([[1.0, 0.0], [0.5, 0.25]], np.float32)
    out = T.mean_fill(img, mask, fill=np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(out[:, 0, 0], [1, 2, 3])
    np.testing.assert_allclose(out[:, 0, 1], [0, 0, 1])
    np.testing.assert_allclose(out[:, 1, 0], [0.5, 1.0, 2.0])
    np.testing.assert_allclose(out[:, 1, 1], [0.25, 0.5, 1.5])


def test_area_downsample_integer_ratio_is_block_mean():
    m = np.random.default_rng(1).random((12, 12))
    expected = m.reshape(4, 3, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(T.area_downsample(m, 4), expected, atol=1e-6)


def test_area_downsample_fractional_ratio_matches_supersampling():
    # reference: replicate every pixel 7x (exact), then block-average 45x45 -> 7x7 by 45-blocks
    m = (np.random.default_rng(2).random((45, 45)) > 0.5).astype(np.float32)
    fine = np.kron(m, np.ones((7, 7)))  # (315, 315)
    expected = fine.reshape(7, 45, 7, 45).mean(axis=(1, 3))
    np.testing.assert_allclose(T.area_downsample(m, 7), expected, atol=1e-6)
    a = T.area_matrix(227, 13)
    np.testing.assert_allclose(a.sum(1), 1.0)  # each cell is an average
    np.testing.assert_allclose(a.sum(0) * 227 / 13, 1.0)  # each pixel fully distributed


def test_normalize_lut_equals_normalize_bit_for_bit():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [124, 116, 104]]  # extremes, ~mean colour
    out = T.normalize_lut(rgb)
    assert out.dtype == np.float32 and out.shape == (3, 7, 9)
    np.testing.assert_array_equal(out, T.normalize(rgb))
    with pytest.raises(ValueError, match="uint8"):
        T.normalize_lut(rgb.astype(np.float32))


@pytest.mark.parametrize("offset", [(3, 2), (-4, 5), (6, -7), (9, 9), (-20, 0), (40, 3)])
@pytest.mark.parametrize("flipped", [False, True])
def test_normalize_paste_equals_paste_of_normalize(offset, flipped):
    rgb = np.random.default_rng(1).integers(0, 256, (11, 14, 3)).astype(np.uint8)
    if flipped:
        rgb = rgb[:, ::-1]  # a strided view, as the training flip passes it
    out = T.normalize_paste(rgb, 16, offset)
    assert out.dtype == np.float32 and out.shape == (3, 16, 16)
    np.testing.assert_array_equal(out, T.paste(T.normalize(np.ascontiguousarray(rgb)), 16, offset))
