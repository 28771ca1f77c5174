import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from lumos.catalogue import read_catalogue
from lumos.errors import CatalogueError
from lumos.flags import Flag
from lumos.instrument import PIXEL_SCALE


def _table(n=5):
    return Table(
        {
            "id": np.arange(1, n + 1),
            "x": np.linspace(10, 90, n),
            "y": np.linspace(20, 80, n),
            "r50": np.full(n, 0.5),
            "sersic_n": np.full(n, 1.5),
            "q": np.full(n, 0.7),
            "pa": np.full(n, 30.0),
            "i_mag": np.full(n, 21.0),
        }
    )


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [50.0, 50.0]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.cdelt = [-PIXEL_SCALE / 3600, PIXEL_SCALE / 3600]
    return w


@pytest.mark.parametrize("suffix", [".fits", ".csv", ".ecsv", ".parquet"])
def test_reads_every_format(tmp_path, suffix):
    path = tmp_path / f"cat{suffix}"
    _table().write(path)
    cat = read_catalogue(path)
    assert len(cat) == 5
    assert cat.colnames == ["id", "x", "y", "r50", "sersic_n", "q", "pa", "i_mag", "flags"]
    assert np.all(cat["flags"] == 0)
    assert cat["r50"].unit == u.arcsec and cat["pa"].unit == u.deg


def test_csv_with_a_typo_in_a_column_name_names_the_column(tmp_path):
    t = _table()
    t.rename_column("sersic_n", "sercic_n")
    path = tmp_path / "typo.csv"
    t.write(path)
    expected = "missing required column 'sersic_n'.*did you mean 'sercic_n'"
    with pytest.raises(CatalogueError, match=expected):
        read_catalogue(path)
    # and the column map fixes it
    assert len(read_catalogue(path, columns={"sersic_n": "sercic_n"})) == 5


def test_radec_against_image_without_wcs_is_a_clear_error():
    t = _table()
    t.remove_columns(["x", "y"])
    t["ra"], t["dec"] = np.full(5, 150.0), np.full(5, 2.0)
    with pytest.raises(CatalogueError, match="ra/dec but the image has no celestial WCS"):
        read_catalogue(t)
    with pytest.raises(CatalogueError, match="no celestial WCS"):
        read_catalogue(t, wcs=WCS(naxis=2))


def test_radec_with_wcs_gives_pixel_positions():
    w = _wcs()
    ra, dec = w.all_pix2world([10.0, 60.5], [20.0, 70.25], 0)
    t = _table(2)
    t.remove_columns(["x", "y"])
    t["ra"], t["dec"] = ra, dec
    cat = read_catalogue(t, wcs=w)
    np.testing.assert_allclose(cat["x"], [10.0, 60.5], atol=1e-6)
    np.testing.assert_allclose(cat["y"], [20.0, 70.25], atol=1e-6)


def test_sky_position_angle_converted_through_wcs():
    # RA increases to the left (-x) and Dec upwards (+y): north is +y, east is -x,
    # so a sky PA of 0 (north) is 90 deg from +x, and PA 90 (east) is 180 = 0 mod 180.
    t = _table(2)
    t["pa"] = [0.0, 90.0]
    cat = read_catalogue(t, wcs=_wcs(), pa_frame="sky")
    np.testing.assert_allclose(cat["pa"], [90.0, 0.0], atol=1e-3)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x01garbage", "cannot read catalogue"),
        (None, "not found"),
    ],
)
def test_unreadable_or_missing_file(tmp_path, content, message):
    path = tmp_path / "cat.fits"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CatalogueError, match=message):
        read_catalogue(path)


def test_unknown_extension_and_empty(tmp_path):
    path = tmp_path / "cat.txt"
    path.write_text("id\n1\n")
    with pytest.raises(CatalogueError, match="cannot tell the format"):
        read_catalogue(path)
    with pytest.raises(CatalogueError, match="no rows"):
        read_catalogue(_table()[:0])


def test_duplicate_ids_name_the_rows():
    t = _table()
    t["id"][3] = 2
    with pytest.raises(CatalogueError, match="duplicate id 2 in column 'id' \\(rows 1 and 3\\)"):
        read_catalogue(t)


def test_missing_positions_and_non_numeric_column():
    t = _table()
    t.remove_column("y")
    with pytest.raises(CatalogueError, match="needs positions"):
        read_catalogue(t)
    t = _table()
    t["r50"] = ["big"] * 5
    with pytest.raises(CatalogueError, match="'r50' is not numeric"):
        read_catalogue(t)


@pytest.mark.parametrize(
    "column, value, flag",
    [
        ("r50", np.nan, Flag.BAD_PROFILE),
        ("r50", 0.0, Flag.BAD_PROFILE),
        ("r50", -1.0, Flag.BAD_PROFILE),
        ("sersic_n", 0.2, Flag.BAD_PROFILE),
        ("sersic_n", 6.5, Flag.BAD_PROFILE),
        ("q", 0.0, Flag.BAD_PROFILE),
        ("q", 1.2, Flag.BAD_PROFILE),
        ("pa", np.nan, Flag.BAD_PROFILE),
        ("i_mag", np.nan, Flag.BAD_MAGNITUDE),
        ("x", np.nan, Flag.OFF_IMAGE),
    ],
)
def test_row_value_problems_become_flags_not_dropped_rows(column, value, flag):
    t = _table()
    t[column][2] = value
    cat = read_catalogue(t)
    assert len(cat) == 5
    assert cat["flags"][2] & flag
    assert np.all(np.delete(np.asarray(cat["flags"]), 2) == 0)


def test_units_ellipticity_and_column_map():
    t = _table()
    t["r50"] = t["r50"] / 60.0
    t["r50"].unit = u.arcmin
    t["pa"] = np.deg2rad(t["pa"])
    t["pa"].unit = u.rad
    t["e"] = 1.0 - t["q"]
    t.remove_column("q")
    t.rename_column("i_mag", "MAG_I")
    cat = read_catalogue(t, columns={"ellipticity": "e", "i_mag": "MAG_I"})
    np.testing.assert_allclose(cat["r50"], 0.5)
    np.testing.assert_allclose(cat["pa"], 30.0)
    np.testing.assert_allclose(cat["q"], 0.7)
    t2 = _table()
    t2["r50"] = np.full(5, 2.0) * u.pix
    with pytest.raises(CatalogueError, match="pixel scale"):
        read_catalogue(t2)
    np.testing.assert_allclose(read_catalogue(t2, pixel_scale=PIXEL_SCALE)["r50"],
                               2 * PIXEL_SCALE)
    with pytest.raises(CatalogueError, match="unknown standard column"):
        read_catalogue(t2, columns={"radius": "r50"})


def test_reads_the_shared_field_catalogue(shared_data):
    cat = read_catalogue(shared_data / "field-nb685" / "catalogue.fits")
    assert len(cat) == 625
    assert np.all(cat["flags"] == 0)


def test_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    """Spreadsheet exports start with a BOM; it must not stick to the first column name."""
    plain = tmp_path / "plain.csv"
    _table().write(plain)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    cat = read_catalogue(bom)
    assert cat.colnames[0] == "id"
    np.testing.assert_array_equal(cat["id"], np.arange(1, 6))
