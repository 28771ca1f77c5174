"""Tests of LumosNet, its in-model normalisation, and the model files."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from conftest import S, noisy_stamp_batch, stamp_coordinates

from lumos.flags import Flag
from lumos.instrument import PIXEL_SCALE
from lumos.mixture import GaussianMixture
from lumos.model_io import (
    FORMAT_VERSION,
    ModelFileError,
    default_model_path,
    load_default_model,
    load_model,
    model_paths,
    save_model,
)
from lumos.network import LumosNet, NetworkConfig
from lumos.stamps import StampBatch


def synth_batch(n: int, seed: int, sky: float = 150.0, gradient: float = 0.0) -> StampBatch:
    """Gaussian galaxies on a flat (or tilted) sky with Gaussian noise; truth = flux."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    flux = 10 ** (2.5 + 2.0 * u(n))
    width = 1.5 + 1.5 * u(n)
    offset = u(n, 2) - 0.5
    a, dx, dy = stamp_coordinates(offset)
    prof = torch.exp(-0.5 * (dx**2 + dy**2) / width[:, None, None] ** 2)
    prof = prof / prof.sum(dim=(1, 2), keepdim=True)
    ramp = gradient * (a[None, None, :] / S)
    mean = sky * (1 + ramp) + flux[:, None, None] * prof
    return noisy_stamp_batch(mean, prof, flux, offset, g)


@pytest.fixture(scope="module")
def tiny() -> LumosNet:
    torch.manual_seed(0)
    return LumosNet(NetworkConfig.tiny()).eval()


@pytest.fixture(scope="module")
def batch() -> StampBatch:
    return synth_batch(24, seed=3)


def test_output_is_a_valid_mixture(tiny, batch):
    with torch.no_grad():
        mix = tiny(batch)
        raw = tiny.forward_raw(batch)
    assert isinstance(mix, GaussianMixture)
    assert mix.means.shape == (len(batch), 5) and mix.n_components == 5
    torch.testing.assert_close(mix.weights.sum(dim=1), torch.ones(len(batch)))
    floor = tiny.sigma_floor * raw.reference[:, None]
    assert bool((mix.sigmas >= floor * (1 - 1e-6)).all())
    assert bool((mix.sigmas > 0).all()) and bool(torch.isfinite(mix.means).all())
    # Mixture in flux units: the relative mixture times the reference flux.
    torch.testing.assert_close(mix.means, raw.means * raw.reference[:, None])
    # Truncated at zero exactly for the faint galaxies.
    assert torch.equal(mix.truncated, batch.i_mag > 20.5)


def test_untrained_model_starts_at_the_optimal_estimate(tiny, batch):
    with torch.no_grad():
        mean = tiny(batch).mean()
        pre = tiny.preprocess(batch)
    bright = batch.truth > 3000
    ratio = (mean / batch.truth)[bright]
    assert bool(((ratio > 0.8) & (ratio < 1.2)).all())
    torch.testing.assert_close(pre.optimal_flux[bright] / batch.truth[bright],
                               torch.ones(int(bright.sum())), atol=0.05, rtol=0)


