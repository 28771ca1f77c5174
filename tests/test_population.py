"""Tests of the TEAHUPOO galaxy population (lumos.population)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from lumos import population as pop
from lumos.bands import PAUS_BANDS, band_response
from lumos.spectra import template_dir


@pytest.fixture(scope="module")
def sample() -> pop.GalaxyPopulation:
    return pop.sample_population(4000, np.random.default_rng(7))


def test_same_seed_same_population():
    a = pop.Population(seed=3).sample(50)
    b = pop.Population(seed=3).sample(50)
    c = pop.Population(seed=4).sample(50)
    for name in ("r50", "n", "q", "pa", "i_mag", "z", "template_weights", "flux_e_per_s"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.r50, c.r50)


def test_record_fields_and_ranges(sample):
    n = len(sample)
    assert sample.flux_e_per_s.shape == (n, 40)
    assert sample.bands == tuple(PAUS_BANDS)
    assert sample.r50.min() >= 0.05 and sample.r50.max() <= 5.0
    assert sample.n.min() >= 0.3 and sample.n.max() <= 6.2
    assert sample.q.min() >= 0.05 and sample.q.max() <= 1.0
    assert sample.pa.min() >= 0.0 and sample.pa.max() < 180.0
    assert sample.i_mag.min() >= 17.0 and sample.i_mag.max() <= 23.0
    assert sample.z.min() >= 0.01 and sample.z.max() <= 1.2
    np.testing.assert_allclose(sample.template_weights.sum(axis=1), 1.0)
    assert sample.flux_e_per_s.min() >= 0.0 and sample.flux_e_per_s.max() <= 1000.0
    assert np.all(np.isfinite(sample.flux_e_per_s))
    sub = sample[:10]
    assert len(sub) == 10 and sub.flux_e_per_s.shape == (10, 40)


def test_magnitude_distribution_follows_slope(sample):
    # dN/dm ~ 10**(0.15 m) on [17, 23]: P(m < 19) = (10**0.3 - 1) / (10**0.9 - 1)
    expected = (10**0.3 - 1) / (10**0.9 - 1)
    assert abs(np.mean(sample.i_mag < 19) - expected) < 0.025
    flat = pop.sample_i_mag(4000, np.random.default_rng(1), (17, 23), 0.0)
    assert abs(np.mean(flat < 19) - 1 / 3) < 0.03


def test_band_flux_distributions_differ(sample):
    flux = sample.flux_e_per_s
    medians = np.median(flux, axis=0)
    assert medians[-1] > 2.5 * medians[0]  # galaxies are redder than flat in f_nu
    assert len(np.unique(np.round(medians, 3))) == 40
    assert ks_2samp(flux[:, 0], flux[:, -1]).pvalue < 1e-10
    assert ks_2samp(flux[:, 10], flux[:, 30]).pvalue < 1e-6


def test_fluxes_match_galsim_photometry():
    galsim = pytest.importorskip("galsim")
    wave = np.arange(4000.0, 9301.0, 1.0)

    def bandpass(resp):
        table = galsim.LookupTable(wave, resp, interpolant="linear")
        return galsim.Bandpass(table, wave_type="Angstrom").withZeropoint("AB")

    i_bp = bandpass(pop.i_band_response(wave))
    path = template_dir() / "CWW_Sbc_ext.sed"
    z, i_mag = 0.4, 20.5
    sed = galsim.SED(str(path), wave_type="Ang", flux_type="flambda").atRedshift(z)
    sed = sed.withMagnitude(i_mag, i_bp)
    weights = np.array([[0.0, 1.0, 0.0, 0.0]])
    for name in ("NB455", "NB685", "NB845"):
        m_ab = sed.calculateMagnitude(bandpass(band_response(name, wave)))
        expected = 10 ** (-0.4 * (m_ab - 24.5))
        got = pop.galaxy_band_fluxes(np.array([i_mag]), np.array([z]), weights, None, [name])
        np.testing.assert_allclose(got[0, 0], expected, rtol=0.01)


def test_emission_lines_brighten_the_band_holding_halpha():
    z = 6850.0 / 6562.8 - 1.0  # H-alpha at the centre of NB685
    weights = np.array([[0.0, 0.0, 0.0, 1.0]])  # Im template
    args = (np.array([21.0]), np.array([z]), weights)
    bands = ["NB675", "NB685", "NB695"]
    plain = pop.galaxy_band_fluxes(*args, None, bands)[0]
    lines = pop.galaxy_band_fluxes(*args, np.array([1.0]), bands)[0]
    assert lines[1] / plain[1] > 1.2 * lines[0] / plain[0]
    assert lines[1] > lines[0] and lines[1] > lines[2]


def test_hot_stars_are_bluer_than_cool_stars():
    flux = pop.star_band_fluxes(np.array([20.0, 20.0]), np.array([4000.0, 7000.0]))
    colour = flux[:, 0] / flux[:, -1]
    assert colour[1] > colour[0]
    stars = pop.sample_stars(20, np.random.default_rng(0))
    assert stars.flux_e_per_s.shape == (20, 40)


def test_early_types_follow_high_sersic_index():
    rng = np.random.default_rng(0)
    w_disk = pop.sample_template_weights(np.full(2000, 1.0), rng)
    w_bulge = pop.sample_template_weights(np.full(2000, 4.0), rng)
    types = np.arange(4.0)
    assert (w_bulge @ types).mean() < (w_disk @ types).mean() - 0.8


def test_shapes_marginals_close_to_cosmos(shared_data):
    path = shared_data / "cosmos" / "real_galaxy_23.5_500_fits.fits"
    if not path.is_file():
        pytest.skip("COSMOS catalogue not available")
    from astropy.io import fits

    with fits.open(path) as hdul:
        table = hdul[1].data
        sersic = np.asarray(table["sersicfit"], dtype=float)
        mag = np.asarray(table["mag_auto"], dtype=float)
    q = np.clip(sersic[:, 3], 0.05, 1.0)
    r50 = np.clip(0.03 * sersic[:, 1] * np.sqrt(sersic[:, 3]), 0.05, 5.0)
    n = np.clip(sersic[:, 2], 0.3, 6.2)
    r2, n2, q2, _ = pop.sample_shapes(np.repeat(mag, 10), np.random.default_rng(0), (0.005, 1.5))
    for ref, sim in ((r50, r2), (n, n2), (q, q2)):
        assert ks_2samp(ref, sim).statistic < 0.08
    assert abs(np.median(r2) / np.median(r50) - 1) < 0.1


def test_bad_input_raises_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-negative"):
        pop.sample_population(-1, rng)
    with pytest.raises(ValueError, match="unknown band"):
        pop.sample_population(2, rng, bands=["NB999"])
    with pytest.raises(ValueError, match="mag_range"):
        pop.PopulationConfig(mag_range=(23.0, 17.0))
    with pytest.raises(ValueError, match="redshift"):
        pop.galaxy_band_fluxes(np.array([20.0]), np.array([3.0]), np.array([[1.0, 0, 0, 0]]))


def test_two_component_galaxies_keep_the_catalogue_half_light_radius():
    from lumos.bulgedisk import bulge_disk_half_light_radius, two_component_galaxies

    rng = np.random.default_rng(4)
    r50 = rng.uniform(0.1, 1.5, 500)
    n = rng.uniform(0.5, 6.0, 500)
    q = rng.uniform(0.1, 1.0, 500)
    comp = two_component_galaxies(r50, n, q, np.random.default_rng(5))
    bt = comp["bulge_fraction"]
    assert np.all((bt >= 0.05) & (bt <= 0.85))
    # more bulge for more concentrated catalogue profiles
    assert np.corrcoef(n, bt)[0, 1] > 0.5
    ratio = comp["r50_bulge"] / comp["r50_disk"]
    assert np.all((ratio >= 0.2) & (ratio <= 0.6))
    hlr = comp["r50_disk"] * bulge_disk_half_light_radius(bt, ratio)
    np.testing.assert_allclose(hlr, r50, rtol=1e-9)
    # a pure disk has its own half-light radius
    np.testing.assert_allclose(bulge_disk_half_light_radius(np.zeros(1), np.ones(1) * 0.3), 1.0,
                               rtol=1e-9)  # fmt: skip
    q_mix = bt * comp["q_bulge"] + (1 - bt) * comp["q_disk"]
    inside = (comp["q_disk"] > 0.1) & (comp["q_disk"] < 1.0)  # not clipped
    np.testing.assert_allclose(q_mix[inside], q[inside], rtol=1e-9)
