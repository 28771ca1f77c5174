"""Manifests (lumos.manifest): recognising, reading and stacking, without running Dask.

Parts already in ``<out>.parts/`` are not measured again, so a manifest whose parts all
exist is stacked without a cluster; the parallel run itself is covered in test_measure.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lumos.errors import LumosError
from lumos.manifest import is_manifest, measure_manifest, read_manifest
from lumos.tableio import read_table, write_table


def test_is_manifest_tells_tables_from_images(tmp_path):
    for name in ("m.csv", "m.ecsv", "m.parquet", "m.pq"):
        assert is_manifest(tmp_path / name)  # by extension, even before the file exists
    Table({"path": ["a.fits"]}).write(tmp_path / "m.fits")
    assert is_manifest(tmp_path / "m.fits")
    Table({"id": [1]}).write(tmp_path / "catalogue.fits")
    assert not is_manifest(tmp_path / "catalogue.fits")  # a table without paths
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(tmp_path / "image.fits")
    assert not is_manifest(tmp_path / "image.fits")
    (tmp_path / "broken.fits").write_bytes(b"not fits")
    assert not is_manifest(tmp_path / "broken.fits")
    assert not is_manifest(tmp_path / "absent.fits")


def test_read_manifest_needs_a_path_column_and_rows(tmp_path):
    Table({"path": ["a.fits", "b.fits"], "band": ["NB685", "NB695"]}).write(tmp_path / "m.ecsv")
    assert list(read_manifest(tmp_path / "m.ecsv")["path"]) == ["a.fits", "b.fits"]
    Table({"file": ["a.fits"]}).write(tmp_path / "nopath.ecsv")
    with pytest.raises(LumosError, match="needs a 'path' column; it has: file"):
        read_manifest(tmp_path / "nopath.ecsv")
    Table({"path": np.array([], dtype=str)}).write(tmp_path / "empty.ecsv")
    with pytest.raises(LumosError, match="lists no images"):
        read_manifest(tmp_path / "empty.ecsv")
    with pytest.raises(LumosError, match="manifest file not found"):
        read_manifest(tmp_path / "absent.ecsv")


def test_an_image_without_catalogue_is_an_error_before_any_work(tmp_path):
    Table({"path": ["a.fits"]}).write(tmp_path / "m.ecsv")
    with pytest.raises(LumosError, match="no catalogue for image a.fits"):
        measure_manifest(tmp_path / "m.ecsv", None, tmp_path / "out.fits", progress=False)
    assert not (tmp_path / "out.fits").exists()
    with pytest.raises(LumosError, match="output directory does not exist"):
        measure_manifest(tmp_path / "m.ecsv", "cat.fits", tmp_path / "no" / "out.fits")


def _part(ids, flux) -> Table:
    t = Table({"id": np.asarray(ids), "flux": np.asarray(flux, dtype=float)})
    t.meta["METHOD"] = "aperture"
    return t


def test_existing_parts_are_stacked_in_manifest_order_with_an_image_column(tmp_path):
    (tmp_path / "images").mkdir()
    listed = ["images/b.fits", str(tmp_path / "a.fits")]  # relative and absolute paths
    Table({"path": listed, "catalogue": ["cat_b.fits", ""]}).write(tmp_path / "m.ecsv")
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    parts.mkdir()
    write_table(_part([1, 2], [10.0, 20.0]), parts / "00000-b.parquet")
    write_table(_part([3], [30.0]), parts / "00001-a.parquet")
    result = measure_manifest(tmp_path / "m.ecsv", tmp_path / "cat.fits", out,
                              method="aperture", progress=False)  # fmt: skip
    assert list(result["image"]) == [listed[0], listed[0], listed[1]]
    assert list(result["id"]) == [1, 2, 3] and result.colnames[0] == "image"
    assert result.meta["METHOD"] == "aperture" and result.meta["NIMAGES"] == 2
    assert result.meta["FAILED"] == ""
    back = read_table(out)
    np.testing.assert_array_equal(back["flux"], [10.0, 20.0, 30.0])
    assert list(back["image"]) == list(result["image"])
