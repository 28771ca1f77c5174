"""Reading and writing tables (lumos.tableio): formats, round trips, atomic writes, errors."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lumos.errors import CatalogueError, LumosError
from lumos.tableio import (
    TABLE_FORMATS,
    check_output_path,
    read_table,
    table_format,
    write_table,
)


def _table() -> Table:
    t = Table()
    t["id"] = np.arange(4, dtype=np.int64)
    t["flux"] = np.array([1.5, -2.0, np.nan, 4.0]) * u.electron
    t["flags"] = np.array([0, 8, 1, 0], dtype=np.int64)
    t["name"] = np.array(["a", "bb", "ccc", "d"])
    t["vec"] = np.arange(12, dtype=np.float32).reshape(4, 3)
    t.meta["METHOD"] = "lumos"
    return t


def test_formats_follow_the_extension_case_insensitively():
    assert table_format("x.FITS") == "fits" and table_format("x.pq") == "parquet"
    assert table_format("dir/x.csv") == "ascii.csv" and table_format("x.ecsv") == "ascii.ecsv"
    assert set(TABLE_FORMATS.values()) == {"fits", "parquet", "ascii.csv", "ascii.ecsv"}
    with pytest.raises(LumosError, match=r"cannot tell the format of catalogue x\.txt: use one"):
        table_format("x.txt", "catalogue")


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".ecsv"])
def test_round_trip_keeps_values_units_meta_and_vector_columns(tmp_path, suffix):
    t = _table()
    path = write_table(t, tmp_path / f"out{suffix}")
    back = read_table(path)
    assert back.colnames == t.colnames
    np.testing.assert_array_equal(back["id"], t["id"])
    np.testing.assert_array_equal(back["flags"], t["flags"])
    np.testing.assert_array_equal(np.asarray(back["flux"]), np.asarray(t["flux"]))  # NaN kept
    assert str(back["flux"].unit) == "electron"  # FITS: kept as a (non-standard) unit string
    assert list(back["name"]) == list(t["name"])
    np.testing.assert_array_equal(np.asarray(back["vec"]), np.asarray(t["vec"]))
    assert back.meta["METHOD"] == "lumos"


def test_csv_round_trip_of_scalar_columns(tmp_path):
    t = _table()
    t.remove_column("vec")
    back = read_table(write_table(t, tmp_path / "out.csv"))
    np.testing.assert_allclose(back["flux"], t["flux"].value, equal_nan=True)
    assert list(back["name"]) == ["a", "bb", "ccc", "d"]


def test_big_endian_fits_columns_are_written_to_parquet(tmp_path):
    write_table(_table(), tmp_path / "a.fits")
    fits_back = read_table(tmp_path / "a.fits")
    assert fits_back["id"].dtype.byteorder == ">"
    back = read_table(write_table(fits_back, tmp_path / "b.parquet"))
    np.testing.assert_array_equal(back["id"], np.arange(4))


def test_the_first_table_hdu_is_read(tmp_path):
    path = tmp_path / "multi.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2))), fits.ImageHDU(np.ones((3, 3))),
                  fits.table_to_hdu(Table({"a": [1, 2]}))]).writeto(path)  # fmt: skip
    assert list(read_table(path)["a"]) == [1, 2]
    fits.PrimaryHDU(np.zeros((2, 2))).writeto(tmp_path / "image.fits")
    with pytest.raises(LumosError, match="catalogue image.fits has no table HDU"):
        read_table(tmp_path / "image.fits", "catalogue")


def test_read_errors_are_one_line_of_the_requested_class(tmp_path):
    with pytest.raises(CatalogueError, match="catalogue file not found"):
        read_table(tmp_path / "missing.fits", "catalogue", error=CatalogueError)
    (tmp_path / "x.txt").write_text("a b\n")
    with pytest.raises(CatalogueError, match="cannot tell the format"):
        read_table(tmp_path / "x.txt", "catalogue", error=CatalogueError)
    for name in ("bad.parquet", "bad.fits", "bad.ecsv"):
        (tmp_path / name).write_bytes(b"\x00garbage\x01" * 10)
        with pytest.raises(LumosError) as info:
            read_table(tmp_path / name, "manifest")
        assert "\n" not in str(info.value) and name in str(info.value)


def test_output_checks_happen_before_any_work(tmp_path):
    assert check_output_path(tmp_path / "t.fits") == tmp_path / "t.fits"
    assert check_output_path(tmp_path / "image.png", table=False) == tmp_path / "image.png"
    with pytest.raises(LumosError, match="output directory does not exist"):
        check_output_path(tmp_path / "nowhere" / "t.fits")
    with pytest.raises(LumosError, match="cannot tell the format of output table"):
        check_output_path(tmp_path / "t.txt")


def test_writes_are_atomic_and_respect_overwrite(tmp_path):
    path = write_table(_table(), tmp_path / "t.parquet")
    with pytest.raises(LumosError, match="output file exists"):
        write_table(_table(), path, overwrite=False)
    bad = Table({"obj": np.array([object(), object()], dtype=object)})
    with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises
        write_table(bad, path)
    # the failed write left the previous table intact and no temporary file behind
    assert len(read_table(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
