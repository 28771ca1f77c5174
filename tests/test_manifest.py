"""Manifests (lumos.manifest): recognising, reading and stacking, without running Dask.

The parallel run, the reuse of parts keyed on their inputs and the stacking are covered in
test_measure.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lumos.errors import LumosError
from lumos.manifest import is_manifest, measure_manifest, read_manifest


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
    Table({"name": ["a.fits"]}).write(tmp_path / "nopath.ecsv")
    with pytest.raises(LumosError, match="path"):
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


