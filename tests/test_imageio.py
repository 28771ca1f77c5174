import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lumos.errors import ImageError, LumosError
from lumos.imageio import image_metadata, read_image
from lumos.tableio import read_table, write_table


def _header(**extra):
    h = fits.Header()
    h["FILTER"] = "NB685"
    h["PSFFWHM"] = 0.85
    h["EXPTIME"] = 90.0
    h.update(extra)
    return h


def test_read_image_primary_and_compressed(tmp_path):
    data = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    fits.PrimaryHDU(data, header=_header()).writeto(tmp_path / "a.fits")
    image, header, wcs = read_image(tmp_path / "a.fits")
    np.testing.assert_array_equal(image, data)
    assert header["FILTER"] == "NB685" and wcs is None
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=_header())])
    hdul.writeto(tmp_path / "b.fits")
    image, header, _ = read_image(tmp_path / "b.fits")
    np.testing.assert_allclose(image, data, rtol=1e-3, atol=1)


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.fits")
    (tmp_path / "bad.fits").write_bytes(b"this is not a FITS file at all" * 100)
    with pytest.raises(ImageError, match="cannot read FITS image bad.fits"):
        read_image(tmp_path / "bad.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(
        tmp_path / "table.fits"
    )
    with pytest.raises(ImageError, match="no 2-D image HDU"):
        read_image(tmp_path / "table.fits")


def test_metadata_from_header_and_overrides():
    meta = image_metadata(_header(GAIN=2.0))
    assert meta.band.name == "NB685" and meta.psf_fwhm == 0.85 and meta.gain == 2.0
    assert meta.exposure_time == 90.0 and meta.camera_state == 0
    meta = image_metadata(_header(), overrides={"band": "NB455", "psf_fwhm": 1.1, "gain": None})
    assert meta.band.name == "NB455" and meta.psf_fwhm == 1.1 and meta.gain == 1.0
    meta = image_metadata({"FILT": "NB845", "SEEING": 0.9}, keywords={"band": "FILT",
                                                                     "psf_fwhm": "SEEING"})
    assert meta.band.name == "NB845" and meta.exposure_time == 130.0


@pytest.mark.parametrize(
    "header, overrides, message",
    [
        ({"PSFFWHM": 0.8}, None, "band unknown"),
        ({"FILTER": "NB685"}, None, "PSF FWHM unknown"),
        ({"FILTER": "NB999", "PSFFWHM": 0.8}, None, "unknown band 'NB999'"),
        ({"FILTER": "NB685", "PSFFWHM": -1}, None, "PSF FWHM must be positive"),
        ({"FILTER": "NB685", "PSFFWHM": 0.8}, {"camera_state": 3}, "camera state"),
    ],
)
def test_metadata_errors(header, overrides, message):
    with pytest.raises(LumosError, match=message):
        image_metadata(header, overrides)


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".ecsv"])
def test_table_round_trip_with_vector_columns_and_units(tmp_path, suffix):
    t = Table({"id": np.arange(3), "flux": np.array([1.0, 2.0, np.nan]),
               "pdf_mean": np.arange(15.0).reshape(3, 5), "band": ["NB685"] * 3})  # fmt: skip
    t["flux"].unit = "electron"
    t.meta["METHOD"] = "lumos"
    path = write_table(t, tmp_path / f"out{suffix}")
    back = read_table(path)
    np.testing.assert_array_equal(back["pdf_mean"], t["pdf_mean"])
    assert str(back["flux"].unit) == "electron"
    assert back.meta["METHOD"] == "lumos"
    assert back["band"].dtype.kind in "US"  # not an object column
    write_table(back, tmp_path / "again.fits")  # what was read can be written to FITS
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"out{suffix}", "again.fits"])


def test_write_table_errors(tmp_path):
    t = Table({"a": [1]})
    with pytest.raises(LumosError, match="output directory does not exist"):
        write_table(t, tmp_path / "nope" / "x.fits")
    with pytest.raises(LumosError, match="cannot tell the format"):
        write_table(t, tmp_path / "x.txt")


