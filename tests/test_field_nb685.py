"""End to end on an exposure drawn by another renderer (GalSim, bulge + disk galaxies).

``../shared/data/field-nb685``: 625 galaxies on a 2048 x 2048 NB685 exposure with known true
fluxes. The shipped model and aperture photometry both run through ``lumos measure``; the
numbers behind these thresholds are in bench/RESULTS.md (``bench/bench_field.py``).
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from lumos.cli import main
from lumos.stats import sigma68
from lumos.tableio import read_table

FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "field-nb685"


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    folder = FIELD
    if not folder.is_dir():
        pytest.skip("../shared/data/field-nb685 is not available")
    out = tmp_path_factory.mktemp("field-nb685")
    tables = {}
    for method in ("lumos", "aperture"):
        path = out / f"{method}.parquet"
        status = main(["measure", str(folder / "image.fits"), str(folder / "catalogue.fits"),
                       "--out", str(path), "--method", method])  # fmt: skip
        assert status == 0
        tables[method] = read_table(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        catalogue = Table.read(folder / "catalogue.fits")
        truth = Table.read(folder / "truth.fits")
    return tables, catalogue, truth


def test_one_row_per_galaxy_in_catalogue_order(field):
    tables, catalogue, _ = field
    for table in tables.values():
        assert len(table) == len(catalogue) == 625
        np.testing.assert_array_equal(table["id"], catalogue["id"])
    lumos = tables["lumos"]
    assert np.mean(np.asarray(lumos["flags"]) == 0) > 0.95
    assert np.all(np.isfinite(lumos["flux"])) and np.all(np.asarray(lumos["flux_err"]) > 0)


def test_lumos_unbiased_bright_and_better_than_aperture_faint_and_blended(field):
    tables, catalogue, truth = field
    i_mag = np.asarray(catalogue["i_mag"])
    f_true = np.asarray(truth["flux_true"])
    neighbour = np.asarray(truth["neighbour"]) > 0
    rel = {}
    ok = np.ones(len(f_true), dtype=bool)
    for method, table in tables.items():
        rel[method] = (np.asarray(table["flux"]) - f_true) / f_true
        ok &= (np.asarray(table["flags"]) == 0) & np.isfinite(rel[method])
    bright = ok & ~neighbour & (i_mag < 21)
    assert bright.sum() > 200
    assert abs(np.median(rel["lumos"][bright])) < 0.03
    faint = ok & (i_mag >= 21)
    assert sigma68(rel["lumos"][faint]) < 0.8 * sigma68(rel["aperture"][faint])
    blended = ok & neighbour
    assert blended.sum() > 80
    assert sigma68(rel["lumos"][blended]) < 0.5 * sigma68(rel["aperture"][blended])
