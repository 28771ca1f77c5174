import numpy as np
import pytest
import torch

from lumos.flags import Flag
from lumos.stamps import StampBatch, cut_stamps


def _image_with_point(ny, nx, x, y):
    image = np.zeros((ny, nx), dtype=np.float32)
    image[int(round(y)), int(round(x))] = 100.0
    return image


@pytest.mark.parametrize(
    "x, y", [(0.0, 0.0), (199.0, 0.0), (0.0, 149.0), (199.0, 149.0), (3.0, 75.0), (100.0, 148.0)]
)
def test_corners_and_edges_keep_source_at_centre_and_flag_edge(x, y):
    image = _image_with_point(150, 200, x, y)
    cut = cut_stamps(image, [x], [y])
    assert cut.pixels.shape == (1, 60, 60)
    assert cut.flags[0] & Flag.EDGE
    assert not cut.flags[0] & Flag.OFF_IMAGE
    j, i = np.unravel_index(np.argmax(cut.pixels[0]), (60, 60))
    c = 29.5
    assert i == pytest.approx(c + cut.offset[0, 0], abs=0.5)
    assert j == pytest.approx(c + cut.offset[0, 1], abs=0.5)
    # padded pixels are zero and marked invalid
    assert not cut.valid[0].all()
    assert np.all(cut.pixels[0][~cut.valid[0]] == 0)


def test_interior_stamp_is_exact_copy_and_offsets_in_range(rng):
    image = rng.normal(size=(300, 400)).astype(np.float32)
    x = rng.uniform(40, 360, 50)
    y = rng.uniform(40, 260, 50)
    cut = cut_stamps(image, x, y)
    assert np.all(cut.flags == 0)
    assert np.all((cut.offset >= -0.5) & (cut.offset < 0.5))
    for k in range(50):
        i0, j0 = cut.origin[k]
        np.testing.assert_array_equal(cut.pixels[k], image[j0 : j0 + 60, i0 : i0 + 60])
        # the source position in stamp coordinates is centre + offset
        np.testing.assert_allclose(x[k] - i0, 29.5 + cut.offset[k, 0])
        np.testing.assert_allclose(y[k] - j0, 29.5 + cut.offset[k, 1])


def test_nan_and_masked_pixels_are_zeroed_and_flagged():
    image = np.ones((200, 200), dtype=np.float32)
    image[100, 100] = np.nan  # in the core of source 0
    image[10, 150] = np.inf  # far from the core of source 1
    mask = np.zeros_like(image, dtype=bool)
    mask[150, 50] = True  # core of source 2
    cut = cut_stamps(image, [100.0, 150.0, 50.0, 60.0], [100.0, 35.0, 150.0, 60.0], mask=mask)
    assert cut.flags[0] & Flag.MASKED_CORE and cut.flags[0] & Flag.MASKED
    assert cut.flags[1] & Flag.MASKED and not cut.flags[1] & Flag.MASKED_CORE
    assert cut.flags[2] & Flag.MASKED_CORE
    assert cut.flags[3] == 0
    assert np.all(np.isfinite(cut.pixels))
    assert cut.valid.sum(axis=(1, 2)).tolist() == [3599, 3599, 3599, 3600]


def test_off_image_and_nan_positions_are_flagged_not_dropped():
    image = np.ones((100, 100), dtype=np.float32)
    cut = cut_stamps(image, [np.nan, -20.0, 50.0], [5.0, 50.0, 50.0])
    assert len(cut.flags) == 3
    assert cut.flags[0] & Flag.OFF_IMAGE and cut.flags[1] & Flag.OFF_IMAGE
    assert not cut.flags[2] & Flag.OFF_IMAGE
    assert np.all(cut.pixels[:2] == 0)


