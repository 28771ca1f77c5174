"""Unit tests of the lumos.sky modules: the request checks and core box (base), the
artefact injectors (artefacts) and the scattered-light pattern (synthetic). The sources
end to end are tested in test_backgrounds.py."""

from __future__ import annotations

import numpy as np
import pytest

from lumos.instrument import CCD_HEIGHT, CCD_SIZE, CCD_WIDTH
from lumos.sky.artefacts import (
    add_bad_columns,
    add_cosmic_rays,
    add_hot_pixels,
    add_saturated_stars,
    moffat_alpha,
    saturate_stars,
)
from lumos.sky.base import Artefact, check_request, core_slice
from lumos.sky.synthetic import ScatteredLight

CORE = (core_slice(40), core_slice(40))


# ------------------------------------------------------------------------------ base
def test_check_request_broadcasts_scalars():
    rng = np.random.default_rng(0)
    n, size, b, xy, t = check_request(3, 40, 25, (100.0, 200.0), 90.0, rng)
    assert (n, size) == (3, 40)
    assert b.dtype == np.int64 and b.tolist() == [25, 25, 25]
    assert xy.shape == (3, 2) and xy.flags["C_CONTIGUOUS"] and xy[2].tolist() == [100.0, 200.0]
    assert t.tolist() == [90.0] * 3
    assert check_request(0, 2, np.zeros(0, int), np.zeros((0, 2)), np.zeros(0), rng)[0] == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": -1}, "n must be a non-negative integer"),
    ({"n": True}, "n must be a non-negative integer"),
    ({"size": 1}, "size must be an integer >= 2"),
    ({"rng": 3}, "rng must be a numpy.random.Generator"),
    ({"band_idx": [1, 2]}, r"band_idx must have shape \(3,\)"),
    ({"band_idx": [0.5, 1, 2]}, "band_idx must hold integers"),
    ({"band_idx": [0, 1, 80]}, r"band_idx must be in 0..79"),
    ({"ccd_xy": np.zeros((3, 3))}, r"ccd_xy must have shape \(3, 2\)"),
    ({"ccd_xy": [[0, 0], [np.nan, 0], [0, 0]]}, "NaN or infinite"),
    ({"ccd_xy": [[0, 0], [CCD_WIDTH + 1, 0], [0, 0]]}, "must lie on the 4096 x 2048 CCD"),
    ({"ccd_xy": [[0, -1.0], [0, 0], [0, 0]]}, "must lie on the"),
    ({"exposure_time": [90.0, 0.0, 90.0]}, "exposure_time must be finite and positive"),
    ({"exposure_time": [90.0, 90.0]}, r"exposure_time must have shape \(3,\)"),
])  # fmt: skip
def test_check_request_names_the_problem(kwargs, message):
    args = {"n": 3, "size": 40, "band_idx": [0, 1, 2], "ccd_xy": np.ones((3, 2)),
            "exposure_time": 90.0, "rng": np.random.default_rng(0), **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        check_request(**args)


def test_ccd_corners_are_on_the_ccd():
    xy = np.array([[-0.5, -0.5], CCD_SIZE], dtype=float)
    assert check_request(2, 8, 0, xy, 90.0, np.random.default_rng(0))[3].shape == (2, 2)


def test_core_slice_is_the_central_ten_pixels():
    assert core_slice(60) == slice(25, 35)
    assert core_slice(41) == slice(15, 25)
    assert core_slice(6) == slice(0, 6)  # clipped to small stamps


# ------------------------------------------------------------------------- artefacts
def test_cosmic_rays_follow_the_rate_and_scale_with_exposure():
    rng = np.random.default_rng(1)
    n, size = 400, 40
    img = np.zeros((n, size, size), np.float32)
    flags = add_cosmic_rays(img, np.full(n, 90.0), rng, rate=2.0, track_fraction=0.0,
                            track_length=(2.0, 2.0), charge=(500.0, 500.0), core=CORE)  # fmt: skip
    hit = (img > 0).any(axis=(1, 2))
    # 2 events per 1e4 pixels in 90 s over the (42 x 42)-pixel extended area: P(>=1) ~ 0.30
    assert abs(hit.mean() - (1 - np.exp(-2e-4 * 42 * 42))) < 0.06
    np.testing.assert_array_equal((flags & int(Artefact.COSMIC_RAY)) != 0, hit)
    core_hit = (img[:, CORE[0], CORE[1]] > 0).any(axis=(1, 2))
    np.testing.assert_array_equal((flags & int(Artefact.COSMIC_RAY_CORE)) != 0, core_hit)
    assert np.all(img[hit].max(axis=(1, 2)) > 100.0)  # a hit deposits its charge
    none = np.zeros((n, size, size), np.float32)
    add_cosmic_rays(none, np.full(n, 1e-9), rng, rate=2.0, track_fraction=0.0,
                    track_length=(2.0, 2.0), charge=(500.0, 500.0))  # fmt: skip
    assert not none.any()


def test_cosmic_ray_tracks_are_long_and_deterministic():
    def draw(seed):
        img = np.zeros((50, 64, 64), np.float32)
        add_cosmic_rays(img, np.full(50, 90.0), np.random.default_rng(seed), rate=3.0,
                        track_fraction=1.0, track_length=(20.0, 30.0), charge=(300.0, 300.0))
        return img

    a = draw(5)
    np.testing.assert_array_equal(a, draw(5))
    lit = (a > 0).sum(axis=(1, 2))
    assert lit.max() >= 15  # tracks light many pixels (hits light 1-3)


def test_hot_pixels_add_dark_current_times_exposure():
    rng = np.random.default_rng(2)
    img = np.zeros((200, 30, 30), np.float32)
    t = np.full(200, 100.0)
    flags = add_hot_pixels(img, t, rng, fraction=1e-3, dark_rate=(2.0, 2.0), core=None)
    hot = img > 0
    assert 100 < hot.sum() < 260  # 180 expected
    np.testing.assert_allclose(img[hot] % 200.0, 0.0, atol=1e-3)  # 2 e-/s x 100 s each
    np.testing.assert_array_equal((flags & int(Artefact.HOT_PIXEL)) != 0, hot.any(axis=(1, 2)))
    assert not (flags & int(Artefact.DEFECT_CORE)).any()  # no core box given


def test_bad_columns_are_hot_or_dead_whole_or_partial_columns():
    rng = np.random.default_rng(3)
    img = np.full((300, 40, 40), 100.0, np.float32)
    flags = add_bad_columns(img, rng, columns_per_ccd=CCD_WIDTH / 40.0, ccd_width=CCD_WIDTH,
                            hot_fraction=0.5, core=CORE)  # one per image on average
    changed = img != 100.0
    cols = changed.any(axis=1)  # [N, W]
    rows_changed = changed.any(axis=2)
    assert 0.5 < (cols.sum(axis=1) > 0).mean() < 0.75  # 1 - exp(-1) = 0.63 with a column
    # a bad column runs from row 0 up: no changed pixel above an unchanged one in a column
    for k in np.flatnonzero(cols.sum(axis=1) == 1)[:50]:
        c = np.flatnonzero(cols[k])[0]
        col = changed[k, :, c]
        assert col[0] and np.all(np.diff(col.astype(int)) <= 0)
        assert rows_changed[k].sum() == col.sum()
    assert (img < 100.0).any() and (img > 100.0).any()  # dead and hot columns
    np.testing.assert_array_equal((flags & int(Artefact.BAD_COLUMN)) != 0, cols.any(axis=1))


def test_saturated_stars_are_clipped_at_full_well_with_vertical_bleeding():
    rng = np.random.default_rng(4)
    n, size, well = 40, 80, 5000.0
    signal = np.zeros((n, size, size), np.float32)
    # one star per image on average over the (80 + 2 x 20)^2-pixel extended area
    stars = add_saturated_stars(signal, rng, stars_per_ccd=CCD_WIDTH * CCD_HEIGHT / 14400.0,
                                ccd_pixels=CCD_WIDTH * CCD_HEIGHT, saturation=well,
                                fwhm_pixels=(3.0, 4.0), beta=(2.5, 3.5), overflow=(10.0, 20.0),
                                radius=20)  # fmt: skip
    assert stars and all(0 <= s[0] < n for s in stars)
    sky = np.full(n, 100.0)
    pixels = signal + 100.0
    flags = saturate_stars(pixels, stars, sky, np.full(n, 10.0), saturation=well, radius=20,
                           core=None)  # fmt: skip
    per_image = np.bincount([s[0] for s in stars], minlength=n)
    single = per_image == 1  # (where halos overlap, their sum may pass the well)
    assert single.sum() >= 5 and pixels[single].max() <= well
    full = pixels == well
    assert full[single].any(axis=(1, 2)).sum() >= 3
    for k in np.flatnonzero(full.any(axis=(1, 2)) & single):
        rows, cols = np.nonzero(full[k])
        assert np.ptp(rows) >= np.ptp(cols)  # bleed trails run along columns
        assert flags[k] & int(Artefact.SATURATED_STAR)


def test_moffat_alpha_gives_the_fwhm():
    alpha, beta = moffat_alpha(3.0, 2.5), 2.5
    half = (1.0 + (1.5 / alpha) ** 2) ** (-beta)
    assert half == pytest.approx(0.5)


# ------------------------------------------------------------------ scattered light
def test_scattered_light_is_reproducible_separable_and_brightest_at_the_edges():
    a, b = ScatteredLight.draw(7), ScatteredLight.draw(7)
    np.testing.assert_array_equal(a.edge_amp, b.edge_amp)
    assert a.edge_amp.shape == (80, 4) and a.bump_xy.shape == (80, 2)
    assert not np.array_equal(a.edge_amp, ScatteredLight.draw(8).edge_amp)
    band = np.array([5, 45])  # the same band before and after the camera intervention
    x = np.tile(np.linspace(0, CCD_WIDTH - 1, 64), (2, 1))
    y = np.tile(np.linspace(0, CCD_HEIGHT - 1, 32), (2, 1))
    fx, fy = a.factors(band, x, y, offset=1.0, scale=np.array([100.0, 100.0]))
    image = np.einsum("nkw,nkh->nhw", fx, fy)
    np.testing.assert_allclose(image, a.evaluate(band, x, y, offset=1.0,
                                                  scale=np.array([100.0, 100.0])), rtol=1e-5)
    centre = image[:, 14:18, 28:36].mean(axis=(1, 2))
    edge = image[:, :, 0].mean(axis=1)
    assert np.all(edge > centre) and np.all(image > 90.0)
    assert not np.allclose(image[0], image[1])  # the two camera states differ
