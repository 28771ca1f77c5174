"""The uniform entry point of the classical methods, the input type and per-galaxy failures."""

from __future__ import annotations

import numpy as np
import pytest
from galsim_toysim import gaussian_profiles, simulate_cutouts

from lumos.classical import METHODS, ContextCutouts, measure_classical
from lumos.flags import Flag


def _sim(n: int = 60, seed: int = 3, size: int = 92):
    return simulate_cutouts(n, seed=seed, n_profiles=8, size=size, renderer="gaussian")


def test_methods_list():
    assert METHODS == ("aperture", "modelfit", "weighted", "weighted_oracle", "sep_auto")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_uniform_columns(method):
    sim = _sim()
    out = measure_classical(method, sim.cutouts)
    n = len(sim.cutouts)
    for key in ("flux", "flux_err", "flags"):
        assert key in out and out[key].shape == (n,)
    assert out["flux"].dtype == np.float64 and out["flags"].dtype == np.int64
    bright = sim.i_mag < 20
    ratio = out["flux"][bright] / sim.cutouts.truth[bright]
    # every method (even Kron's, which misses some light) is near the truth when bright
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    assert np.all(out["flux_err"][bright] > 0)
    assert np.all(out["flags"][bright] & int(Flag.FAILED) == 0)


@pytest.mark.parametrize("method", METHODS)
def test_bad_galaxies_fail_alone(method):
    sim = _sim(n=12)
    c = sim.cutouts
    c.profile[2] = np.nan  # unusable model profile
    c.q[3] = np.nan  # unusable shape
    c.valid[5] = False  # nothing valid at all
    c.pixels[5] = 0.0
    out = measure_classical(method, c)
    failed = (out["flags"] & int(Flag.FAILED)) != 0
    # the oracle needs no catalogue shape, sep neither shape nor model for a detected source
    expected = {"weighted_oracle": [2, 5], "sep_auto": [5]}.get(method, [2, 3, 5])
    assert failed[expected].all()
    assert np.all(np.isnan(out["flux"][failed])) and np.all(np.isnan(out["flux_err"][failed]))
    good = np.setdiff1d(np.arange(12), [2, 3, 5])
    assert not failed[good].any()
    assert np.isfinite(out["flux"][good]).all()


def test_input_flags_are_carried_over():
    sim = _sim(n=5)
    c = sim.cutouts
    c.flags[:] = 0
    c.flags[1] = int(Flag.MASKED)
    out = measure_classical("aperture", c)
    assert out["flags"][1] & int(Flag.MASKED)
    assert out["flags"][0] == 0


def test_empty_input():
    sim = _sim(n=3)
    out = measure_classical("aperture", sim.cutouts[np.zeros(3, dtype=bool)])
    assert out["flux"].shape == (0,)


def test_bad_method_and_input():
    sim = _sim(n=3)
    with pytest.raises(ValueError, match="unknown classical method"):
        measure_classical("psf", sim.cutouts)
    with pytest.raises(ValueError, match="unknown option"):
        measure_classical("aperture", sim.cutouts, fractoin=0.5)
    with pytest.raises(ValueError, match="unknown option"):
        measure_classical("weighted_oracle", sim.cutouts, background="annulus")
    # options reach the method
    half = measure_classical("aperture", sim.cutouts, fraction=0.5)
    assert np.all(half["aperture_a"] < measure_classical("aperture", sim.cutouts)["aperture_a"])
    with pytest.raises(ValueError, match="ContextCutouts"):
        measure_classical("aperture", sim.cutouts.pixels)
    c = sim.cutouts
    c.truth = None
    c.true_background = None
    with pytest.raises(ValueError, match="true_background"):
        measure_classical("weighted_oracle", c)


def test_small_cutouts_rejected_for_annulus():
    sim = _sim(n=3, size=64)
    with pytest.raises(ValueError, match="annulus"):
        measure_classical("aperture", sim.cutouts)
    # the oracle needs no annulus
    assert np.isfinite(measure_classical("weighted_oracle", sim.cutouts)["flux"]).all()


def test_context_cutouts_validation():
    z = np.zeros((2, 92, 92))
    base = dict(
        pixels=z, valid=z > -1, offset=np.zeros((2, 2)), r50=0.5, n=1.0, q=0.5, pa=0.0, profile=z
    )
    c = ContextCutouts(**base)
    assert len(c) == 2 and c.size == 92 and c.r50.shape == (2,) and c.flags.dtype == np.int64
    assert len(c[1]) == 1
    with pytest.raises(ValueError, match="pixels"):
        ContextCutouts(**{**base, "pixels": np.zeros((2, 92, 90))})
    with pytest.raises(ValueError, match="profile"):
        ContextCutouts(**{**base, "profile": np.zeros((2, 50, 50))})
    with pytest.raises(ValueError, match="offset"):
        ContextCutouts(**{**base, "offset": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="gain"):
        ContextCutouts(**{**base, "gain": 0.0})
    with pytest.raises(ValueError, match="r50"):
        ContextCutouts(**{**base, "r50": np.ones(5)})


def test_from_stamp_cut():
    from lumos.stamps import cut_stamps

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (300, 300))
    cut = cut_stamps(image, np.array([150.2, 10.0]), np.array([149.7, 150.0]), size=100)
    prof = gaussian_profiles(
        np.array([0.5, 0.5]), np.array([1.0, 1.0]), np.zeros(2), cut.offset, size=100
    )
    c = ContextCutouts.from_stamp_cut(cut, prof, 0.5, 1.0, 1.0, 0.0, gain=1.0, read_noise=5.0)
    out = measure_classical("aperture", c)
    assert out["flags"][1] & int(Flag.EDGE)  # from cut_stamps, and the annulus is cut
    assert abs(out["flux"][0]) < 5 * out["flux_err"][0]  # an empty sky: flux consistent with 0
