"""Acceptance on GalSim simulations with known truth: bias and error calibration per magnitude.

Galaxies i = 18-23 (PAUS zero point, 90 s NB685: 10**(-0.4 (i - 24.5)) e-/s), Sersic * Moffat
(FWHM 0.85 arcsec, beta 3.5) drawn by GalSim, sky 190 e-/pixel, read noise 5 e-, Poisson noise.
Distinct shapes are shared by the galaxies to keep the drawing fast; every galaxy has its own
flux and noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from galsim_toysim import simulate_cutouts

from lumos.classical import measure_classical
from lumos.stats import sigma68

BINS = [(18, 19), (19, 20), (20, 21), (21, 22), (22, 23)]


@pytest.fixture(scope="module")
def sim():
    return simulate_cutouts(1500, seed=20240601, n_profiles=24, size=92)


@pytest.fixture(scope="module")
def results(sim):
    return {m: measure_classical(m, sim.cutouts) for m in ("aperture", "modelfit", "weighted")}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["aperture", "modelfit", "weighted"])
def test_errors_are_calibrated_in_every_bin(sim, results, method):
    out = results[method]
    truth = sim.cutouts.truth
    assert not np.any(out["flags"])
    pull = (out["flux"] - truth) / out["flux_err"]
    for lo, hi in BINS:
        sel = (sim.i_mag >= lo) & (sim.i_mag < hi)
        assert sel.sum() > 250
        s68 = sigma68(pull[sel])
        assert 0.9 <= s68 <= 1.1, (method, lo, s68)


@pytest.mark.slow
def test_aperture_unbiased_for_bright_galaxies(sim, results):
    out = results["aperture"]
    rel = (out["flux"] - sim.cutouts.truth) / sim.cutouts.truth
    for lo, hi in BINS[:3]:  # i < 21
        sel = (sim.i_mag >= lo) & (sim.i_mag < hi)
        assert abs(np.mean(rel[sel])) < 0.02, (lo, np.mean(rel[sel]))
        assert abs(np.median(rel[sel])) < 0.02, (lo, np.median(rel[sel]))


@pytest.mark.slow
def test_optimal_methods_beat_the_aperture(sim, results):
    # with the right profile, the weighted sum and the fit are more precise than the aperture
    truth = sim.cutouts.truth
    for lo, hi in BINS[2:]:
        sel = (sim.i_mag >= lo) & (sim.i_mag < hi)
        ap = sigma68((results["aperture"]["flux"][sel] - truth[sel]) / truth[sel])
        w = sigma68((results["weighted"]["flux"][sel] - truth[sel]) / truth[sel])
        assert w < ap
        assert (
            np.median(results["weighted"]["flux_err"][sel] / results["aperture"]["flux_err"][sel])
            < 0.95
        )
