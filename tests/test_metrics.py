import numpy as np
import pytest
from scipy import stats

from lumos.validation.metrics import (
    binned_accuracy,
    interval_coverage,
    pit_ks_distance,
    pit_values,
)


def test_pit_of_calibrated_gaussians_is_uniform(rng):
    n = 20_000
    truth = rng.uniform(10, 100, n)
    sigma = rng.uniform(1, 5, n)
    mean = truth + sigma * rng.normal(size=n)
    weight = np.zeros((n, 5))
    weight[:, 0] = 1.0
    mu = np.zeros((n, 5))
    mu[:, 0] = mean
    sg = np.ones((n, 5))
    sg[:, 0] = sigma
    pit = pit_values(weight, mu, sg, truth)
    assert pit_ks_distance(pit) < 0.02
    # too-wide PDFs pile the PIT in the middle
    wide = pit_values(weight, mu, 3 * sg, truth)
    assert pit_ks_distance(wide) > 0.15
    assert interval_coverage(mean - sigma, mean + sigma, truth) == pytest.approx(0.683, abs=0.01)


def test_pit_of_a_mixture_matches_scipy():
    w = np.array([[0.3, 0.7]])
    m = np.array([[0.0, 3.0]])
    s = np.array([[1.0, 2.0]])
    expected = 0.3 * stats.norm.cdf(1.0, 0, 1) + 0.7 * stats.norm.cdf(1.0, 3, 2)
    assert pit_values(w, m, s, np.array([1.0]))[0] == pytest.approx(expected)


def test_binned_accuracy(rng):
    mag = rng.uniform(18, 23, 10_000)
    truth = 10 ** (-0.4 * (mag - 25))
    flux = truth * (1.01 + 0.05 * rng.normal(size=mag.size))
    acc = binned_accuracy(mag, flux, truth)
    assert len(acc) == 5
    np.testing.assert_allclose(acc["bias"], 0.01, atol=0.004)
    np.testing.assert_allclose(acc["sigma68"], 0.05, rtol=0.1)
    assert acc["n"].sum() == 10_000
