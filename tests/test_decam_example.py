"""The DECam worked example (examples/decam): its scripts, and the survey paths it needs.

The tests reading ``../shared/data/decam-testcase4`` skip where it is absent.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

from lumos import bands
from lumos.cli import main
from lumos.survey import load_survey

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "decam"
DECAM_TOML = EXAMPLE / "decam.toml"
sys.path.insert(0, str(EXAMPLE))

import blank_sky  # noqa: E402
import build_catalogue  # noqa: E402
import combine  # noqa: E402
import exposures  # noqa: E402
import joint_fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("restore_band_registry")


@pytest.fixture
def decam_data(shared_data) -> Path:
    path = shared_data / "decam-testcase4"
    if not (path / "images").is_dir():
        pytest.skip("decam-testcase4 not available")
    return path


def _identity(x, y):
    return x, y


def test_fit_on_one_exposure_recovers_a_psf_convolved_sersic():
    from lumos.psf import MoffatPSF

    fitter = build_catalogue.SersicModel(size=31)
    psf = MoffatPSF(torch.tensor([1.1], dtype=torch.float64), torch.tensor([3.0]))
    truth = np.array([5.0, 0.3, -0.2, np.log(0.8), 1.5, 0.6, 30.0, 0.0])
    rng = np.random.default_rng(4)
    sigma = 0.002
    data = fitter.stamps(truth, psf)[0] + sigma * rng.standard_normal((31, 31))
    view = joint_fit.View(data, np.full((31, 31), sigma**-2), psf, 15, 15, 0, _identity)
    start = np.array([np.log(0.5), 2.5, 0.9, 10.0])
    fit = joint_fit.fit_joint(fitter, [view], 1, 15.0, 15.0, start, 4.0)
    assert fit.flux[0] == pytest.approx(5.0, rel=0.05)  # the free sky takes some of the wings
    assert fit.r50 == pytest.approx(0.8, rel=0.05)
    assert fit.sersic_n == pytest.approx(1.5, abs=0.25) and fit.q == pytest.approx(0.6, abs=0.03)
    assert fit.pa == pytest.approx(30.0, abs=3.0)
    assert fit.chi2 == pytest.approx(1.0, abs=0.15)
    # fixed Sersic index: only the free parameters move
    fixed = joint_fit.fit_joint(fitter, [view], 1, 15.0, 15.0, start, 4.0,
                                free_shape=np.arange(6) != 3)  # fmt: skip
    assert fixed.sersic_n == pytest.approx(2.5)


def test_joint_fit_shares_the_profile_and_fits_a_flux_per_band():
    """Three exposures of two bands, different PSFs, the centre mapped with a shift: the
    joint fit recovers the shared centre and shape, each band's flux and each exposure's
    sky."""
    from lumos.psf import MoffatPSF

    fitter = build_catalogue.SersicModel(size=31)
    rng = np.random.default_rng(11)
    x_true, y_true, sigma = 15.3, 14.8, 0.0005  # total S/N ~ 1000
    shape = np.array([np.log(0.7), 1.5, 0.6, 30.0])
    views = []
    for band, flux, fwhm, shift in ((0, 5.0, 1.0, (0.0, 0.0)), (0, 5.0, 1.3, (2.4, -1.7)),
                                    (1, 2.0, 1.1, (-0.6, 0.9))):
        psf = MoffatPSF(torch.tensor([fwhm], dtype=torch.float64), torch.tensor([3.0]))

        def to_exp(x, y, shift=shift):
            return x + shift[0], y + shift[1]

        xe, ye = to_exp(x_true, y_true)
        x0, y0 = int(round(xe)), int(round(ye))
        par = np.concatenate([[flux, xe - x0, ye - y0], shape, [0.01 * band]])
        data = fitter.stamps(par, psf)[0] + sigma * rng.standard_normal((31, 31))
        views.append(joint_fit.View(data, np.full((31, 31), sigma**-2), psf, x0, y0, band,
                                    to_exp))  # fmt: skip
    start = np.array([np.log(0.5), 2.5, 0.9, 10.0])
    fit = joint_fit.fit_joint(fitter, views, 2, 15.0, 15.0, start, 3.0, positive_band=0)
    assert fit.flux[0] == pytest.approx(5.0, rel=0.03)
    assert fit.flux[1] == pytest.approx(2.0, rel=0.03)
    assert fit.x_ref == pytest.approx(x_true, abs=0.02)
    assert fit.y_ref == pytest.approx(y_true, abs=0.02)
    assert fit.r50 == pytest.approx(0.7, rel=0.05) and fit.q == pytest.approx(0.6, abs=0.03)
    assert fit.pa == pytest.approx(30.0, abs=3.0)
    assert fit.sky[2] == pytest.approx(0.01, abs=2e-3)
    assert fit.chi2 == pytest.approx(1.0, abs=0.15)
    # a fixed Sersic index stays where it started
    fixed = joint_fit.fit_joint(fitter, views, 2, 15.0, 15.0, start, 3.0,
                                free_shape=np.arange(6) != 3)  # fmt: skip
    assert fixed.sersic_n == pytest.approx(2.5)


def test_pair_statistics_on_fluxes_in_nanomaggies():
    t = Table({
        "id": [1, 1, 1, 2, 2], "band": ["r", "r", "r", "r", "r"], "flags": [0, 0, 0, 0, 4],
        "flux_like": [100.0, 50.0, 100.0, 10.0, 12.0], "flux_like_err": [3.0, 1.5, 4.0, 1, 1],
        "to_nmgy": [0.01, 0.02, 0.01, 0.01, 0.01], "image": ["a", "b", "c", "a", "b"],
    })  # fmt: skip
    stats = combine.pair_statistics(t)["r"]
    # galaxy 1: 1 nmgy in each exposure (errors 0.03, 0.03, 0.04); galaxy 2 has one good row
    assert stats["pairs"] == 3 and stats["galaxies"] == 1
    assert np.allclose(stats["D"], 0.0)
    assert stats["galaxy"] == [1, 1, 1]
    clean = combine.unflagged_everywhere(t)
    assert clean["every_exposure"] == [1] and clean["every_exposure_holding_the_stamp"] == [1]


def test_bootstrap_resamples_galaxies_with_all_their_pairs():
    d = [1.0, -1.0, 3.0, -3.0]
    from lumos.stats import sigma68

    one = combine.bootstrap_sigma68(d[:2], [7, 7], n=50)
    assert np.allclose(one, sigma68(np.array(d[:2])))  # every resample holds both pairs
    lo, hi, lo95, hi95 = combine.bootstrap_sigma68(d, [1, 1, 2, 2], n=400, seed=3)
    assert lo95 <= lo <= hi <= hi95
    # the extremes: galaxy 1 twice, galaxy 2 twice
    assert lo95 == pytest.approx(sigma68(np.array(d[:2] * 2)))
    assert hi95 == pytest.approx(sigma68(np.array(d[2:] * 2)))
    assert combine.bootstrap_sigma68(d, [1, 1, 2, 2], n=400, seed=3) == [lo, hi, lo95, hi95]


def test_lumos_train_records_the_survey_magnitude_range(tmp_path):
    model = tmp_path / "decam-tiny"
    assert main(["train", "--survey", str(DECAM_TOML), "--config", "tiny", "--epochs", "1",
                 "--samples-per-epoch", "50", "--batch-size", "50", "--val-size", "20",
                 "--out", str(model), "--threads", "1", "--likelihood"]) == 0  # fmt: skip
    config = json.loads(model.with_suffix(".json").read_text())["network_config"]
    assert config["i_mag_range"] == list(load_survey(DECAM_TOML).mag_range) == [17.0, 24.5]


def _decam_likelihood_model(path: Path) -> Path:
    from lumos.model_io import save_model
    from lumos.network import LumosNet, NetworkConfig

    survey = load_survey(DECAM_TOML)
    sim = survey.simulation_config(flux_prior="loguniform", random_neighbours=0.0)
    torch.manual_seed(3)
    save_model(LumosNet(NetworkConfig.tiny().replace(likelihood=True)), path,
               training={"simulation_config": sim.to_dict(), "survey": survey.to_dict()})
    return path


def test_lumos_calibrate_calibrates_a_survey_model(tmp_path, capsys):
    from lumos.model_io import load_model

    model = _decam_likelihood_model(tmp_path / "m")
    bands._REGISTRY.clear()  # a fresh process: PAUS bands only
    bands._REGISTRY.update(bands.PAUS_BANDS)
    assert main(["calibrate", str(model), "--out", str(tmp_path / "c"), "--n", "100",
                 "--pairs", "100", "--survey", str(DECAM_TOML)]) == 0  # fmt: skip
    assert "shared error" in capsys.readouterr().out
    cal = load_model(tmp_path / "c")
    assert cal.config.sigma_scale != 1.0 and 0.0 <= cal.config.shared_error < 1.0
    assert "--survey" in cal.metadata["calibration"]["command"]
    # without its survey file, or with another survey's: one line, no output
    other = tmp_path / "other.toml"
    other.write_text(DECAM_TOML.read_text().replace('name = "DECam"', 'name = "Other"'))
    for extra, message in (([], "trained for survey DECam: give --survey"),
                           (["--survey", str(other)], "not for Other")):
        out = tmp_path / "d"
        assert main(["calibrate", str(model), "--out", str(out), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not out.with_suffix(".json").exists()


def test_simulated_pairs_of_a_survey_are_in_its_bands():
    from lumos.pairs import PairSimulation, simulate_pairs

    survey = load_survey(DECAM_TOML)
    sim = survey.simulation_config(random_neighbours=0.0)
    pairs = simulate_pairs(30, seed=2, config=PairSimulation(simulation=sim),
                           background=survey.background())  # fmt: skip
    assert set(pairs.bands) <= {"g", "r", "z"} and len(set(pairs.bands)) > 1
    assert set(pairs.first.band_idx.tolist()) <= {0, 1, 2}
    assert torch.equal(pairs.first.truth, pairs.second.truth)
    # DECam fluxes: r-band zero point 26.58 and 82.7 s, far above PAUS narrow-band fluxes
    r = pairs.bands == "r"
    mag = 26.58 - 2.5 * np.log10(pairs.first.truth.numpy()[r] / 82.7)
    assert np.all((mag > 14.0) & (mag < 27.0))


def test_exposures_of_the_test_patch(decam_data):
    found = exposures.find_exposures(decam_data)
    assert [e.band for e in found] == ["g"] * 2 + ["r"] * 3 + ["z"] * 4
    assert all(e.weight.is_file() and e.mask.is_file() and e.psf.is_file() for e in found)
    assert all(24.5 < e.ccdzpt < 25.5 and e.exptime > 50 for e in found)


def test_catalogue_step_on_one_exposure(decam_data):
    """Detect and fit on the deepest r exposure alone: the large galaxy is extended, the
    brightest star is not."""
    found = exposures.find_exposures(decam_data)
    ref = build_catalogue.load_exposure(max((e for e in found if e.band == "r"),
                                            key=lambda e: e.exptime))  # fmt: skip
    noise = np.where(ref.weight > 0, 1.0 / np.sqrt(np.maximum(ref.weight, 1e-30)), np.inf)
    sources, segmap = build_catalogue.detect(ref.data, noise, thresh=3.0)
    fitter = build_catalogue.SersicModel()
    r50 = {}
    for name, (x, y) in {"galaxy": (122.6, 190.3), "star": (83.8, 19.4)}.items():
        k = int(np.argmin(np.hypot(sources["x"] - x, sources["y"] - y)))
        x0, y0 = int(round(sources["x"][k])), int(round(sources["y"][k]))
        data = build_catalogue._cutout(ref.data, x0, y0, fitter.size)
        weight = build_catalogue._cutout(ref.weight, x0, y0, fitter.size)
        seg = build_catalogue._cutout(segmap, x0, y0, fitter.size, fill=-1)
        weight = np.where((seg == 0) | (seg == k + 1), weight, 0.0)
        view = joint_fit.View(data, weight, ref.psf.at([x], [y]), x0, y0, 0, _identity)
        fit = joint_fit.fit_joint(fitter, [view], 1, float(sources["x"][k]),
                                  float(sources["y"][k]), np.array([np.log(0.5), 1.5, 0.7, 0.0]),
                                  float(data.sum()))  # fmt: skip
        r50[name] = fit.r50
        assert fit.chi2 < 1.5
    assert r50["galaxy"] > 0.4 and r50["star"] < 0.1


def test_joint_fit_on_the_nine_exposures(decam_data):
    """The catalogue step proper: the brightest star's stamps in all 9 exposures (g, r, z),
    centres mapped through the TPV WCSs and back to 1e-3 pixel; the joint fit keeps it a
    point source and gives it three band fluxes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = [build_catalogue.load_exposure(e) for e in exposures.find_exposures(decam_data)]
    ref = max((e for e in loaded if e.exposure.band == "r"), key=lambda e: e.exposure.exptime)
    image, noise = build_catalogue.stack(loaded, ref)
    sources, segmap = build_catalogue.detect(image, noise)
    k = int(np.argmin(np.hypot(sources["x"] - 83.8, sources["y"] - 19.4)))
    x, y = float(sources["x"][k]), float(sources["y"][k])
    bands = ["g", "r", "z"]
    fitter = build_catalogue.SersicModel()
    views = build_catalogue.source_views(loaded, ref, segmap, k + 1, x, y, bands, fitter.size)
    assert len(views) == 9 and sorted(v.band for v in views) == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    for e in loaded:
        xe, ye = build_catalogue._mapper(ref, e)(x, y)
        back = build_catalogue._mapper(e, ref)(np.array([xe]), np.array([ye]))
        assert np.hypot(back[0][0] - x, back[1][0] - y) < 1e-3
    fit = joint_fit.fit_joint(fitter, views, 3, x, y, np.array([np.log(0.3), 1.5, 0.8, 0.0]),
                              10.0, positive_band=1)  # fmt: skip
    assert fit.r50 < 0.1 and np.all(fit.flux > 1.0) and fit.chi2 < 3.0


