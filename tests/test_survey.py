"""Survey descriptions: the TOML file, the built-in PAUS survey, the simulation they give,
and the survey recorded in model files and checked at measurement."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lumos import bands
from lumos.errors import LumosError
from lumos.instrument import CCD_SIZE, PIXEL_SCALE
from lumos.simulate import SimulationConfig, Simulator
from lumos.survey import (
    BROAD_BANDS,
    SurveySky,
    check_model_band,
    load_survey,
    model_survey,
    paus_survey,
)

ROOT = Path(__file__).resolve().parents[1]
DECAM_TOML = ROOT / "examples" / "decam" / "decam.toml"

MINIMAL = """\
name = "Toy"
pixel_scale = 0.2
ccd_size = [1000, 2000]
gain = 2.0
read_noise = 4.0

[psf]
family = "moffat"
fwhm_range = [0.7, 1.1]
beta_range = [3.0, 4.0]

[bands.toy_r]
zero_point = 26.0
exposure_time = 60.0
sky = 10.0
wavelength = 6300.0
fwhm = 1400.0
"""


pytestmark = pytest.mark.usefixtures("restore_band_registry")


def _write(tmp_path: Path, text: str, name: str = "survey.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_paus_default_is_the_simulation_as_without_a_survey():
    paus = paus_survey()
    assert paus.is_paus and paus.name == "PAUS"
    assert len(paus.bands) == 40 and paus.band_names[0] == "NB455"
    assert paus.band("nb685").exposure_time == bands.get_band("NB685").exposure_time
    assert paus.pixel_scale == PIXEL_SCALE and paus.ccd_size == CCD_SIZE
    assert paus.camera_states == ("before", "after") and paus.reference_band == "i"
    assert paus.simulation_config() == SimulationConfig()
    assert load_survey(None) is paus
    # PAUS band slots are the historical band x camera-state index
    assert paus.band_index("NB685", 1) == bands.band_index("NB685", 1) == 23 + 40


def test_decam_example_reads_and_registers_its_bands():
    survey = load_survey(DECAM_TOML)
    assert survey.name == "DECam" and survey.band_names == ("g", "r", "z")
    assert survey.pixel_scale == 0.262 and survey.reference_band == "r"
    assert survey.camera_states == ("default",)
    r = bands.get_band("r")
    assert (r.survey, r.number, r.slots) == ("DECam", 1, 3)
    assert r.zero_point == pytest.approx(26.58) and r.exposure_time == pytest.approx(82.7)
    slots = [survey.band_index(b) for b in "grz"]
    assert slots == [0, 1, 2] == [bands.band_index(b) for b in "grz"]
    assert load_survey(DECAM_TOML).register() == survey.register()  # idempotent
    meta = survey.to_dict()
    assert meta["name"] == "DECam" and list(meta["bands"]) == ["g", "r", "z"]


def test_decam_zero_points_agree_with_the_survey_ccds_table(shared_data):
    from astropy.table import Table

    ccds = Table.read(shared_data / "decam-testcase4" / "survey-ccds-1.fits.gz")
    survey = load_survey(DECAM_TOML)
    for name in "grz":
        rows = ccds[np.char.strip(ccds["filter"].astype(str)) == name]
        zp = np.mean(rows["ccdzpt"]) + 2.5 * np.log10(survey.gain)
        assert survey.band(name).zero_point == pytest.approx(zp, abs=0.05)
        assert survey.band(name).exposure_time == pytest.approx(np.mean(rows["exptime"]), rel=0.01)


def test_broad_band_defaults_and_filter_curve(tmp_path):
    text = MINIMAL.replace("wavelength = 6300.0\nfwhm = 1400.0\n", "")
    text = text.replace("[bands.toy_r]", "[bands.g]")
    survey = load_survey(_write(tmp_path, text.replace('"Toy"', '"Toy2"')))
    assert (survey.band("g").wavelength, survey.band("g").fwhm) == BROAD_BANDS["g"]
    curve = tmp_path / "nb.csv"
    wave = np.arange(6000.0, 6601.0, 10.0)
    curve.write_text("# wavelength,throughput\n" + "\n".join(
        f"{w},{0.5 if 6100 <= w <= 6500 else 0.0}" for w in wave))
    text = MINIMAL.replace('"Toy"', '"Toy3"').replace("[bands.toy_r]", "[bands.toy_nb]")
    text = text.replace("read_noise = 4.0", "read_noise = 4.0\ncollecting_area = 10.0")
    text = text.replace("zero_point = 26.0\n", 'filter_curve = "nb.csv"\n')
    band = load_survey(_write(tmp_path, text)).band("toy_nb")
    assert band.curve is not None
    # 10 m^2, 0.5 throughput over 6095-6505 A (linear edges): 2.5 log10(A F0 / h * int T / l)
    expected = 2.5 * np.log10(10.0 * 3631e-26 / 6.62607015e-34 * 0.5 * np.log(6505 / 6095))
    assert band.zero_point == pytest.approx(expected, abs=0.002)
    response = bands.band_response("toy_nb", np.array([6050.0, 6300.0, 6700.0]))
    assert response.tolist() == [0.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace("pixel_scale = 0.2\n", ""), "pixel_scale"),
        (lambda t: t.replace("pixel_scale = 0.2", 'pixel_scale = "big"'), "pixel_scale"),
        (lambda t: t.replace("gain = 2.0", "gain = -2.0"), "gain"),
        (lambda t: t.replace("ccd_size = [1000, 2000]", "ccd_size = [1000]"), "ccd_size"),
        (lambda t: t.replace("exposure_time = 60.0\n", ""), "bands.toy_r.exposure_time"),
        (lambda t: t.replace("sky = 10.0", "sky = [1, 2]"), "bands.toy_r.sky"),
        (lambda t: t.replace("zero_point = 26.0\n", ""), "bands.toy_r.zero_point"),
        (lambda t: t.replace("fwhm = 1400.0\n", "fwhm = 1400.0\ncolour = 3\n"),
         "bands.toy_r.colour"),
        (lambda t: t.replace('family = "moffat"', 'family = "gauss"'), "psf.family"),
        (lambda t: t.replace("beta_range = [3.0, 4.0]", "beta_range = [4.0, 3.0]"),
         "psf.beta_range"),
        (lambda t: t.split("[psf]")[0] + "[bands]\n", "psf"),
        (lambda t: t.replace("read_noise = 4.0", 'read_noise = 4.0\nreference_band = "q"'),
         "reference_band"),
        (lambda t: t.replace("read_noise = 4.0", "read_noise = 4.0\ncamera_states = 3"),
         "camera_states"),
        (lambda t: t.replace('"Toy"', '"PAUS"'), "name"),
    ],
)
def test_missing_or_malformed_field_is_one_line_naming_it(tmp_path, edit, field):
    path = _write(tmp_path, edit(MINIMAL))
    with pytest.raises(LumosError) as exc:
        load_survey(path)
    message = str(exc.value)
    assert "\n" not in message
    assert f"field '{field}'" in message and str(path) in message


def test_unreadable_survey_files(tmp_path):
    with pytest.raises(LumosError, match="survey file not found"):
        load_survey(tmp_path / "nope.toml")
    with pytest.raises(LumosError, match="not valid TOML"):
        load_survey(_write(tmp_path, "name = [unclosed"))


def test_band_missing_from_the_survey_names_its_bands():
    survey = load_survey(DECAM_TOML)
    with pytest.raises(LumosError, match=re.escape("has no band 'i'; its bands are: g, r, z")):
        survey.band("i")


def test_decam_simulation_uses_the_survey(tmp_path):
    survey = load_survey(DECAM_TOML)
    config = survey.simulation_config(chunk_size=64, random_neighbours=0.0,
                                      close_neighbour_fraction=0.0)
    assert config.pixel_scale == 0.262 and config.camera_state_prob == 0.0
    sim = Simulator(config, seed=3, background=survey.background())
    batch, extras = sim.sample_with_context(200, 60)
    assert set(batch.band_idx.tolist()) == {0, 1, 2}
    assert np.all(extras.camera_state == 0)
    assert np.all(extras.psf_fwhm >= 0.8) and np.all(extras.psf_fwhm <= 1.8)
    # exposure times and zero points of the survey's bands
    for k, name in enumerate("grz"):
        sel = extras.band == k
        assert np.allclose(extras.exposure_time[sel], survey.band(name).exposure_time)
    # the catalogue magnitude is the r-band AB magnitude: r flux = 10**(-0.4 (r - zp_r))
    r = extras.band == 1
    rate = extras.true_flux[r] / survey.band("r").exposure_time
    bright = extras.i_mag_catalogue[r] < 22
    predicted = 10 ** (-0.4 * (extras.i_mag_catalogue[r][bright] - survey.band("r").zero_point))
    assert np.allclose(rate[bright], predicted, rtol=1e-4)
    # the sky is each band's typical level
    z = extras.band == 2
    assert np.median(extras.sky_model[z][:, 0, 0]) == pytest.approx(90.5 * 138.3, rel=1e-5)


def test_same_seed_paus_simulation_is_unchanged_by_survey_support():
    a = Simulator(SimulationConfig(chunk_size=32), seed=5).sample(8)
    b = Simulator(paus_survey().simulation_config(chunk_size=32), seed=5).sample(8)
    assert np.array_equal(a.pixels.numpy(), b.pixels.numpy())
    assert int(a.band_idx.max()) < 80


def test_survey_sky_levels():
    survey = load_survey(DECAM_TOML)
    sky = SurveySky(survey)
    rng = np.random.default_rng(0)
    sample = sky.sample(3, 20, np.array([0, 1, 2]), np.zeros((3, 2)), np.full(3, 100.0), rng)
    assert np.allclose(sample.sky_model[:, 0, 0], [440.0, 1370.0, 9050.0])
    assert np.allclose(sample.sky_sigma, np.sqrt(np.array([440.0, 1370.0, 9050.0]) + 36.0))


def test_model_survey_check():
    survey = load_survey(DECAM_TOML)
    decam_meta = {"survey": survey.to_dict()}
    check_model_band(decam_meta, "r")
    check_model_band(None, "NB685")  # a model without a survey is a PAUS model
    assert model_survey({})["name"] == "PAUS"
    with pytest.raises(LumosError, match="trained for survey PAUS, not for DECam"):
        check_model_band({}, "r")
    with pytest.raises(LumosError, match="trained for survey DECam, not for PAUS.*--survey"):
        check_model_band(decam_meta, "NB685")
    only_gr = {"survey": {**survey.to_dict(), "bands": {"g": {}, "r": {}}}}
    with pytest.raises(LumosError, match="not trained for band z of survey DECam"):
        check_model_band(only_gr, "z")


# --- recorded in the model file and checked at measurement ----------------------------------


def _decam_like_image(path: Path, band_value: str = "r DECam SDSS c0002 6415.0 1480.0"):
    """A two-HDU DECam-like exposure in ADU: FILTER and EXPTIME in the primary header."""
    from astropy.io import fits

    rng = np.random.default_rng(4)
    data = (rng.normal(600.0, 12.0, (120, 120))).astype(np.float32)
    yy, xx = np.mgrid[:120, :120]
    data += (400.0 * np.exp(-0.5 * ((xx - 60) ** 2 + (yy - 60) ** 2) / 3.0**2)).astype(np.float32)
    primary = fits.PrimaryHDU()
    primary.header["FILTER"] = band_value
    primary.header["EXPTIME"] = 90.0
    image = fits.ImageHDU(data)
    image.header["PSFFWHM"] = 1.2
    fits.HDUList([primary, image]).writeto(path)
    return path


def _catalogue(path: Path) -> Path:
    from astropy.table import Table

    Table({"id": [1, 2], "x": [60.0, 30.0], "y": [60.0, 90.0], "r50": [0.6, 0.4],
           "sersic_n": [1.0, 2.0], "q": [0.8, 0.9], "pa": [10.0, 40.0],
           "i_mag": [20.0, 21.5]}).write(path)  # fmt: skip
    return path


def _cli(argv, capsys):
    from lumos.cli import main

    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_records_the_survey_and_measure_checks_it(tmp_path, capsys):
    import json

    from lumos.tableio import read_table

    model = tmp_path / "decam-tiny"
    status, out, err = _cli(["train", "--survey", DECAM_TOML, "--config", "tiny", "--epochs", 1,
                             "--samples-per-epoch", 100, "--batch-size", 50, "--val-size", 50,
                             "--out", model, "--checkpoints", tmp_path / "ck", "--threads", 1,
                             "--seed", 3], capsys)  # fmt: skip
    assert status == 0, err
    meta = json.loads(model.with_suffix(".json").read_text())["training"]
    assert meta["survey"]["name"] == "DECam" and list(meta["survey"]["bands"]) == ["g", "r", "z"]
    assert meta["simulation_config"]["bands"] == ["g", "r", "z"]
    assert meta["simulation_config"]["pixel_scale"] == 0.262

    image = _decam_like_image(tmp_path / "r.fits")
    cat = _catalogue(tmp_path / "cat.fits")
    ok = tmp_path / "ok.fits"
    status, out, err = _cli(["measure", image, cat, "--out", ok, "--survey", DECAM_TOML,
                             "--model", model], capsys)  # fmt: skip
    assert status == 0, err
    table = read_table(ok)
    assert list(table["band"]) == ["r", "r"] and np.all(np.isfinite(table["flux"]))
    assert table.meta["GAIN"] == 3.8 and table.meta["FLUXUNIT"] == "adu"
    assert table.meta["EXPTIME"] == 90.0

    # the shipped PAUS model on a DECam image; the DECam model on a PAUS image
    cases = [
        (["measure", image, cat, "--out", tmp_path / "a.fits", "--survey", DECAM_TOML],
         "trained for survey PAUS, not for DECam images (band r)"),
        (["measure", image, cat, "--out", tmp_path / "b.fits"], "give --survey FILE"),
        (["measure", image, cat, "--out", tmp_path / "c.fits", "--band", "r"],
         "unknown band 'r'"),
        (["measure", image, cat, "--out", tmp_path / "d.fits", "--band", "i", "--survey",
          DECAM_TOML, "--model", model], "has no band 'i'; its bands are: g, r, z"),
    ]
    from lumos.field import simulate_field

    field = simulate_field(n_galaxies=4, shape=(150, 150), seed=2)
    (tmp_path / "paus").mkdir()
    field.write(tmp_path / "paus")
    cases.append((["measure", tmp_path / "paus" / "image.fits", tmp_path / "paus" /
                   "catalogue.fits", "--out", tmp_path / "e.fits", "--model", model],
                  "trained for survey DECam, not for PAUS images (band NB685)"))
    saved = dict(bands._REGISTRY)
    for argv, message in cases:
        bands._REGISTRY.clear()  # each command line is a fresh process
        bands._REGISTRY.update({k: v for k, v in saved.items() if v.survey == "PAUS"})
        status, out, err = _cli(argv, capsys)
        assert status == 1, argv
        lines = [line for line in err.splitlines() if line.startswith("lumos measure")]
        assert len(lines) == 1 and message in lines[0], err
        assert "Traceback" not in err and not Path(argv[3]).exists()


@pytest.mark.slow  # a local Dask cluster
def test_manifest_with_survey_registers_the_bands_in_every_worker(tmp_path, capsys):
    """``--survey`` with a manifest: the Dask workers (fresh processes) load the survey file,
    so its bands are known there; each image's band comes from its header or the manifest."""
    from astropy.table import Table

    from lumos.tableio import read_table

    _decam_like_image(tmp_path / "r.fits")
    _decam_like_image(tmp_path / "z.fits", band_value="z DECam SDSS c0004 9260.0 1520.0")
    _decam_like_image(tmp_path / "g.fits", band_value="unknown filter")
    _decam_like_image(tmp_path / "i.fits", band_value="unknown filter")
    cat = _catalogue(tmp_path / "cat.fits")
    manifest = tmp_path / "images.csv"
    Table({"path": ["r.fits", "z.fits", "g.fits", "i.fits"],
           "band": ["", "", "g", "i"]}).write(manifest)  # fmt: skip
    out = tmp_path / "o.fits"
    status, _, err = _cli(["measure", manifest, cat, "--out", out, "--survey", DECAM_TOML,
                           "--method", "aperture"], capsys)  # fmt: skip
    # a manifest band the survey lacks fails that image, in one line; the others complete
    assert status == 1 and "has no band 'i'; its bands are: g, r, z" in err
    assert "Traceback" not in err
    table = read_table(out)
    assert list(table["image"]) == ["r.fits"] * 2 + ["z.fits"] * 2 + ["g.fits"] * 2
    assert list(table["band"]) == ["r", "r", "z", "z", "g", "g"]
    assert np.all(np.isfinite(table["flux"]))
    # the image in ADU: the fluxes are those of measuring each image alone with --survey
    alone = tmp_path / "z-alone.fits"
    status, _, err = _cli(["measure", tmp_path / "z.fits", cat, "--out", alone, "--survey",
                           DECAM_TOML, "--method", "aperture"], capsys)  # fmt: skip
    assert status == 0, err
    np.testing.assert_allclose(table["flux"][2:4], read_table(alone)["flux"], rtol=1e-6)
    # a bad survey file is one error before any image is measured
    bad = _write(tmp_path, "name = 'X'\n", "bad.toml")
    status, _, err = _cli(["measure", manifest, cat, "--out", tmp_path / "q.fits", "--survey",
                           bad, "--method", "aperture"], capsys)  # fmt: skip
    assert status == 1 and "bad.toml" in err and not (tmp_path / "q.fits").exists()


