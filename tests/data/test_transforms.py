"""Region-crop transforms: each pure function against a hand-computed or independent reference."""

import functools

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


# ---------------------------------------------------------------- feature-grid alignment
# Reference for where a trunk's units look: the receptive field measured by autograd on the
# real layer stack (max-pools swapped for average pools of the same kernel/stride/padding, and
# positive weights, so the gradient of one output unit is non-zero exactly on its receptive
# field), not the geometry formula under test.


@functools.cache
def _measured_rf(depth: int, size: int, unit: tuple[int, int]) -> tuple[slice, slice]:
    """Rows / columns of the input that one output unit of AlexNet ``features[:depth]`` sees."""
    import torch
    import torchvision

    net = torchvision.models.alexnet(weights=None).features[:depth]
    layers = []
    for m in net:
        if isinstance(m, torch.nn.MaxPool2d):
            m = torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
        elif isinstance(m, torch.nn.Conv2d):
            torch.nn.init.constant_(m.weight, 1e-2)
            torch.nn.init.zeros_(m.bias)
        layers.append(m)
    x = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = torch.nn.Sequential(*layers).double()(x)
    out[0, 0, unit[0], unit[1]].backward()
    rows = np.flatnonzero(x.grad[0, 0].abs().sum(1).numpy() > 0)
    cols = np.flatnonzero(x.grad[0, 0].abs().sum(0).numpy() > 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def test_trunk_geometry_matches_the_measured_receptive_fields():
    from matbackprop.models.backbones import trunk_geometry

    g = trunk_geometry("alexnet", (227, 227))
    assert (g.stride, g.offset, g.rf, g.size) == (16, 15.5, 163, (13, 13))  # by hand too
    for unit in [(6, 6), (5, 8), (0, 0), (12, 3)]:
        rows, cols = _measured_rf(12, 227, unit)
        for sl, i in zip((rows, cols), unit):
            lo, hi = g.offset + i * g.stride - g.rf / 2, g.offset + i * g.stride + g.rf / 2
            assert sl.start == max(lo, 0)  # the field starts where the geometry says
            if hi <= 227:  # (past the far border the stride-4 conv1 / pool1 drop pixels)
                assert sl.stop == hi


@pytest.mark.parametrize("unit", [(6, 6), (1, 11), (3, 10), (0, 0), (12, 12), (0, 12)])
def test_a_mask_on_one_conv5_unit_lands_on_that_unit(unit):
    """A mask covering exactly one AlexNet conv5 unit's own cell (the stride × stride block at
    the centre of its measured receptive field) lands on that unit and nowhere else."""
    from matbackprop.models.backbones import trunk_geometry

    g = trunk_geometry("alexnet", (227, 227))
    rows, cols = _measured_rf(12, 227, (6, 6)) if unit == (6, 6) else (None, None)
    centre = [g.offset + i * g.stride for i in unit]
    if rows is not None:  # interior unit: the measured field's centre
        centre = [(rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2]
    # the cell edges sit on half pixels (centre ± 8 = x.5): draw the mask at twice the image
    # resolution, where they are whole pixels (the geometry scales with the mask, as in the task)
    mask = np.zeros((454, 454))
    r0, c0 = (int(2 * c - g.stride) for c in centre)
    mask[r0 : r0 + 2 * g.stride, c0 : c0 + 2 * g.stride] = 1.0
    out = T.grid_downsample(mask, g.size, 2 * g.stride, 2 * g.offset)  # (13, 13)
    others = np.ones(g.size, dtype=bool)
    others[unit] = False
    np.testing.assert_allclose(out[others], 0.0, atol=1e-9)  # nothing on any other unit
    # all of the unit's cell is covered, except for a border unit, whose cell also takes the
    # pixels between its field's centre and the image border (16 of 23.5 px at the top / left)
    border = [i in (0, 12) for i in unit]
    expected = np.prod(
        [16 / (23.5 if i == 0 else 27.5) if b else 1.0 for i, b in zip(unit, border)]
    )
    np.testing.assert_allclose(out[unit], expected, atol=1e-6)
    # uniform cells (227 / 13 px) smear it over neighbouring cells
    uni = T.grid_downsample(mask, g.size, *T.uniform_grid(454, 13))
    assert uni[others].max() > 0.05


@pytest.mark.parametrize("size, unit", [(227, (6, 6)), (323, (7, 9))])
def test_a_mask_covering_a_whole_receptive_field_is_centred_on_its_unit(size, unit):
    """The measured receptive field of one conv5 unit, as a mask: its coverage of the grid is
    centred exactly on that unit (fields that stay off the wider border cells)."""
    from matbackprop.models.backbones import trunk_geometry

    g = trunk_geometry("alexnet", (size, size))
    rows, cols = _measured_rf(12, size, unit)
    mask = np.zeros((size, size))
    mask[rows, cols] = 1.0
    out = T.grid_downsample(mask, g.size, g.stride, g.offset).astype(np.float64)
    r, c = np.indices(g.size)
    centroid = (np.sum(out * r) / out.sum(), np.sum(out * c) / out.sum())
    np.testing.assert_allclose(centroid, unit, atol=1e-9)
    assert out[unit] == out.max() == 1.0
    uni = T.grid_downsample(mask, g.size, *T.uniform_grid(size, g.size[0])).astype(np.float64)
    off = (np.sum(uni * r) / uni.sum(), np.sum(uni * c) / uni.sum())
    assert np.abs(np.subtract(off, unit)).max() > 0.1


def test_uniform_grid_is_the_old_behaviour():
    rng = np.random.default_rng(0)
    mask = rng.random((227, 200))
    np.testing.assert_allclose(
        T.grid_downsample(mask, (13, 11), (227 / 13, 200 / 11), (227 / 26, 200 / 22)),
        T.area_downsample(mask, (13, 11)),
        atol=1e-6,
    )
    # labels: cell-centre sampling (models.deepncut.downsample_labels) and pixel-centre
    # nearest upsampling (evaluation.segment.upsample_nearest)
    np.testing.assert_array_equal(
        T.grid_sample_index(321, 19, *T.uniform_grid(321, 19)),
        ((np.arange(19) + 0.5) * 321 / 19).astype(int),
    )
    np.testing.assert_array_equal(
        T.grid_upsample_index(321, 19, *T.uniform_grid(321, 19)),
        np.minimum(((np.arange(321) + 0.5) * 19 / 321).astype(int), 18),
    )


def test_labels_down_and_up_through_the_receptive_cells():
    """A label map constant on each unit's cell survives grid sampling and upsampling exactly;
    each sampled pixel is the unit's receptive-field centre (BSDS, AlexNet relu5 at 321 × 481)."""
    from matbackprop.models.backbones import trunk_geometry

    g = trunk_geometry("alexnet", (321, 481))
    (h, w), (H, W) = g.size, (321, 481)
    assert (h, w) == (19, 29)
    rows = T.grid_sample_index(H, h, g.stride, g.offset)
    assert rows.tolist() == [15 + 16 * i for i in range(h)]  # floor(15.5 + 16 i)
    up_r, up_c = (
        T.grid_upsample_index(H, h, g.stride, g.offset),
        T.grid_upsample_index(W, w, g.stride, g.offset),
    )
    grid = np.arange(h * w).reshape(h, w)
    full = grid[up_r[:, None], up_c[None, :]]  # (H, W), constant on each cell
    cols = T.grid_sample_index(W, w, g.stride, g.offset)
    np.testing.assert_array_equal(full[rows[:, None], cols[None, :]], grid)
    # each pixel belongs to the unit whose centre is nearest
    centres = g.offset + np.arange(h) * g.stride
    dist = np.abs((np.arange(H) + 0.5)[:, None] - centres[None, :])  # (H, h)
    nearest = h - 1 - dist[:, ::-1].argmin(1)  # ties (pixel 23 of 15.5 | 31.5): the later unit
    np.testing.assert_array_equal(up_r, nearest)
    # uniform cells do not round-trip these labels
    uni = T.grid_sample_index(H, h, *T.uniform_grid(H, h))
    assert not np.array_equal(full[uni[:, None], cols[None, :]], grid)


def test_grid_cells_bad_input():
    with pytest.raises(ValueError, match="stride"):
        T.grid_cells(10, 3, 0.0, 1.0)


def test_area_downsample_to_the_same_size_is_the_identity():
    rng = np.random.default_rng(1)
    mask = rng.random((9, 7))
    out = T.area_downsample(mask, (9, 7))
    np.testing.assert_array_equal(out, mask.astype(np.float32))
    np.testing.assert_allclose(T.area_matrix(9, 9), np.eye(9))  # what the shortcut skips
