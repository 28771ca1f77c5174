"""Tests of lumos.bulgedisk: bulge + disk shapes and their single-Sersic fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumos import bulgedisk as bd
from lumos.profiles import SersicRenderer
from lumos.psf import GaussianPSF


@pytest.fixture(scope="module")
def grid():
    renderer = SersicRenderer(bd._FIT_SIZE, bd._FIT_PIXEL, dtype=torch.float64)
    return renderer, GaussianPSF(bd._FIT_PSF_PIXELS * bd._FIT_PIXEL)


def test_fit_recovers_an_exact_single_sersic(grid):
    renderer, psf = grid
    r50 = np.array([0.8, 1.2, 0.5])
    n = np.array([1.0, 2.5, 4.0])
    q = np.array([0.5, 0.8, 0.3])
    pa = np.array([30.0, -60.0, 10.0])
    fit = bd.fit_single_sersic(renderer.render(r50, n, q, pa, psf), renderer, psf)
    np.testing.assert_allclose(fit["r50"], r50, rtol=1e-3)
    np.testing.assert_allclose(fit["n"], n, rtol=1e-3)
    np.testing.assert_allclose(fit["q"], q, atol=1e-3)
    np.testing.assert_allclose(fit["pa"], pa, atol=0.1)
    assert np.all(fit["cost"] < 1e-6)


def test_fit_of_a_pure_disk_and_of_a_bulge_dominated_galaxy():
    rng = np.random.default_rng(3)
    shapes = bd.draw_bulge_disk_shapes(2, rng)
    shapes["bulge_fraction"] = np.array([0.0, 0.8])
    shapes["q_bulge"] = np.array([0.9, 0.9])
    shapes["q_disk"] = np.array([0.6, 0.9])
    shapes["r50_bulge"] = np.array([0.3, 0.3])
    shapes["pa_bulge"] = np.array([0.0, 0.0])
    bank = _bank_of(shapes)
    assert bank.n_fit[0] == pytest.approx(1.0, rel=1e-3)  # a disk fits itself
    assert bank.q_fit[0] == pytest.approx(0.6, abs=1e-3)
    assert bank.n_fit[1] > 2.5  # a bulge-dominated galaxy fits with a high index
    # relative radii: the disk's radius over the fitted radius
    assert bank.r50_disk[0] == pytest.approx(1.0, rel=1e-3)
    assert bank.r50_disk[1] > 1.0


def _bank_of(shapes):
    renderer = SersicRenderer(bd._FIT_SIZE, bd._FIT_PIXEL, dtype=torch.float64)
    psf = GaussianPSF(bd._FIT_PSF_PIXELS * bd._FIT_PIXEL)
    fit = bd.fit_single_sersic(bd._render_two(renderer, psf, shapes), renderer, psf)
    return bd._relative_to_fit(shapes, fit)


def test_shipped_bank_is_build_bank_4000_seed_7():
    shipped = bd.load_bank()
    assert len(shipped) == 4000
    head = bd.build_bank(12, seed=7)  # the shapes of the first rows do not depend on the size
    # the fits converge to ~1e-3 (their path depends on the batch they are fitted in)
    for name in ("bulge_fraction", "r50_bulge", "q_bulge", "pa_bulge", "r50_disk", "q_disk",
                 "n_fit", "q_fit"):  # fmt: skip
        np.testing.assert_allclose(getattr(shipped, name)[:12], getattr(head, name),
                                   rtol=1e-2, atol=1e-2, err_msg=name)  # fmt: skip


def test_shapes_follow_their_documented_distributions():
    s = bd.draw_bulge_disk_shapes(20000, np.random.default_rng(1))
    assert np.median(s["bulge_fraction"]) == pytest.approx(0.15, abs=0.02)
    assert s["r50_bulge"].min() >= 0.1 and s["r50_bulge"].max() <= 1.0
    assert s["q_disk"].min() >= 0.1 and s["q_bulge"].min() >= 0.4
    assert np.all(np.abs(s["pa_bulge"]) <= 90.0 + 15 * 8)


def test_describe_bank_places_entries_behind_the_descriptions():
    bank = bd.load_bank()
    rng = np.random.default_rng(2)
    r50 = np.array([0.4, 1.0, 2.0])
    n = np.array([1.0, 2.0, 4.0])
    q = np.array([0.3, 0.7, 0.9])
    pa = np.array([10.0, 80.0, -45.0])
    out = bd.describe_bank(r50, n, q, pa, rng, bank)
    # the catalogue's index and axis ratio are fits close to the targets
    assert np.all(np.abs(np.log(out["n"] / n)) < 0.25)
    assert np.all(np.abs(out["q"] - q) < 0.1)
    # components scale with the radius and turn with the position angle
    assert np.all(out["r50_disk"] > 0) and np.all(out["r50_bulge"] > 0)
    assert np.all(np.abs(out["pa_disk"]) <= 90.0)
    empty = bd.describe_bank(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), rng, bank)
    assert all(v.size == 0 for v in empty.values())


def test_fit_mode_simulation_describes_galaxies_by_their_fit():
    from lumos.simulate import SimulationConfig, Simulator

    cfg = SimulationConfig(two_component_fraction=1.0, two_component_model="fit")
    _, ex = Simulator(cfg, seed=4).sample_with_context(32, context_size=60)
    bank = bd.load_bank()
    # every galaxy is a bulge + disk whose catalogue entry (no errors) is a fit from the bank
    assert np.all(np.isin(np.round(ex.n_catalogue, 9), np.round(bank.n_fit, 9)))
    np.testing.assert_array_equal(ex.n_catalogue, ex.n)
    # its light is not the single Sersic of its description, but close to it
    diff = np.abs(ex.profile_true - ex.profile_catalogue).sum(axis=(1, 2))
    assert np.median(diff) > 1e-3 and diff.max() > 0.02 and np.median(diff) < 0.3
    with pytest.raises(ValueError, match="two_component_model"):
        SimulationConfig(two_component_model="spiral")


def test_pairs_observe_the_same_bulge_disk_galaxies_behind_their_fit():
    """Both exposures of a pair show one bulge + disk galaxy; the profile channel is its
    single-Sersic fit, so without noise the pixels are not truth x profile, and the
    galaxy light (pixels / truth) is the same on the sky in both exposures."""
    from lumos.pairs import PairSimulation, simulate_pairs
    from lumos.simulate import SimulationConfig
    from lumos.sky.flat import FlatSky

    base = dict(shot_noise="none", chunk_size=8, close_neighbour_fraction=0.0,
                random_neighbours=0.0, psf_fwhm_range=(0.9, 0.9), psf_beta_range=(3.0, 3.0))
    cfg = PairSimulation(SimulationConfig(two_component_fraction=1.0, two_component_model="fit",
                                          **base))  # fmt: skip
    pairs = simulate_pairs(6, seed=3, config=cfg, background=FlatSky(0.0, 0.0))
    for side in (pairs.first, pairs.second):
        light = side.pixels / side.truth[:, None, None]
        resid = (light - side.profile).abs().sum(dim=(1, 2))
        assert float(resid.max()) > 1e-3  # the galaxy is not its catalogue profile
        np.testing.assert_allclose(light.sum(dim=(1, 2)).numpy(), 1.0, atol=0.05)
    plain = simulate_pairs(6, seed=3, config=PairSimulation(SimulationConfig(**base)),
                           background=FlatSky(0.0, 0.0))  # fmt: skip
    light = plain.first.pixels / plain.first.truth[:, None, None]
    assert float((light - plain.first.profile).abs().max()) < 1e-4
