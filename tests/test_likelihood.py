"""Likelihood models: no catalogue magnitude input, log-uniform training fluxes, weights."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lumos.loss import LIKELIHOOD_WEIGHT_MAX, RawForward, batch_loss, likelihood_weights
from lumos.network import LumosNet, NetworkConfig
from lumos.simulate import SimulationConfig, Simulator


def test_loguniform_fluxes_independent_of_magnitude():
    cfg = SimulationConfig(flux_prior="loguniform", flux_range=(1.0, 100.0), bands=("NB685",),
                           random_neighbours=0.0, close_neighbour_fraction=0.0)
    batch = Simulator(cfg, seed=3).sample(400)
    from lumos.bands import get_band

    rate = batch.truth.double().numpy() / get_band("NB685").exposure_time
    assert rate.min() >= 1.0 - 1e-6 and rate.max() <= 100.0 + 1e-4
    # log-uniform: the mean of log(rate) is the middle of the log range
    assert abs(np.log(rate).mean() - math.log(10.0)) < 0.15
    # independent of the catalogue magnitude
    r = np.corrcoef(np.log(rate), batch.i_mag.double().numpy())[0, 1]
    assert abs(r) < 0.15


def test_default_stream_unchanged_by_flux_prior_option():
    a = Simulator(SimulationConfig(), seed=5).sample(8)
    b = Simulator(SimulationConfig(flux_prior="population"), seed=5).sample(8)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.truth, b.truth)


@pytest.mark.parametrize("bad", [{"flux_prior": "flat"},
                                 {"flux_prior": "loguniform", "flux_range": (0.0, 1.0)},
                                 {"flux_range": (5.0, 1.0)},
                                 {"flux_prior": "asinh", "flux_range": (-1.0, 10.0)},
                                 {"flux_prior": "asinh", "flux_softening": 1.0,
                                  "flux_range": (-1.0, -0.5)},
                                 {"flux_softening": -1.0}])
def test_flux_prior_validation(bad):
    with pytest.raises(ValueError):
        SimulationConfig(**bad)


def test_population_fluxes_accept_a_likelihood_training_range():
    # calibration pairs draw population fluxes from a model trained down to zero flux
    cfg = SimulationConfig(flux_prior="asinh", flux_softening=1.5, flux_range=(-6.0, 1000.0))
    assert replace(cfg, flux_prior="population").flux_range == (-6.0, 1000.0)


def test_asinh_fluxes_reach_below_zero_and_negative_galaxies_remove_light():
    soft = 1.5
    cfg = SimulationConfig(flux_prior="asinh", flux_softening=soft, flux_range=(-6.0, 1000.0),
                           bands=("NB685",), random_neighbours=0.0, close_neighbour_fraction=0.0)
    from lumos.bands import get_band

    t = get_band("NB685").exposure_time
    batch, extras = Simulator(cfg, seed=4).sample_with_context(600, 60)
    rate = batch.truth.double().numpy() / t
    assert rate.min() >= -6.0 - 1e-4 and rate.max() <= 1000.0 * (1 + 1e-6)
    # u = asinh(f / s) is uniform: its mean is the middle of its range
    u = np.arcsinh(rate / soft)
    lo, hi = np.arcsinh(-6.0 / soft), np.arcsinh(1000.0 / soft)
    assert abs(u.mean() - (lo + hi) / 2) < 0.3
    assert 0.15 < (rate < 0).mean() < 0.3
    np.testing.assert_allclose(batch.truth_scale.numpy(), soft * t)
    # a negative flux subtracts its profile's light (the pixels hold sky + its signed light)
    galaxy_sum = extras.galaxy.sum(axis=(1, 2))
    neg = rate < -1.0
    assert neg.sum() > 20 and np.all(galaxy_sum[neg] < 0)
    # without shot noise, the same seed's pixels minus the galaxy do not depend on its flux
    quiet = dict(cfg.to_dict(), shot_noise="none")
    _, a = Simulator(SimulationConfig.from_dict(quiet), seed=5).sample_with_context(64, 60)
    positive = dict(quiet, flux_prior="loguniform", flux_range=(1.0, 1000.0))
    _, b = Simulator(SimulationConfig.from_dict(positive), seed=5).sample_with_context(64, 60)
    assert (a.true_flux < 0).any() and (b.true_flux > 0).all()
    np.testing.assert_allclose(a.pixels - a.galaxy, b.pixels - b.galaxy, atol=0.05)
    # the same seed draws the same stream; the default stream has truth_scale 0
    again = Simulator(cfg, seed=4).sample(50)
    assert torch.equal(again.truth, Simulator(cfg, seed=4).sample(50).truth)
    assert float(Simulator(SimulationConfig(), seed=4).sample(4).truth_scale.abs().max()) == 0


def test_softened_weights_and_loss_on_the_whole_line():
    truth = torch.tensor([-3.0, 0.0, 4.0, 30.0])
    ref = torch.full((4,), 10.0)
    scale = torch.full((4,), 4.0)
    w = likelihood_weights(truth, ref, scale)
    raw = torch.hypot(truth, scale) / ref
    assert torch.allclose(w, raw / raw.mean())
    # zero scale is the log-uniform weight
    assert torch.allclose(likelihood_weights(truth.abs(), ref, torch.zeros(4)),
                          likelihood_weights(truth.abs(), ref))
    # rows drawn below zero are fitted on the whole line: finite loss at negative truth
    torch.manual_seed(2)
    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True))
    cfg = SimulationConfig(flux_prior="asinh", flux_softening=1.5, flux_range=(-6.0, 1000.0))
    batch = Simulator(cfg, seed=12).sample(32)
    assert bool((batch.truth < 0).any())
    loss = batch_loss(RawForward(net), batch, likelihood=True)
    assert torch.isfinite(loss)
    loss.backward()


def test_likelihood_model_ignores_magnitude_and_never_truncates():
    torch.manual_seed(0)
    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True)).eval()
    batch = Simulator(SimulationConfig(), seed=7).sample(16)
    shifted = batch.replace(i_mag=batch.i_mag + 0.5)
    with torch.no_grad():
        a, b = net(batch), net(shifted)
    assert torch.equal(a.means, b.means) and torch.equal(a.sigmas, b.sigmas)
    assert not bool(a.truncated.any())


def test_posterior_model_uses_magnitude():
    torch.manual_seed(0)
    net = LumosNet(NetworkConfig.tiny()).eval()
    batch = Simulator(SimulationConfig(), seed=7).sample(16)
    shifted = batch.replace(i_mag=batch.i_mag + 0.5)
    with torch.no_grad():
        assert not torch.equal(net(batch).means, net(shifted).means)


def test_likelihood_weights():
    truth = torch.tensor([10.0, 20.0, 1.0, 1000.0, float("nan")])
    ref = torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0])
    w = likelihood_weights(truth, ref)
    raw = torch.tensor([1.0, 2.0, 0.1, LIKELIHOOD_WEIGHT_MAX, 0.0])
    assert torch.allclose(w, raw / raw.mean())
    assert float(w.mean()) == pytest.approx(1.0)


def test_likelihood_loss_is_weighted_and_finite():
    torch.manual_seed(1)
    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True))
    cfg = SimulationConfig(flux_prior="loguniform")
    batch = Simulator(cfg, seed=11).sample(32)
    loss = batch_loss(RawForward(net), batch, likelihood=True)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_lumos_calibrate_fits_sigma_scale_and_shared_error(tmp_path, capsys):
    from lumos.cli import main
    from lumos.model_io import load_model, save_model

    torch.manual_seed(2)
    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True))
    sim = SimulationConfig(flux_prior="loguniform", random_neighbours=0.0)
    save_model(net, tmp_path / "m", training={"simulation_config": sim.to_dict()})
    assert main(["calibrate", str(tmp_path / "m"), "--out", str(tmp_path / "c"), "--n", "200",
                 "--pairs", "100", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "sigma scale" in out and "shared error" in out
    cal = load_model(tmp_path / "c")
    assert cal.config.sigma_scale != 1.0 and cal.config.likelihood
    assert 0.0 <= cal.config.shared_error < 1.0
    # the default shared error is a curve of the relative likelihood width: a node per
    # width bin (six; those of median width above 1 give none)
    assert 1 <= len(cal.config.shared_error_widths) <= 6
    assert len(cal.config.shared_error_values) == len(cal.config.shared_error_widths)
    assert np.all(np.diff(cal.config.shared_error_widths) > 0)
    assert "calibration" in cal.metadata
    assert main(["calibrate", str(tmp_path / "m"), "--out", str(tmp_path / "k"), "--n", "200",
                 "--pairs", "100", "--seed", "5", "--shared-error", "constant"]) == 0
    const = load_model(tmp_path / "k")
    assert const.config.shared_error_widths == ()
    assert main(["calibrate", str(tmp_path / "m"), "--out", str(tmp_path / "t"), "--n", "200",
                 "--pairs", "200", "--seed", "5", "--shared-error", "curve-size"]) == 0
    assert "by profile half-light radius" in capsys.readouterr().out
    sized = load_model(tmp_path / "t").config
    assert sized.shared_error_widths  # the width curve, times the factors
    assert len(sized.shared_error_size_factors) == len(sized.shared_error_size_edges) + 1 >= 2
    assert const.config.shared_error == pytest.approx(cal.config.shared_error)
    # calibrating twice is refused with one line, unless asked to recalibrate
    assert main(["calibrate", str(tmp_path / "c"), "--out", str(tmp_path / "d")]) == 1
    assert "already calibrated" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--n", "200",
                 "--pairs", "100", "--seed", "5", "--recalibrate"]) == 0
    again = load_model(tmp_path / "r")
    assert again.config.sigma_scale == pytest.approx(cal.config.sigma_scale, rel=1e-9)
    assert again.config.shared_error_values == pytest.approx(cal.config.shared_error_values)
    assert "--recalibrate" in again.metadata["calibration"]["command"]
    assert again.metadata["calibration"]["previous"]["sigma_scale"] == cal.config.sigma_scale
    assert again.metadata["calibration"]["catalogue_errors"] == "as-trained"
    # calibrated for a catalogue with errors the training did not have: other numbers
    assert main(["calibrate", str(tmp_path / "m"), "--out", str(tmp_path / "e"), "--n", "200",
                 "--pairs", "100", "--seed", "5", "--catalogue-errors", "realistic"]) == 0
    other = load_model(tmp_path / "e")
    assert other.metadata["calibration"]["catalogue_errors"] == "realistic"
    assert "--catalogue-errors realistic" in other.metadata["calibration"]["command"]
    assert other.config.sigma_scale != pytest.approx(cal.config.sigma_scale, rel=1e-6)


def test_fluxes_beyond_the_training_range_are_out_of_range():
    from lumos.bands import get_band
    from lumos.flags import Flag
    from lumos.imageio import ImageMeta
    from lumos.measure import _flux_range_flag
    from lumos.mixture import GaussianMixture

    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True))
    meta = ImageMeta(band=get_band("NB685"), psf_fwhm=0.8, exposure_time=100.0)
    mix = GaussianMixture.from_arrays([[1.0], [1.0]], [[5e4], [2e5]], [[10.0], [10.0]])
    assert _flux_range_flag(net, mix, meta) == 0  # no training record: nothing to check
    sim = SimulationConfig(flux_prior="loguniform", flux_range=(0.2, 1000.0))
    net.metadata = {"simulation_config": sim.to_dict()}
    assert net.max_flux_rate() == 1000.0
    flags = _flux_range_flag(net, mix, meta)  # 1000 e-/s x 100 s = 1e5 e-
    assert list(flags) == [0, int(Flag.OUT_OF_RANGE)]


def test_train_start_resets_the_calibration_and_records_the_bulge_disk_model(tmp_path):
    import json

    from lumos.cli import main
    from lumos.model_io import save_model

    torch.manual_seed(4)
    cfg = NetworkConfig.tiny().replace(likelihood=True, sigma_scale=1.1, shared_error=0.04,
                                       shared_error_widths=(0.05, 0.1),
                                       shared_error_values=(0.02, 0.03))  # fmt: skip
    save_model(LumosNet(cfg), tmp_path / "base",
               training={"simulation_config": SimulationConfig().to_dict()})
    assert main(["train", "--start", str(tmp_path / "base"), "--out", str(tmp_path / "s"),
                 "--likelihood", "--two-component-fraction", "0.5",
                 "--two-component-model", "fit", "--epochs", "1", "--samples-per-epoch", "50",
                 "--batch-size", "50", "--val-size", "20", "--threads", "1"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "s.json").read_text())
    net = meta["network_config"]
    assert net["sigma_scale"] == 1.0 and net["shared_error"] == 0.0
    assert net["shared_error_widths"] == [] and net["shared_error_values"] == []
    sim = meta["training"]["simulation_config"]
    assert sim["two_component_model"] == "fit" and sim["two_component_fraction"] == 0.5
    assert sim["flux_prior"] == "loguniform"


def test_train_flux_softening_records_the_asinh_fluxes(tmp_path, capsys):
    import json

    from lumos.cli import main
    from lumos.network_ranges import max_flux_rate

    args = ["train", "--config", "tiny", "--out", str(tmp_path / "s"), "--epochs", "1",
            "--samples-per-epoch", "50", "--batch-size", "50", "--val-size", "20",
            "--threads", "1", "--data-workers", "0"]
    assert main(args + ["--flux-softening", "1.5"]) != 0  # needs --likelihood
    assert "--flux-softening needs --likelihood" in capsys.readouterr().err
    assert main(args + ["--likelihood", "--flux-softening", "-1"]) != 0
    assert not (tmp_path / "s.json").exists()
    assert main(args + ["--likelihood", "--flux-softening", "1.5"]) == 0
    meta = json.loads((tmp_path / "s.json").read_text())
    sim = meta["training"]["simulation_config"]
    assert sim["flux_prior"] == "asinh" and sim["flux_softening"] == 1.5
    assert sim["flux_range"] == [-6.0, 1000.0]
    assert max_flux_rate(meta["training"]) == 1000.0



def test_train_position_error_is_checked_and_recorded(tmp_path, capsys):
    import json

    from lumos.cli import main
    from lumos.model_io import load_model
    from lumos.streams import training_simulation

    args = ["train", "--config", "tiny", "--out", str(tmp_path / "s"), "--epochs", "1",
            "--samples-per-epoch", "50", "--batch-size", "50", "--val-size", "20",
            "--threads", "1", "--data-workers", "0", "--catalogue-errors", "realistic"]
    assert main(args + ["--position-error", "-0.1"]) != 0
    assert "--position-error must be 0 or more pixels" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
    assert main(args + ["--position-error", "0.15"]) == 0
    sim = json.loads((tmp_path / "s.json").read_text())["training"]["simulation_config"]
    assert sim["catalogue_errors"]["position_sigma"] == 0.15
    assert sim["catalogue_errors"]["r50_frac"] == 0.1  # the rest of 'realistic' kept
    errors = training_simulation(load_model(tmp_path / "s")).catalogue_errors
    assert errors.position_sigma == 0.15

def _shared_form(a: float, b: float, w: np.ndarray) -> np.ndarray:
    """A relative shared error ``sqrt(a^2 + (b w)^2)`` of relative width ``w``."""
    return np.minimum(np.hypot(a, b * w), 0.95 * w)


def _two_exposures(rng, w: np.ndarray, c: np.ndarray, own: np.ndarray, f: float = 100.0):
    """Two one-component likelihoods of width ``w f`` per galaxy whose means share an error
    ``c f`` and differ by an own error ``own f`` (each a relative error; a standard normal
    draw per galaxy for the shared one, per galaxy and exposure for the own)."""
    from lumos.mixture import GaussianMixture

    n = w.size
    shared = c * f * rng.standard_normal(n)
    mixes = []
    for _ in range(2):
        mu = f + shared + own * f * rng.standard_normal(n)
        mixes.append(GaussianMixture(torch.zeros(n, 1, dtype=torch.float64),
                                     torch.tensor(mu[:, None]), torch.tensor((w * f)[:, None])))
    return mixes


def test_shared_error_curve_recovers_a_known_shared_error():
    """Two exposures share an error sqrt(a^2 + (b w)^2) of the flux: the fitted curve gives
    D of unit width in every bin of precision, and a constant does not."""
    from lumos.calibration import shared_error_curve
    from lumos.stats import sigma68

    rng = np.random.default_rng(11)
    w = np.exp(rng.uniform(np.log(0.02), np.log(0.6), 6000))  # total relative width
    c = _shared_form(0.02, 0.5, w)
    mixes = _two_exposures(rng, w, c, np.sqrt(w**2 - c**2))
    curve, per_bin = shared_error_curve(mixes[0], mixes[1], bins=6)
    assert all(0.9 < v < 1.1 for v in per_bin), per_bin
    got = np.interp(np.log([0.05, 0.3]), np.log(curve.widths), curve.values)
    np.testing.assert_allclose(got, _shared_form(0.02, 0.5, np.array([0.05, 0.3])),
                               rtol=0.3)  # fmt: skip
    d0 = (mixes[0].mean() - mixes[1].mean()).numpy() / (np.sqrt(2) * w * 100.0)
    assert sigma68(d0[w < 0.05]) < 0.9  # without the shared error D is too narrow


def test_shared_error_curve_is_zero_where_the_pairs_share_nothing():
    """Imprecise exposures that share nothing and whose widths are 10% too small (D already
    wider than 1 without a shared error) get c = 0; precise ones sharing 5% get about 5%."""
    from lumos.calibration import shared_error_curve

    rng = np.random.default_rng(12)
    w = np.where(np.arange(3000) < 1500, 0.1, 0.8)  # total relative width
    c = np.where(w < 0.5, 0.05, 0.0)
    mixes = _two_exposures(rng, w, c, np.sqrt(w**2 - c**2) * np.where(w < 0.5, 1.0, 1.1))
    curve, per_bin = shared_error_curve(mixes[0], mixes[1], bins=2)
    assert curve.values[1] == 0.0
    assert 0.03 < curve.values[0] < 0.07, curve.values
    assert 0.93 < per_bin[0] < 1.07 and per_bin[1] > 1.0, per_bin
    with pytest.raises(ValueError, match="bins and passes must be at least 1"):
        shared_error_curve(mixes[0], mixes[1], bins=0)
