"""Tests of lumos.coadd: inverse-variance and PDF-level co-adds of exposure tables."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats

from lumos.coadd import coadd_tables, product_summaries
from lumos.errors import LumosError
from lumos.flags import UNUSABLE, Flag
from lumos.mixture import GaussianMixture, product
from lumos.stats import P16, P84, sigma68

K = 5

# tiny tensors: one intra-op thread is much faster (and immune to CPU contention)
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def gaussian_like_mixture(rng, centre, err):
    """K components whose mixture has exactly mean ``centre`` and std ``err``."""
    n = len(centre)
    w = rng.dirichlet(np.full(K, 2.0), n)
    delta = rng.normal(0.0, 0.3, (n, K))
    delta -= (w * delta).sum(axis=1, keepdims=True)
    spread = (w * delta**2).sum(axis=1, keepdims=True)
    mu = centre[:, None] + err[:, None] * delta
    sg = err[:, None] * np.sqrt(1.0 - spread) * np.ones((1, K))
    return w, mu, sg


def simulate_exposures(rng, n_gal=3000, n_exp=5, band="NB685"):
    """Per-exposure tables of simulated galaxies: true flux, Gaussian errors per exposure."""
    truth = 10 ** rng.uniform(2.0, 3.5, n_gal)
    tables = []
    for e in range(n_exp):
        err = np.sqrt(truth + 300.0 * rng.uniform(0.5, 2.0, n_gal))
        obs = truth + rng.normal(0.0, err)
        w, mu, sg = gaussian_like_mixture(rng, obs, err)
        t = Table()
        t["id"] = np.arange(n_gal)
        t["band"] = np.full(n_gal, band)
        t["image"] = np.full(n_gal, f"exp{e}")
        t["flux"] = obs
        t["flux_err"] = err
        t["pdf_weight"], t["pdf_mean"], t["pdf_sigma"] = w, mu, sg
        t["flags"] = np.zeros(n_gal, dtype=np.int64)
        tables.append(t)
    return truth, tables


def test_pdf_coadd_on_simulated_galaxies(rng):
    """The acceptance criterion: PDF co-add at least as precise as ivar, 68% coverage."""
    truth, tables = simulate_exposures(rng)
    out = coadd_tables(tables)
    assert len(out) == len(truth)
    np.testing.assert_array_equal(out["id"], np.arange(len(truth)))
    assert (out["n_exposures"] == 5).all() and (out["n_rejected"] == 0).all()
    rel_pdf = (out["flux_peak"] - truth) / truth
    rel_ivar = (out["flux_ivar"] - truth) / truth
    assert sigma68(rel_pdf) <= 1.01 * sigma68(rel_ivar)
    inside = (out["flux_q16"] <= truth) & (truth <= out["flux_q84"])
    assert abs(inside.mean() - (P84 - P16)) < 0.03
    # near-Gaussian mixtures with exact per-exposure moments: close to the ivar co-add
    diff = np.abs(np.asarray(out["flux"]) - np.asarray(out["flux_ivar"]))
    ratio = diff / np.asarray(out["flux_err"])
    assert np.median(ratio) < 0.02 and ratio.max() < 0.3
    np.testing.assert_allclose(out["flux_err"], out["flux_ivar_err"], rtol=0.1)


def test_grid_coadd_matches_exact_product(rng):
    n_groups, n_exp = 40, 3
    w = rng.dirichlet(np.ones(K), (n_groups, n_exp))
    mu = rng.normal(50.0, 20.0, (n_groups, n_exp, K))
    sg = rng.uniform(3.0, 20.0, (n_groups, n_exp, K))
    trunc = np.zeros((n_groups, n_exp), bool)
    trunc[::2] = True
    mu[::4, 0, 0] = -40.0  # components far below zero on truncated rows
    got = product_summaries(w, mu, sg, truncated=trunc)
    factors = [
        GaussianMixture.from_arrays(w[:, i], mu[:, i], sg[:, i], trunc[:, i]) for i in range(n_exp)
    ]
    exact = product(factors).summaries()
    for key, ref in exact.items():
        assert (np.abs(got[key] - ref) <= 3e-4 * exact["flux_err"]).all(), key


def test_grid_coadd_of_many_exposures_matches_brute_force(rng):
    n_groups, n_exp = 3, 12
    truth = np.array([40.0, 400.0, 4.0])
    w = rng.dirichlet(np.ones(K), (n_groups, n_exp))
    err = rng.uniform(5.0, 15.0, (n_groups, n_exp))
    obs = truth[:, None] + rng.normal(0.0, err)
    mu = obs[..., None] + err[..., None] * rng.normal(0.0, 0.5, (n_groups, n_exp, K))
    sg = err[..., None] * rng.uniform(0.5, 1.2, (n_groups, n_exp, K))
    trunc = np.array([False, False, True])[:, None] & np.ones((1, n_exp), bool)
    use = np.ones((n_groups, n_exp), bool)
    use[0, 5:] = False  # padding slots are ignored
    got = product_summaries(w, mu, sg, use=use, truncated=trunc)
    for g in range(n_groups):
        lo = 0.0 if trunc[g, 0] else truth[g] - 80.0
        x = np.linspace(lo, truth[g] + 80.0, 200_001)
        logp = np.zeros_like(x)
        for i in np.flatnonzero(use[g]):
            dens = sum(
                w[g, i, k]
                * stats.norm.pdf(x, mu[g, i, k], sg[g, i, k])
                / (stats.norm.sf(0.0, mu[g, i, k], sg[g, i, k]) if trunc[g, i] else 1.0)
                for k in range(K)
            )
            logp += np.log(dens)
        p = np.exp(logp - logp.max())
        c = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
        p /= c[-1]
        c /= c[-1]
        mean = np.trapezoid(x * p, x)
        std = np.sqrt(np.trapezoid((x - mean) ** 2 * p, x))
        tol = 1e-4 * std
        assert got["flux"][g] == pytest.approx(mean, abs=tol)
        assert got["flux_err"][g] == pytest.approx(std, rel=1e-4)
        assert got["flux_median"][g] == pytest.approx(np.interp(0.5, c, x), abs=tol)
        assert got["flux_q16"][g] == pytest.approx(np.interp(P16, c, x), abs=tol)
        assert got["flux_q975"][g] == pytest.approx(np.interp(0.975, c, x), abs=tol)
        assert got["flux_peak"][g] == pytest.approx(x[np.argmax(p)], abs=tol + (x[1] - x[0]))


def test_rejections_and_never_a_lost_galaxy(rng):
    truth, tables = simulate_exposures(rng, n_gal=6, n_exp=3)
    tables[0]["flags"][0] = int(Flag.FAILED)  # rejected
    tables[1]["flags"][0] = int(Flag.EDGE)  # usable flag
    tables[2]["pdf_mean"][1, 2] = np.nan  # NaN PDF: rejected
    for t in tables:  # galaxy 2: nothing usable
        t["flags"][2] = int(Flag.OFF_IMAGE)
    tables[0]["pdf_weight"][3] = [1.0, 0, 0, 0, 0]  # unused components may be NaN
    tables[0]["pdf_mean"][3, 1:] = np.nan
    tables[0]["pdf_sigma"][3, 1:] = np.nan
    out = coadd_tables(tables)
    assert len(out) == 6
    assert list(out["n_exposures"]) == [2, 2, 0, 3, 3, 3]
    assert list(out["n_rejected"]) == [1, 1, 3, 0, 0, 0]
    assert np.isnan(out["flux"][2]) and np.isnan(out["flux_ivar"][2])
    assert np.isfinite(out["flux"][[0, 1, 3, 4, 5]]).all()
    assert np.isfinite(out["flux_ivar"][[0, 1, 3, 4, 5]]).all()
    # the ivar co-add of galaxy 0 uses exposures 1 and 2 only
    f = np.array([tables[i]["flux"][0] for i in (1, 2)])
    e = np.array([tables[i]["flux_err"][0] for i in (1, 2)])
    ref = np.sum(f / e**2) / np.sum(1 / e**2)
    assert out["flux_ivar"][0] == pytest.approx(ref)
    assert out["flux_ivar_err"][0] == pytest.approx(np.sum(1 / e**2) ** -0.5)
    # a custom unusable mask lets the FAILED exposure in
    out2 = coadd_tables(tables, unusable=int(Flag.OFF_IMAGE))
    assert out2["n_exposures"][0] == 3
    assert UNUSABLE & Flag.FAILED


def test_single_table_and_several_bands(rng):
    _, tables_a = simulate_exposures(rng, n_gal=4, n_exp=2, band="NB685")
    _, tables_b = simulate_exposures(rng, n_gal=4, n_exp=3, band="NB455")
    from astropy.table import vstack

    out = coadd_tables(vstack(tables_a + tables_b))
    assert len(out) == 8
    assert list(out["band"][:2]) == ["NB455", "NB685"]
    assert list(out["n_exposures"]) == [3, 2] * 4


def test_single_exposure_coadd_reproduces_the_mixture(rng):
    _, tables = simulate_exposures(rng, n_gal=5, n_exp=1)
    t = tables[0]
    out = coadd_tables(t, method="pdf")
    ref = GaussianMixture.from_arrays(t["pdf_weight"], t["pdf_mean"], t["pdf_sigma"]).summaries()
    for key in ("flux", "flux_err", "flux_median", "flux_q16", "sigma95", "flux_peak"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-6, err_msg=key)
    assert "flux_ivar" not in out.colnames
    ivar_only = coadd_tables(t, method="ivar")
    assert "flux_peak" not in ivar_only.colnames
    np.testing.assert_allclose(ivar_only["flux_ivar"], t["flux"])


def test_zero_points_by_image_and_by_band(rng):
    _, tables = simulate_exposures(rng, n_gal=5, n_exp=2)
    base = coadd_tables(tables)
    zp_img = Table({"image": ["exp0", "exp1"], "zp": [2.0, 2.0], "zp_err": [0.0, 0.0]})
    scaled = coadd_tables(tables, zero_points=zp_img)
    assert scaled.meta["ZPKEY"] == "image"
    for key in ("flux", "flux_peak", "flux_median", "flux_ivar", "flux_ivar_err", "sigma68"):
        np.testing.assert_allclose(scaled[key], 2.0 * base[key], rtol=1e-6, err_msg=key)
    # by band, with an uncertainty: wider co-added PDFs
    zp_band = Table({"band": ["NB685"], "zp": [1.0], "zp_err": [0.05]})
    wider = coadd_tables(tables, zero_points=zp_band)
    assert wider.meta["ZPKEY"] == "band"
    assert (wider["flux_err"] > base["flux_err"]).all()
    assert (wider["flux_ivar_err"] > base["flux_ivar_err"]).all()
    # an exposure without a zero point is rejected
    partial = coadd_tables(tables, zero_points=Table({"image": ["exp0"], "zp": [1.0]}))
    assert (partial["n_exposures"] == 1).all() and (partial["n_rejected"] == 1).all()


def test_units_and_masked_values_are_kept(rng):
    _, tables = simulate_exposures(rng, n_gal=3, n_exp=2)
    masked = []
    for t in tables:
        m = Table(t, masked=True)
        m["flux"].unit = "electron"
        masked.append(m)
    masked[0]["flux"].mask[1] = True  # a masked flux is a missing value, not a fill value
    out = coadd_tables(masked, method="ivar")
    assert out["flux_ivar"].unit == "electron"
    assert out["flux_ivar"][1] == pytest.approx(masked[1]["flux"][1])
    assert list(out["n_exposures"]) == [2, 1, 2]


def test_truncation_from_column_or_magnitude():
    t = Table()
    t["id"] = [1, 1]
    t["band"] = ["NB685", "NB685"]
    t["flags"] = [0, 0]
    t["pdf_weight"] = np.array([[1.0, 0.0], [1.0, 0.0]])
    t["pdf_mean"] = np.array([[-5.0, 0.0], [-3.0, 0.0]])
    t["pdf_sigma"] = np.array([[4.0, 1.0], [4.0, 1.0]])
    plain = coadd_tables(t, method="pdf")
    assert plain["flux_q025"][0] < 0
    t["i_mag"] = [22.5, 22.5]
    trunc = coadd_tables(t, method="pdf")
    assert trunc["flux_q025"][0] >= 0 and trunc["flux_peak"][0] == 0.0
    t["pdf_truncated"] = [False, False]  # an explicit column wins over i_mag
    assert coadd_tables(t, method="pdf")["flux_q025"][0] < 0


def test_bad_input_raises_clear_errors(rng):
    _, tables = simulate_exposures(rng, n_gal=3, n_exp=1)
    with pytest.raises(LumosError, match="method"):
        coadd_tables(tables, method="median")
    t = tables[0].copy()
    del t["pdf_sigma"]
    with pytest.raises(LumosError, match="pdf_sigma"):
        coadd_tables([t])
    assert isinstance(coadd_tables([t], method="ivar"), Table)
    with pytest.raises(LumosError, match="zp"):
        coadd_tables(tables, zero_points=Table({"band": ["NB685"], "scale": [1.0]}))
    a, b = tables[0].copy(), tables[0].copy()
    a["flux"].unit, b["flux"].unit = "electron", "adu"
    with pytest.raises(LumosError, match="mix flux units"):
        coadd_tables([a, b], method="ivar")
    with pytest.raises(ValueError, match="equal shapes"):
        product_summaries(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)))


def test_an_exposure_counted_twice_or_mixed_methods_are_refused(rng):
    _, tables = simulate_exposures(rng, n_gal=4, n_exp=2)
    with pytest.raises(LumosError, match="galaxy id 0 appears twice for exposure exp0 "
                       r"\(in table 0 and table 2\)"):  # fmt: skip
        coadd_tables(tables + [tables[0].copy()])
    a, b = (t.copy() for t in tables)
    a.meta["METHOD"], b.meta["METHOD"] = "lumos", "aperture"
    with pytest.raises(LumosError, match=r"mix measurement methods: aperture \(table 1\), "
                       r"lumos \(table 0\)"):  # fmt: skip
        coadd_tables([a, b])
    b.meta["METHOD"] = "lumos"
    assert list(coadd_tables([a, b])["n_exposures"]) == [2] * 4


def _measurement_file(path, rng, method="lumos", image="exp.fits"):
    _, (t,) = simulate_exposures(rng, n_gal=3, n_exp=1)
    del t["image"]
    t.meta.update({"METHOD": method, "IMAGE": image, "IMGPATH": f"/data/{image}"})
    from lumos.tableio import write_table

    write_table(t, path)
    return path


def test_coadd_command_refuses_a_table_twice_and_mixed_methods(rng, tmp_path, capsys):
    from lumos.cli import main

    a = _measurement_file(tmp_path / "a.fits", rng, image="e1.fits")
    b = _measurement_file(tmp_path / "b.fits", rng, image="e2.fits")
    ap = _measurement_file(tmp_path / "ap.fits", rng, method="aperture", image="e3.fits")
    same_image = _measurement_file(tmp_path / "again.fits", rng, image="e1.fits")
    out = tmp_path / "co.fits"
    cases = [([a, a], "galaxy id 0 appears twice for exposure /data/e1.fits (in a.fits and "
                      "a.fits)"),
             ([a, same_image], "(in a.fits and again.fits)"),
             ([a, ap], "mix measurement methods: aperture (ap.fits), lumos (a.fits)"),
             ([ap, "--prior", "none"], "--prior: for tables of a likelihood model; these are "
                                       "co-added by inverse variance")]
    for tables, message in cases:
        status = main(["coadd", *map(str, tables), "--out", str(out)])
        err = capsys.readouterr().err
        assert status == 1 and len(err.splitlines()) == 1 and message in err, err
        assert not out.exists()
    assert main(["coadd", str(a), str(b), "--out", str(out)]) == 0
    assert "overwritten" not in capsys.readouterr().err
    assert main(["coadd", str(a), str(b), "--out", str(out)]) == 0
    assert f"lumos coadd: {out} exists and will be overwritten" in capsys.readouterr().err