def test_other_sizes_and_bad_input():
    image = np.ones((200, 200))
    assert cut_stamps(image, [100.0], [100.0], size=100).pixels.shape == (1, 100, 100)
    with pytest.raises(ValueError, match="2-dimensional"):
        cut_stamps(np.ones(10), [1.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        cut_stamps(image, [1.0, 2.0], [1.0])


def _batch(n=4, truth=True):
    return StampBatch(
        pixels=torch.zeros(n, 60, 60),
        profile=torch.zeros(n, 60, 60),
        i_mag=torch.full((n,), 21.0),
        ccd_xy=torch.zeros(n, 2),
        band_idx=torch.arange(n),
        flags=torch.zeros(n, dtype=torch.int64),
        offset=torch.zeros(n, 2),
        truth=torch.ones(n) if truth else None,
    )


def test_stampbatch_select_concat_and_validation():
    b = _batch()
    assert len(b) == 4
    assert len(b[1:3]) == 2 and b[1:3].band_idx.tolist() == [1, 2]
    assert len(b[0]) == 1
    both = StampBatch.concat([b, b])
    assert len(both) == 8
    assert StampBatch.concat([b, _batch(truth=False)]).truth is None
    with pytest.raises(ValueError, match="i_mag has 3 rows"):
        b.replace(i_mag=torch.zeros(3))
    with pytest.raises(ValueError, match="profile shape"):
        b.replace(profile=torch.zeros(4, 50, 50))


def test_no_usable_pixel_within_the_core_radius_sets_failed():
    image = np.ones((200, 200), dtype=np.float32)
    image[90:111, 90:111] = np.nan  # covers the whole core (radius 8) of source 0
    image[40:45, 40:45] = np.nan  # only part of the core of source 1
    cut = cut_stamps(image, [100.0, 42.0, 150.0], [100.0, 42.0, 150.0])
    assert cut.flags[0] & Flag.FAILED and cut.flags[0] & Flag.MASKED_CORE
    assert cut.flags[1] & Flag.MASKED_CORE and not cut.flags[1] & Flag.FAILED
    assert cut.flags[2] == 0
    empty = cut_stamps(np.full((100, 100), np.nan, np.float32), [50.0, -30.0], [50.0, 50.0])
    assert empty.flags.tolist() == [int(Flag.MASKED_CORE | Flag.MASKED | Flag.FAILED),
                                    int(Flag.OFF_IMAGE)]  # fmt: skip


def test_nan_and_huge_positions_raise_no_numpy_warning():
    import warnings

    from lumos.stamps import on_image

    x = np.array([np.nan, 1e300, -1e300, np.inf, 4e18, 50.0])
    y = np.array([5.0, 5.0, 5.0, 5.0, -9e18, 50.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cut = cut_stamps(np.ones((100, 100), np.float32), x, y)
        inside = on_image(x, y, (100, 100))
    assert cut.flags.tolist() == [int(Flag.OFF_IMAGE)] * 5 + [0]
    assert inside.tolist() == [False] * 5 + [True]
    assert np.all(np.abs(cut.offset) <= 0.5)


def _gaussian_profiles(n: int, size: int, sigma: float) -> np.ndarray:
    a = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-0.5 * (a[None, :] ** 2 + a[:, None] ** 2) / sigma**2)
    return np.repeat((g / g.sum())[None], n, axis=0)


def test_masked_is_set_only_by_bad_pixels_where_the_galaxy_has_light():
    from lumos.stamps import MASKED_LIGHT_FRACTION, masked_light_flags

    image = np.ones((200, 200), dtype=np.float32)
    mask = np.zeros_like(image, dtype=bool)
    mask[:, 125] = True  # a bad column 25 pixels from the first galaxy, 9 from the second
    x = np.array([100.0, 116.0, 100.0])
    y = np.array([100.0, 100.0, 100.0])
    cut = cut_stamps(image, x, y, size=60, mask=mask)
    assert np.all(cut.flags & int(Flag.MASKED))  # cut_stamps: any bad pixel in the stamp
    profile = _gaussian_profiles(3, 60, sigma=5.0)
    profile[2] = np.nan  # a profile that could not be drawn
    flags = masked_light_flags(cut, profile)
    light = [np.where(cut.bad[k], profile[k], 0).sum() for k in range(2)]
    assert light[0] < 1e-5 and light[1] > MASKED_LIGHT_FRACTION
    assert (flags & int(Flag.MASKED)).tolist() == [0, int(Flag.MASKED), int(Flag.MASKED)]
    assert np.all((flags & int(Flag.MASKED_CORE)) == 0)
    # the same column through the core: MASKED_CORE stays, whatever the light outside it
    core = cut_stamps(image, np.array([125.0]), np.array([100.0]), size=60, mask=mask)
    out = masked_light_flags(core, _gaussian_profiles(1, 60, sigma=1.0))
    assert out[0] & int(Flag.MASKED_CORE)
