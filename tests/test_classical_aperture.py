"""Forced elliptical aperture photometry: exact overlaps, the 62.5% aperture, flux and flags."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from galsim_toysim import gaussian_profiles, simulate_cutouts
from photutils.aperture import EllipticalAperture, aperture_photometry

from lumos.classical import aperture_photometry as lumos_aperture
from lumos.classical import aperture_semi_major
from lumos.classical.geometry import aperture_sum
from lumos.flags import Flag
from lumos.instrument import PIXEL_SCALE


def _sim(n=40, seed=1, size=100, **kw):
    return simulate_cutouts(n, seed=seed, n_profiles=6, size=size, renderer="gaussian", **kw)


def test_exact_sums_match_sep_and_photutils(rng):
    image = rng.normal(10.0, 3.0, (120, 130))
    image[40:80, 50:53] += 40.0  # structure across the aperture edges
    x = rng.uniform(30, 100, 20)
    y = rng.uniform(30, 90, 20)
    a = rng.uniform(2, 15, 20)
    b = a * rng.uniform(0.2, 1.0, 20)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, 20)
    ours, area = aperture_sum(image, x, y, a, b, theta)
    ref, _, _ = sep.sum_ellipse(image, x, y, a, b, theta, r=1.0, subpix=0)
    np.testing.assert_allclose(ours, ref, rtol=1e-7)
    np.testing.assert_allclose(area, np.pi * a * b, rtol=1e-9)
    for k in range(20):
        ap = EllipticalAperture((x[k], y[k]), a[k], b[k], theta=theta[k])
        tab = aperture_photometry(image, ap, method="exact")
        assert ours[k] == pytest.approx(float(tab["aperture_sum"][0]), rel=1e-7)


def test_semi_major_encloses_the_fraction():
    c = _sim(12).cutouts
    a = aperture_semi_major(c, fraction=0.625, tol=1e-7)
    assert np.all(np.isfinite(a)) and np.all(a > 1)
    xc = (c.size - 1) / 2 + c.offset[:, 0]
    yc = (c.size - 1) / 2 + c.offset[:, 1]
    for k in range(len(c)):
        ap = EllipticalAperture((xc[k], yc[k]), a[k], a[k] * c.q[k], theta=np.deg2rad(c.pa[k]))
        enclosed = float(aperture_photometry(c.profile[k], ap, method="exact")["aperture_sum"][0])
        assert enclosed == pytest.approx(0.625, abs=2e-7)


def test_semi_major_of_a_round_gaussian():
    # circular Gaussian of sigma s: 62.5% of the light within s * sqrt(-2 ln 0.375)
    sigma_pix = 5.0
    r50 = sigma_pix * PIXEL_SCALE * 1.1774100225154747
    prof = gaussian_profiles(
        np.array([r50]),
        np.array([1.0]),
        np.array([0.0]),
        np.zeros((1, 2)),
        psf_fwhm=1e-6,
        size=100,
        oversample=5,
    )
    c = simulate_cutouts(
        1,
        profiles=(
            {"r50": [r50], "n": [0.5], "q": [1.0], "pa": [0.0], "offset": np.zeros((1, 2))},
            prof,
        ),
    ).cutouts
    a = aperture_semi_major(c)[0]
    # pixel integration broadens by 1/12 pixel^2
    expected = np.sqrt(sigma_pix**2 + 1 / 12) * np.sqrt(-2 * np.log(1 - 0.625))
    assert a == pytest.approx(expected, rel=2e-3)


def test_noiseless_flux_is_exact():
    sim = _sim(20, read_noise=0.0)
    c = sim.cutouts
    truth = c.truth
    # replace the noisy pixels by the expectation plus a tiny jitter (sigma clip needs spread)
    jitter = np.random.default_rng(0).normal(0, 1e-3, c.pixels.shape)
    c.pixels = (truth[:, None, None] * c.profile + 190.0 + jitter).astype(np.float64)
    out = lumos_aperture(c)
    np.testing.assert_allclose(out["flux"], truth, rtol=5e-5)
    np.testing.assert_allclose(out["background"], 190.0, atol=1e-3)
    # noise-free sky: only the source Poisson term remains, sqrt(F sum(w^2 p)) / 0.625 with
    # sum(w^2 p) a little below the enclosed 0.625 (partial edge pixels)
    ratio = out["flux_err"] / np.sqrt(truth)
    assert np.all(ratio <= np.sqrt(1 / 0.625) * (1 + 1e-4))
    assert np.all(ratio > 1.1)
    assert np.all(out["flags"] == 0)


def test_error_terms_for_pure_sky():
    # an empty sky: no source term; the error is the sky noise in the aperture plus the
    # background-level term, and the scatter of the fluxes must match it
    sim = _sim(300, seed=4, mag_range=(40.0, 40.1))
    out = lumos_aperture(sim.cutouts)
    pull = out["flux"] / out["flux_err"]
    assert abs(np.mean(pull)) < 0.2
    assert np.std(pull) == pytest.approx(1.0, abs=0.1)


def test_flags_for_invalid_pixels():
    sim = _sim(4, seed=2)
    c = sim.cutouts
    centre = (c.size - 1) // 2
    c.valid[0, centre, centre] = False  # in the aperture
    c.pixels[0, centre, centre] = 0.0
    c.valid[1, :, : c.size // 2 + 5] = False  # more than half of the annulus
    c.pixels[1, :, : c.size // 2 + 5] = 0.0
    c.valid[2, :, :3] = False  # a little of the annulus: no flag
    out = lumos_aperture(c)
    assert out["flags"][0] & int(Flag.MASKED_CORE)
    assert out["flags"][1] & int(Flag.EDGE)
    assert not out["flags"][1] & int(Flag.FAILED)
    assert out["flags"][2] == 0 and out["flags"][3] == 0
    assert np.isfinite(out["flux"]).all()


def test_background_failure_and_profile_failure():
    sim = _sim(3, seed=2)
    c = sim.cutouts
    r = np.hypot(*(np.indices((c.size, c.size)) - (c.size - 1) / 2))
    c.valid[0, r > 25] = False  # no annulus at all
    c.profile[1] *= 0.5  # never reaches 62.5% of a unit total
    out = lumos_aperture(c)
    assert out["flags"][0] & int(Flag.FAILED) and np.isnan(out["flux"][0])
    assert out["flags"][1] & int(Flag.BAD_PROFILE) and np.isnan(out["flux"][1])
    assert out["flags"][2] == 0 and np.isfinite(out["flux"][2])


def test_fraction_validation():
    c = _sim(2).cutouts
    with pytest.raises(ValueError, match="fraction"):
        aperture_semi_major(c, fraction=1.5)
