"""Flux priors: deconvolution fits, tables, posteriors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumos.errors import LumosError
from lumos.mixture import GaussianMixture
from lumos.prior import (
    FluxPrior,
    PriorChoice,
    choose_prior,
    empirical_prior,
    fit_mixture_1d,
    magnitude_scale,
    posterior,
)


def test_fit_mixture_recovers_two_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 1.0, 6000), rng.normal(6.0, 0.5, 4000)])
    w, m, s = fit_mixture_1d(x, k=2)
    o = np.argsort(m)
    assert np.allclose(w[o], [0.6, 0.4], atol=0.02)
    assert np.allclose(m[o], [0.0, 6.0], atol=0.05)
    assert np.allclose(s[o], [1.0, 0.5], atol=0.05)


def test_extreme_deconvolution_removes_known_errors():
    rng = np.random.default_rng(1)
    true = rng.normal(10.0, 1.0, 20000)
    err = rng.uniform(1.0, 4.0, true.size)
    x = true + err * rng.standard_normal(true.size)
    w, m, s = fit_mixture_1d(x, err, k=1)
    assert m[0] == pytest.approx(10.0, abs=0.05)
    assert s[0] == pytest.approx(1.0, abs=0.1)  # the plain spread is ~2.8


def _prior():
    w = np.array([[[0.5, 0.5]], [[1.0, 0.0]]])
    mu = np.array([[[40.0, 60.0]], [[10.0, 10.0]]])
    sg = np.array([[[5.0, 5.0]], [[2.0, 2.0]]])
    return FluxPrior("table", ("NB685", "NB455"), (17.0, 23.0), w, mu, sg, per_second=True)


def test_prior_table_round_trip(tmp_path):
    p = _prior()
    p.write(tmp_path / "p.ecsv")
    q = FluxPrior.read(tmp_path / "p.ecsv")
    assert q.bands == p.bands and q.per_second
    assert np.allclose(q.mean, p.mean) and np.allclose(q.sigma, p.sigma)
    assert np.allclose(q.weight, p.weight)


def test_prior_mixture_scales_with_magnitude_and_exposure():
    p = _prior()
    mix, known = p.mixture(["NB455", "NB455", "r"], [20.0, 22.5, 20.0], exposure_time=90.0)
    assert known.tolist() == [True, True, False]
    assert float(mix.means[0, 0]) == pytest.approx(10.0 * 90.0)
    assert float(mix.means[1, 0]) == pytest.approx(10.0 * 90.0 * magnitude_scale(22.5))
    assert bool(mix.truncated.all())


def test_prior_validation():
    with pytest.raises(LumosError, match="i_edges"):
        FluxPrior("table", ("a",), (20.0, 19.0), np.ones((1, 1, 1)), np.ones((1, 1, 1)),
                  np.ones((1, 1, 1)), False)
    with pytest.raises(LumosError, match="sigma"):
        FluxPrior("table", ("a",), (19.0, 20.0), np.ones((1, 1, 1)), np.ones((1, 1, 1)),
                  np.zeros((1, 1, 1)), False)


def test_posterior_of_gaussians_is_analytic():
    like = GaussianMixture.from_arrays([[1.0]], [[100.0]], [[10.0]])
    prior = GaussianMixture.from_arrays([[1.0]], [[80.0]], [[10.0]], truncated=[True])
    post = posterior(like, prior)
    assert float(post.mean()) == pytest.approx(90.0, rel=1e-6)
    assert float(post.std()) == pytest.approx(10.0 / np.sqrt(2.0), rel=1e-6)


def test_posterior_without_prior_is_truncated_likelihood():
    like = GaussianMixture.from_arrays([[1.0], [1.0]], [[1.0], [50.0]], [[3.0], [5.0]])
    prior = GaussianMixture.from_arrays([[1.0], [1.0]], [[80.0], [80.0]], [[1.0], [1.0]],
                                        truncated=[True, True])
    post = posterior(like, prior, known=np.array([False, True]))
    ref = GaussianMixture.from_arrays([[1.0]], [[1.0]], [[3.0]], truncated=[True])
    assert float(post[0:1].mean()) == pytest.approx(float(ref.mean()), rel=1e-5)
    assert float(post[1:2].mean()) > 75.0
    assert float(post.cdf(torch.zeros(2, dtype=torch.float64))[0]) == pytest.approx(0.0, abs=1e-9)


def test_empirical_prior_learns_colours_and_follows_magnitude_shift():
    rng = np.random.default_rng(2)
    n = 600
    i_mag = rng.uniform(18.0, 23.0, n)
    true = 30.0 * magnitude_scale(i_mag) * rng.lognormal(0.0, 0.1, n)
    err = 0.1 * 30.0 * magnitude_scale(21.0) + 0.0 * true
    flux = true + err * rng.standard_normal(n)
    p = empirical_prior(flux, np.full(n, err), i_mag, np.full(n, "NB685"))
    mix, _ = p.mixture(np.full(n, "NB685"), i_mag)
    assert np.median(mix.mean().numpy() / (30.0 * magnitude_scale(i_mag))) == pytest.approx(
        1.0, abs=0.03)
    assert not p.per_second and p.kind == "empirical"


def test_choose_prior_names(tmp_path):
    assert choose_prior("none") is None
    _prior().write(tmp_path / "p.fits")
    assert choose_prior(str(tmp_path / "p.fits")).bands == ("NB685", "NB455")
    with pytest.raises(LumosError):
        choose_prior(str(tmp_path / "missing.fits"))


def test_bic_prefers_one_component_for_one_gaussian_and_two_for_two():
    from lumos.prior import fit_mixture_bic

    rng = np.random.default_rng(4)
    one = rng.normal(5.0, 1.0, 80)
    assert fit_mixture_bic(one, np.full(80, 0.5), k_max=3)[0].size == 1
    two = np.concatenate([rng.normal(0.0, 0.3, 200), rng.normal(5.0, 0.3, 200)])
    assert fit_mixture_bic(two, k_max=3)[0].size == 2


def test_lumos_prior_command_population_and_learnt(tmp_path, capsys):
    from astropy.table import Table

    from lumos.cli import main

    assert main(["prior", "--out", str(tmp_path / "pop.ecsv"), "--n", "2000"]) == 0
    pop = FluxPrior.read(tmp_path / "pop.ecsv")
    assert pop.kind == "table" and len(pop.bands) == 40 and pop.per_second
    rng = np.random.default_rng(5)
    n = 300
    i_mag = rng.uniform(18.0, 23.0, n)
    flux = 30.0 * magnitude_scale(i_mag) * (1 + 0.05 * rng.standard_normal(n))
    t = Table({"band": np.full(n, "NB685"), "i_mag": i_mag, "flags": np.zeros(n, int),
               "flux_like": flux, "flux_like_err": np.full(n, 1.0),
               "flux_shared_err": np.zeros(n)})
    t.write(tmp_path / "m.fits")
    assert main(["prior", str(tmp_path / "m.fits"), "--out", str(tmp_path / "emp.ecsv")]) == 0
    assert "empirical prior from 300 measured rows" in capsys.readouterr().out
    emp = FluxPrior.read(tmp_path / "emp.ecsv")
    mix, _ = emp.mixture(["NB685"], [20.0])
    assert float(mix.mean()[0]) == pytest.approx(30.0, rel=0.05)
    t.remove_column("flux_like")
    t.write(tmp_path / "bad.fits")
    assert main(["prior", str(tmp_path / "bad.fits"), "--out", str(tmp_path / "x.ecsv")]) == 1
    assert "flux_like" in capsys.readouterr().err and not (tmp_path / "x.ecsv").exists()


def test_empirical_prior_is_one_gaussian_unless_asked_for_more():
    """Default: one Gaussian per band and i bin; k=2 resolves two well-separated colours."""
    rng = np.random.default_rng(8)
    n = 800
    i_mag = rng.uniform(19.0, 20.0, n)
    colour = np.where(rng.random(n) < 0.5, 10.0, 40.0) * rng.lognormal(0.0, 0.05, n)
    flux = colour * magnitude_scale(i_mag) + 0.5 * rng.standard_normal(n)
    args = (flux, np.full(n, 0.5), i_mag, np.full(n, "NB685"))
    one = empirical_prior(*args)
    assert one.weight.shape[-1] == 1
    two = empirical_prior(*args, k=2)
    w, m = two.weight[0, 0], np.sort(two.mean[0, 0])
    assert w.size == 2 and m == pytest.approx([10.0, 40.0], rel=0.05)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        empirical_prior(*args, k=0)


def _refused(capsys, tmp_path, args: list[str], message: str) -> None:
    """``lumos prior ARGS`` fails in one line naming ``message`` and writes nothing."""
    from lumos.cli import main

    out = tmp_path / "x.ecsv"
    assert main(["prior", *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_lumos_prior_components_option(tmp_path, capsys):
    from astropy.table import Table

    from lumos.cli import main

    rng = np.random.default_rng(9)
    n = 400
    i_mag = rng.uniform(19.0, 20.0, n)
    colour = np.where(rng.random(n) < 0.5, 10.0, 40.0)
    t = Table({"band": np.full(n, "NB685"), "i_mag": i_mag, "flags": np.zeros(n, int),
               "flux_like": colour * magnitude_scale(i_mag) + 0.3 * rng.standard_normal(n),
               "flux_like_err": np.full(n, 0.3), "flux_shared_err": np.zeros(n)})
    t.write(tmp_path / "m.fits")
    assert main(["prior", str(tmp_path / "m.fits"), "--components", "2",
                 "--out", str(tmp_path / "p2.ecsv")]) == 0  # fmt: skip
    assert FluxPrior.read(tmp_path / "p2.ecsv").weight.shape[-1] == 2
    table = str(tmp_path / "m.fits")
    _refused(capsys, tmp_path, [table, "--components", "0"], "--components must be 1 to 5, got 0")
    _refused(capsys, tmp_path, ["--components", "2"], "--components applies to a prior learnt")


def test_fit_linear_gaussian_recovers_a_mean_and_width_that_follow_t():
    from lumos.deconvolution import fit_linear_gaussian

    rng = np.random.default_rng(21)
    n = 4000
    t = rng.uniform(-2.0, 3.0, n)
    err = rng.uniform(0.5, 2.0, n)
    x = 10.0 + 2.0 * t + np.exp(0.2 + 0.3 * t) * rng.standard_normal(n) \
        + err * rng.standard_normal(n)
    fit = fit_linear_gaussian(x, err, t)
    mean, width = fit.at(np.array([-1.0, 0.0, 2.0]))
    assert mean == pytest.approx(10.0 + 2.0 * np.array([-1.0, 0.0, 2.0]), abs=0.15)
    assert width == pytest.approx(np.exp(0.2 + 0.3 * np.array([-1.0, 0.0, 2.0])), rel=0.1)
    # beyond the fitted range the model is constant
    assert fit.at(10.0)[0] == pytest.approx(fit.at(t.max())[0])


def test_fit_linear_gaussian_widens_a_width_the_data_barely_fix():
    """With errors far larger than the spread, the predictive width exceeds the maximum-
    likelihood width by the fit's uncertainty; with precise data the two agree."""
    from lumos.deconvolution import fit_linear_gaussian

    rng = np.random.default_rng(22)
    t = rng.uniform(-1.0, 1.0, 100)
    x = 5.0 + 0.1 * rng.standard_normal(100) + 3.0 * rng.standard_normal(100)
    fit = fit_linear_gaussian(x, np.full(100, 3.0), t)
    ml_width = np.exp(fit.params[2])
    assert fit.at(0.0)[1] > 1.5 * ml_width
    precise = fit_linear_gaussian(5.0 + 0.5 * rng.standard_normal(5000), np.full(5000, 0.01),
                                  rng.uniform(-1.0, 1.0, 5000))  # fmt: skip
    assert precise.at(0.0)[1] == pytest.approx(np.exp(precise.params[2]), rel=0.02)


