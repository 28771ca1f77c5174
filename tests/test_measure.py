"""The measurement path: image + catalogue -> table, its contract, bad input and manifests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from lumos.catalogue import read_catalogue
from lumos.cli import main
from lumos.field import simulate_field
from lumos.flags import Flag
from lumos.imageio import image_metadata, read_image
from lumos.measure import OUTPUT_COLUMNS, measure_file, measure_image
from lumos.model_io import save_model
from lumos.network import LumosNet, NetworkConfig
from lumos.tableio import read_table


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("field")
    field = simulate_field(n_galaxies=40, shape=(400, 500), seed=7)
    # a galaxy at the corner, one on NaN pixels, one with a bad profile
    cat = field.catalogue
    cat["x"][0], cat["y"][0] = 2.0, 3.0
    x1, y1 = int(round(cat["x"][1])), int(round(cat["y"][1]))
    field.image[y1 - 1 : y1 + 2, x1 - 1 : x1 + 2] = np.nan
    cat["sersic_n"][2] = 9.0
    field.write(directory)
    return directory


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(LumosNet(NetworkConfig.tiny()), path)
    return path


def _run(argv, capsys):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".ecsv"])
def test_measure_writes_every_contract_column_one_row_per_galaxy(
    field_dir, model_path, tmp_path, capsys, suffix
):
    out = tmp_path / f"out{suffix}"
    status, stdout, err = _run(
        ["measure", field_dir / "image.fits", field_dir / "catalogue.fits", "--out", out,
         "--model", model_path], capsys)  # fmt: skip
    assert status == 0, err
    table = read_table(out)
    assert len(table) == 40
    for column in OUTPUT_COLUMNS:
        assert column in table.colnames
    assert table["pdf_weight"].shape == (40, 5)
    np.testing.assert_allclose(np.sum(table["pdf_weight"][3:], axis=1), 1.0, rtol=1e-5)
    assert str(table["flux"].unit) == "electron"
    assert table.meta["METHOD"] == "lumos" and table.meta["BAND"] == "NB685"
    np.testing.assert_array_equal(table["id"], np.arange(1, 41))
    flags = np.asarray(table["flags"])
    assert flags[0] & Flag.EDGE
    assert flags[1] & Flag.MASKED_CORE
    assert flags[2] & Flag.BAD_PROFILE
    assert np.all(np.isfinite(table["flux"][3:]))


@pytest.mark.parametrize("method", ["aperture", "modelfit", "weighted"])
def test_classical_methods_run_through_the_same_path(field_dir, tmp_path, method):
    truth = Table.read(field_dir / "truth.fits")
    table = measure_file(field_dir / "image.fits", field_dir / "catalogue.fits",
                         tmp_path / "t.fits", method=method, progress=False)  # fmt: skip
    assert len(table) == 40
    assert set(OUTPUT_COLUMNS) <= set(table.colnames)
    good = (np.asarray(table["flags"]) == 0) & (truth["flux_true"] > 2000)
    assert good.sum() >= 3
    ratio = np.asarray(table["flux"])[good] / np.asarray(truth["flux_true"])[good]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("method", ["lumos", "aperture"])
def test_threaded_batches_give_the_table_of_one_thread(field_dir, model_path, tmp_path, method):
    """Batches measured side by side on worker threads: same rows, same numbers."""
    kwargs = dict(method=method, progress=False, batch_size=7)
    if method == "lumos":
        kwargs["model_path"] = model_path
    image, cat = field_dir / "image.fits", field_dir / "catalogue.fits"
    threads = torch.get_num_threads()
    one = measure_file(image, cat, tmp_path / "one.fits", workers=1, **kwargs)
    two = measure_file(image, cat, tmp_path / "two.fits", workers=2, **kwargs)
    assert torch.get_num_threads() == threads  # the caller's setting is left alone
    np.testing.assert_array_equal(one["id"], two["id"])
    np.testing.assert_array_equal(one["flags"], two["flags"])
    for name in ("flux", "flux_err", "sigma68", "pdf_mean", "pdf_sigma", "pdf_weight"):
        np.testing.assert_allclose(np.asarray(two[name]), np.asarray(one[name]), rtol=1e-5,
                                   atol=1e-6, equal_nan=True)  # fmt: skip


def test_workers_must_be_positive(field_dir, model_path, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        measure_file(field_dir / "image.fits", field_dir / "catalogue.fits",
                     tmp_path / "bad.fits", model_path=model_path, progress=False, workers=0)
    assert not (tmp_path / "bad.fits").exists()


def test_header_keywords_and_catalogue_columns_from_the_command_line(
    field_dir, model_path, tmp_path, capsys
):
    """A survey's own FITS keywords and catalogue column names, mapped with options."""
    with fits.open(field_dir / "image.fits") as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data
        header["FILTNAME"] = header.pop("FILTER")
        header["SEEING"] = header.pop("PSFFWHM")
        fits.PrimaryHDU(data, header).writeto(tmp_path / "image.fits")
    cat = Table.read(field_dir / "catalogue.fits")
    cat.rename_column("r50", "FLUX_RADIUS")
    cat.rename_column("i_mag", "MAG_I")
    cat.write(tmp_path / "cat.fits")
    reference = tmp_path / "ref.fits"
    status, _, err = _run(["measure", field_dir / "image.fits", field_dir / "catalogue.fits",
                           "--out", reference, "--model", model_path], capsys)  # fmt: skip
    assert status == 0, err
    out = tmp_path / "out.fits"
    status, _, err = _run(
        ["measure", tmp_path / "image.fits", tmp_path / "cat.fits", "--out", out, "--model",
         model_path, "--keyword", "band=FILTNAME", "--keyword", "psf_fwhm=SEEING",
         "--column", "r50=FLUX_RADIUS", "--column", "i_mag=MAG_I", "--exptime", "90"],
        capsys)  # fmt: skip
    assert status == 0, err
    np.testing.assert_allclose(read_table(out)["flux"], read_table(reference)["flux"],
                               rtol=1e-6, equal_nan=True)  # fmt: skip
    # the unmapped catalogue: the error names the column and the option that maps it
    status, _, err = _run(["measure", tmp_path / "image.fits", tmp_path / "cat.fits", "--out",
                           tmp_path / "x.fits", "--model", model_path, "--keyword",
                           "band=FILTNAME", "--keyword", "psf_fwhm=SEEING"], capsys)  # fmt: skip
    assert status != 0 and "missing required column 'r50'" in err and "--column r50=" in err
    assert len(err.splitlines()) == 1
    status, _, err = _run(["measure", tmp_path / "image.fits", tmp_path / "cat.fits", "--out",
                           tmp_path / "x.fits", "--keyword", "filter"], capsys)  # fmt: skip
    assert status != 0 and "--keyword expects NAME=VALUE" in err
    bad_item = ["--keyword", "colour=FILTNAME"]
    status, _, err = _run(["measure", tmp_path / "image.fits", tmp_path / "cat.fits", "--out",
                           tmp_path / "x.fits", *bad_item], capsys)  # fmt: skip
    assert status != 0 and "unknown item 'colour'" in err
    assert not (tmp_path / "x.fits").exists()


