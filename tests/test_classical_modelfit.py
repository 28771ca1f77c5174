"""Sersic amplitude fitting (Eq. 3): the vectorised solver against Nelder-Mead, derivatives."""

from __future__ import annotations

import numpy as np
import pytest
from galsim_toysim import simulate_cutouts

from lumos.classical import fit_amplitude, fit_amplitude_nelder_mead, modelfit_photometry
from lumos.classical.modelfit import _gradient, _objective
from lumos.flags import Flag


def _rows(rng, m=40, npix=150, flux_scale=300.0):
    """Random fitting problems: a Gaussian-ish profile, sky variance and Poisson-like data."""
    r = rng.uniform(0, 6, (m, npix))
    p = np.exp(-0.5 * (r / rng.uniform(1.5, 3, (m, 1))) ** 2)
    p /= p.sum(axis=1, keepdims=True) * rng.uniform(1.0, 1.3, (m, 1))
    s = rng.uniform(150, 250, m)
    gain = rng.uniform(0.8, 2.0, m)
    flux = flux_scale * np.exp(rng.uniform(-2, 4, m))
    flux[:5] = 0.0  # pure sky: the fit may go negative
    var = s[:, None] + flux[:, None] * p / gain[:, None]
    d = flux[:, None] * p + rng.normal(0, 1, (m, npix)) * np.sqrt(var)
    return d, p, s, gain


@pytest.mark.parametrize("objective", ["chi2", "loglike"])
def test_newton_matches_nelder_mead(rng, objective):
    d, p, s, g = _rows(rng)
    a, h, conv = fit_amplitude(d, p, s, g, objective)
    assert conv.all()
    ref = fit_amplitude_nelder_mead(d, p, s, g, objective, xatol=1e-8)
    sigma = np.sqrt(2.0 / h)
    np.testing.assert_array_less(np.abs(a - ref), 1e-5 * sigma)
    # and it is a minimum: the gradient vanishes
    grad, _ = _gradient(a, d, p, s, 1.0 / g, objective)
    np.testing.assert_array_less(np.abs(grad) * sigma, 1e-4)


@pytest.mark.parametrize("objective", ["chi2", "loglike"])
def test_derivatives_match_finite_differences(rng, objective):
    d, p, s, g = _rows(rng, m=10)
    a = np.abs(np.sum(p * d, axis=1) / np.sum(p * p, axis=1)) + 10.0
    k = 1.0 / g
    eps = 1e-3 * (np.abs(a) + 1)
    f = lambda x: _objective(x, d, p, s, k, objective)  # noqa: E731
    g_num = (f(a + eps) - f(a - eps)) / (2 * eps)
    h_num = (f(a + eps) - 2 * f(a) + f(a - eps)) / eps**2
    g_an, h_an = _gradient(a, d, p, s, k, objective)
    np.testing.assert_allclose(g_an, g_num, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_an, h_num, rtol=1e-3)


def test_unusable_rows_do_not_stop_the_batch(rng):
    d, p, s, g = _rows(rng, m=6)
    p[1] = 0.0  # no model
    s[2] = np.nan  # no variance
    d[3, 0] = np.nan
    a, h, conv = fit_amplitude(d, p, s, g)
    assert not conv[[1, 2, 3]].any() and np.isnan(a[[1, 2, 3]]).all()
    assert conv[[0, 4, 5]].all() and np.isfinite(a[[0, 4, 5]]).all()
    with pytest.raises(ValueError, match="objective"):
        fit_amplitude(d, p, s, g, objective="chi")


def test_modelfit_photometry_solvers_agree():
    sim = simulate_cutouts(40, seed=7, n_profiles=6, renderer="gaussian", mag_range=(19, 23))
    newton = modelfit_photometry(sim.cutouts)
    nm = modelfit_photometry(sim.cutouts, solver="nelder-mead")
    np.testing.assert_array_less(np.abs(newton["flux"] - nm["flux"]), 1e-4 * newton["flux_err"])
    np.testing.assert_allclose(newton["flux_err"], nm["flux_err"], rtol=1e-4)
    assert np.all(newton["flags"] == 0)
    assert np.all(newton["n_fit_pixels"] > 40)
    # the minimum chi2 of a correct model is about the number of pixels
    ratio = newton["chi2"] / newton["n_fit_pixels"]
    assert 0.8 < np.median(ratio) < 1.2


def test_chi2_bias_and_loglike_correction():
    # Eq. 3's variance depends on A, so its minimum sits about (fit pixels)/2 electrons high
    # for faint sources; the Gaussian log-likelihood removes that
    sim = simulate_cutouts(400, seed=8, n_profiles=6, renderer="gaussian", mag_range=(22.5, 23))
    chi2 = modelfit_photometry(sim.cutouts, objective="chi2")
    ll = modelfit_photometry(sim.cutouts, objective="loglike")
    truth = sim.cutouts.truth
    err_mean = np.std(ll["flux"] - truth) / np.sqrt(len(truth))
    assert abs(np.mean(ll["flux"] - truth)) < 3 * err_mean
    shift = np.mean(chi2["flux"] - ll["flux"])
    assert shift > 3 * err_mean
    assert shift < 0.2 * np.mean(truth)


def test_modelfit_option_validation():
    sim = simulate_cutouts(3, seed=1, n_profiles=2, renderer="gaussian")
    with pytest.raises(ValueError, match="solver"):
        modelfit_photometry(sim.cutouts, solver="lbfgs")
    with pytest.raises(ValueError, match="sky_variance"):
        modelfit_photometry(sim.cutouts, sky_variance="guess")
    out = modelfit_photometry(sim.cutouts, sky_variance="annulus")
    assert np.isfinite(out["flux"]).all() and not (out["flags"] & int(Flag.FAILED)).any()


def test_sky_subtracted_images_use_the_measured_variance():
    sim = simulate_cutouts(200, seed=9, n_profiles=6, renderer="gaussian", mag_range=(19, 22))
    c = sim.cutouts
    raw = modelfit_photometry(c, objective="loglike")
    c.pixels = c.pixels - np.float32(190.0)  # as if the sky had been subtracted
    sub = modelfit_photometry(c, objective="loglike")
    # b + RN^2 would be ~25 e-^2 instead of ~215: the model variance is replaced
    np.testing.assert_array_less(np.abs(sub["flux"] - raw["flux"]), 0.2 * raw["flux_err"])
    pull = (sub["flux"] - c.truth) / sub["flux_err"]
    assert np.std(pull) == pytest.approx(1.0, abs=0.15)


def test_start_exactly_at_the_minimum(rng):
    # data equal to the background: the first guess (A = 0) is already the minimum
    _, p, s, g = _rows(rng, m=4)
    a, h, conv = fit_amplitude(np.zeros_like(p), p, s, g)
    assert conv.all() and np.all(a == 0.0) and np.all(h > 0)