def test_shipped_model_refuses_a_real_decam_image(shared_data, tmp_path, capsys):
    image = next((shared_data / "decam-testcase4" / "images").rglob("*_ooi_r_*.fits"))
    cat = _catalogue(tmp_path / "cat.fits")
    out = tmp_path / "o.fits"
    status, _, err = _cli(["measure", image, cat, "--out", out, "--survey", DECAM_TOML,
                           "--psf-fwhm", 1.3], capsys)  # fmt: skip
    assert status == 1 and "trained for survey PAUS, not for DECam images (band r)" in err
    assert not out.exists()


# --- training inputs from the command line: --backgrounds ----------------------------------


def _noise_image(path: Path, sources: bool, seed: int) -> Path:
    """A 300 x 300 FITS image of unit noise, with bright point sources or without."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1.0, (300, 300)).astype(np.float32)
    if sources:
        data[rng.integers(0, 300, 900), rng.integers(0, 300, 900)] += 500.0
    fits.PrimaryHDU(data).writeto(path)
    return path


def test_backgrounds_manifest_serves_each_band_its_own_images(tmp_path):
    from lumos.background_manifest import training_background

    _noise_image(tmp_path / "plain.fits", False, 1)
    _noise_image(tmp_path / "stars.fits", True, 2)
    manifest = _write(tmp_path, "path,band,camera_state\nplain.fits,g,0\nstars.fits,r,\n"
                      "stars.fits,z,-1\n", "bg.csv")  # fmt: skip
    survey = load_survey(DECAM_TOML)
    background = training_background(survey, manifest)
    rng = np.random.default_rng(0)
    band_idx = np.repeat([0, 1, 2], 20)
    t = np.full(60, 100.0)
    xy = np.column_stack([np.full(60, 2000.0), np.full(60, 4000.0)])  # DECam CCD position
    sample = background.sample(60, 40, band_idx, xy, t, rng)
    level = np.array([4.4, 13.7, 90.5])[band_idx] * 100.0
    assert np.allclose(sample.sky_sigma, np.sqrt(level + 36.0), rtol=1e-5)
    peaks = (sample.pixels.max(axis=(1, 2)) - level) / sample.sky_sigma
    assert np.all(peaks[:20] < 7) and np.all(peaks[20:] > 50)  # g plain; r and z with stars
    # mixed with the synthetic sky: about half the stamps are flat
    mixed = training_background(survey, manifest, fraction=0.5)
    sample = mixed.sample(200, 40, np.full(200, 1), xy[:1].repeat(200, 0), np.full(200, 100.0),
                          np.random.default_rng(1))  # fmt: skip
    flat = (sample.pixels.max(axis=(1, 2)) - 1370.0) / sample.sky_sigma < 7
    assert 0.35 < flat.mean() < 0.65


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,band\nplain.fits,i\n", "row 1: survey DECam"),
        ("path,band\nplain.fits,g\n", "has no image for band(s) r, z"),
        ("path\nplain.fits\n", "needs a 'band' column"),
        ("path,band\nnope.fits,any\n", "row 1: image not found"),
        ("path,band,camera_state\nplain.fits,any,1\n", "camera_state 1 is not one of"),
        ("path,band,colour\nplain.fits,any,red\n", "unknown column 'colour'"),
    ],
)
def test_bad_backgrounds_manifest_is_one_line(tmp_path, capsys, text, message):
    _noise_image(tmp_path / "plain.fits", False, 1)
    manifest = _write(tmp_path, text, "bg.csv")
    out = tmp_path / "s.h5"
    status, _, err = _cli(["simulate", "--n", 4, "--out", out, "--survey", DECAM_TOML,
                           "--backgrounds", manifest], capsys)  # fmt: skip
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_background_fraction_needs_backgrounds(tmp_path, capsys):
    status, _, err = _cli(["simulate", "--n", 4, "--out", tmp_path / "s.h5",
                           "--background-fraction", 0.5], capsys)  # fmt: skip
    assert status == 1 and "--background-fraction needs --backgrounds" in err


def test_paus_model_trains_on_real_kids_cutouts_through_the_cli(shared_data, tmp_path, capsys):
    import json

    kids = shared_data / "kids" / "r.fits"
    if not kids.is_file():
        pytest.skip("KiDS images not available")
    manifest = _write(tmp_path, f"path,band\n{kids},any\n", "kids.csv")
    model = tmp_path / "paus-kids"
    status, out, err = _cli(["train", "--backgrounds", manifest, "--config", "tiny",
                             "--epochs", 1, "--samples-per-epoch", 200, "--batch-size", 100,
                             "--val-size", 50, "--out", model, "--checkpoints", tmp_path / "ck",
                             "--threads", 1, "--seed", 2], capsys)  # fmt: skip
    assert status == 0, err
    meta = json.loads(model.with_suffix(".json").read_text())["training"]
    assert meta["survey"]["name"] == "PAUS" and meta["epochs_completed"] == 1
    assert "--backgrounds" in meta["command"] and np.isfinite(meta["final_metrics"]["val_loss"])


# --- PSFEx family: the survey's own PSFs in the simulation ---------------------------------


def test_psfex_survey_simulates_with_the_survey_psfs(shared_data, tmp_path, capsys):
    from astropy.table import Table

    from lumos.psfex import read_psfex

    calib = shared_data / "decam-testcase4" / "calib"
    text = DECAM_TOML.read_text().replace('name = "DECam"', 'name = "DECamPSFEx"')
    text = text.replace('family = "moffat"\nfwhm_range = [0.8, 1.8]      # arcsec\n'
                        'beta_range = [2.5, 5.0]',
                        f'family = "psfex"\nfiles = ["{calib}/**/*-psfex.fits"]')
    assert "psfex" in text
    survey = load_survey(_write(tmp_path, text))
    assert survey.psf.family == "psfex" and len(survey.psf.files) == 9
    pool = survey.psf_factory()
    assert len(pool) == 9 * 16
    # the pool's PSFs are the models' at their grid positions, and as wide as the seeing
    model = read_psfex(survey.psf.files[0])
    (xl, xh), (yl, yh) = model.valid_range()
    first = pool(torch_zeros(1), torch_zeros(1)).image[0].numpy()
    assert np.allclose(first, model.evaluate([xl], [yl])[0], atol=1e-12)
    ccds = Table.read(shared_data / "decam-testcase4" / "survey-ccds-1.fits.gz")
    seeing = np.asarray(ccds["fwhm"]) * 0.262
    assert seeing.min() * 0.8 < np.median(pool.fwhm) < seeing.max() * 1.2

    config = survey.simulation_config(chunk_size=32, random_neighbours=0.0)
    sim = Simulator(config, seed=1, background=survey.background(), psf_factory=pool)
    batch, extras = sim.sample_with_context(24, 60)
    assert np.all(np.isfinite(batch.pixels.numpy()))
    index = extras.psf_beta.astype(int)
    assert np.array_equal(extras.psf_fwhm, pool.fwhm[index])
    # the profile channel is the unit-flux galaxy (large ones reach beyond the stamp)
    sums = extras.profile_catalogue.sum(axis=(1, 2))
    assert np.all(sums < 1.001) and np.median(sums) > 0.99
    # and through the command line
    out = tmp_path / "p.h5"
    status, _, err = _cli(["simulate", "--n", 8, "--out", out, "--survey",
                           tmp_path / "survey.toml"], capsys)  # fmt: skip
    assert status == 0 and out.is_file(), err


def torch_zeros(n: int):
    import torch

    return torch.zeros(n, dtype=torch.float64)


def test_psfex_pattern_without_match_is_one_line(tmp_path):
    text = MINIMAL.replace('family = "moffat"\nfwhm_range = [0.7, 1.1]\nbeta_range = [3.0, 4.0]',
                           'family = "psfex"\nfiles = ["nowhere/*.fits"]')
    with pytest.raises(LumosError, match=r"field 'psf.files' pattern 'nowhere/\*.fits' matches"):
        load_survey(_write(tmp_path, text))


def test_camera_state_and_band_slots_must_match_the_survey_and_model(tmp_path, capsys):
    image = _decam_like_image(tmp_path / "r.fits")
    cat = _catalogue(tmp_path / "cat.fits")
    out = tmp_path / "o.fits"
    status, _, err = _cli(["measure", image, cat, "--out", out, "--survey", DECAM_TOML,
                           "--camera-state", 1], capsys)  # fmt: skip
    assert status == 1 and "has 1 camera state(s); got camera state 1" in err
    # a model trained with the bands in another order
    survey = load_survey(DECAM_TOML)
    reordered = {**survey.to_dict(), "bands": {"r": {}, "g": {}, "z": {}}}
    with pytest.raises(LumosError, match="band r of survey DECam is band 2 of 3 in the survey "
                       "file but 1 of 3 in the model"):
        check_model_band({"survey": reordered}, "r")


def test_backgrounds_manifest_masks_and_weights(tmp_path):
    from astropy.io import fits

    from lumos.background_manifest import training_background

    rng = np.random.default_rng(3)
    data = rng.normal(0.0, 1.0, (300, 300)).astype(np.float32)
    data[:, 150:] += 1000.0 * (rng.random((300, 150)) < 0.02)  # "stars" on the right half
    fits.PrimaryHDU(data).writeto(tmp_path / "img.fits")
    mask = np.zeros((300, 300), dtype=np.int16)
    mask[:, 150:] = 4  # the right half is bad
    fits.PrimaryHDU(mask).writeto(tmp_path / "mask.fits")
    weight = np.ones((300, 300), dtype=np.float32)
    weight[:, 150:] = 0.0
    fits.PrimaryHDU(weight).writeto(tmp_path / "weight.fits")
    survey = load_survey(DECAM_TOML)
    for column, name in (("mask", "mask.fits"), ("weight", "weight.fits")):
        manifest = _write(tmp_path, f"path,band,{column}\nimg.fits,any,{name}\n", "bg.csv")
        background = training_background(survey, manifest)
        n = 40
        sample = background.sample(n, 40, np.full(n, 1), np.full((n, 2), 1000.0),
                                   np.full(n, 100.0), np.random.default_rng(0))  # fmt: skip
        peaks = (sample.pixels.max(axis=(1, 2)) - 1370.0) / sample.sky_sigma
        assert np.all(peaks < 8), column  # no cutout reaches into the bad half
    (tmp_path / "small.fits").unlink(missing_ok=True)
    fits.PrimaryHDU(np.zeros((10, 10), dtype=np.int16)).writeto(tmp_path / "small.fits")
    manifest = _write(tmp_path, "path,band,mask\nimg.fits,any,small.fits\n", "bg.csv")
    with pytest.raises(LumosError, match="row 1: mask .*shape"):
        training_background(survey, manifest)


def test_a_registered_band_is_still_measured_by_paus_models():
    band = bands.register_band("TEST_wide", 6230.0, exposure_time=45.0, fwhm=1400.0)
    assert band.survey == "PAUS" and band.slots == 40
    check_model_band(None, "TEST_wide")  # seen through the nearest PAUS band, as before
    with pytest.raises(LumosError, match="trained for survey DECam, not for PAUS"):
        check_model_band({"survey": load_survey(DECAM_TOML).to_dict()}, "TEST_wide")
