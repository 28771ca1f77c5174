"""Optimal weighted pixel sum: the Cramer-Rao bound, the oracle reaching it, the annulus mode."""

from __future__ import annotations

import numpy as np
import pytest
from galsim_toysim import draw_profiles, magnitude_to_electrons, simulate_cutouts

from lumos.classical import ContextCutouts, cramer_rao_sigma, weighted_photometry
from lumos.flags import Flag


def test_cramer_rao_closed_form():
    # a flat profile over M pixels: sigma^2 = M * V with V = F / M + b + RN^2
    m, flux, sky, rn = 50, 2000.0, 190.0, 5.0
    prof = np.zeros((20, 20))
    prof.ravel()[:m] = 1.0 / m
    expected = np.sqrt(m * (flux / m + sky + rn**2))
    assert float(cramer_rao_sigma(prof, flux, sky, rn)) == pytest.approx(expected, rel=1e-12)
    # gain: image units of 1/g electrons; the same noise expressed in ADU
    g = 2.0
    adu = cramer_rao_sigma(prof, flux / g, sky / g, rn, gain=g)
    assert float(adu) == pytest.approx(expected / g, rel=1e-12)
    # batched, with per-row inputs and a per-pixel background
    batch = cramer_rao_sigma(np.stack([prof, prof]), [flux, 0.0], np.full((2, 20, 20), sky), rn)
    assert batch.shape == (2,)
    assert batch[1] == pytest.approx(np.sqrt(m * (sky + rn**2)), rel=1e-12)
    with pytest.raises(ValueError, match="flux"):
        cramer_rao_sigma(np.stack([prof, prof]), np.ones(3), sky, rn)


def test_oracle_reaches_the_cramer_rao_bound():
    # one galaxy, thousands of noise realisations: the oracle's scatter is the bound
    rng = np.random.default_rng(2024)
    size, n_real = 48, 3000
    prof = draw_profiles([0.5], [1.5], [0.6], [30.0], np.array([[0.2, -0.3]]), size=size)[0]
    flux = float(magnitude_to_electrons(21.5))
    sky, rn = 190.0, 5.0
    mean = flux * np.clip(prof, 0, None) + sky
    pixels = rng.poisson(mean, (n_real, size, size)) + rng.normal(0, rn, (n_real, size, size))
    cut = ContextCutouts(
        pixels=pixels,
        valid=np.ones(pixels.shape, dtype=bool),
        offset=np.tile([0.2, -0.3], (n_real, 1)),
        r50=0.5,
        n=1.5,
        q=0.6,
        pa=30.0,
        profile=np.broadcast_to(prof, pixels.shape),
        read_noise=rn,
        truth=np.full(n_real, flux),
        true_background=sky,
    )
    out = weighted_photometry(cut, background="oracle")
    crb = float(cramer_rao_sigma(prof, flux, sky, rn))
    np.testing.assert_allclose(out["flux_err"], crb, rtol=1e-9)
    resid = out["flux"] - flux
    assert abs(resid.mean()) < 3 * crb / np.sqrt(n_real)
    assert resid.std() / crb == pytest.approx(1.0, abs=0.04)


def test_oracle_inputs():
    sim = simulate_cutouts(20, seed=3, n_profiles=4, renderer="gaussian", size=64)
    c = sim.cutouts
    scalar = weighted_photometry(c, background="oracle")
    as_map = weighted_photometry(
        c, background="oracle", true_background=np.full(c.pixels.shape, 190.0)
    )
    np.testing.assert_allclose(scalar["flux"], as_map["flux"], rtol=1e-12)
    # without the true flux the weights use the sky only: a little noisier, never better
    c.truth = None
    sky_only = weighted_photometry(c, background="oracle")
    assert np.all(np.isfinite(sky_only["flux"]))
    assert np.all(sky_only["flux_err"] >= scalar["flux_err"] * (1 - 0.02))
    with pytest.raises(ValueError, match="true_background"):
        weighted_photometry(c, background="oracle", true_background=np.ones(3))
    with pytest.raises(ValueError, match="background"):
        weighted_photometry(c, background="median")


def test_annulus_mode_unbiased_with_right_errors():
    sim = simulate_cutouts(600, seed=11, n_profiles=8, renderer="gaussian", mag_range=(19, 22))
    c = sim.cutouts
    out = weighted_photometry(c)
    assert not np.any(out["flags"] & int(Flag.FAILED))
    pull = (out["flux"] - c.truth) / out["flux_err"]
    assert abs(np.mean(pull)) < 0.15
    assert np.std(pull) == pytest.approx(1.0, abs=0.08)
    # close to the bound of the true profile, sky and flux (the background estimate and
    # the finite region cost a little)
    crb = cramer_rao_sigma(c.profile, c.truth, 190.0, 5.0)
    assert 1.0 <= np.median(out["flux_err"] / crb) < 1.05
    # the sky-only weights are slightly worse for bright sources, never better
    bright = np.flatnonzero(sim.i_mag < 20)
    plain = weighted_photometry(c[bright], source_variance=False)
    assert np.median(plain["flux_err"] / out["flux_err"][bright]) >= 1.0
