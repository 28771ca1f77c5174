"""Tests of lumos.mixture against numerical integration and scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lumos.mixture import (
    GaussianMixture,
    mixture_nll,
    pair_nll,
    product,
    truncate_mask,
)
from lumos.stats import P16, P84

# tiny tensors: one intra-op thread is much faster (and immune to CPU contention)
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


# ---------------------------------------------------------------------- helpers
def random_mixture(rng, n=6, k=5, trunc=None, spread=40.0):
    """Random mixtures with multi-modal rows (component means far apart)."""
    w = rng.dirichlet(np.ones(k), n)
    mu = rng.normal(60.0, spread, (n, k))
    sg = rng.uniform(2.0, 25.0, (n, k))
    return w, mu, sg, trunc


def grid_pdf(w, mu, sg, trunc, x):
    """Density of one row on a grid (scipy.stats), truncated at 0 if asked."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    for wk, m, s in zip(w, mu, sg, strict=True):
        # truncated: N(m, s) restricted to x >= 0 and divided by its mass there
        norm = stats.norm.sf(0.0, m, s) if trunc else 1.0
        out += wk * stats.norm.pdf(x, m, s) / norm
    if trunc:
        out[x < 0] = 0.0
    return out


def row_grid(mu, sg, trunc, n=200_001):
    lo = 0.0 if trunc else float(np.min(mu - 14 * sg))
    hi = float(np.max(np.maximum(mu, 0) + 14 * sg))
    return np.linspace(lo, hi, n)


def cumtrapz(y, x):
    out = np.zeros_like(y)
    out[1:] = np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))
    return out


@pytest.fixture
def mixes(rng):
    w, mu, sg, _ = random_mixture(rng)
    trunc = np.array([False, True, False, True, False, True])
    # a component far below zero on a truncated row, and a narrow tall secondary mode
    mu[1, 0], sg[1, 0] = -60.0, 10.0
    mu[3, :] = rng.normal(5.0, 4.0, 5)
    return w, mu, sg, trunc


# ---------------------------------------------------------------------- densities
def test_log_prob_plain_matches_scipy(rng):
    w, mu, sg, _ = random_mixture(rng)
    g = GaussianMixture.from_arrays(w, mu, sg)
    x = rng.normal(60.0, 40.0, len(w))
    ref = [np.log(grid_pdf(w[i], mu[i], sg[i], False, x[i])) for i in range(len(w))]
    np.testing.assert_allclose(g.log_prob(torch.as_tensor(x)).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(
        mixture_nll(g, torch.as_tensor(x)).numpy(), -np.array(ref), rtol=1e-10
    )


def test_truncated_log_likelihood_equals_truncnorm_logpdf(rng):
    # single components: exactly scipy's truncnorm.logpdf
    mu = np.array([50.0, 3.0, -4.0, -20.0, 0.0])
    sg = np.array([10.0, 5.0, 2.0, 10.0, 1.0])
    x = np.array([40.0, 0.5, 0.3, 1.0, 2.0])
    g = GaussianMixture.from_arrays(np.ones((5, 1)), mu[:, None], sg[:, None])
    nll = mixture_nll(g, torch.as_tensor(x), truncate=torch.ones(5, dtype=torch.bool))
    ref = stats.truncnorm.logpdf(x, -mu / sg, np.inf, loc=mu, scale=sg)
    np.testing.assert_allclose(-nll.numpy(), ref, rtol=1e-10)
    # mixtures: log sum_k w_k truncnorm_k.pdf
    w, mu, sg, _ = random_mixture(rng)
    mu[:, 0] = -15.0
    x = rng.uniform(0.0, 120.0, len(w))
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=np.ones(len(w), bool))
    ref = [np.log(grid_pdf(w[i], mu[i], sg[i], True, x[i])) for i in range(len(w))]
    np.testing.assert_allclose(g.log_prob(torch.as_tensor(x)).numpy(), ref, rtol=1e-10)
    # mixed rows: the truncate mask decides per row
    mask = torch.tensor([True, False, True, False, True, False])
    got = mixture_nll(GaussianMixture.from_arrays(w, mu, sg), torch.as_tensor(x), mask)
    ref_mixed = [
        -np.log(grid_pdf(w[i], mu[i], sg[i], bool(mask[i]), x[i])) for i in range(len(w))
    ]
    np.testing.assert_allclose(got.numpy(), ref_mixed, rtol=1e-10)


