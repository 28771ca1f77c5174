"""The one simulator: scene, observation step, and what the stamps of the simulator and of an
image cut by ``make_stamp_batch`` have in common."""

from __future__ import annotations

import hashlib

import numpy as np
from astropy.table import Table

from lumos.bands import get_band
from lumos.catalogue import read_catalogue
from lumos.imageio import ImageMeta
from lumos.instrument import PIXEL_SCALE
from lumos.measure import make_stamp_batch
from lumos.observe import default_renderer, moffat_psf, render, shot_noise, sum_by_host
from lumos.scene import SimulatedBands, draw_neighbours
from lumos.simulate import FlatSky, SimulationConfig, Simulator
from lumos.stamps import stamp_origin

FWHM, BETA = 0.9, 3.5


def _isolated_simulator(seed: int) -> Simulator:
    """Noiseless, sky-free stamps of isolated galaxies through one fixed Moffat PSF."""
    cfg = SimulationConfig(bands=("NB685",), psf_fwhm_range=(FWHM, FWHM),
                           psf_beta_range=(BETA, BETA), close_neighbour_fraction=0.0,
                           random_neighbours=0.0, shot_noise="none", chunk_size=16)  # fmt: skip
    return Simulator(cfg, seed=seed, background=FlatSky(sky_rate=0.0, read_noise=0.0))