def test_eval_is_deterministic_and_independent_of_the_batch(tiny, batch):
    with torch.no_grad():
        a = tiny(batch)
        b = tiny(batch)
        part = tiny(batch[5:12])
        perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(1))
        shuffled = tiny(batch[perm])
    assert torch.equal(a.means, b.means) and torch.equal(a.sigmas, b.sigmas)
    torch.testing.assert_close(part.means, a.means[5:12], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(shuffled.means, a.means[perm], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(shuffled.log_weights, a.log_weights[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", [0.01, 3.7, 250.0])
def test_scaling_the_image_units_scales_the_mixture(tiny, batch, c):
    scaled = batch.replace(pixels=batch.pixels * c, truth=batch.truth * c)
    with torch.no_grad():
        a = tiny(batch)
        b = tiny(scaled)
    torch.testing.assert_close(b.means, a.means * c, rtol=2e-4, atol=1e-4 * c)
    torch.testing.assert_close(b.sigmas, a.sigmas * c, rtol=2e-4, atol=1e-4 * c)
    torch.testing.assert_close(b.log_weights, a.log_weights, rtol=1e-4, atol=1e-4)


def test_background_level_is_removed_inside_the_model(tiny, batch):
    shifted = batch.replace(pixels=batch.pixels + 57.0)
    with torch.no_grad():
        a = tiny(batch)
        b = tiny(shifted)
        pa, pb = tiny.preprocess(batch), tiny.preprocess(shifted)
    torch.testing.assert_close(pb.background, pa.background + 57.0, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(b.means, a.means, rtol=1e-3, atol=0.05)


def test_robust_noise_estimate_survives_a_sky_gradient(tiny):
    empty = synth_batch(16, seed=5, sky=150.0, gradient=0.6)
    empty = empty.replace(pixels=empty.pixels - 0.0)
    # remove the galaxies: pure tilted sky + noise
    g = torch.Generator().manual_seed(9)
    a = torch.arange(S, dtype=torch.float32)
    sky = 150.0 * (1 + 0.6 * a[None, None, :] / S) * torch.ones(16, S, S)
    sigma = 13.0
    pixels = sky + sigma * torch.randn(16, S, S, generator=g)
    pre = tiny.preprocess(empty.replace(pixels=pixels))
    assert float(pre.noise.mean()) == pytest.approx(sigma, rel=0.06)
    assert bool(((pre.noise / sigma - 1).abs() < 0.15).all())


def test_padded_edge_stamp_and_bad_profile_stay_finite(tiny, batch):
    pixels = batch.pixels.clone()
    pixels[0, :, :25] = 0.0  # zero padding, as cut_stamps does at the image edge
    pixels[1] = 0.0  # nothing at all
    profile = batch.profile.clone()
    profile[2] = float("nan")
    odd = batch.replace(pixels=pixels, profile=profile)
    with torch.no_grad():
        mix = tiny(odd)
    assert bool(torch.isfinite(mix.means).all()) and bool(torch.isfinite(mix.sigmas).all())
    assert bool((mix.sigmas > 0).all())


def test_range_flags():
    config = NetworkConfig.tiny().replace(i_mag_range=(18.0, 22.5), band_indices=(3, 4, 45))
    model = LumosNet(config)
    b = synth_batch(6, seed=1)
    b = b.replace(
        i_mag=torch.tensor([17.5, 18.0, 20.0, 22.5, float("nan"), 20.0]),
        band_idx=torch.tensor([3, 4, 45, 3, 3, 7]),
    )
    flags = model.range_flags(b)
    assert flags.dtype == torch.int64
    expected = [1, 0, 0, 0, 0, 1]
    missing = [0, 0, 0, 0, 1, 0]  # a missing magnitude is BAD_MAGNITUDE, not out of range
    assert flags.tolist() == [e * int(Flag.OUT_OF_RANGE) + m * int(Flag.BAD_MAGNITUDE)
                              for e, m in zip(expected, missing, strict=True)]
    everything = LumosNet(NetworkConfig.tiny())
    b2 = b.replace(i_mag=torch.full((6,), 20.0), band_idx=torch.tensor([0, 79, 80, -1, 5, 6]))
    assert everything.range_flags(b2).tolist() == [0, 0, 32, 32, 0, 0]


def test_band_embedding_and_side_inputs_matter(tiny, batch):
    with torch.no_grad():
        a = tiny(batch)
        b = tiny(batch.replace(band_idx=(batch.band_idx + 1) % 80))
        c = tiny(batch.replace(i_mag=batch.i_mag + 1.0))
    assert not torch.allclose(a.means, b.means)
    assert not torch.allclose(a.means, c.means)


def test_config_round_trip_and_validation():
    for config in (NetworkConfig.default(), NetworkConfig.paper(), NetworkConfig.tiny()):
        data = json.loads(json.dumps(config.to_dict()))
        assert NetworkConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown network configuration keys: bogus"):
        NetworkConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="conv_kernels"):
        NetworkConfig(conv_kernels=(3, 3))
        LumosNet(NetworkConfig(conv_kernels=(3, 3)))
    with pytest.raises(ValueError, match="shrink"):
        LumosNet(NetworkConfig(conv_padding=(0, 0, 0, 0, 0), conv_kernels=(9, 9, 9, 9, 9)))
    with pytest.raises(ValueError, match="60x60"):
        LumosNet(NetworkConfig.tiny())(synth_batch(2, 0)[0:2].replace(
            pixels=torch.zeros(2, 40, 40), profile=torch.zeros(2, 40, 40)))


def test_paper_configuration_matches_the_published_design():
    from torch.utils.flop_counter import FlopCounterMode

    config = NetworkConfig.paper()
    assert config.conv_channels == (32, 64, 128, 64, 32)
    assert config.conv_kernels == (9, 7, 5, 3, 2)
    assert config.dense == (2000, 1000, 100)
    assert config.feature_size() == (32, 4)
    model = LumosNet(config).eval()
    assert model.embedding.weight.shape == (80, 10)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_raw(synth_batch(1, 0))
    flops = counter.get_total_flops()
    assert 0.35e9 < flops < 0.45e9


def test_save_load_round_trip(tmp_path, tiny, batch):
    tiny.metadata = {"note": "unit test", "epochs": 3}
    path = save_model(tiny, tmp_path / "m")
    assert path == tmp_path / "m.json"
    weights, desc = model_paths(tmp_path / "m")
    description = json.loads(desc.read_text())
    assert description["format_version"] == FORMAT_VERSION
    assert description["network_config"] == tiny.config.to_dict()
    assert description["normalisation"]["border_width"] == tiny.config.border_width
    assert description["training"] == {"note": "unit test", "epochs": 3}
    assert weights.read_bytes()[8:9] == b"{"  # safetensors header
    for spelling in ("m", "m.safetensors", "m.json"):
        loaded = load_model(tmp_path / spelling)
        assert not loaded.training
        assert loaded.metadata == {"note": "unit test", "epochs": 3}
        with torch.no_grad():
            a, b = tiny(batch), loaded(batch)
        assert torch.equal(a.means, b.means) and torch.equal(a.sigmas, b.sigmas)
        assert torch.equal(a.log_weights, b.log_weights)


def test_model_files_honour_the_umask_also_when_overwritten(tmp_path, tiny):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        for _ in range(2):  # new, then overwritten
            save_model(tiny, tmp_path / "m")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
            assert modes == {"m.json": 0o644, "m.safetensors": 0o644}
    finally:
        os.umask(previous)


def test_pickles_are_refused(tmp_path, tiny):
    pt = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), pt)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(pt)
    # A pickle disguised as safetensors, with a valid description next to it.
    save_model(tiny, tmp_path / "fake")
    (tmp_path / "fake.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(tmp_path / "fake")
    # torch.save's zip container under a .safetensors name
    save_model(tiny, tmp_path / "zipped")
    torch.save(tiny.state_dict(), tmp_path / "zipped.safetensors")
    with pytest.raises(ModelFileError, match="zip"):
        load_model(tmp_path / "zipped.safetensors")


def test_missing_config_wrong_version_and_tampering(tmp_path, tiny):
    save_model(tiny, tmp_path / "m")
    desc = tmp_path / "m.json"
    good = json.loads(desc.read_text())

    (tmp_path / "lonely.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="config"):
        load_model(tmp_path / "lonely.safetensors")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nothing")

    desc.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(tmp_path / "m")
    bad_config = {**good, "network_config": {**good["network_config"], "dense": [7]}}
    desc.write_text(json.dumps({**bad_config, "weights_sha256": None}))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(tmp_path / "m")
    desc.write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        load_model(tmp_path / "m")
    desc.write_text(json.dumps(good))
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(tmp_path / "m")
    # every message is a single line, and ModelFileError is a ValueError
    try:
        load_model(tmp_path / "m")
    except ValueError as exc:
        assert "\n" not in str(exc)


def test_default_model_path_and_clear_error():
    path = default_model_path()
    assert path.parent.name == "model" and path.parent.parent.name == "data"
    weights, _ = model_paths(path)
    if weights.is_file():
        assert isinstance(load_default_model(), LumosNet)
    else:
        with pytest.raises(ModelFileError, match="no pretrained lumos model"):
            load_default_model()


def test_predict_matches_forward_in_chunks(tiny, batch):
    with torch.no_grad():
        a = tiny(batch)
    b = tiny.predict(batch, chunk_size=7)
    torch.testing.assert_close(b.means, a.means, rtol=1e-5, atol=1e-4)
    assert b.truncated is not None and torch.equal(b.truncated, a.truncated)


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(1)
    model = LumosNet(NetworkConfig.tiny())
    raw = model.forward_raw(synth_batch(8, 2))
    (raw.means.sum() + raw.sigmas.sum() + raw.log_weights[:, 0].sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == [] or all("embedding" in n for n in missing)
    assert math.isfinite(float(sum(p.grad.abs().sum() for p in model.parameters()
                                   if p.grad is not None)))
    assert np.isfinite(model.n_parameters())


def test_sigma_scale_multiplies_component_sigmas_only():
    from lumos.network import LumosNet, NetworkConfig

    torch.manual_seed(3)
    base = LumosNet(NetworkConfig.tiny()).eval()
    scaled = LumosNet(NetworkConfig.tiny().replace(sigma_scale=0.8)).eval()
    scaled.load_state_dict(base.state_dict())
    batch = _toy_batch_for_sigma_scale()
    with torch.inference_mode():
        a, b = base(batch), scaled(batch)
    torch.testing.assert_close(b.sigmas, 0.8 * a.sigmas)
    torch.testing.assert_close(b.means, a.means)
    torch.testing.assert_close(b.weights, a.weights)
    with pytest.raises(ValueError, match="sigma_scale"):
        NetworkConfig.tiny().replace(sigma_scale=0.0).validate()


def _toy_batch_for_sigma_scale(n: int = 6):
    from lumos.stamps import StampBatch

    g = torch.Generator().manual_seed(5)
    yy, xx = torch.meshgrid(torch.arange(60.0), torch.arange(60.0), indexing="ij")
    profile = torch.exp(-((xx - 29.5) ** 2 + (yy - 29.5) ** 2) / 8.0)
    profile = (profile / profile.sum()).expand(n, 60, 60).clone()
    pixels = 100.0 + 5000.0 * profile + 10.0 * torch.randn(n, 60, 60, generator=g)
    return StampBatch(
        pixels=pixels.float(), profile=profile.float(), i_mag=torch.full((n,), 20.0),
        ccd_xy=torch.full((n, 2), 500.0), band_idx=torch.arange(n), flags=torch.zeros(n,
        dtype=torch.int64), offset=torch.zeros(n, 2),
    )  # fmt: skip


def test_a_random_bin_file_is_not_called_a_pickle(tmp_path, tiny):
    """The message says what the file is not, from its bytes, not from its name."""
    random_bin = tmp_path / "weights.bin"
    random_bin.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ModelFileError) as info:
        load_model(random_bin)
    message = str(info.value)
    assert "not a lumos model file" in message and "NAME.safetensors + NAME.json" in message
    assert "looks like" not in message and "is a pickle" not in message
    torch.save(tiny.state_dict(), tmp_path / "real.bin")  # a real PyTorch file still is one
    with pytest.raises(ModelFileError, match="is a zip file .*pickles are never loaded"):
        load_model(tmp_path / "real.bin")


def test_observing_ranges_come_from_the_training_simulation(tmp_path):
    from lumos.simulate import SimulationConfig

    model = LumosNet(NetworkConfig.tiny())
    assert model.observing_ranges() == {}
    assert model.observing_range_flags(10.0, 9.0, 1.0) == 0  # no metadata: no judgement
    sim = SimulationConfig(psf_fwhm_range=(0.7, 1.1), psf_beta_range=(3.0, 4.0),
                           pixel_scale=0.2)  # fmt: skip
    model.metadata = {"simulation_config": sim.to_dict()}
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    ranges = loaded.observing_ranges()
    assert ranges["psf_fwhm"] == (0.7, 1.1) and ranges["psf_beta"] == (3.0, 4.0)
    assert ranges["pixel_scale"] == pytest.approx((0.19, 0.21))
    out = int(Flag.OUT_OF_RANGE)
    assert loaded.observing_range_flags(0.7, 3.0, 0.2) == 0
    assert loaded.observing_range_flags(1.1, 4.0, 0.195) == 0
    assert loaded.observing_range_flags(1.2, 3.5, 0.2) == out
    assert loaded.observing_range_flags(0.9, 2.9, 0.2) == out
    assert loaded.observing_range_flags(0.9, 3.5, PIXEL_SCALE) == out