def test_truncated_density_is_zero_below_zero():
    g = GaussianMixture.from_arrays([[1.0]], [[5.0]], [[2.0]], truncated=[True])
    assert g.log_prob(torch.tensor([-0.1])).item() == -math.inf
    assert g.cdf(torch.tensor([-0.1])).item() == 0.0


def test_truncated_nll_stable_for_very_negative_means():
    mu = torch.tensor([[-40.0], [-200.0], [-1e4]], dtype=torch.float64, requires_grad=True)
    sg = torch.tensor([[1.0], [1.0], [3.0]], dtype=torch.float64, requires_grad=True)
    lw = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    g = GaussianMixture(lw, mu, sg)
    target = torch.tensor([0.01, 0.001, 1e-3], dtype=torch.float64)
    nll = mixture_nll(g, target, torch.ones(3, dtype=torch.bool))
    assert torch.isfinite(nll).all()
    # for t = -mu/sigma >> 1 the truncated Gaussian tends to an exponential with rate t/sigma
    t = 40.0
    assert nll[0].item() == pytest.approx(-(math.log(t) - t * 0.01), rel=1e-3)
    nll.sum().backward()
    for p in (mu, sg):
        assert torch.isfinite(p.grad).all()


def test_cdf_matches_numerical_integration(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    for i in range(len(w)):
        x = row_grid(mu[i], sg[i], trunc[i])
        c = cumtrapz(grid_pdf(w[i], mu[i], sg[i], trunc[i], x), x)
        probe = np.quantile(x[(c > 0.01) & (c < 0.99)], [0.1, 0.5, 0.9])
        got = g[i].cdf(torch.tensor([probe[0]])).item(), g[i].cdf(torch.tensor([probe[2]])).item()
        ref = np.interp([probe[0], probe[2]], x, c)
        np.testing.assert_allclose(got, ref, atol=2e-6)


# ---------------------------------------------------------------------- gradients
def _params(rng, n, k, very_negative=False):
    mu = torch.tensor(rng.normal(20.0, 10.0, (n, k)), dtype=torch.float64)
    if very_negative:
        mu[:, 0] = torch.tensor([-60.0, -45.0, -300.0][:n], dtype=torch.float64)
    log_sig = torch.tensor(rng.normal(1.0, 0.3, (n, k)), dtype=torch.float64)
    logits = torch.tensor(rng.normal(0.0, 1.0, (n, k)), dtype=torch.float64)
    return [t.requires_grad_() for t in (logits, mu, log_sig)]


def _build(logits, mu, log_sig):
    return GaussianMixture(torch.log_softmax(logits, dim=1), mu, torch.exp(log_sig))


@pytest.mark.parametrize("truncate", [False, True])
def test_mixture_nll_gradcheck(rng, truncate):
    params = _params(rng, 3, 3, very_negative=truncate)
    target = torch.tensor([1.0, 15.0, 0.2], dtype=torch.float64)
    mask = torch.full((3,), truncate)

    def f(logits, mu, log_sig):
        return mixture_nll(_build(logits, mu, log_sig), target, mask)

    assert torch.autograd.gradcheck(f, params)


@pytest.mark.parametrize("truncate", [False, True])
def test_pair_nll_gradcheck(rng, truncate):
    p1 = _params(rng, 3, 3, very_negative=truncate)
    p2 = _params(rng, 3, 2)
    mask = torch.full((3,), truncate)

    def f(a, b, c, d, e, g):
        return pair_nll(_build(a, b, c), _build(d, e, g), mask)

    assert torch.autograd.gradcheck(f, p1 + p2)


def test_moments_are_differentiable():
    mu = torch.tensor([[-80.0, 3.0]], dtype=torch.float64, requires_grad=True)
    sg = torch.tensor([[4.0, 2.0]], dtype=torch.float64, requires_grad=True)
    g = GaussianMixture(torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64)), mu, sg, [True])
    (g.mean() + g.std()).sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(sg.grad).all()