def test_fit_linear_gaussian_few_points_and_bad_input():
    from lumos.deconvolution import fit_linear_gaussian

    fit = fit_linear_gaussian([1.0, 2.0, 3.0], [0.1, 0.1, 0.1], [0.0, 1.0, 2.0])
    assert fit.params[1] == 0.0 and fit.params[3] == 0.0
    with pytest.raises(ValueError, match="non-empty 1-D finite"):
        fit_linear_gaussian([1.0, np.nan], [0.1, 0.1], [0.0, 1.0])
    with pytest.raises(ValueError, match="non-empty 1-D finite"):
        fit_linear_gaussian([], [], [])


def test_smooth_empirical_prior_follows_a_colour_trend_and_a_magnitude_shift():
    """The smooth form tracks a colour that changes with i, and shifting every catalogue
    magnitude leaves the prior of each flux unchanged (no leakage of the catalogue's scale)."""
    rng = np.random.default_rng(23)
    n = 900
    i_mag = rng.uniform(18.0, 23.0, n)
    colour = 30.0 * (1.0 + 0.1 * (i_mag - 20.0)) * rng.lognormal(0.0, 0.1, n)
    err = 0.05 * 30.0 * magnitude_scale(20.0)
    flux = colour * magnitude_scale(i_mag) + err * rng.standard_normal(n)
    band = np.full(n, "NB685")
    p = empirical_prior(flux, np.full(n, err), i_mag, band, form="smooth")
    assert p.kind == "empirical" and p.weight.shape[-1] == 1 and len(p.i_edges) > 50
    for i in (18.5, 20.0, 22.5):
        mix, _ = p.mixture(["NB685"], [i])
        assert float(mix.mean()[0]) / magnitude_scale(i) == pytest.approx(
            30.0 * (1.0 + 0.1 * (i - 20.0)), rel=0.05)
    shifted = empirical_prior(flux, np.full(n, err), i_mag + 0.5, band, form="smooth")
    a, _ = p.mixture(band, i_mag)
    b, _ = shifted.mixture(band, i_mag + 0.5)
    assert b.means.numpy() == pytest.approx(a.means.numpy(), rel=1e-6)
    assert b.sigmas.numpy() == pytest.approx(a.sigmas.numpy(), rel=1e-6)


