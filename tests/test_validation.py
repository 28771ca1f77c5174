"""Tests of the validation suite (``lumos validate``): every metric, plot and report section
exists and is finite on a tiny run, and a deliberately broken model fails the calibration
checks.

The model is a tiny LumosNet created deterministically (seeded initialisation, untrained):
its head starts at the optimal profile-weighted estimate with roughly background-noise
widths, so its PDFs are usable but not accurate. The suite runs once through the command
line with ``--quick`` sizes reduced further for the test (about half a minute).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lumos.cli import main
from lumos.mixture import GaussianMixture
from lumos.model_io import save_model
from lumos.network import LumosNet, NetworkConfig
from lumos.stats import pair_pull
from lumos.validation import experiments as exp
from lumos.validation.experiments import SEEDS, ValidationSizes, run_validation, to_json
from lumos.validation.metrics import (
    calibration_checks,
    colour_error,
    gaussian_pit,
    outlier_fractions,
    tolerance_for_error,
)

#: Even smaller than --quick: enough galaxies for finite metrics in every magnitude bin.
TINY = ValidationSizes(
    accuracy=300,
    deblend_pairs=1,
    deblend_realisations=3,
    deblend_max_distance=8,
    artefacts=30,
    repeats=60,
    sensitivity=5,
    sensitivity_grid=(0.3, 1.0),
    background_grid=(0.05, 0.5),
    snr_colours=60,
    catalogue_errors=150,
    coadds=60,
    fitted_catalogue=150,
    zero_flux=60,
    positions=150,
)

PNGS = (
    "pit.png", "accuracy_vs_mag.png", "flux_vs_truth.png", "deblending.png", "artefacts.png",
    "repeats_width.png", "repeats_distribution.png", "sensitivity.png", "snr.png", "colours.png",
    "accuracy_catalogue_errors.png", "accuracy_fitted_catalogue.png", "accuracy_positions.png",
)  # fmt: skip
METHODS = ("lumos", "aperture", "modelfit", "weighted", "weighted_oracle", "sep_auto")


class ScaledSigmas:
    """A deliberately broken model: the mixture sigmas of ``model`` multiplied by ``factor``."""

    def __init__(self, model, factor: float) -> None:
        self.model = model
        self.factor = factor

    def predict(self, batch):
        mix = self.model.predict(batch)
        return GaussianMixture(mix.log_weights, mix.means, mix.sigmas * self.factor,
                               truncated=mix.truncated)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> LumosNet:
    torch.manual_seed(0)
    return LumosNet(NetworkConfig.tiny()).eval()


@pytest.fixture(scope="module")
def cli_run(model, tmp_path_factory) -> tuple[Path, dict]:
    """``lumos validate --model M --out DIR --quick`` with the quick sizes shrunk to TINY."""
    tmp = tmp_path_factory.mktemp("validate")
    save_model(model, tmp / "tiny-model", training={"network": "tiny", "seed": 1})
    out = tmp / "report"
    mp = pytest.MonkeyPatch()
    mp.setattr(exp.ValidationSizes, "quick", classmethod(lambda cls: TINY))
    try:
        status = main(["validate", "--model", str(tmp / "tiny-model"), "--out", str(out),
                       "--quick"])  # fmt: skip
    finally:
        mp.undo()
    metrics = json.loads((out / "metrics.json").read_text())
    # the exit status follows the calibration checks (the untrained tiny model fails them)
    assert status == (0 if metrics["accuracy"]["calibration"]["checks"]["all"] else 1)
    return out, metrics


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _all_finite(values) -> bool:
    return len(values) > 0 and all(_finite(v) for v in values)


# --- the full run --------------------------------------------------------------------------


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_outputs_written_and_embedded(cli_run):
    out, metrics = cli_run
    report = (out / "report.md").read_text()
    for name in PNGS:
        png = out / name
        assert png.is_file() and png.stat().st_size > 5000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report, f"{name} not embedded in report.md"
    assert sorted(sum(metrics["plots"].values(), [])) == sorted(PNGS)
    for title in ("Calibration", "Accuracy", "Deblending", "Artefacts", "Repeated",
                  "Sensitivity", "Signal-to-noise", "with catalogue errors"):  # fmt: skip
        assert title in report
    assert metrics["mode"] == "quick"
    assert metrics["seeds"] == SEEDS
    assert metrics["model"]["weights_sha256"]
    assert all(_finite(v) for v in metrics["runtime_s"].values())


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_catalogue_errors_experiment(cli_run):
    _, m = cli_run
    e = m["catalogue_errors"]
    assert e["errors"]["r50_frac"] == 0.1 and e["n_galaxies"] == TINY.catalogue_errors
    assert _finite(e["calibration"]["pit_ks"]) and 0 < e["calibration"]["coverage68"] < 1
    for name in ("lumos", "aperture"):
        assert _all_finite(e["accuracy"]["methods"][name]["sigma68"])


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_fitted_catalogue_experiment(cli_run):
    out, m = cli_run
    e = m["fitted_catalogue"]
    assert e["n_galaxies"] == TINY.fitted_catalogue and e["errors"]["n_frac"] == 0.15
    assert _finite(e["calibration"]["pit_ks"]) and 0 < e["calibration"]["coverage68"] < 1
    for name in ("lumos", "aperture"):
        assert _all_finite(e["accuracy"]["methods"][name]["sigma68"])
    assert "## 10. Bulge + disk galaxies behind" in (out / "report.md").read_text()


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_positions_experiment(cli_run):
    from lumos.validation.experiments import POSITION_ERROR

    out, m = cli_run
    e = m["positions"]
    assert e["n_galaxies"] == TINY.positions
    assert e["errors"]["position_sigma"] == POSITION_ERROR and e["errors"]["r50_frac"] == 0.1
    assert _finite(e["calibration"]["pit_ks"]) and 0 < e["calibration"]["coverage68"] < 1
    for name in ("lumos", "aperture"):
        assert _all_finite(e["accuracy"]["methods"][name]["sigma68"])
    assert "## 12. Calibration and accuracy with catalogue position errors" in (
        out / "report.md").read_text()


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_calibration_and_accuracy_metrics_finite(cli_run):
    _, m = cli_run
    acc = m["accuracy"]
    cal = acc["calibration"]
    for key in ("pit_ks", "coverage68", "coverage95", "pit_mean"):
        assert _finite(cal[key]), key
    assert 0 <= cal["pit_ks"] <= 1 and 0 <= cal["coverage68"] <= cal["coverage95"] <= 1
    assert set(cal["checks"]) == {"pit_ks", "coverage68", "coverage95", "all"}
    assert _all_finite(cal["per_bin"]["coverage68"])
    assert set(acc["accuracy"]["methods"]) == set(METHODS)
    assert acc["n_common"] > 0.9 * TINY.accuracy
    for name, v in acc["accuracy"]["methods"].items():
        assert _all_finite(v["bias"]) and _all_finite(v["sigma68"]), name
        assert _finite(v["bias_all"]) and _finite(v["sigma68_all"]), name
        assert all(n >= 5 for n in v["n"])
    for name in METHODS[1:]:
        assert _finite(acc["classical_calibration"][name]["pit_ks"])
    table = acc["table"]
    assert _all_finite(table["lumos_over_best"]) and _all_finite(table["lumos_over_oracle"])
    assert all(b in ("aperture", "modelfit", "weighted", "sep_auto")
               for b in table["best_classical"])  # fmt: skip
    # the ratio is lumos' sigma68 over the best practical method's, bin by bin
    s_l = acc["accuracy"]["methods"]["lumos"]["sigma68"]
    for k, best in enumerate(table["best_classical"]):
        s_b = acc["accuracy"]["methods"][best]["sigma68"][k]
        assert table["lumos_over_best"][k] == pytest.approx(s_l[k] / s_b)
        assert s_b == min(acc["accuracy"]["methods"][x]["sigma68"][k]
                          for x in ("aperture", "modelfit", "weighted", "sep_auto"))  # fmt: skip
    assert "accuracy_isolated" in acc and acc["n_isolated"] > 0


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_other_experiments_finite(cli_run):
    _, m = cli_run
    d = m["deblending"]
    assert d["distance_px"] == list(range(TINY.deblend_max_distance + 1))
    for name in ("lumos", "aperture"):
        assert _all_finite(d["bias"][name])
        # a brighter neighbour on top of the target adds its light
        assert d["bias"][name][0] > 1.0
        # the isolated target (no neighbour) is the baseline: its light only
        assert _finite(d["isolated_bias"][name]) and abs(d["isolated_bias"][name]) < 0.5
    assert d["spectrum"] == "population colours"
    for kind in ("clean", "cosmic_rays", "scattered_light", "neighbour", "any"):
        for name in METHODS:
            v = m["artefacts"]["sets"][kind][name]
            assert _finite(v["outlier_3sigma"]) and _finite(v["outlier_50pct"]), (kind, name)
    for name in ("lumos", "aperture"):
        r = m["repeats"]["methods"][name]
        assert _finite(r["sigma68_D"]) and r["sigma68_D"] > 0
        assert _finite(r["frac_abs_D_gt_5"])
    tol = m["sensitivity"]["tolerance"]
    assert set(tol) == {"r50", "sersic_n", "ellipticity", "psf_fwhm", "background"}
    for param, by_method in tol.items():
        assert set(by_method) == {"lumos", "aperture", "modelfit", "weighted"}
        for name, v in by_method.items():
            assert _finite(v["value"]) and v["value"] > 0, (param, name)
    # half the sky level missing under a bright galaxy is more than a 10% flux error
    assert all(v["reached"] for v in tol["background"].values())
    s = m["snr_colours"]
    assert _finite(s["colour"]["lumos"]["sigma68"]) and _finite(s["colour"]["aperture"]["sigma68"])
    ratio = [v for v in s["snr"]["lumos_over_aperture"] if v is not None]
    assert len(ratio) >= 3 and _all_finite(ratio)
    assert len(s["snr"]["lumos"]["median_per_band"]) == 40
    c = m["coadds"]
    assert c["n_exposures"] == 4
    for name in ("lumos", "aperture"):
        assert 0.0 < c["methods"][name]["coverage68"] <= 1.0
        assert _finite(c["methods"][name]["sigma68_D"])
    # a posterior model's flux follows the catalogue magnitude: the leakage is measured
    assert set(c["leakage"]) == {"-0.5", "+0.5"}
    assert _all_finite(c["leakage"]["+0.5"]["flux"])


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_broken_model_fails_calibration(model, cli_run, tmp_path):
    _, good = cli_run
    bad = run_validation(ScaledSigmas(model, 3.0), tmp_path, sizes=TINY,
                         experiments=("accuracy",), progress=None)  # fmt: skip
    cal_bad = bad["accuracy"]["calibration"]
    cal_good = good["accuracy"]["calibration"]
    # the unbroken model's numbers are reported
    assert _finite(cal_good["pit_ks"]) and _finite(cal_good["coverage68"])
    # PDFs three times too wide: far too many truths inside the intervals, PIT piled up at 0.5
    assert not cal_bad["checks"]["pit_ks"]
    assert not cal_bad["checks"]["coverage68"]
    assert not cal_bad["checks"]["all"]
    assert cal_bad["coverage68"] > cal_good["coverage68"] + 0.1
    assert cal_bad["pit_ks"] > cal_good["pit_ks"]
    # the point estimate (the mean) of untruncated PDFs (i < 20.5) does not change
    s_good = good["accuracy"]["accuracy"]["methods"]["lumos"]["sigma68"][:2]
    s_bad = bad["accuracy"]["accuracy"]["methods"]["lumos"]["sigma68"][:2]
    assert s_bad == pytest.approx(s_good, rel=1e-5)
    assert set(bad["plots"]) == {"accuracy"}


@pytest.mark.parametrize("passed", [True, False])
def test_exit_status_is_nonzero_when_calibration_fails(tmp_path, capsys, monkeypatch, passed):
    import lumos.validation.experiments as experiments

    def fake_validation(model, out, **kwargs):
        checks = {"pit_ks": passed, "coverage68": True, "coverage95": passed, "all": passed}
        return {"accuracy": {"calibration": {"checks": checks, "pit_ks": 0.1,
                                             "coverage68": 0.68, "coverage95": 0.9}}}

    monkeypatch.setattr(experiments, "run_validation", fake_validation)
    monkeypatch.setattr("lumos.model_io.load_default_model", lambda: None)
    status = main(["validate", "--out", str(tmp_path / "report")])
    captured = capsys.readouterr()
    if passed:
        assert status == 0 and "checks passed" in captured.out
    else:
        assert status == 1 and "checks FAILED" in captured.out
        assert "fails the calibration checks (pit_ks, coverage95)" in captured.err


def test_cli_bad_model(tmp_path, capsys):
    status = main(["validate", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert status == 1
    err = capsys.readouterr().err
    assert "lumos validate: error" in err and "Traceback" not in err


def test_run_validation_rejects_bad_input(model, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        run_validation(model, tmp_path, sizes=TINY, experiments=("nope",), progress=None)
    with pytest.raises(ValueError, match="unknown classical method"):
        run_validation(model, tmp_path, sizes=TINY, methods=("psf",), progress=None)
    with pytest.raises(ValueError, match="accuracy"):
        ValidationSizes(accuracy=0)
    model.metadata = {"validation_seed": SEEDS["repeats"]}
    try:
        with pytest.raises(ValueError, match="used to train"):
            run_validation(model, tmp_path, sizes=TINY, progress=None)
        model.metadata = {"calibration": {"seed": SEEDS["accuracy"]}}
        with pytest.raises(ValueError, match="used to train"):
            run_validation(model, tmp_path, sizes=TINY, progress=None)
    finally:
        model.metadata = {}


# --- metric helpers ------------------------------------------------------------------------


def test_tolerance_interpolates_and_reports_unreached():
    value, reached = tolerance_for_error([0.1, 0.2, 0.5], [0.02, 0.06, 0.18])
    assert reached and value == pytest.approx(0.2 + (0.10 - 0.06) / 0.12 * 0.3)
    value, reached = tolerance_for_error([-0.1, -0.5], [-0.05, -0.2])  # sign-agnostic
    assert reached and value == pytest.approx(0.1 + 0.05 / 0.15 * 0.4)
    assert tolerance_for_error([0.1, 1.0], [0.01, 0.05]) == (1.0, False)


def test_outliers_pull_colour_pit_and_checks():
    truth = np.full(4, 100.0)
    o = outlier_fractions(np.array([100.0, 131.0, 40.0, np.nan]), np.full(4, 10.0), truth)
    assert o["outlier_3sigma"] == pytest.approx(2 / 3)
    assert o["outlier_50pct"] == pytest.approx(1 / 3)
    assert o["failed"] == pytest.approx(0.25) and o["n"] == 4
    d = pair_pull([10.0, 5.0], [3.0, 1.0], [6.0, 5.0], [4.0, 1.0])
    np.testing.assert_allclose(d, [0.8, 0.0])
    c = colour_error([2.0, -1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    assert c[0] == pytest.approx(-2.5 * np.log10(2.0)) and np.isnan(c[1])
    np.testing.assert_allclose(gaussian_pit([0.0], [1.0], [1.0]), [0.8413447], atol=1e-6)
    assert calibration_checks(0.02, 0.69, 0.95)["all"]
    checks = calibration_checks(0.3, 0.99, 0.8)
    assert not (checks["pit_ks"] or checks["coverage68"] or checks["coverage95"])


def test_to_json_replaces_non_finite():
    out = to_json({"a": np.float32(1.5), "b": [np.nan, np.inf, 2], "c": np.arange(2),
                   "d": np.bool_(True)})  # fmt: skip
    assert out == {"a": 1.5, "b": [None, None, 2], "c": [0, 1], "d": True}
    json.dumps(out, allow_nan=False)


def test_observation_stamp_is_the_context_centre():
    from lumos.validation.scenes import Targets, clean_sky, observe

    rng = np.random.default_rng(3)
    n = 3
    t = Targets(r50=np.full(n, 0.5), n=np.full(n, 1.0), q=np.full(n, 0.7), pa=np.zeros(n),
                flux=np.full(n, 5e5), i_mag=np.full(n, 17.0), band=np.full(n, 23),
                camera_state=np.zeros(n), psf_fwhm=np.full(n, 0.9), psf_beta=np.full(n, 3.5),
                offset=np.zeros((n, 2)), ccd_xy=np.full((n, 2), 1000.0))  # fmt: skip
    obs = observe(t, clean_sky(), rng)
    np.testing.assert_array_equal(obs.batch.pixels.numpy(), obs.cutouts.pixels[:, 20:80, 20:80])
    np.testing.assert_allclose(obs.batch.profile.numpy().sum(axis=(1, 2)), 1.0, atol=0.02)
    np.testing.assert_allclose(obs.batch.truth.numpy(), 5e5)
    excess = obs.cutouts.pixels.sum(axis=(1, 2)) - obs.cutouts.true_background.sum(axis=(1, 2))
    np.testing.assert_allclose(excess, 5e5, rtol=0.02)
    with pytest.raises(ValueError, match="offset"):
        t.replace(offset=np.zeros(n))


def test_zero_flux_experiment(cli_run):
    out, m = cli_run
    z = m["zero_flux"]
    assert z["n"] == TINY.zero_flux and not z["likelihood_model"]
    for name in ("lumos", "aperture"):
        entry = z["methods"][name]
        assert 0 < entry["n"] <= TINY.zero_flux and _finite(entry["sigma68_pull"])
        assert 0.0 <= entry["inside_1"] <= 1.0
    assert "## 11. No galaxy: measurements at zero flux" in (out / "report.md").read_text()


def test_zero_flux_pulls_of_the_shipped_likelihood_and_of_apertures_are_centred():
    from lumos.model_io import load_default_model
    from lumos.validation.zero_flux import run_zero_flux

    r = run_zero_flux(load_default_model(), 150, seed=4)
    assert r["likelihood_model"]
    for name in ("lumos", "aperture"):  # blank stamps: pulls of median ~0 (sigma 0.1 here)
        entry = r["methods"][name]
        assert abs(entry["median_pull"]) < 0.3, (name, entry)
        assert 0.8 < entry["sigma68_pull"] < 1.4, (name, entry)


@pytest.mark.slow  # the module's tiny `lumos validate` run
def test_coadds_of_a_likelihood_model_and_no_likelihood_leakage():
    from lumos.network import LumosNet, NetworkConfig
    from lumos.validation.coadds import run_coadds

    torch.manual_seed(0)
    net = LumosNet(NetworkConfig.tiny().replace(likelihood=True, shared_error=0.02)).eval()
    r = run_coadds(net, 40, seed=3, n_exposures=2)
    assert r["likelihood_model"]
    assert 0.0 <= r["methods"]["lumos"]["coverage68"] <= 1.0
    for entry in r["leakage"].values():
        like = np.asarray(entry["flux_like"], float)
        assert np.all(like[np.isfinite(like)] == 0.0)  # the likelihood never sees i_mag


def test_demo_report_bins_by_the_true_magnitude_when_tables_carry_i_mag():
    from astropy.table import Table

    from lumos.report import _matched

    cat = Table({"id": [1, 2], "i_mag": [20.0, 21.0]})
    truth = Table({"id": [1, 2], "flux_true": [10.0, 5.0], "i_mag": [20.1, 21.1]})
    meas = Table({"id": [1, 2], "flux": [9.0, 6.0], "flags": [0, 0], "i_mag": [20.0, 21.0]})
    m = _matched(cat, truth, meas)
    assert list(m["i_mag"]) == [20.1, 21.1]