def test_measure_two_exposures_with_aperture(decam_data, tmp_path, capsys):
    """``lumos measure --survey`` places ra/dec through each exposure's TPV WCS, and the
    combining step stacks the exposures and pairs them."""
    from astropy.wcs import FITSFixedWarning

    from lumos.imageio import read_image

    found = [e for e in exposures.find_exposures(decam_data) if e.band == "r"][:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = [read_image(e.image)[2] for e in found]
    ra, dec = wcs[0].celestial.all_pix2world([122.6, 160.3], [190.3, 115.2], 0)
    cat = Table({"id": [1, 2], "ra": ra, "dec": dec, "r50": [0.6, 0.3], "sersic_n": [1.7, 1.0],
                 "q": [0.3, 0.5], "pa": [165.0, 97.0], "i_mag": [18.6, 23.3]})  # fmt: skip
    cat.write(tmp_path / "cat.fits")
    out = tmp_path / "out"
    (out / "aperture").mkdir(parents=True)
    lines = []
    for e, w in zip(found, wcs, strict=True):
        table = out / "aperture" / f"{e.image.stem}.fits"
        assert main(["measure", str(e.image), str(tmp_path / "cat.fits"), "--out", str(table),
                     "--survey", str(DECAM_TOML), "--method", "aperture", "--psf", str(e.psf),
                     "--weight", str(e.weight), "--mask", str(e.mask),
                     "--workers", "1"]) == 0  # fmt: skip
        got = Table.read(table)
        x, y = w.celestial.all_world2pix(ra, dec, 0)
        assert np.allclose(got["x"], x, atol=1e-6) and np.allclose(got["y"], y, atol=1e-6)
        lines.append("\t".join(str(v) for v in (e.image, e.weight, e.mask, e.psf, e.band,
                                                e.ccdzpt, e.exptime)))  # fmt: skip
    capsys.readouterr()
    (out / "exposures.tsv").write_text("\n".join(lines) + "\n")
    stacked = combine.stack_tables(out, "aperture", combine.read_exposures(out))
    assert len(stacked) == 4 and set(stacked["image"]) == {e.image.name for e in found}
    assert stacked["flags"][stacked["id"] == 1].tolist() == [0, 0]
    good = stacked[stacked["id"] == 1]
    nmgy = good["flux"] * good["to_nmgy"]  # the galaxy's r flux in nanomaggies, both exposures
    assert np.all(nmgy > 20) and abs(nmgy[0] / nmgy[1] - 1) < 0.15
    stats = combine.pair_statistics(stacked)["r"]
    assert stats["pairs"] >= 1 and np.all(np.isfinite(stats["D"]))


def test_lumos_transfer_needs_and_uses_the_survey(decam_data, tmp_path, capsys):
    """``lumos transfer --survey`` runs on pairs of two DECam exposures measured by the
    shipped DECam model; without ``--survey`` it is a one-line error."""
    from astropy.wcs import FITSFixedWarning

    from lumos.imageio import read_image

    model = ROOT / "src" / "lumos" / "data" / "model" / "lumos-decam"
    found = [e for e in exposures.find_exposures(decam_data) if e.band == "z"][:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = read_image(found[0].image)[2]
    x = [122.6, 118.6, 149.0, 160.4, 68.4]
    y = [190.3, 39.4, 166.7, 115.2, 187.4]
    ra, dec = wcs.celestial.all_pix2world(x, y, 0)
    cat = tmp_path / "cat.fits"
    Table({"id": np.arange(1, 6), "ra": ra, "dec": dec, "r50": [0.62, 0.16, 0.43, 0.19, 0.33],
           "sersic_n": [1.75, 1, 1, 1, 1], "q": [0.29, 0.59, 0.2, 0.2, 0.2],
           "pa": [165.3, 180.0, 147.6, 97.4, 55.0],
           "i_mag": [18.56, 23.2, 23.29, 23.33, 22.95]}).write(cat)  # fmt: skip
    tables, zp = [], []
    for e in found:
        table = tmp_path / f"{e.image.stem}.fits"
        assert main(["measure", str(e.image), str(cat), "--out", str(table), "--survey",
                     str(DECAM_TOML), "--model", str(model), "--psf", str(e.psf), "--weight",
                     str(e.weight), "--mask", str(e.mask), "--workers", "1",
                     "--prior", "none"]) == 0  # fmt: skip
        tables.append(str(table))
        zp.append(exposures.nanomaggies_per_unit(e.ccdzpt, e.exptime))
    Table({"image": [e.image.name for e in found], "zp": zp}).write(tmp_path / "zp.csv")
    capsys.readouterr()
    common = ["transfer", *tables, "--model", str(model), "--catalogue", str(cat),
              "--epochs", "1", "--reference-pairs", "0", "--holdout", "0.5"]
    assert main([*common, "--out", str(tmp_path / "t0")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained for survey DECam: give --survey" in err[0]
    assert not (tmp_path / "t0.json").exists()
    assert main([*common, "--out", str(tmp_path / "t1"), "--survey", str(DECAM_TOML),
                 "--zero-points", str(tmp_path / "zp.csv")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "pairs of observations" in out and "held-out sigma68(D)" in out
    assert (tmp_path / "t1.json").exists()


def test_blank_positions_keep_away_from_galaxies_and_the_edge():
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [186.7, 25.5]
    wcs.wcs.crpix = [125.0, 125.0]
    wcs.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    galaxies = Table({"x_ref": [50.0, 125.0, 200.0], "y_ref": [60.0, 125.0, 190.0]})
    blank = blank_sky.blank_catalogue(galaxies, wcs, 200, 12.0, np.random.default_rng(3))
    assert len(blank) == 200 and list(blank["id"]) == list(range(1, 201))
    x, y = wcs.all_world2pix(blank["ra"], blank["dec"], 0)
    d = np.hypot(x[:, None] - galaxies["x_ref"][None], y[:, None] - galaxies["y_ref"][None])
    assert d.min() >= 12.0 - 1e-6
    assert x.min() >= 12.0 - 1e-6 and x.max() <= blank_sky.PATCH - 13.0 + 1e-6
    for column in ("r50", "sersic_n", "q", "pa", "i_mag"):
        assert np.all(np.isfinite(blank[column]))