def test_empirical_prior_form_errors():
    args = (np.ones(20), np.ones(20), np.linspace(19, 21, 20), np.full(20, "NB685"))
    with pytest.raises(ValueError, match="form must be one of smooth, binned, got 'spline'"):
        empirical_prior(*args, form="spline")
    with pytest.raises(ValueError, match="one component, got k=2"):
        empirical_prior(*args, k=2, form="smooth")


def test_lumos_prior_form_option(tmp_path, capsys):
    from astropy.table import Table

    from lumos.cli import main

    rng = np.random.default_rng(24)
    n = 300
    i_mag = rng.uniform(18.0, 23.0, n)
    t = Table({"band": np.full(n, "NB685"), "i_mag": i_mag, "flags": np.zeros(n, int),
               "flux_like": 30.0 * magnitude_scale(i_mag) * rng.lognormal(0.0, 0.1, n),
               "flux_like_err": np.full(n, 0.5), "flux_shared_err": np.zeros(n)})
    t.write(tmp_path / "m.fits")
    assert main(["prior", str(tmp_path / "m.fits"), "--form", "smooth",
                 "--out", str(tmp_path / "s.ecsv")]) == 0  # fmt: skip
    assert "form smooth" in capsys.readouterr().out
    assert len(FluxPrior.read(tmp_path / "s.ecsv").i_edges) > 50
    _refused(capsys, tmp_path, [str(tmp_path / "m.fits"), "--form", "smooth", "--components", "2"],
             "--form smooth has one component per band, got --components 2")
    _refused(capsys, tmp_path, ["--form", "smooth"], "--form applies to a prior learnt")


def test_prior_choice_names_the_learnt_prior_s_form():
    rng = np.random.default_rng(25)
    n = 300
    i_mag = rng.uniform(18.0, 23.0, n)
    lk = {"flux": 30.0 * magnitude_scale(i_mag) * rng.lognormal(0.0, 0.1, n),
          "flux_err": np.full(n, 0.5), "i_mag": i_mag, "band": np.full(n, "NB685")}
    smooth = choose_prior(PriorChoice("auto", "smooth"), lk)
    direct = empirical_prior(lk["flux"], lk["flux_err"], i_mag, lk["band"], form="smooth")
    assert smooth.i_edges == direct.i_edges
    np.testing.assert_array_equal(smooth.sigma, direct.sigma)
    binned = choose_prior(PriorChoice("empirical"), lk)
    assert len(binned.i_edges) < 10 and str(PriorChoice("empirical")) == "empirical"
    assert choose_prior(PriorChoice("none")) is None
    with pytest.raises(ValueError, match="prior form must be one of smooth, binned, got 'x'"):
        PriorChoice("auto", "x")
    with pytest.raises(ValueError, match="learnt from the measurements .* not to 'population'"):
        PriorChoice("population", "smooth")
