"""Likelihood columns, shared errors, posteriors and likelihood co-adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.table import Table

from lumos.bayes import apply_prior, coadd_likelihoods, split_shared
from lumos.mixture import GaussianMixture
from lumos.prior import FluxPrior

K = 5


def _table(flux, err, shared=0.0, band="NB685", i_mag=20.0, ids=None):
    n = len(flux)
    t = Table()
    t["id"] = np.arange(n) if ids is None else ids
    t["band"] = np.full(n, band)
    t["i_mag"] = np.full(n, i_mag)
    t["flags"] = np.zeros(n, np.int64)
    t["flux_like"] = np.asarray(flux, float)
    t["flux_like_err"] = np.asarray(err, float)
    t["flux_shared_err"] = shared * np.abs(t["flux_like"])
    w = np.zeros((n, K))
    w[:, 0] = 1.0
    mu = np.full((n, K), np.nan)
    sg = np.full((n, K), np.nan)
    mu[:, 0], sg[:, 0] = flux, err
    t["like_weight"], t["like_mean"], t["like_sigma"] = w, mu, sg
    for name in ("flux", "flux_err", "flux_median", "flux_peak", "flux_q16", "flux_q84",
                 "sigma68", "sigma95", "eta"):
        t[name] = np.full(n, np.nan)
    t["pdf_weight"] = np.zeros((n, K))
    t["pdf_mean"] = np.full((n, K), np.nan)
    t["pdf_sigma"] = np.full((n, K), np.nan)
    t["pdf_truncated"] = np.zeros(n, bool)
    t.meta.update({"METHOD": "lumos", "PRIOR": "none", "EXPTIME": 90.0, "GAIN": 1.0})
    return t


def test_split_shared_removes_relative_variance():
    mix = GaussianMixture.from_arrays([[1.0]], [[100.0]], [[5.0]])
    per, shared = split_shared(mix, 0.03)
    assert float(shared[0]) == pytest.approx(3.0)
    assert float(per.std()[0]) == pytest.approx(4.0)
    same, _ = split_shared(mix, 0.0)
    assert torch.allclose(same.sigmas, mix.sigmas)


def test_coadd_of_gaussian_likelihoods_without_prior_is_inverse_variance():
    flux = [100.0, 104.0, 98.0, 101.0]
    err = [5.0, 4.0, 6.0, 5.0]
    tabs = [_table([f], [e]) for f, e in zip(flux, err, strict=True)]
    co = coadd_likelihoods(tabs, prior="none")
    w = 1.0 / np.square(err)
    assert co["n_exposures"][0] == 4
    assert co["flux_like"][0] == pytest.approx(np.sum(w * flux) / w.sum(), rel=1e-6)
    assert co["flux_like_err"][0] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-6)
    assert co["flux_ivar"][0] == pytest.approx(co["flux_like"][0], rel=1e-9)
    assert co["flux"][0] == pytest.approx(co["flux_like"][0], rel=1e-4)  # far from zero


def test_shared_error_counted_once_in_coadd():
    tabs = [_table([100.0], [10.0], shared=0.05) for _ in range(4)]
    co = coadd_likelihoods(tabs, prior="none")
    assert co["flux_like_err"][0] == pytest.approx(5.0, rel=1e-6)
    assert co["flux_shared_err"][0] == pytest.approx(5.0, rel=1e-6)
    assert co["flux_err"][0] == pytest.approx(np.hypot(5.0, 5.0), rel=1e-3)


def test_coadd_shared_error_is_the_weighted_mean_of_the_exposures():
    # two precise exposures sharing 2%, one noisy sharing 20%: the co-add's shared error is
    # the inverse-variance weighted mean (weights 1/1, 1/1, 1/100 -> c = (2 + 2 + 0.2) / 2.01)
    tabs = [_table([100.0], [1.0], shared=0.02), _table([100.0], [1.0], shared=0.02),
            _table([100.0], [10.0], shared=0.2)]
    co = coadd_likelihoods(tabs, prior="none")
    c = (0.02 + 0.02 + 0.2 / 100.0) / (2.0 + 1.0 / 100.0)
    assert co["flux_shared_err"][0] == pytest.approx(c * 100.0, rel=1e-3)


def test_prior_applied_once_in_coadd():
    prior = FluxPrior("table", ("NB685",), (17.0, 23.0), np.ones((1, 1, 1)),
                      np.full((1, 1, 1), 80.0), np.full((1, 1, 1), 10.0), per_second=False)
    tabs = [_table([100.0], [20.0]) for _ in range(4)]
    co = coadd_likelihoods(tabs, prior=prior)
    # likelihood N(100, 10) after 4 exposures times prior N(80, 10): mean 90, not 84 (4 priors)
    assert co["flux"][0] == pytest.approx(90.0, rel=1e-3)
    assert co.meta["PRIOR"] == "table"


def test_apply_prior_fills_posterior_and_keeps_likelihood():
    t = _table([100.0, 50.0], [10.0, 10.0], i_mag=20.0)
    t["i_mag"][1] = np.nan
    prior = FluxPrior("table", ("NB685",), (17.0, 23.0), np.ones((1, 1, 1)),
                      np.full((1, 1, 1), 80.0), np.full((1, 1, 1), 10.0), per_second=False)
    apply_prior(t, prior)
    assert t["flux"][0] == pytest.approx(90.0, rel=1e-4)
    assert t["flux_like"][0] == 100.0
    assert t["flux"][1] == pytest.approx(50.0, rel=1e-3)  # no magnitude: flat prior
    assert bool(t["pdf_truncated"].all())



def test_apply_prior_adds_the_posterior_columns_a_likelihood_table_lacks():
    full = _table([100.0, 50.0], [10.0, 10.0])
    bare = full.copy()
    bare.remove_columns([c for c in bare.colnames if c == "eta" or c.startswith(("pdf_", "flux_q"))
                         or c in ("flux", "flux_err", "flux_median", "flux_peak", "sigma68",
                                  "sigma95")])  # fmt: skip
    assert "flux" not in bare.colnames
    apply_prior(full, "none")
    apply_prior(bare, "none")
    for name in ("flux", "flux_err", "flux_q16", "flux_q84", "sigma68", "eta"):
        np.testing.assert_allclose(bare[name], full[name])
    np.testing.assert_allclose(bare["pdf_weight"][:, :K].sum(axis=1), 1.0)

def test_coadd_keeps_every_galaxy_and_skips_unusable_exposures():
    a = _table([100.0, 50.0], [10.0, 10.0])
    b = _table([102.0, np.nan], [10.0, 10.0])
    b["flags"][0] = 64  # OFF_IMAGE
    co = coadd_likelihoods([a, b], prior="none")
    assert len(co) == 2
    assert list(co["n_exposures"]) == [1, 1]


def test_cli_rejects_unknown_prior(tmp_path, capsys):
    from lumos.cli import main

    t = _table([100.0], [10.0])
    t.write(tmp_path / "a.fits")
    assert main(["coadd", str(tmp_path / "a.fits"), "--out", str(tmp_path / "c.fits"),
                 "--prior", "bogus"]) == 1
    assert "--prior 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "c.fits").exists()


def test_cli_prior_form_applies_to_a_learnt_prior_only(tmp_path, capsys):
    from lumos.cli import main

    t = _table([100.0], [10.0])
    t.write(tmp_path / "a.fits")
    for cmd in (["coadd", str(tmp_path / "a.fits")],
                ["measure", str(tmp_path / "image.fits"), str(tmp_path / "a.fits")]):
        out = tmp_path / "c.fits"
        assert main([*cmd, "--out", str(out), "--prior", "population",
                     "--prior-form", "smooth"]) == 1  # fmt: skip
        err = capsys.readouterr().err
        assert "--prior-form smooth applies to a prior learnt from the measured galaxies" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_coadd_with_the_smooth_learnt_prior_names_it():
    from lumos.prior import PriorChoice

    rng = np.random.default_rng(5)
    n = 150
    i_mag = rng.uniform(19.0, 22.0, n)
    flux = 300.0 * 10 ** (-0.4 * (i_mag - 20.0)) * rng.lognormal(0.0, 0.2, n)
    tables = []
    for _ in range(2):
        t = _table(flux + 5.0 * rng.standard_normal(n), np.full(n, 5.0))
        t["i_mag"] = i_mag
        tables.append(t)
    co = coadd_likelihoods(tables, prior=PriorChoice("auto", "smooth"))
    assert co.meta["PRIOR"] == "empirical (smooth)"
    binned = coadd_likelihoods(tables, prior="auto")
    assert binned.meta["PRIOR"] == "empirical"
    np.testing.assert_array_equal(co["flux_like"], binned["flux_like"])
    assert not np.allclose(co["flux"], binned["flux"])


def test_cli_coadd_of_likelihood_tables(tmp_path, capsys):
    from lumos.cli import main

    for i, f in enumerate((100.0, 104.0)):
        t = _table([f], [5.0])
        t.meta["PRIOR"] = "empirical"
        t.write(tmp_path / f"e{i}.fits")
    assert main(["coadd", str(tmp_path / "e0.fits"), str(tmp_path / "e1.fits"), "--out",
                 str(tmp_path / "c.fits"), "--prior", "none"]) == 0
    assert "likelihoods multiplied" in capsys.readouterr().out
    co = Table.read(tmp_path / "c.fits")
    assert co["flux_like"][0] == pytest.approx(102.0, rel=1e-6)


def test_predict_posterior_applies_population_prior_to_likelihood_models():
    from lumos.bayes import predict_posterior
    from lumos.network import LumosNet, NetworkConfig
    from lumos.simulate import Simulator

    torch.manual_seed(3)
    batch = Simulator(seed=4).sample(8)
    like_net = LumosNet(NetworkConfig.tiny().replace(likelihood=True)).eval()
    post_net = LumosNet(NetworkConfig.tiny()).eval()
    with torch.inference_mode():
        post = predict_posterior(like_net, batch)
        like = like_net.predict(batch)
        plain = predict_posterior(post_net, batch)
    assert bool(post.truncated.all())
    assert not torch.allclose(post.mean().float(), like.mean().float())
    assert torch.allclose(plain.means, post_net.predict(batch).means.double())


def test_zero_points_calibrate_each_exposure_before_the_product():
    from lumos.coadd import zero_point_rows

    a, b = _table([100.0], [10.0]), _table([50.0], [5.0])
    a["image"], b["image"] = ["e1"], ["e2"]
    zps = Table({"image": ["e1", "e2"], "zp": [1.0, 2.0], "zp_err": [0.0, 0.0]})
    key, zp, _ = zero_point_rows(zps, [a, b])
    assert key == "image" and list(zp) == [1.0, 2.0]
    co = coadd_likelihoods([a, b], prior="none", zero_points=zps)
    # both exposures measure 100 +- 10 after calibration
    assert co["flux_like"][0] == pytest.approx(100.0, rel=1e-6)
    assert co["flux_like_err"][0] == pytest.approx(10.0 / np.sqrt(2.0), rel=1e-6)
    missing = Table({"image": ["e1"], "zp": [1.0]})
    assert coadd_likelihoods([a, b], prior="none", zero_points=missing)["n_exposures"][0] == 1