def test_a_simulated_stamp_equals_the_same_galaxy_cut_from_an_image():
    """Stamp of the simulator == the galaxy rendered into an image, cut by make_stamp_batch:
    pixels, profile channel and offsets."""
    batch, ex = _isolated_simulator(5).sample_with_context(6, context_size=60)
    # keep galaxies small enough that a 128-pixel canvas holds all their light
    keep = np.flatnonzero(ex.r50 < 1.5)[:4]
    assert keep.size >= 2
    n = keep.size
    offset = batch.offset.numpy()[keep].astype(float)
    # the galaxies on an image, at integer pixel + the simulator's sub-pixel offset
    c = (60 - 1) / 2.0
    x = 80.0 + 160.0 * np.arange(n) + c + offset[:, 0]
    y = 90.0 + c + offset[:, 1]
    size = 128
    origin, canvas_offset = stamp_origin(x, y, size)
    flux = ex.true_flux[keep]
    stamps = render(default_renderer(size, PIXEL_SCALE), moffat_psf, ex.r50[keep], ex.n[keep],
                    ex.q[keep], ex.pa[keep], canvas_offset, flux, np.full(n, FWHM),
                    np.full(n, BETA))  # fmt: skip
    image = np.zeros((300, 160 * n + 100))
    for stamp, (i0, j0) in zip(stamps, origin, strict=True):
        image[j0 : j0 + size, i0 : i0 + size] += stamp
    cat = read_catalogue(Table({"id": np.arange(n), "x": x, "y": y, "r50": ex.r50[keep],
                                "sersic_n": ex.n[keep], "q": ex.q[keep], "pa": ex.pa[keep],
                                "i_mag": ex.i_mag[keep]}))  # fmt: skip
    meta = ImageMeta(band=get_band("NB685"), psf_fwhm=FWHM, psf_beta=BETA,
                     pixel_scale=PIXEL_SCALE, gain=1.0, read_noise=0.0)  # fmt: skip
    cut = make_stamp_batch(image.astype(np.float32), cat, meta)

    np.testing.assert_allclose(cut.offset.numpy(), batch.offset.numpy()[keep], atol=1e-6)
    sim_pixels = batch.pixels.numpy()[keep]
    peak = sim_pixels.max(axis=(1, 2), keepdims=True)
    # a 60-pixel and a 128-pixel canvas agree to float32 rounding (the renderer corrects the
    # wrap-around of its periodic canvas)
    assert np.abs(cut.pixels.numpy() - sim_pixels).max() < 1e-5 * peak.max()
    np.testing.assert_allclose(cut.pixels.numpy().sum(axis=(1, 2)), sim_pixels.sum(axis=(1, 2)),
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(cut.profile.numpy(), batch.profile.numpy()[keep], atol=1e-7)
    assert np.array_equal(cut.band_idx.numpy(), batch.band_idx.numpy()[keep])


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_training_stream_is_unchanged():
    """The stamps of a fixed seed are bit-identical to a recorded digest: the random streams
    of training data do not change."""
    b = Simulator(SimulationConfig(chunk_size=40), seed=7, background=FlatSky()).sample(70)
    got = _digest(*(getattr(b, k).numpy() for k in ("pixels", "profile", "i_mag", "ccd_xy",
                                                    "band_idx", "flags", "offset", "truth")))
    assert got == DIGEST_FLAT_SEED7


DIGEST_FLAT_SEED7 = "53bdd041b9fd3ff1"


def test_neighbours_on_the_sky_move_with_their_galaxy():
    cfg = SimulationConfig(close_neighbour_fraction=1.0, random_neighbours=2.0)
    bands = SimulatedBands()
    nb = draw_neighbours(cfg, 5, 60, bands, np.random.default_rng(1), on_sky=True)
    assert nb.on_galaxy.all() and len(nb) >= 5
    shift = np.full((5, 2), 0.25)
    np.testing.assert_allclose(nb.canvas_position(shift) - nb.canvas_position(0 * shift), 0.25)
    fixed = draw_neighbours(cfg, 5, 60, bands, np.random.default_rng(1))
    close = np.arange(len(fixed)) < 5  # the close neighbours come first
    assert fixed.on_galaxy[close].all() and not fixed.on_galaxy[~close].any()
    np.testing.assert_array_equal(fixed.canvas_position(shift)[~close], fixed.position[~close])
    flux = nb.flux(np.array([3, 3, 3, 3, 3]), np.full(5, 90.0))
    np.testing.assert_allclose(flux, nb.flux_e_per_s[:, 3] * 90.0)


def test_sum_by_host_and_shot_noise():
    images = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3)
    host = np.array([1, 0, 1, 1])
    out = sum_by_host(images, host, 3)
    np.testing.assert_array_equal(out[1], images[0] + images[2] + images[3])
    np.testing.assert_array_equal(out[2], 0.0)
    lam = np.full((2000,), 50.0, dtype=np.float32)
    for mode in ("poisson", "gaussian"):
        x = shot_noise(lam.copy(), mode, np.random.default_rng(0))
        assert x.dtype == np.float32 and abs(x.mean() - 50) < 1.0 and abs(x.var() - 50) < 6
    assert shot_noise(lam, "none", np.random.default_rng(0)) is lam


def test_pairs_observe_one_scene_twice():
    """Without noise, sky and neighbours, each exposure of a pair is truth x its profile, and
    both exposures carry the same galaxy (flux, band, catalogue magnitude)."""
    from lumos.pairs import PairSimulation, simulate_pairs

    cfg = PairSimulation(SimulationConfig(shot_noise="none", chunk_size=8,
                                          close_neighbour_fraction=0.0, random_neighbours=0.0))
    pairs = simulate_pairs(10, seed=3, config=cfg, background=FlatSky(0.0, 0.0))
    for side in (pairs.first, pairs.second):
        want = side.profile * side.truth[:, None, None]
        assert float((side.pixels - want).abs().max()) <= 1e-5 * float(want.max())
    for name in ("truth", "band_idx", "i_mag"):
        assert np.array_equal(getattr(pairs.first, name).numpy(),
                              getattr(pairs.second, name).numpy())
    assert not np.array_equal(pairs.first.offset.numpy(), pairs.second.offset.numpy())
    again = simulate_pairs(10, seed=3, config=cfg, background=FlatSky(0.0, 0.0))
    assert again.fingerprint() == pairs.fingerprint()
