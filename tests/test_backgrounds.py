"""Tests of the background sources (lumos.backgrounds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lumos.backgrounds import (
    Artefact,
    BackgroundSample,
    BackgroundSource,
    CompositeBackground,
    RealImageBackground,
    SyntheticSky,
    robust_sigma,
)
from lumos.bands import band_index
from lumos.instrument import CCD_SHAPE, CCD_SIZE

KIDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kids"
NB685 = band_index("NB685", 0)

# a sky without any injected artefact
CLEAN = dict(
    cosmic_rate=0.0, hot_pixel_fraction=0.0, bad_columns_per_ccd=0.0, saturated_stars_per_ccd=0.0
)


def _request(n: int, seed: int = 0, band: int = NB685, t: float = 90.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform([600.0, 600.0], [3500.0, 1450.0], (n, 2))
    return np.full(n, band), xy, np.full(n, t)


def _same(a: BackgroundSample, b: BackgroundSample) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("pixels", "sky_model", "sky_sigma", "artefacts")
    )


# ---------------------------------------------------------------- robust_sigma
def test_robust_sigma_gradient_and_sources():
    rng = np.random.default_rng(1)
    sigma = 2.5
    yy, xx = np.mgrid[0:200, 0:200].astype(float)
    # strong gradient (> sigma per pixel) with some curvature
    image = 1000.0 + 3.0 * xx - 2.0 * yy + 0.002 * (xx - 80) ** 2
    for _ in range(8):  # bright sources
        x0, y0 = rng.uniform(10, 190, 2)
        image += 5e4 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2))
    image += rng.normal(0.0, sigma, image.shape)
    est = robust_sigma(image)
    assert est.shape == ()
    assert abs(est / sigma - 1) < 0.05
    # a naive standard deviation is ruined by the gradient and the sources
    assert np.std(image) > 10 * sigma


def test_robust_sigma_batch_mask_and_nan():
    rng = np.random.default_rng(2)
    sig = np.array([1.0, 3.0, 10.0, 0.5])
    x = rng.normal(0.0, 1.0, (4, 50, 50)) * sig[:, None, None]
    est = robust_sigma(x.astype(np.float32))
    assert est.shape == (4,)
    np.testing.assert_allclose(est, sig, rtol=0.06)
    # a masked block of garbage and NaN pixels are ignored
    y = x.copy()
    y[1, 10:40, 10:40] = rng.normal(0.0, 100.0, (30, 30))
    valid = np.ones_like(y, dtype=bool)
    valid[1, 10:40, 10:40] = False
    y[2, 5, :] = np.nan
    est2 = robust_sigma(y, valid=valid)
    np.testing.assert_allclose(est2, sig, rtol=0.08)
    # leading batch axes are kept; an all-masked image gives NaN, not an exception
    assert robust_sigma(x.reshape(2, 2, 50, 50)).shape == (2, 2)
    valid[3] = False
    assert np.isnan(robust_sigma(x, valid=valid)[3])


def test_robust_sigma_bad_input():
    with pytest.raises(ValueError, match="H, W"):
        robust_sigma(np.zeros(10))
    with pytest.raises(ValueError, match="2 x 2"):
        robust_sigma(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="valid"):
        robust_sigma(np.zeros((5, 5)), valid=np.ones((4, 4), dtype=bool))


# ---------------------------------------------------------------- SyntheticSky
def test_protocol_and_shapes():
    sky = SyntheticSky()
    assert isinstance(sky, BackgroundSource)
    b, xy, t = _request(6)
    s = sky.sample(6, 60, b, xy, t, np.random.default_rng(0))
    assert s.pixels.shape == s.sky_model.shape == (6, 60, 60)
    assert s.pixels.dtype == s.sky_model.dtype == s.sky_sigma.dtype == np.float32
    assert s.sky_sigma.shape == (6,) and s.artefacts.dtype == np.int64
    assert np.all(np.isfinite(s.pixels))
    empty = sky.sample(0, 60, b[:0], xy[:0], t[:0], np.random.default_rng(0))
    assert empty.pixels.shape == (0, 60, 60)


def test_synthetic_deterministic():
    sky = SyntheticSky(cosmic_rate=5.0, hot_pixel_fraction=1e-3, saturated_stars_per_ccd=500.0)
    b, xy, t = _request(40)
    b = np.arange(40) * 2
    a1 = sky.sample(40, 60, b, xy, t, np.random.default_rng(7))
    a2 = sky.sample(40, 60, b, xy, t, np.random.default_rng(7))
    a3 = sky.sample(40, 60, b, xy, t, np.random.default_rng(8))
    assert _same(a1, a2)
    assert not np.array_equal(a1.pixels, a3.pixels)
    # the smooth model does not depend on the random state
    np.testing.assert_array_equal(a1.sky_model, a3.sky_model)


def test_sky_level_and_noise_in_flat_region():
    sky = SyntheticSky(**CLEAN)
    n = 400
    b, xy, t = _request(n)
    xy[:] = [2048.0, 1024.0]  # CCD centre, far from the edges
    level = sky.sky_level(b, xy, t)
    # ~2 e-/s/pixel at NB685: ~190 e- in 90 s
    assert 170.0 < level[0] < 210.0
    s = sky.sample(n, 60, b, xy, t, np.random.default_rng(3))
    assert abs(s.pixels.mean() / level[0] - 1) < 2e-3
    assert abs(s.sky_model.mean() / level[0] - 1) < 2e-3
    expected_sigma = np.sqrt(level[0] + sky.read_noise**2)
    resid = s.pixels - s.sky_model
    assert abs(resid.std() / expected_sigma - 1) < 0.01
    np.testing.assert_allclose(s.sky_sigma, expected_sigma, rtol=2e-3)
    assert abs(np.median(robust_sigma(s.pixels)) / expected_sigma - 1) < 0.02
    assert s.artefacts.sum() == 0


def test_sky_scales_with_exposure_and_rises_to_red():
    sky = SyntheticSky()
    rates = sky.sky_rate(np.arange(40))
    assert np.all(np.diff(rates) > 0)
    xy = np.array([[2048.0, 1024.0]] * 2)
    lv = sky.sky_level(np.array([NB685, NB685]), xy, np.array([45.0, 90.0]))
    assert lv[1] == pytest.approx(2 * lv[0])


def test_faint_sky_uses_poisson_noise():
    sky = SyntheticSky(read_noise=0.0, **CLEAN)
    b, xy, t = _request(200, band=0, t=3.0)  # ~2.6 e- per pixel
    s = sky.sample(200, 20, b, xy, t, np.random.default_rng(4))
    assert np.allclose(s.pixels, np.round(s.pixels))  # integer photon counts
    assert abs(s.pixels.var() / s.sky_model.mean() - 1) < 0.05


def test_scattered_light_edges_states_and_bands():
    sky = SyntheticSky()
    xs = np.linspace(0, 4095, 257)
    ys = np.linspace(0, 2047, 129)
    bands = np.arange(80)
    maps = sky.pattern.evaluate(bands, np.tile(xs, (80, 1)), np.tile(ys, (80, 1)))
    # the point-wise API agrees with the grid evaluation
    np.testing.assert_allclose(
        sky.scattered_light(7, xs[[0, 100, 256]], ys[[0, 64, 128]]),
        maps[7, [0, 64, 128], [0, 100, 256]],
        rtol=1e-5,
        atol=1e-6,
    )
    gx, gy = np.meshgrid(xs, ys)
    border = (gx < 100) | (gx > 3995) | (gy < 100) | (gy > 1947)
    centre = (np.abs(gx - 2048) < 800) & (np.abs(gy - 1024) < 400)
    for b in bands:
        p = maps[b]
        assert p[border].mean() > 1.5 * max(p[centre].mean(), 0.01), b
        assert 0.05 < p.max() < 1.0  # up to tens of per cent of the sky
        assert p.min() > -0.1
    # the camera intervention changes the pattern; bands differ
    for b in range(40):
        assert np.abs(maps[b] - maps[b + 40]).max() > 0.03
        assert np.abs(maps[b] - maps[(b + 1) % 40]).max() > 0.01
    # evaluated per pixel: a stamp at the left edge carries the gradient
    s = SyntheticSky(**CLEAN).sample(
        1, 60, np.array([NB685]), np.array([[30.0, 1024.0]]), np.array([90.0]),
        np.random.default_rng(0),
    )
    m = s.sky_model[0]
    assert m[:, 0].mean() > m[:, -1].mean() * 1.01
    assert np.ptp(m[:, 30]) < 0.01 * m.mean()  # no gradient along y mid-CCD-height
    expected = sky.sky_level(np.array([NB685]), np.array([[30.0, 1024.0]]), np.array([90.0]))
    assert m[29:31, 29:31].mean() == pytest.approx(expected[0], rel=2e-3)


def test_cosmic_ray_rate():
    rate = 10.0  # events per 1e4 pixels per 90 s
    sky = SyntheticSky(**{**CLEAN, "cosmic_rate": rate})
    img, model = sky.render_ccd(NB685, 90.0, np.random.default_rng(5), shape=(1024, 2048))
    assert img.shape == model.shape == (1024, 2048)
    sigma = np.sqrt(model + 25.0)
    hits = img - model > 8 * sigma
    _, n_found = ndimage.label(hits, structure=np.ones((3, 3)))
    expected = rate * 1e-4 * img.size
    assert abs(n_found / expected - 1) < 0.15
    # tracks are present: some events light many pixels, most light 1-3
    labels, _ = ndimage.label(hits, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert np.mean(sizes <= 3) > 0.5 and sizes.max() >= 10
    # the rate scales with the exposure time
    img2, model2 = sky.render_ccd(NB685, 30.0, np.random.default_rng(6), shape=(1024, 2048))
    _, n2 = ndimage.label(img2 - model2 > 8 * np.sqrt(model2 + 25.0), structure=np.ones((3, 3)))
    assert abs(n2 / (expected / 3) - 1) < 0.3


def test_cosmic_ray_flags_match_pixels():
    sky = SyntheticSky(**{**CLEAN, "cosmic_rate": 3.0})
    b, xy, t = _request(600)
    s = sky.sample(600, 60, b, xy, t, np.random.default_rng(9))
    flagged = (s.artefacts & Artefact.COSMIC_RAY) > 0
    # about 1 - exp(-rate * area) of the stamps are hit (tracks from outside add a few)
    assert 0.5 < flagged.mean() < 0.85
    excess = (s.pixels - s.sky_model) / s.sky_sigma[:, None, None]
    outlier = (excess > 8).reshape(600, -1).any(axis=1)
    assert not outlier[~flagged].any()
    assert outlier[flagged].mean() > 0.95
    core = (s.artefacts & Artefact.COSMIC_RAY_CORE) > 0
    core_out = (excess[:, 25:35, 25:35] > 8).reshape(600, -1).any(axis=1)
    assert not core_out[~core].any()
    assert core.sum() > 5 and core_out[core].mean() > 0.9


def test_defects_and_saturated_stars():
    sky = SyntheticSky(
        cosmic_rate=0.0, hot_pixel_fraction=2e-4, bad_columns_per_ccd=60.0,
        saturated_stars_per_ccd=300.0,
    )
    b, xy, t = _request(300)
    s = sky.sample(300, 60, b, xy, t, np.random.default_rng(10))
    for bit in (Artefact.HOT_PIXEL, Artefact.BAD_COLUMN, Artefact.SATURATED_STAR,
                Artefact.SATURATED_CORE, Artefact.DEFECT_CORE):
        assert ((s.artefacts & bit) > 0).any(), bit.name
    assert s.pixels.max() <= sky.saturation
    sat = np.isclose(s.pixels, sky.saturation)
    has_sat = sat.reshape(300, -1).any(axis=1)
    assert np.all((s.artefacts[has_sat] & Artefact.SATURATED_STAR) > 0)
    core = (s.artefacts & Artefact.SATURATED_CORE) > 0
    assert np.all(sat[core][:, 25:35, 25:35].reshape(core.sum(), -1).any(axis=1))
    # untouched stamps stay clean
    clean = s.artefacts == 0
    assert clean.sum() > 10
    assert (np.abs(s.pixels[clean] - s.sky_model[clean]) < 7 * s.sky_sigma[clean, None, None]).all()


def test_saturated_star_has_flat_core_and_bleed_trail():
    sky = SyntheticSky(cosmic_rate=0.0, hot_pixel_fraction=0.0, bad_columns_per_ccd=0.0,
                       saturated_stars_per_ccd=80.0)
    img, _ = sky.render_ccd(NB685, 90.0, np.random.default_rng(11), shape=(400, 400))
    sat = img >= sky.saturation
    labels, n = ndimage.label(sat)
    assert n >= 1
    # bleed trails run along columns: saturated regions are taller than wide
    tall = 0
    for sl in ndimage.find_objects(labels):
        height, width = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        tall += height > width
    assert tall >= 1


def test_render_ccd_full_frame_defaults():
    sky = SyntheticSky()
    img, model = sky.render_ccd(band_index("NB455", 1), 70.0, np.random.default_rng(12))
    assert img.shape == CCD_SHAPE and img.dtype == np.float32
    assert np.all(np.isfinite(img))
    # edges are brighter than the centre
    assert model[:, :20].mean() > model[900:1100, 1900:2100].mean()


def test_synthetic_bad_input():
    sky = SyntheticSky()
    b, xy, t = _request(3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="band_idx"):
        sky.sample(3, 60, np.array([0, 80, 1]), xy, t, rng)
    with pytest.raises(ValueError, match="band_idx"):
        sky.sample(3, 60, np.array([0.5, 1, 2]), xy, t, rng)
    with pytest.raises(ValueError, match="ccd_xy"):
        sky.sample(3, 60, b, xy[:, :1], t, rng)
    with pytest.raises(ValueError, match="ccd_xy"):
        sky.sample(3, 60, b, xy + [5000.0, 0.0], t, rng)
    with pytest.raises(ValueError, match="exposure_time"):
        sky.sample(3, 60, b, xy, -t, rng)
    with pytest.raises(ValueError, match="size"):
        sky.sample(3, 0, b, xy, t, rng)
    with pytest.raises(ValueError, match="n must"):
        sky.sample(-1, 60, b, xy, t, rng)
    with pytest.raises(ValueError, match="rng"):
        sky.sample(3, 60, b, xy, t, 42)
    with pytest.raises(ValueError, match="shape"):
        sky.render_ccd(0, 90.0, rng, shape=(5000, 10))
    with pytest.raises(ValueError, match="read_noise"):
        SyntheticSky(read_noise=-1.0)
    with pytest.raises(ValueError, match="cosmic_charge"):
        SyntheticSky(cosmic_charge=(500.0, 100.0))


# ---------------------------------------------------------------- RealImageBackground
@pytest.fixture(scope="module")
def kids_r():
    """A 1200 x 1200 region of the KiDS r image (read through the compressed-HDU section)."""
    path = KIDS / "r.fits"
    if not path.is_file():
        pytest.skip("../shared/data/kids is not available")
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = np.array(hdul[1].section[700:1900, 700:1900])
    return RealImageBackground(data)


def test_real_reads_compressed_fits(tmp_path):
    """A tile-compressed FITS file: the image HDU (1) is found without being named."""
    from astropy.io import fits

    rng = np.random.default_rng(17)
    data = rng.normal(0.0, 2e-12, (256, 256)).astype(np.float32)
    path = tmp_path / "compressed.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    for hdu in (None, 1):
        bg = RealImageBackground([path], hdu=hdu)
        s = bg.sample(5, 40, np.full(5, NB685), np.full((5, 2), 900.0), np.full(5, 90.0), rng)
        np.testing.assert_allclose(robust_sigma(s.pixels), s.sky_sigma, rtol=0.02)
    with pytest.raises(ValueError, match="no HDU"):
        RealImageBackground([path], hdu=5)
    with pytest.raises(ValueError, match="holds no data"):
        RealImageBackground([path], hdu=0)


def test_real_cutouts_have_requested_noise(kids_r):
    n = 300
    rng = np.random.default_rng(13)
    b = rng.integers(0, 80, n)
    xy = rng.uniform([0, 0], CCD_SIZE, (n, 2))
    t = rng.uniform(60.0, 130.0, n)
    s = kids_r.sample(n, 60, b, xy, t, rng)
    assert s.pixels.shape == (n, 60, 60) and s.pixels.dtype == np.float32
    assert np.all(np.isfinite(s.pixels))
    level = kids_r.sky.sky_level(b, xy, t)
    np.testing.assert_allclose(s.sky_sigma, np.sqrt(level + kids_r.sky.read_noise**2), rtol=1e-5)
    ratio = robust_sigma(s.pixels) / s.sky_sigma
    assert np.all(np.abs(ratio - 1) < 0.03)
    # the sky is added back; sky_model = level + smooth local background
    # (the background map is smooth on 64-pixel scales: cutouts inside large halos sit
    # above it)
    resid_median = np.median(s.pixels - s.sky_model, axis=(1, 2)) / s.sky_sigma
    assert abs(np.median(resid_median)) < 0.1
    assert np.mean(np.abs(resid_median) < 0.5) > 0.9
    assert np.allclose(np.median(s.sky_model, axis=(1, 2)), level, atol=0.0, rtol=0.05)
    # real content: some cutouts hold bright sources (neighbours)
    peak = (s.pixels - s.sky_model).max(axis=(1, 2)) / s.sky_sigma
    assert (peak > 20).mean() > 0.1
    assert s.artefacts.sum() == 0


def test_real_deterministic(kids_r):
    b, xy, t = _request(20)
    a1 = kids_r.sample(20, 40, b, xy, t, np.random.default_rng(1))
    a2 = kids_r.sample(20, 40, b, xy, t, np.random.default_rng(1))
    a3 = kids_r.sample(20, 40, b, xy, t, np.random.default_rng(2))
    assert _same(a1, a2)
    assert not np.array_equal(a1.pixels, a3.pixels)


def test_real_rejects_empty_regions_and_borders():
    rng = np.random.default_rng(14)
    image = rng.normal(0.0, 1e-3, (300, 300)).astype(np.float32)
    image[:, :150] = np.nan  # no data on the left half
    image[200:, :] = 0.0  # and a zero band at the top
    bg = RealImageBackground(image, border=10, augment=False)
    j0, i0 = bg._positions(bg.images[0], 500, 30, rng)
    assert i0.min() >= 150 and j0.max() + 30 <= 200 and j0.min() >= 10
    assert i0.max() + 30 <= 290
    b, xy, t = _request(50)
    s = bg.sample(50, 30, b, xy, t, rng)
    assert np.all(np.isfinite(s.pixels))
    ratio = robust_sigma(s.pixels) / s.sky_sigma
    assert np.all(np.abs(ratio - 1) < 0.03)
    # a stamp larger than the valid region cannot be placed
    with pytest.raises(ValueError, match="invalid"):
        bg.sample(2, 150, b[:2], xy[:2], t[:2], rng)


def test_real_wavelength_choice():
    rng = np.random.default_rng(15)
    blue = rng.normal(0.0, 1.0, (200, 200))
    red = rng.normal(0.0, 1.0, (200, 200)) + 100.0 * (np.arange(200) / 200.0)[None, :]
    bg = RealImageBackground([blue, red], wavelengths=[4800.0, 7600.0], augment=False)
    b = np.array([band_index("NB455"), band_index("NB845", 1)])
    s = bg.sample(2, 30, b, np.full((2, 2), 1000.0), np.full(2, 90.0), rng)
    # the red image carries a gradient along x (scaled to electrons), the blue one does not
    grad = np.diff(s.sky_model.mean(axis=1), axis=1).mean(axis=1) / s.sky_sigma
    assert abs(grad[0]) < 0.05 and grad[1] > 0.3


def test_real_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        RealImageBackground([])
    with pytest.raises(ValueError, match="2-D"):
        RealImageBackground(np.zeros(100))
    with pytest.raises(ValueError, match="NaN, infinite or zero"):
        RealImageBackground(np.zeros((100, 100)))
    with pytest.raises(ValueError, match="no such file"):
        RealImageBackground(tmp_path / "missing.fits")
    bad = tmp_path / "bad.fits"
    bad.write_text("not a FITS file")
    with pytest.raises(ValueError, match="cannot read"):
        RealImageBackground(bad)
    with pytest.raises(ValueError, match="wavelengths"):
        RealImageBackground(np.random.default_rng(0).normal(size=(100, 100)), wavelengths=[1, 2])
    small = RealImageBackground(np.random.default_rng(0).normal(size=(80, 80)), border=20)
    with pytest.raises(ValueError, match="too small"):
        small.sample(1, 60, np.array([0]), np.zeros((1, 2)), np.array([90.0]),
                     np.random.default_rng(0))


# ---------------------------------------------------------------- CompositeBackground
def test_composite_mixes_sources():
    sky_a = SyntheticSky(**CLEAN)
    sky_b = SyntheticSky(**{**CLEAN, "sky_rate_685": 20.0})  # 10 x brighter: easy to tell apart
    mix = CompositeBackground([sky_a, sky_b], weights=[0.3, 0.7])
    b, xy, t = _request(400)
    s = mix.sample(400, 20, b, xy, t, np.random.default_rng(16))
    assert s.source is not None and s.source.shape == (400,)
    assert abs(s.source.mean() - 0.7) < 0.08
    bright = s.sky_model.mean(axis=(1, 2)) > 1000.0
    np.testing.assert_array_equal(bright, s.source == 1)
    s2 = mix.sample(400, 20, b, xy, t, np.random.default_rng(16))
    assert _same(s, s2) and np.array_equal(s.source, s2.source)
    only_a = CompositeBackground([sky_a, sky_b], weights=[1.0, 0.0])
    assert np.all(only_a.sample(50, 20, b[:50], xy[:50], t[:50], np.random.default_rng(0)).source
                  == 0)


def test_composite_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        CompositeBackground([])
    with pytest.raises(ValueError, match="sample"):
        CompositeBackground([object()])
    with pytest.raises(ValueError, match="weights"):
        CompositeBackground([SyntheticSky()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="weights"):
        CompositeBackground([SyntheticSky(), SyntheticSky()], weights=[0.0, 0.0])
