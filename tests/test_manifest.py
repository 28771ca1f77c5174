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




def test_parts_folder_emptied_by_a_vanishing_probe_is_removed(tmp_path, monkeypatch):
    """A worker's probe file gone between a failed rmdir and the next look: the now empty
    parts folder is removed, not left behind; kept parts stay."""
    from pathlib import Path

    from lumos import manifest

    parts = tmp_path / "out.fits.parts"
    parts.mkdir()
    (parts / ".probe.tmp").write_text("")
    real_rmdir, calls = Path.rmdir, []

    def rmdir_once_busy(self):
        calls.append(self)
        if len(calls) == 1:
            raise OSError("directory not empty (a probe file, gone right after)")
        real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", rmdir_once_busy)
    manifest._tidy_parts(parts, set())
    assert not parts.exists() and len(calls) == 2
    monkeypatch.setattr(Path, "rmdir", real_rmdir)
    parts.mkdir()
    (parts / "00000-a.parquet").write_text("kept")
    (parts / ".00001-b.parquet.tmp").write_text("half")
    manifest._tidy_parts(parts, {"00000-a.parquet"})
    assert sorted(p.name for p in parts.iterdir()) == ["00000-a.parquet"]
