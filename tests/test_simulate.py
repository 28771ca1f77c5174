"""Tests of the TEAHUPOO simulator (lumos.simulate)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from lumos import observe
from lumos.bands import get_band
from lumos.instrument import CCD_HEIGHT, CCD_WIDTH, PIXEL_SCALE
from lumos.simulate import (
    CatalogueErrors,
    FlatSky,
    SimulationConfig,
    Simulator,
    read_attrs,
    read_extras,
    read_hdf5,
    simulate_to_file,
    write_hdf5,
)
from lumos.stamps import StampBatch


def _renderer_works() -> bool:
    """True when lumos.profiles / lumos.psf import and render (else use the stand-in)."""
    if importlib.util.find_spec("lumos.profiles") is None:
        return False
    try:
        image = observe.default_renderer(60, PIXEL_SCALE).render(
            [0.3], [1.0], [0.7], [10.0], observe.moffat_psf([0.9], [3.0])
        )
    except Exception:  # noqa: BLE001 - renderer not ready: fall back to the stand-in
        return False
    return tuple(image.shape) == (1, 60, 60)


HAVE_RENDERER = _renderer_works()


class _GalSimPSF:
    def __init__(self, fwhm, beta):
        self.fwhm, self.beta = fwhm, beta


class _GalSimRenderer:
    """Stand-in with the SersicRenderer API, used only while lumos.profiles is absent."""

    def __init__(self, size=60, pixel_scale=PIXEL_SCALE):
        self.size, self.scale = size, pixel_scale

    def render(self, r50, n, q, pa, psf, offset=None, flux=None):
        import galsim

        out = np.zeros((len(r50), self.size, self.size))
        for i in range(len(r50)):
            gal = galsim.Sersic(float(n[i]), half_light_radius=float(r50[i]), flux=float(flux[i]))
            gal = gal.shear(q=float(q[i]), beta=float(pa[i]) * galsim.degrees)
            moffat = galsim.Moffat(beta=float(psf.beta[i]), fwhm=float(psf.fwhm[i]))
            image = galsim.Convolve(gal, moffat).drawImage(
                nx=self.size,
                ny=self.size,
                scale=self.scale,
                offset=(float(offset[i, 0]), float(offset[i, 1])),
            )
            out[i] = image.array
        return torch.from_numpy(out)


@pytest.fixture(autouse=True)
def renderer(monkeypatch):
    """Use lumos.profiles when present, else the GalSim stand-in."""
    if not HAVE_RENDERER:
        pytest.importorskip("galsim")
        monkeypatch.setattr(observe, "default_renderer", _GalSimRenderer)
        monkeypatch.setattr(observe, "moffat_psf", _GalSimPSF)


def _config(**kw) -> SimulationConfig:
    kw.setdefault("chunk_size", 64)
    return SimulationConfig(**kw)


def _sim(seed=1, **kw) -> Simulator:
    return Simulator(_config(**kw), seed=seed, background=FlatSky())


def test_batch_fields_shapes_and_dtypes():
    batch = _sim(chunk_size=8).sample(12)  # two chunks
    assert isinstance(batch, StampBatch) and len(batch) == 12
    assert batch.pixels.shape == (12, 60, 60) and batch.pixels.dtype == torch.float32
    assert batch.profile.shape == (12, 60, 60) and batch.profile.dtype == torch.float32
    assert batch.i_mag.dtype == torch.float32 and batch.i_mag.shape == (12,)
    assert batch.ccd_xy.shape == (12, 2) and batch.ccd_xy.dtype == torch.float32
    assert batch.band_idx.dtype == torch.int64 and batch.flags.dtype == torch.int64
    assert batch.offset.shape == (12, 2) and batch.truth.dtype == torch.float32
    assert 0 <= int(batch.band_idx.min()) and int(batch.band_idx.max()) < 80
    assert float(batch.offset.min()) >= -0.5 and float(batch.offset.max()) < 0.5
    assert float(batch.ccd_xy[:, 0].max()) < CCD_WIDTH
    assert float(batch.ccd_xy[:, 1].max()) < CCD_HEIGHT
    assert torch.all(batch.i_mag >= 17) and torch.all(batch.i_mag <= 23)
    assert torch.all(batch.truth > 0)
    assert torch.all(torch.isfinite(batch.pixels))
    # images are not sky-subtracted: the median pixel is the sky level
    assert float(batch.pixels.median()) > 100.0


def test_same_seed_identical_batches_and_streams():
    a, b, c = _sim(5).sample(10), _sim(5).sample(10), _sim(6).sample(10)
    for name in ("pixels", "profile", "i_mag", "ccd_xy", "band_idx", "offset", "truth"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.pixels, c.pixels)
    s1, s2 = _sim(5).stream(4), _sim(5).stream(4)
    first, second = next(s1), next(s1)
    assert torch.equal(first.pixels, next(s2).pixels)
    assert torch.equal(second.truth, next(s2).truth)
    assert not torch.equal(first.truth, second.truth)


def test_truth_within_flux_limits_and_bands_consistent():
    batch, extras = _sim(2).sample_with_context(16, 80)
    rate = extras.true_flux / extras.exposure_time
    assert np.all(rate >= 0) and np.all(rate <= 1000.0)
    np.testing.assert_allclose(batch.truth.numpy(), extras.true_flux, rtol=1e-6)
    idx = batch.band_idx.numpy()
    np.testing.assert_array_equal(idx % 40, extras.band)
    np.testing.assert_array_equal(idx // 40, extras.camera_state)
    exptime = [get_band(f"NB{455 + 10 * b}").exposure_time for b in extras.band]
    np.testing.assert_array_equal(extras.exposure_time, exptime)


def test_noiseless_galaxy_carries_the_true_flux():
    cfg = dict(close_neighbour_fraction=0.0, random_neighbours=0.0)
    batch, extras = _sim(3, **cfg).sample_with_context(16, 100)
    small = extras.r50 < 0.6
    assert small.sum() >= 4
    total = extras.galaxy.sum(axis=(1, 2))
    np.testing.assert_allclose(total[small], extras.true_flux[small], rtol=0.02)
    np.testing.assert_allclose(extras.profile_true.sum(axis=(1, 2))[small], 1.0, rtol=0.02)
    assert np.all(extras.neighbours == 0)
    # the stamp is the centre of the context cutout
    np.testing.assert_array_equal(batch.pixels.numpy(), extras.pixels[:, 20:80, 20:80])
    np.testing.assert_allclose(batch.profile.numpy(), extras.profile_catalogue[:, 20:80, 20:80])


def test_noise_is_sky_plus_shot_noise():
    batch, e = _sim(4).sample_with_context(16, 60)
    model = e.sky_model + e.galaxy + e.neighbours
    resid = (e.pixels - model) / np.sqrt(e.sky_sigma[:, None, None] ** 2 + e.galaxy + e.neighbours)
    assert abs(float(resid.mean())) < 0.02
    assert abs(float(resid.std()) - 1.0) < 0.03
    # shot noise: without it the residual is exactly the background noise
    _, quiet = _sim(4, shot_noise="none").sample_with_context(16, 60)
    resid0 = quiet.pixels - quiet.sky_model - quiet.galaxy - quiet.neighbours
    assert abs(float((resid0 / quiet.sky_sigma[:, None, None]).std()) - 1.0) < 0.03


def test_profile_channel_is_the_catalogue_profile():
    _, exact = _sim(7).sample_with_context(8, 60)
    np.testing.assert_array_equal(exact.profile_true, exact.profile_catalogue)
    np.testing.assert_array_equal(exact.r50, exact.r50_catalogue)
    noisy = _sim(7, catalogue_errors=CatalogueErrors.realistic())
    batch, e = noisy.sample_with_context(8, 60)
    assert not np.allclose(e.r50, e.r50_catalogue)
    assert not np.allclose(e.profile_true, e.profile_catalogue)
    np.testing.assert_allclose(batch.i_mag.numpy(), e.i_mag_catalogue, rtol=1e-6)
    np.testing.assert_allclose(batch.profile.numpy(), e.profile_catalogue, rtol=1e-6)


def test_close_neighbours_make_blends():
    _, e = _sim(8, close_neighbour_fraction=1.0, random_neighbours=0.0).sample_with_context(8, 60)
    assert e.close_neighbour.all()
    assert np.all(e.n_neighbours >= 1)
    assert np.all(e.neighbours.sum(axis=(1, 2)) > 0)
    _, lone = _sim(8, close_neighbour_fraction=0.0, random_neighbours=0.0).sample_with_context(
        4, 60
    )
    assert not lone.close_neighbour.any() and np.all(lone.neighbours == 0)


def test_hdf5_round_trip(tmp_path):
    batch, extras = _sim(9).sample_with_context(6, 70)
    path = write_hdf5(tmp_path / "s.h5", batch, extras, attrs={"seed": 9, "note": [1, 2]})
    back = read_hdf5(path)
    for name in ("pixels", "profile", "i_mag", "ccd_xy", "band_idx", "flags", "offset", "truth"):
        assert torch.equal(getattr(back, name), getattr(batch, name)), name
    ex = read_extras(path)
    np.testing.assert_array_equal(ex.pixels, extras.pixels)
    np.testing.assert_array_equal(ex.close_neighbour, extras.close_neighbour)
    attrs = read_attrs(path)
    assert attrs["seed"] == 9 and attrs["note"] == [1, 2] and attrs["format"] == "lumos-stamps"
    part = read_hdf5(path, 2, 4)
    assert torch.equal(part.pixels, batch.pixels[2:4])


def test_simulate_to_file_in_chunks(tmp_path):
    cfg = _config()
    out = simulate_to_file(
        10, tmp_path / "f.h5", seed=11, config=cfg, chunk_size=4, progress=False,
        background=FlatSky(), workers=1,
    )
    batch = read_hdf5(out)
    assert len(batch) == 10 and batch.truth is not None
    direct = Simulator(cfg, seed=11, background=FlatSky())
    first, _ = direct.file_chunk(4, 0)
    last, _ = direct.file_chunk(2, 2)
    assert torch.equal(batch.pixels[:4], first.pixels)
    assert torch.equal(batch.pixels[8:], last.pixels)
    attrs = read_attrs(out)
    assert SimulationConfig.from_dict(attrs["config"]) == cfg
    assert attrs["seed"] == 11
    with pytest.raises(ValueError, match="no simulation extras"):
        read_extras(out)


def test_default_background_runs():
    batch = Simulator(_config(), seed=0).sample(4)
    assert batch.pixels.shape == (4, 60, 60) and torch.all(torch.isfinite(batch.pixels))


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        _sim().sample(0)
    with pytest.raises(ValueError, match="context_size"):
        _sim().sample_with_context(2, 61)
    with pytest.raises(ValueError, match="stamp_size"):
        SimulationConfig(stamp_size=61)
    with pytest.raises(ValueError, match="psf_fwhm_range"):
        SimulationConfig(psf_fwhm_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="unknown band"):
        SimulationConfig(bands=("nope",))
    with pytest.raises(ValueError, match="catalogue error"):
        CatalogueErrors(r50_frac=-1)
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["a"] = np.zeros(2)
    with pytest.raises(ValueError, match="not a lumos stamp file"):
        read_hdf5(tmp_path / "x.h5")


def test_band_subset_and_camera_state():
    batch = _sim(12, bands=("NB685",), camera_state_prob=1.0).sample(6)
    np.testing.assert_array_equal(batch.band_idx.numpy(), np.full(6, 23 + 40))


def test_two_component_galaxies_behind_a_single_sersic_catalogue():
    from lumos.simulate import SimulationConfig, Simulator

    cfg = SimulationConfig(two_component_fraction=1.0, chunk_size=64)
    batch, extras = Simulator(cfg, seed=8).sample_with_context(64, context_size=100)
    true_sum = extras.profile_true.sum(axis=(1, 2))
    cat_sum = extras.profile_catalogue.sum(axis=(1, 2))
    # the same light in total (same half-light radius), distributed differently
    assert np.median(np.abs(true_sum - cat_sum)) < 0.03
    diff = np.abs(extras.profile_true - extras.profile_catalogue).max(axis=(1, 2))
    assert np.mean(diff > 1e-3 * extras.profile_true.max(axis=(1, 2))) > 0.9
    # the network sees the catalogue's profile
    lo = (100 - 60) // 2
    np.testing.assert_allclose(batch.profile.numpy(),
                               extras.profile_catalogue[:, lo : lo + 60, lo : lo + 60])  # fmt: skip
    with pytest.raises(ValueError, match="two_component_fraction"):
        SimulationConfig(two_component_fraction=1.5)


@pytest.mark.slow
def test_simulate_to_file_is_the_same_with_two_processes(tmp_path):
    cfg = _config()
    one = simulate_to_file(10, tmp_path / "a.h5", seed=5, config=cfg, chunk_size=4,
                           progress=False, background=FlatSky(), workers=1)  # fmt: skip
    two = simulate_to_file(10, tmp_path / "b.h5", seed=5, config=cfg, chunk_size=4,
                           progress=False, background=FlatSky(), workers=2)  # fmt: skip
    a, b = read_hdf5(one), read_hdf5(two)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.truth, b.truth)


def test_catalogue_errors_by_their_command_line_name():
    from lumos.simconfig import CatalogueErrors

    assert CatalogueErrors.named("none") == CatalogueErrors()
    assert not CatalogueErrors.named("none").enabled
    assert CatalogueErrors.named("realistic") == CatalogueErrors.realistic()
    with pytest.raises(ValueError, match="'none' or 'realistic'"):
        CatalogueErrors.named("exact")


def test_catalogue_position_errors_move_the_profile_channel_not_the_light():
    from lumos.simconfig import apply_catalogue_errors

    ones = np.ones(4000)
    exact = apply_catalogue_errors(CatalogueErrors(r50_frac=0.1), ones, ones, ones * 0.5,
                                   ones, ones * 20, ones, np.random.default_rng(1))
    assert np.all(exact["position_error"] == 0)
    moved = apply_catalogue_errors(CatalogueErrors(position_sigma=0.3), ones, ones, ones * 0.5,
                                   ones, ones * 20, ones, np.random.default_rng(1))
    assert moved["position_error"].shape == (4000, 2)
    assert np.std(moved["position_error"], axis=0) == pytest.approx([0.3, 0.3], rel=0.05)
    np.testing.assert_array_equal(moved["r50"], ones)  # only the position has an error

    def centroid(img):
        a = np.arange(img.shape[-1]) - (img.shape[-1] - 1) / 2
        w = img.sum(axis=(1, 2))
        return np.stack([(img.sum(axis=1) * a).sum(axis=1) / w,
                         (img.sum(axis=2) * a).sum(axis=1) / w], axis=1)

    sim = _sim(9, catalogue_errors=CatalogueErrors(position_sigma=0.5),
               close_neighbour_fraction=0.0, random_neighbours=0.0)
    batch, e = sim.sample_with_context(6, 60)
    shift = centroid(e.profile_catalogue) - centroid(e.profile_true)
    recorded = batch.offset.numpy() - centroid(e.profile_true)
    assert np.max(np.abs(shift)) > 0.2  # the profile channel sits off the light...
    np.testing.assert_allclose(shift, recorded, atol=0.05)  # ...where the stamp says
    np.testing.assert_allclose(batch.profile.numpy(), e.profile_catalogue, rtol=1e-6)


def test_field_catalogue_positions_carry_the_position_error():
    from lumos.field import simulate_field

    exact = simulate_field(n_galaxies=200, shape=(300, 400), seed=4)
    noisy = simulate_field(n_galaxies=200, shape=(300, 400), seed=4,
                           catalogue_errors=CatalogueErrors(position_sigma=0.4))
    np.testing.assert_array_equal(exact.image, noisy.image)  # the light is where it was
    dx = np.asarray(noisy.catalogue["x"]) - np.asarray(exact.catalogue["x"])
    dy = np.asarray(noisy.catalogue["y"]) - np.asarray(exact.catalogue["y"])
    assert np.std(dx) == pytest.approx(0.4, rel=0.25)
    assert np.std(dy) == pytest.approx(0.4, rel=0.25)