def test_a_truncated_fits_image_is_called_truncated(tmp_path):
    import warnings

    fits.PrimaryHDU(np.ones((256, 256), np.float32), header=_header()).writeto(tmp_path / "a.fits")
    whole = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(whole[: len(whole) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy's own warning is not printed besides
        with pytest.raises(ImageError) as info:
            read_image(tmp_path / "cut.fits")
    message = str(info.value)
    assert message.startswith("cannot read FITS image cut.fits: the file is truncated")
    assert "reshape" not in message and "\n" not in message


@pytest.mark.parametrize(
    "unit, tunit",
    [("electron", "ct"), ("electron / s", "ct s-1"), ("adu", "adu"), ("arcsec", "arcsec"),
     ("ADU", None)],
)  # fmt: skip
def test_fits_tables_carry_fits_standard_units(tmp_path, unit, tunit):
    """Any FITS reader gets the units without a UnitsWarning; lumos gets them back as written."""
    import warnings

    import astropy.units as u

    t = Table({"flux": [1.0, 2.0], "x": [3.0, 4.0]})
    t["flux"].unit = unit
    write_table(t, tmp_path / "t.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = Table.read(tmp_path / "t.fits")
        ours = read_table(tmp_path / "t.fits")
    assert plain["flux"].unit == (None if tunit is None else u.Unit(tunit, format="fits"))
    assert str(ours["flux"].unit) == str(u.Unit(unit, parse_strict="silent"))
    assert ours["x"].unit is None and not any(k.startswith("LUNIT") for k in ours.meta)


# --- where the exposure time comes from, and how outputs are written ------------------------


def test_exposure_time_source_is_recorded():
    assert image_metadata(_header()).exposure_time_source == "header"
    meta = image_metadata(_header(), overrides={"exposure_time": 45.0})
    assert meta.exposure_time == 45.0 and meta.exposure_time_source == "option"
    meta = image_metadata({"FILTER": "NB685", "PSFFWHM": 0.8})
    assert meta.exposure_time == meta.band.exposure_time
    assert meta.exposure_time_source == "band default"


@pytest.fixture
def umask_022():
    import os

    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".ecsv", ".csv"])
def test_tables_get_the_mode_of_a_new_file_also_when_overwritten(tmp_path, umask_022, suffix):
    import os
    import stat

    t = Table({"id": np.arange(3)})
    path = write_table(t, tmp_path / f"out{suffix}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_table(t, path)  # overwriting keeps honouring the umask
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o027)
    write_table(t, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_csv_is_written_without_vector_columns_and_says_so(tmp_path, capsys):
    t = Table({"id": np.arange(3), "flux": [1.0, 2.0, 3.0],
               "pdf_mean": np.arange(15.0).reshape(3, 5)})  # fmt: skip
    path = write_table(t, tmp_path / "out.csv")
    back = read_table(path)
    assert back.colnames == ["id", "flux"]
    np.testing.assert_array_equal(back["flux"], t["flux"])
    err = capsys.readouterr().err
    assert "out.csv" in err and "pdf_mean" in err and "without them" in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_output_is_found_first_and_named(tmp_path, monkeypatch):
    import errno
    import tempfile

    from lumos import tableio

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.out.fits.x1y2")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(LumosError) as exc:
        tableio.check_output_path(tmp_path / "out.fits")
    message = str(exc.value)
    assert str(tmp_path / "out.fits") in message and "permission denied" in message
    assert ".out.fits." not in message


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into read-only dirs")
def test_read_only_directory_is_refused_before_any_work(tmp_path):
    from lumos.tableio import check_output_path

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(LumosError, match="cannot write"):
            check_output_path(folder / "out.fits")
    finally:
        folder.chmod(0o755)


def test_a_failed_write_names_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    import errno

    from lumos import tableio

    def full_disk(table, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(tableio, "_write_parquet", full_disk)
    with pytest.raises(LumosError) as exc:
        write_table(Table({"a": [1]}), tmp_path / "out.parquet")
    assert str(exc.value) == f"cannot write {tmp_path / 'out.parquet'}: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_announced_the_same_way(tmp_path, capsys):
    from lumos.tableio import announce_overwrite

    new, old = tmp_path / "new.fits", tmp_path / "old.fits"
    old.write_text("x")
    assert announce_overwrite("coadd", new, old) == [old]
    err = capsys.readouterr().err
    assert err == f"lumos coadd: {old} exists and will be overwritten\n"
    assert announce_overwrite("measure", tmp_path / "none") == []
    assert capsys.readouterr().err == ""
    (tmp_path / "dir").mkdir()
    assert announce_overwrite("validate", tmp_path / "dir") == []  # empty directory: nothing
    (tmp_path / "dir" / "report.md").write_text("x")
    announce_overwrite("validate", tmp_path / "dir")
    assert "files written into it will be overwritten" in capsys.readouterr().err


def test_extension_inherits_primary_keywords_without_warnings(tmp_path, recwarn):
    primary = fits.PrimaryHDU()
    primary.header["EXPTIME"] = 90.0
    primary.header["HIERARCH TIME_RECORDED"] = "2018-03-14T06:00:43"
    image = fits.ImageHDU(np.ones((8, 8), np.float32), name="SCI")
    path = tmp_path / "mef.fits"
    fits.HDUList([primary, image]).writeto(path)
    recwarn.clear()
    _, header, _ = read_image(path)
    assert header["EXPTIME"] == 90.0 and header["TIME_RECORDED"] == "2018-03-14T06:00:43"
    assert not [w for w in recwarn if "HIERARCH" in str(w.message)]
