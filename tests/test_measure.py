"""The measurement path: image + catalogue -> table, its contract, bad input and manifests."""

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from lumos.cli import main
from lumos.field import simulate_field
from lumos.flags import Flag
from lumos.measure import OUTPUT_COLUMNS, measure_file
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