def _corrupt(path):
    path.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 50)
    return path


def _table_only(path):
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1]}))]).writeto(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("corrupt image", "cannot read FITS image"),
        ("no image hdu", "no 2-D image HDU"),
        ("missing column", "missing required column 'r50'"),
        ("radec without wcs", "no celestial WCS"),
        ("unknown band", "unknown band 'NB999'"),
        ("missing out dir", "output directory does not exist"),
        ("not a model", "model"),
        ("model with aperture", "--model, --prior: for --method lumos, not --method aperture"),
    ],
)
def test_bad_input_one_line_error_nonzero_exit_no_output(
    field_dir, model_path, tmp_path, capsys, case, message
):
    image = field_dir / "image.fits"
    catalogue = field_dir / "catalogue.fits"
    out = tmp_path / "out.fits"
    extra = ["--model", model_path]
    if case == "corrupt image":
        image = _corrupt(tmp_path / "bad.fits")
    elif case == "no image hdu":
        image = _table_only(tmp_path / "table.fits")
    elif case == "missing column":
        cat = Table.read(catalogue)
        cat.remove_column("r50")
        catalogue = tmp_path / "cat.csv"
        cat.write(catalogue)
    elif case == "radec without wcs":
        cat = Table.read(catalogue)
        cat.rename_columns(["x", "y"], ["ra", "dec"])
        catalogue = tmp_path / "cat.fits"
        cat.write(catalogue)
    elif case == "unknown band":
        extra += ["--band", "NB999"]
    elif case == "missing out dir":
        out = tmp_path / "nowhere" / "out.fits"
    elif case == "model with aperture":
        extra += ["--method", "aperture", "--prior", "none"]
    elif case == "not a model":
        fake = tmp_path / "model.pt"
        fake.write_bytes(b"\x80\x04\x95 not a lumos model")
        extra = ["--model", fake]
    status, _, err = _run(["measure", image, catalogue, "--out", out, *extra], capsys)
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.slow  # starts a local Dask cluster
def test_manifest_runs_images_in_parallel_like_one_by_one(field_dir, model_path, tmp_path):
    from lumos.manifest import measure_manifest

    # two images: the field and a copy with a different PSF keyword, plus a broken one
    second = tmp_path / "second.fits"
    with fits.open(field_dir / "image.fits") as hdul:
        hdul[0].header["PSFFWHM"] = 1.0
        hdul.writeto(second)
    broken = _corrupt(tmp_path / "broken.fits")
    manifest = Table({"path": [str(field_dir / "image.fits"), str(second), str(broken)]})
    manifest.write(tmp_path / "manifest.ecsv")
    out = tmp_path / "all.parquet"
    result = measure_manifest(tmp_path / "manifest.ecsv", field_dir / "catalogue.fits", out,
                              model_path=model_path, n_workers=2, progress=False)  # fmt: skip
    assert len(result) == 80
    assert result.meta["FAILED"] == str(broken)
    one = measure_file(second, field_dir / "catalogue.fits", tmp_path / "one.fits",
                       model_path=model_path, progress=False)  # fmt: skip
    part = result[result["image"] == str(second)]
    np.testing.assert_allclose(part["flux"], one["flux"], rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(part["flags"], one["flags"])
    # running again skips the images already done (their parts exist; with the broken image
    # left out nothing is left to measure, so no second cluster starts)
    parts = sorted((tmp_path / "all.parquet.parts").iterdir())
    assert len(parts) == 2
    mtimes = [p.stat().st_mtime_ns for p in parts]
    manifest[:2].write(tmp_path / "manifest.ecsv", overwrite=True)
    again = measure_manifest(tmp_path / "manifest.ecsv", field_dir / "catalogue.fits", out,
                             model_path=model_path, n_workers=1, progress=False)  # fmt: skip
    assert len(again) == 80 and again.meta["FAILED"] == ""
    assert [p.stat().st_mtime_ns for p in parts] == mtimes


def _field(field_dir):
    """The field image (a writable copy), its metadata and its normalised catalogue."""
    image, header, _ = read_image(field_dir / "image.fits")
    return image.copy(), image_metadata(header), read_catalogue(field_dir / "catalogue.fits")


def _tiny_model(seed=0, simulation_config=None):
    torch.manual_seed(seed)
    model = LumosNet(NetworkConfig.tiny())
    if simulation_config is not None:
        model.metadata = {"simulation_config": simulation_config}
    return model.eval()


@pytest.mark.parametrize("method", ["lumos", "aperture", "modelfit", "weighted"])
def test_no_valid_pixel_near_the_centre_is_failed_with_nan_fluxes(field_dir, method):
    """Every path: a galaxy on an all-NaN patch is FAILED with NaN fluxes, never ~0."""
    image, meta, cat = _field(field_dir)
    cat = cat[3:8]
    x, y = int(round(cat["x"][0])), int(round(cat["y"][0]))
    image[y - 12 : y + 13, x - 12 : x + 13] = np.nan
    model = _tiny_model() if method == "lumos" else None
    out = measure_image(image, cat, meta, method=method, model=model)
    assert out["flags"][0] & Flag.FAILED and out["flags"][0] & Flag.MASKED_CORE
    for name in ("flux", "flux_err", "flux_median", "flux_q16", "sigma68", "eta"):
        assert np.isnan(out[name][0]), name
    assert np.isnan(out["pdf_mean"][0]).all() and not np.any(out["pdf_weight"][0])
    assert not np.any(np.asarray(out["flags"][1:]) & Flag.FAILED)
    assert np.isfinite(out["flux"][1:]).all()


def test_an_all_nan_image_is_a_one_line_error(field_dir, model_path, tmp_path, capsys):
    with fits.open(field_dir / "image.fits") as hdul:
        fits.PrimaryHDU(np.full((50, 60), np.nan, np.float32), hdul[0].header).writeto(
            tmp_path / "empty.fits")  # fmt: skip
    out = tmp_path / "out.fits"
    status, _, err = _run(["measure", tmp_path / "empty.fits", field_dir / "catalogue.fits",
                           "--out", out, "--model", model_path], capsys)  # fmt: skip
    assert status != 0 and not out.exists()
    assert err.strip().splitlines() == [
        "lumos measure: error: image empty.fits has no finite pixels (all NaN or infinite)"
    ]


def test_psf_and_pixel_scale_outside_the_training_range_are_out_of_range(field_dir, tmp_path):
    """The ranges come from the training simulation recorded in the model file."""
    from lumos.simulate import SimulationConfig

    sim = SimulationConfig(psf_fwhm_range=(0.6, 1.3), psf_beta_range=(2.5, 5.0)).to_dict()
    save_model(_tiny_model(simulation_config=sim), tmp_path / "ranged")
    save_model(_tiny_model(), tmp_path / "plain")  # no training metadata
    image, cat = field_dir / "image.fits", field_dir / "catalogue.fits"

    def flags(model, **overrides):
        table = measure_file(image, cat, tmp_path / "t.fits", model_path=tmp_path / model,
                             overrides=overrides, progress=False)  # fmt: skip
        return (np.asarray(table["flags"]) & Flag.OUT_OF_RANGE) != 0

    assert not flags("ranged").any()  # FWHM 0.85, beta 3.5, 0.263 arcsec/pixel
    assert not flags("ranged", pixel_scale=0.262).any()  # within the tolerance
    for overrides in ({"psf_fwhm": 10.0}, {"psf_fwhm": 0.5}, {"psf_beta": 8.0},
                      {"pixel_scale": 0.339}):  # fmt: skip
        assert flags("ranged", **overrides).all(), overrides
        assert not flags("plain", **overrides).any(), overrides  # today's behaviour


def test_output_tables_read_without_unit_warnings(field_dir, model_path, tmp_path, capsys):
    """lumos measure and lumos coadd outputs: Table.read warns nothing, lumos keeps units."""
    import shutil
    import warnings

    second = tmp_path / "second.fits"
    shutil.copy(field_dir / "image.fits", second)
    cat = field_dir / "catalogue.fits"
    outputs = []
    for image, name in ((field_dir / "image.fits", "a.fits"), (second, "b.fits")):
        status, _, err = _run(["measure", image, cat, "--out", tmp_path / name, "--model",
                               model_path], capsys)  # fmt: skip
        assert status == 0, err
        outputs.append(tmp_path / name)
    status, _, err = _run(["coadd", *outputs, "--out", tmp_path / "co.fits"], capsys)
    assert status == 0, err
    for path in [*outputs, tmp_path / "co.fits"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plain = Table.read(path)
            ours = read_table(path)
        flux = "flux" if "flux" in plain.colnames else "flux_ivar"
        assert plain[flux].unit == "ct"  # the FITS-standard form of a count of electrons
        assert str(ours[flux].unit) == "electron"
        assert not any(k.startswith("LUNIT") for k in ours.meta)


class _CountingModel(torch.nn.Module):
    """A network that records how many stamps it was given."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen = 0

    def forward(self, batch):
        self.seen += len(batch)
        return self.model(batch)

    def range_flags(self, batch):
        return self.model.range_flags(batch)


def test_off_image_rows_are_flagged_without_being_cut_or_inferred(field_dir, capsys):
    """Cost follows the galaxies on the image: off-image rows never reach the network."""
    from astropy.table import vstack

    image, meta, full = _field(field_dir)
    on = full[3:6]
    rng = np.random.default_rng(3)
    off = full[np.full(20_000, 3)]
    off["id"] = np.arange(1000, 21_000)
    off["x"] = rng.uniform(-5e4, 5e4, len(off))
    off["y"] = np.where(rng.random(len(off)) < 0.5, -100.0, 1e6)
    cat = vstack([off[:10_000], on, off[10_000:]])
    model = _CountingModel(_tiny_model())
    out = measure_image(image, cat, meta, model=model, progress=True, batch_size=64)
    assert model.seen == 3
    assert "3/3" in capsys.readouterr().err  # the progress bar counts the measured rows only
    flags = np.asarray(out["flags"])
    offs = np.r_[0:10_000, 10_003:20_003]
    assert np.all(flags[offs] == int(Flag.OFF_IMAGE)) and not np.any(flags[10_000:10_003] & 64)
    assert np.isnan(out["flux"][offs]).all() and np.isfinite(out["flux"][10_000:10_003]).all()
    alone = measure_image(image, on, meta, model=_tiny_model())
    np.testing.assert_allclose(out["flux"][10_000:10_003], alone["flux"], rtol=1e-6)


def test_a_missing_magnitude_is_the_network_rule(field_dir):
    """NaN i_mag reaches the network (no 99 substituted): it is the neutral magnitude."""
    image, meta, cat = _field(field_dir)
    cat = cat[3:6]
    model = _tiny_model()
    cat["i_mag"][1] = np.nan
    cat["flags"][1] |= int(Flag.BAD_MAGNITUDE)  # as read_catalogue flags it
    missing = measure_image(image, cat, meta, model=model)
    cat["i_mag"][1] = model.config.i_mag_center
    neutral = measure_image(image, cat, meta, model=model)
    assert missing["flags"][1] == int(Flag.BAD_MAGNITUDE)
    assert not missing["pdf_truncated"][1]
    for name in ("flux", "flux_err", "pdf_mean", "pdf_sigma"):
        np.testing.assert_allclose(np.asarray(missing[name]), np.asarray(neutral[name]),
                                   rtol=1e-6)  # fmt: skip


def test_nan_and_huge_positions_raise_no_numpy_warnings(field_dir, model_path, tmp_path):
    import warnings

    cat = Table.read(field_dir / "catalogue.fits")[:4]
    cat["x"][1], cat["y"][2], cat["x"][3] = np.nan, 1e300, -1e20
    cat.write(tmp_path / "cat.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("lumos", "aperture"):
            out = measure_file(field_dir / "image.fits", tmp_path / "cat.fits",
                               tmp_path / "o.fits", method=method, model_path=model_path,
                               progress=False)  # fmt: skip
            assert list(np.asarray(out["flags"][1:]) & Flag.OFF_IMAGE) == [64, 64, 64]


# --- outputs: format, writability, overwriting, defaults said ------------------------------


def test_csv_output_is_written_without_the_vector_columns(field_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    status, _, err = _run(["measure", field_dir / "image.fits", field_dir / "catalogue.fits",
                           "--out", out, "--method", "aperture"], capsys)  # fmt: skip
    assert status == 0, err
    table = read_table(out)
    assert len(table) == 40 and "flux" in table.colnames and "pdf_mean" not in table.colnames
    assert "CSV cannot hold the vector columns pdf_weight, pdf_mean, pdf_sigma" in err


def test_unwritable_output_is_refused_before_measuring(field_dir, tmp_path, capsys,
                                                       monkeypatch):
    import errno
    import tempfile

    import lumos.measure

    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(dir) == str(tmp_path / "ro"):
            raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.out.fits.tmp")
        return real_mkstemp(*args, dir=dir, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("measured before checking the output")

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(lumos.measure, "measure_image", never)
    out = tmp_path / "ro" / "out.fits"
    status, _, err = _run(["measure", field_dir / "image.fits", field_dir / "catalogue.fits",
                           "--out", out, "--method", "aperture"], capsys)  # fmt: skip
    assert status == 1
    assert err == f"lumos measure: error: cannot write {out}: permission denied in {out.parent}\n"


def test_overwriting_an_output_is_said(field_dir, tmp_path, capsys):
    out = tmp_path / "out.fits"
    argv = ["measure", field_dir / "image.fits", field_dir / "catalogue.fits", "--out", out,
            "--method", "aperture"]  # fmt: skip
    status, _, err = _run(argv, capsys)
    assert status == 0 and "overwritten" not in err
    status, _, err = _run(argv, capsys)
    assert status == 0 and f"lumos measure: {out} exists and will be overwritten" in err


def test_a_missing_exposure_time_is_said_and_recorded(field_dir, tmp_path, capsys):
    with fits.open(field_dir / "image.fits") as hdul:
        del hdul[0].header["EXPTIME"]
        hdul.writeto(tmp_path / "image.fits")
    out = tmp_path / "out.fits"
    status, _, err = _run(["measure", tmp_path / "image.fits", field_dir / "catalogue.fits",
                           "--out", out, "--method", "aperture"], capsys)  # fmt: skip
    assert status == 0, err
    assert "image.fits has no EXPTIME header keyword; using the NB685 default exposure time" in err
    table = read_table(out)
    assert table.meta["EXPTSRC"] == "band default" and table.meta["EXPTIME"] > 0
    status, _, err = _run(["measure", tmp_path / "image.fits", field_dir / "catalogue.fits",
                           "--out", out, "--method", "aperture", "--exptime", "60"], capsys)
    assert "default exposure time" not in err
    assert read_table(out).meta["EXPTSRC"] == "option"
    assert read_table(out).meta["EXPTIME"] == 60.0


# --- manifests: formats, parts keyed on their inputs, failures and interruptions -----------


@pytest.fixture(scope="module")
def dask_scheduler():
    """One local Dask cluster for the manifest tests of this module (its address)."""
    from dask.distributed import LocalCluster

    from lumos.manifest import _NO_DASHBOARD

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None, scheduler_kwargs=_NO_DASHBOARD)  # fmt: skip
    yield cluster.scheduler_address
    cluster.close()


def test_manifest_formats(tmp_path, field_dir):
    from lumos.errors import LumosError
    from lumos.manifest import is_manifest, read_manifest

    listing = tmp_path / "images.txt"
    listing.write_text("# tonight\na.fits\n\n  sub/b.fits  \n")
    assert is_manifest(listing)
    assert list(read_manifest(listing)["path"]) == ["a.fits", "sub/b.fits"]
    bare = tmp_path / "images"  # no suffix, but a text file
    bare.write_text("a.fits\n")
    assert is_manifest(bare) and list(read_manifest(bare)["path"]) == ["a.fits"]
    assert not is_manifest(field_dir / "image.fits")
    table = tmp_path / "m.csv"
    Table({"image": ["a.fits", "b.fits"], "band": ["NB685", "NB695"]}).write(table)
    back = read_manifest(table)
    assert list(back["path"]) == ["a.fits", "b.fits"] and list(back["band"]) == ["NB685", "NB695"]
    headerless = tmp_path / "h.csv"
    headerless.write_text("a.fits\nb.fits\n")
    assert list(read_manifest(headerless)["path"]) == ["a.fits", "b.fits"]
    fits_manifest = tmp_path / "m.fits"
    Table({"IMAGE": ["a.fits"]}).write(fits_manifest)
    assert is_manifest(fits_manifest) and list(read_manifest(fits_manifest)["path"]) == ["a.fits"]
    wrong = tmp_path / "w.csv"
    Table({"name": ["a.fits"], "band": ["NB685"]}).write(wrong)
    with pytest.raises(LumosError, match=r"needs a 'path' column \(or 'image'\).*one image per "
                       r"line.*it has the columns: name, band"):  # fmt: skip
        read_manifest(wrong)
    empty = tmp_path / "e.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(LumosError, match="lists no images"):
        read_manifest(empty)


def test_manifest_parts_are_reused_only_while_their_inputs_are_unchanged(
    field_dir, model_path, tmp_path, capsys, dask_scheduler
):
    import shutil

    from lumos.manifest import measure_manifest

    for name in ("a.fits", "b.fits"):
        shutil.copy(field_dir / "image.fits", tmp_path / name)
    cat = tmp_path / "cat.fits"
    shutil.copy(field_dir / "catalogue.fits", cat)
    Table({"path": ["a.fits", "b.fits"]}).write(tmp_path / "images.csv")
    out = tmp_path / "all.fits"
    parts = tmp_path / "all.fits.parts"

    def run(**kwargs):
        capsys.readouterr()
        table = measure_manifest(tmp_path / "images.csv", cat, out, model_path=model_path,
                                 scheduler=dask_scheduler, progress=False, **kwargs)
        return table, capsys.readouterr().err

    first, err = run()
    assert len(first) == 80 and "reusing" not in err
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert len(mtimes) == 2
    again, err = run()
    assert "reusing the results of 2 image(s) whose inputs are unchanged" in err
    assert {p.name: p.stat().st_mtime_ns for p in parts.iterdir()} == mtimes
    np.testing.assert_array_equal(again["flux"], first["flux"])
    # another prior: both images are measured again
    _, err = run(prior="none")
    assert "measuring again 2 image(s)" in err
    # a one-row catalogue: both images are measured again
    Table.read(cat)[5:6].write(cat, overwrite=True)
    third, err = run()
    assert len(third) == 2 and "measuring again 2 image(s)" in err
    # an image replaced by a blank (NaN but for one corner pixel) one of the same size: only
    # that one again
    with fits.open(tmp_path / "b.fits") as hdul:
        hdul[0].data[:] = np.nan
        hdul[0].data[0, 0] = 0.0
        hdul.writeto(tmp_path / "b.fits", overwrite=True)
    fourth, err = run()
    assert "reusing the results of 1 image(s)" in err and ": a.fits" in err
    assert "measuring again 1 image(s)" in err and err.rstrip().endswith("b.fits")
    flags = dict(zip(fourth["image"], fourth["flags"], strict=True))
    assert flags["b.fits"] & Flag.MASKED_CORE and not flags["a.fits"] & Flag.MASKED_CORE
    # other options (the method) measure again too; parts of earlier inputs are removed
    fifth, err = run(method="aperture")
    assert "measuring again 2 image(s)" in err and fifth.meta["METHOD"] == "aperture"
    assert len(list(parts.iterdir())) == 2


def test_manifest_applies_the_prior_it_is_given(field_dir, tmp_path, dask_scheduler):
    from lumos.manifest import measure_manifest

    torch.manual_seed(1)
    like = tmp_path / "like"
    save_model(LumosNet(NetworkConfig.tiny().replace(likelihood=True)), like)
    Table({"path": [str(field_dir / "image.fits")]}).write(tmp_path / "images.csv")
    cat = field_dir / "catalogue.fits"
    table = measure_manifest(tmp_path / "images.csv", cat, tmp_path / "all.fits",
                             model_path=like, scheduler=dask_scheduler, progress=False,
                             prior="none")  # fmt: skip
    none = measure_file(field_dir / "image.fits", cat, tmp_path / "none.fits", model_path=like,
                        progress=False, prior="none")  # fmt: skip
    auto = measure_file(field_dir / "image.fits", cat, tmp_path / "auto.fits", model_path=like,
                        progress=False)  # fmt: skip
    np.testing.assert_allclose(table["flux"], none["flux"], rtol=1e-5, equal_nan=True)
    assert not np.allclose(table["flux"], auto["flux"], equal_nan=True)


def test_manifest_cli_refuses_one_image_options_and_passes_workers(field_dir, tmp_path, capsys,
                                                                    monkeypatch):
    import lumos.manifest

    Table({"path": [str(field_dir / "image.fits")]}).write(tmp_path / "images.csv")
    args = ["measure", tmp_path / "images.csv", field_dir / "catalogue.fits", "--out"]
    out = tmp_path / "o.fits"
    status, _, err = _run([*args, out, "--psf-fwhm", "1.0", "--exptime", "90"], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1 and not out.exists()
    assert "--psf-fwhm, --exptime: options of one image; give each image's values in the " \
        "manifest's columns (band, psf_fwhm" in err  # fmt: skip
    seen = {}

    def fake(*a, **k):
        seen.update(k)
        return Table({"flux": [1.0]}, meta={"NIMAGES": 1})

    monkeypatch.setattr(lumos.manifest, "measure_manifest", fake)
    status, stdout, _ = _run([*args, out, "--workers", "3", "--prior", "none"], capsys)
    assert status == 0 and "from 1 images" in stdout
    assert seen["n_workers"] == 3 and seen["prior"] == "none"


def test_failed_manifest_leaves_no_parts_folder(field_dir, tmp_path, dask_scheduler):
    from lumos.errors import LumosError
    from lumos.manifest import measure_manifest

    broken = _corrupt(tmp_path / "broken.fits")
    Table({"path": [str(broken)]}).write(tmp_path / "m.ecsv")
    with pytest.raises(LumosError, match="every image of the manifest failed"):
        measure_manifest(tmp_path / "m.ecsv", field_dir / "catalogue.fits",
                         tmp_path / "out.fits", method="aperture", scheduler=dask_scheduler,
                         progress=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.fits", "m.ecsv"]


def test_interrupted_manifest_says_one_line_and_leaves_no_parts(
    field_dir, tmp_path, capsys, monkeypatch, dask_scheduler
):
    import dask.distributed

    def interrupted(futures, *args, **kwargs):
        parts = tmp_path / "out.fits.parts"
        (parts / ".00000-broken.parquet.tmp").write_text("half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(dask.distributed, "as_completed", interrupted)
    _corrupt(tmp_path / "broken.fits")  # fails at once: no worker writes a part meanwhile
    Table({"path": ["broken.fits"]}).write(tmp_path / "images.csv")
    status, out, err = _run(["measure", tmp_path / "images.csv", field_dir / "catalogue.fits",
                             "--out", tmp_path / "out.fits", "--scheduler", dask_scheduler],
                            capsys)  # fmt: skip
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("images:")]  # fmt: skip
    assert status == 130 and lines == ["lumos measure: interrupted"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.fits", "images.csv"]


def test_workers_start_withsigint_ignored():
    import signal

    from lumos.interrupts import quiet_worker, sigint_ignored

    before = signal.getsignal(signal.SIGINT)
    with sigint_ignored():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before
    from tqdm import tqdm

    previous = tqdm.get_lock()
    try:
        quiet_worker()
        assert not type(tqdm.get_lock()).__module__.startswith("multiprocessing")
        assert not any(type(lock).__module__.startswith("multiprocessing")
                       for lock in getattr(tqdm.get_lock(), "locks", []))  # fmt: skip
        # the scheduler's loss while the cluster closes is not logged; other errors are
        import logging

        log = logging.getLogger("distributed.worker")
        quiet_worker()
        assert len(log.filters) == len({type(f) for f in log.filters})
        lost = log.makeRecord(log.name, logging.ERROR, __file__, 1,
                              "Failed to communicate with scheduler during heartbeat.", (), None)
        other = log.makeRecord(log.name, logging.ERROR, __file__, 1, "Compute Failed", (), None)
        assert not log.filter(lost) and log.filter(other)
    finally:
        tqdm.set_lock(previous)


@pytest.mark.slow
def test_ctrl_c_in_a_manifest_run_exits_with_one_line(field_dir, tmp_path):
    """A real Ctrl-C (SIGINT to the process group) once the first image is done."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    names = [f"im{i}.fits" for i in range(32)]  # enough that the run outlasts the poll
    for name in names:
        shutil.copy(field_dir / "image.fits", tmp_path / name)
    Table({"path": names}).write(tmp_path / "images.csv")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    # a shell's background job ignores SIGINT and its children inherit that, while a
    # terminal's Ctrl-C reaches a process that does not: the child restores Python's handler
    # itself (a preexec_fn is unsafe in a process with threads, as pytest's is)
    child = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from lumos.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", child, "measure", "images.csv", str(field_dir /
         "catalogue.fits"), "--out", "out.fits", "--method", "aperture"],
        cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    parts = tmp_path / "out.fits.parts"
    start = time.monotonic()
    seen = None
    while time.monotonic() < start + 120 and proc.poll() is None:
        if parts.is_dir() and any(p.suffix == ".parquet" and not p.name.startswith(".")
                                  for p in parts.iterdir()):  # fmt: skip
            seen = time.monotonic() - start
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        tail = " | ".join(err.replace("\r", "\n").splitlines()[-3:])
        pytest.skip(f"the run finished before the interruption (first part seen after "
                    f"{seen} s, run over after {time.monotonic() - start:.1f} s; {tail})")
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("images:")]  # fmt: skip
    assert proc.returncode == 130 and lines == ["lumos measure: interrupted"], err
