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