# ---------------------------------------------------------------------- pair loss
def test_pair_nll_matches_numerical_overlap(rng):
    w1, mu1, sg1, _ = random_mixture(rng, n=4, k=3, spread=20.0)
    w2, mu2, sg2, _ = random_mixture(rng, n=4, k=2, spread=20.0)
    mu1[1, 0] = -30.0
    trunc = np.array([False, True, False, True])
    g1 = GaussianMixture.from_arrays(w1, mu1, sg1)
    g2 = GaussianMixture.from_arrays(w2, mu2, sg2)
    got = pair_nll(g1, g2, torch.as_tensor(trunc)).numpy()
    for i in range(4):
        x = row_grid(np.r_[mu1[i], mu2[i]], np.r_[sg1[i], sg2[i]], trunc[i])
        p1 = grid_pdf(w1[i], mu1[i], sg1[i], trunc[i], x)
        p2 = grid_pdf(w2[i], mu2[i], sg2[i], trunc[i], x)
        ref = -np.log(np.trapezoid(p1 * p2, x))
        assert got[i] == pytest.approx(ref, rel=1e-7, abs=1e-7)
    # default truncation comes from the mixtures themselves
    g1t = GaussianMixture.from_arrays(w1, mu1, sg1, truncated=trunc)
    np.testing.assert_allclose(pair_nll(g1t, g2).numpy(), got, rtol=1e-12)


def test_pair_nll_prefers_agreeing_pdfs():
    a = GaussianMixture.from_arrays([[1.0]], [[100.0]], [[5.0]])
    near = GaussianMixture.from_arrays([[1.0]], [[101.0]], [[5.0]])
    far = GaussianMixture.from_arrays([[1.0]], [[130.0]], [[5.0]])
    assert pair_nll(a, near).item() < pair_nll(a, far).item()


def test_pair_nll_width_scales_the_difference_density():
    """With ``width`` w the two PDFs are asked to agree like N(0, w^2 (s1^2 + s2^2))."""
    a = GaussianMixture.from_arrays([[1.0], [1.0]], [[100.0], [50.0]], [[3.0], [2.0]])
    b = GaussianMixture.from_arrays([[1.0], [1.0]], [[104.0], [49.0]], [[4.0], [1.5]])
    width = torch.tensor([0.6, 1.0], dtype=torch.float64)
    got = pair_nll(a, b, width=width).numpy()
    for i, (d, s) in enumerate([(4.0, 5.0), (1.0, 2.5)]):
        want = -stats.norm.logpdf(d, scale=float(width[i]) * s)
        assert got[i] == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(pair_nll(a, b, width=1.0).numpy(), pair_nll(a, b).numpy())


# ---------------------------------------------------------------------- moments, quantiles
def test_mean_and_variance_match_numerical_integration(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    mean, var = g.mean().numpy(), g.variance().numpy()
    for i in range(len(w)):
        x = row_grid(mu[i], sg[i], trunc[i])
        p = grid_pdf(w[i], mu[i], sg[i], trunc[i], x)
        norm = np.trapezoid(p, x)
        m = np.trapezoid(x * p, x) / norm
        v = np.trapezoid((x - m) ** 2 * p, x) / norm
        assert norm == pytest.approx(1.0, abs=1e-6)
        assert mean[i] == pytest.approx(m, rel=1e-6)
        assert var[i] == pytest.approx(v, rel=1e-5)
    # Eq. 16 includes the spread between the components
    plain = GaussianMixture.from_arrays([[0.5, 0.5]], [[0.0, 10.0]], [[1.0, 1.0]])
    assert plain.variance().item() == pytest.approx(1.0 + 25.0)


def test_truncated_moments_far_below_zero():
    # t = -mu/sigma = 1000: the component is ~ exponential with mean sigma/t
    g = GaussianMixture.from_arrays([[1.0]], [[-1000.0]], [[1.0]], truncated=[True])
    assert g.mean().item() == pytest.approx(1e-3, rel=1e-5)
    assert g.std().item() == pytest.approx(1e-3, rel=1e-5)


def test_quantiles_match_grid_inversion(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    levels = [0.025, P16, 0.5, P84, 0.975]
    q = g.quantile(levels).numpy()
    std = g.std().numpy()
    for i in range(len(w)):
        x = row_grid(mu[i], sg[i], trunc[i])
        c = cumtrapz(grid_pdf(w[i], mu[i], sg[i], trunc[i], x), x)
        ref = np.interp(levels, c, x)
        np.testing.assert_allclose(q[i], ref, atol=1e-5 * std[i])
    # the CDF at the quantiles gives back the levels
    for j, p in enumerate(levels):
        np.testing.assert_allclose(g.cdf(torch.as_tensor(q[:, j])).numpy(), p, atol=1e-10)
    assert torch.allclose(g.median(), torch.as_tensor(q[:, 2]))
    # a per-row level tensor
    per_row = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    np.testing.assert_allclose(g.cdf(g.quantile(per_row)).numpy(), per_row.numpy(), atol=1e-10)


def test_quantile_rejects_bad_levels():
    g = GaussianMixture.from_arrays([[1.0]], [[0.0]], [[1.0]])
    for bad in (0.0, 1.0, -0.5, [0.5, 1.5]):
        with pytest.raises(ValueError, match="between 0 and 1"):
            g.quantile(bad)


def test_peak_finds_the_highest_mode_of_a_bimodal_mixture():
    # heavy wide component at 0, light narrow (but taller) component at 50
    w = np.array([[0.7, 0.3], [0.95, 0.05], [0.5, 0.5]])
    mu = np.array([[0.0, 50.0], [0.0, 50.0], [10.0, 14.0]])
    sg = np.array([[20.0, 2.0], [20.0, 2.0], [3.0, 3.0]])
    g = GaussianMixture.from_arrays(w, mu, sg)
    peak = g.peak().numpy()
    for i in range(3):
        x = np.linspace(-100, 150, 2_500_001)
        ref = x[np.argmax(grid_pdf(w[i], mu[i], sg[i], False, x))]
        assert peak[i] == pytest.approx(ref, abs=2e-4)
    assert peak[0] == pytest.approx(50.0, abs=0.5)  # the narrow component wins
    assert abs(peak[1]) < 1.0  # the wide one wins
    assert peak[2] == pytest.approx(12.0, abs=1e-6)  # merged, symmetric


def test_peak_matches_grid_argmax_on_random_and_truncated_rows(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    peak = g.peak().numpy()
    for i in range(len(w)):
        x = row_grid(mu[i], sg[i], trunc[i], n=400_001)
        p = grid_pdf(w[i], mu[i], sg[i], trunc[i], x)
        ref = x[np.argmax(p)]
        dens_at_peak = grid_pdf(w[i], mu[i], sg[i], trunc[i], np.array([peak[i]]))[0]
        assert dens_at_peak >= p.max() * (1 - 1e-9)
        assert peak[i] == pytest.approx(ref, abs=1e-3 * sg[i].min() + 2 * (x[1] - x[0]))
    # a truncated PDF decreasing from 0 peaks at 0
    g0 = GaussianMixture.from_arrays([[1.0]], [[-3.0]], [[2.0]], truncated=[True])
    assert g0.peak().item() == 0.0


def test_single_gaussian_summaries():
    mu = np.array([[100.0], [-5.0], [3.0e4]])
    sg = np.array([[7.0], [2.0], [150.0]])
    g = GaussianMixture.from_arrays(np.ones((3, 1)), mu, sg)
    s = g.summaries()
    np.testing.assert_allclose(s["sigma68"], sg[:, 0], rtol=1e-7)
    np.testing.assert_allclose(s["sigma95"], stats.norm.ppf(0.975) * sg[:, 0], rtol=1e-7)
    np.testing.assert_allclose(s["eta"], stats.norm.ppf(0.975) - 1.0, rtol=1e-6)  # Eq. 22
    for key in ("flux", "flux_median", "flux_peak"):
        np.testing.assert_allclose(s[key], mu[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s["flux_err"], sg[:, 0], rtol=1e-12)
    np.testing.assert_allclose(s["flux_q16"], mu[:, 0] - sg[:, 0], rtol=1e-9)
    np.testing.assert_allclose(s["flux_q975"], mu[:, 0] + 1.959964 * sg[:, 0], rtol=1e-6)
    # the methods agree with summaries()
    np.testing.assert_allclose(g.sigma68().numpy(), s["sigma68"], rtol=1e-12)
    np.testing.assert_allclose(g.eta().numpy(), s["eta"], rtol=1e-12)
    # a split Gaussian (same component five times) is still one Gaussian
    g5 = GaussianMixture.from_arrays(
        np.full((1, 5), 0.2), np.full((1, 5), 10.0), np.full((1, 5), 2.0)
    )
    assert g5.sigma68().item() == pytest.approx(2.0, rel=1e-8)
    assert g5.eta().item() == pytest.approx(0.959964, rel=1e-5)


def test_eta_detects_heavy_tails():
    g = GaussianMixture.from_arrays([[0.95, 0.05]], [[0.0, 0.0]], [[1.0, 20.0]])
    assert g.eta().item() > 1.2


def test_summaries_keys_and_invalid_rows(mixes):
    w, mu, sg, trunc = mixes
    sg = sg.copy()
    sg[2, 1] = np.nan
    sg[4, 0] = -1.0
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    s = g.summaries(chunk_size=4)
    keys = {
        "flux", "flux_err", "flux_median", "flux_peak", "flux_q16", "flux_q84",
        "flux_q025", "flux_q975", "sigma68", "sigma95", "eta",
    }  # fmt: skip
    assert set(s) == keys
    for key in keys:
        assert s[key].shape == (6,)
        assert np.isnan(s[key][[2, 4]]).all(), key
        assert np.isfinite(s[key][[0, 1, 3, 5]]).all(), key
    ok = [0, 1, 3, 5]
    assert (s["flux_q025"][ok] < s["flux_q16"][ok]).all()
    assert (s["flux_q16"][ok] < s["flux_median"][ok]).all()
    assert (s["flux_median"][ok] < s["flux_q84"][ok]).all()
    assert (s["flux_q84"][ok] < s["flux_q975"][ok]).all()
    assert (s["flux_q025"][[1, 3, 5]] >= 0).all()  # truncated rows


# ---------------------------------------------------------------------- transforms
def test_calibrate_propagates_zero_point():
    g = GaussianMixture.from_arrays([[0.4, 0.6]], [[100.0, 120.0]], [[5.0, 8.0]])
    c = g.calibrate(1.1, 0.02)
    np.testing.assert_allclose(c.means.numpy(), [[110.0, 132.0]])
    np.testing.assert_allclose(
        c.sigmas.numpy(),
        [[math.hypot(5.5, 2.0), math.hypot(8.8, 2.4)]],
    )
    np.testing.assert_allclose(c.weights.numpy(), g.weights.numpy())
    assert c.mean().item() == pytest.approx(1.1 * g.mean().item())
    # per-row zero points
    g2 = GaussianMixture.from_arrays(np.ones((2, 1)), [[10.0], [20.0]], [[1.0], [1.0]])
    c2 = g2.calibrate(torch.tensor([2.0, 0.5], dtype=torch.float64))
    np.testing.assert_allclose(c2.means.numpy()[:, 0], [20.0, 10.0])
    np.testing.assert_allclose(c2.sigmas.numpy()[:, 0], [2.0, 0.5])
    with pytest.raises(ValueError, match="zero_point"):
        g.calibrate(-1.0)


def test_scale_multiplies_flux_axis():
    g = GaussianMixture.from_arrays([[0.4, 0.6]], [[1.0, 2.0]], [[0.1, 0.2]], truncated=[True])
    s = g.scale(torch.tensor([10.0], dtype=torch.float64))
    assert s.mean().item() == pytest.approx(10.0 * g.mean().item())
    assert s.std().item() == pytest.approx(10.0 * g.std().item())
    assert bool(s.truncated[0])
    with pytest.raises(ValueError, match="positive"):
        g.scale(torch.tensor([-1.0]))


def test_containers_roundtrip(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    assert len(g) == 6 and g.n_components == 5
    arrays = g.numpy()
    np.testing.assert_allclose(arrays["weight"], w / w.sum(1, keepdims=True))
    np.testing.assert_array_equal(arrays["truncated"], trunc)
    back = GaussianMixture.from_arrays(**arrays)
    np.testing.assert_allclose(back.mean().numpy(), g.mean().numpy())
    sub = g[[1, 3]]
    assert len(sub) == 2 and sub.truncated.tolist() == [True, True]
    assert len(g[2]) == 1 and len(g[torch.tensor(trunc)]) == 3 and len(g[1:4]) == 3
    f32 = g.to(torch.float32)
    assert f32.dtype == torch.float32 and f32.truncated.dtype == torch.bool
    assert g.detach().means.requires_grad is False


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        GaussianMixture(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        GaussianMixture(torch.zeros(3), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="truncated"):
        GaussianMixture(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.ones(3))
    g = GaussianMixture.from_arrays([[1.0]], [[0.0]], [[1.0]])
    with pytest.raises(ValueError, match="equal rows"):
        pair_nll(g, GaussianMixture.from_arrays(np.ones((2, 1)), np.zeros((2, 1)), np.ones((2, 1))))


def test_truncate_mask():
    mask = truncate_mask(torch.tensor([19.0, 20.5, 20.6, float("nan"), 23.0]))
    assert mask.tolist() == [False, False, True, False, True]
    assert truncate_mask(np.array([21.0]), threshold=22.0).tolist() == [False]


# ---------------------------------------------------------------------- products
def _grid_product(ws, mus, sgs, trunc, x):
    p = np.ones_like(x)
    for w, mu, sg in zip(ws, mus, sgs, strict=True):
        p = p * grid_pdf(w, mu, sg, trunc, x)
    return p / np.trapezoid(p, x)


@pytest.mark.parametrize("truncated", [False, True])
def test_product_matches_grid_product(rng, truncated):
    n, k = 4, 3
    comps = [random_mixture(rng, n=n, k=k, spread=15.0) for _ in range(3)]
    mix = [
        GaussianMixture.from_arrays(w, mu, sg, truncated=np.full(n, truncated))
        for w, mu, sg, _ in comps
    ]
    prod = product(mix)
    assert prod.n_components == k**3
    for i in range(n):
        ws = [c[0][i] for c in comps]
        mus = [c[1][i] for c in comps]
        sgs = [c[2][i] for c in comps]
        x = row_grid(np.concatenate(mus), np.concatenate(sgs), truncated)
        ref = _grid_product(ws, mus, sgs, truncated, x)
        got = np.exp(prod[i].log_prob(torch.as_tensor(x[::997][:, None].T[0][:1])).numpy())
        # compare the density at many grid points
        xs = x[::997]
        rows = GaussianMixture(
            prod.log_weights[i].expand(len(xs), -1),
            prod.means[i].expand(len(xs), -1),
            prod.sigmas[i].expand(len(xs), -1),
            None if prod.truncated is None else prod.truncated[i].expand(len(xs)),
        )
        got = np.exp(rows.log_prob(torch.as_tensor(xs)).numpy())
        np.testing.assert_allclose(got, ref[::997], rtol=1e-6, atol=1e-9 * ref.max())


def test_product_with_reduction_is_close_to_exact(rng):
    # 4 noisy measurements of the same flux, each a 5-component mixture
    n, k, n_exp = 5, 5, 4
    truth = rng.uniform(50, 200, n)
    mixes, params = [], []
    for _ in range(n_exp):
        err = rng.uniform(5, 15, n)
        obs = truth + rng.normal(0, err)
        mu = obs[:, None] + err[:, None] * rng.normal(0, 0.4, (n, k))
        sg = err[:, None] * rng.uniform(0.6, 1.2, (n, k))
        w = rng.dirichlet(np.ones(k), n)
        params.append((w, mu, sg))
        mixes.append(GaussianMixture.from_arrays(w, mu, sg))
    exact = product(mixes)
    red = product(mixes, max_components=64)
    assert red.n_components == 64 and exact.n_components == k**n_exp
    se, sr = exact.summaries(), red.summaries()
    # the reduction is approximate: a few hundredths of the co-added sigma
    for key in ("flux", "flux_median", "flux_peak", "flux_q16", "flux_q84", "sigma68"):
        np.testing.assert_allclose(sr[key], se[key], atol=0.05 * se["flux_err"].min())
    # the exact product against a brute-force grid product
    for i in range(n):
        ws, mus, sgs = ([p[j][i] for p in params] for j in range(3))
        x = np.linspace(truth[i] - 100, truth[i] + 100, 200_001)
        ref = _grid_product(ws, mus, sgs, False, x)
        c = cumtrapz(ref, x)
        assert se["flux_median"][i] == pytest.approx(np.interp(0.5, c, x), abs=1e-4)
        assert se["flux"][i] == pytest.approx(np.trapezoid(x * ref, x), abs=1e-6)


def test_product_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="at least one"):
        product([])
    a = GaussianMixture.from_arrays([[1.0]], [[0.0]], [[1.0]])
    b = GaussianMixture.from_arrays(np.ones((2, 1)), np.zeros((2, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="equal rows"):
        product([a, b])


def test_summaries_in_parallel_chunks_match_and_restore_threads(mixes):
    w, mu, sg, trunc = mixes
    g = GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)
    before = torch.get_num_threads()
    one = g.summaries(chunk_size=6, workers=1)
    many = g.summaries(chunk_size=2, workers=2)
    assert torch.get_num_threads() == before
    for key in one:
        np.testing.assert_allclose(many[key], one[key], rtol=1e-12, err_msg=key)
    with pytest.raises(ValueError, match="chunk_size"):
        g.summaries(chunk_size=0)
