"""The one definition of sigma68, its quantile levels and D (lumos.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lumos.stats import P025, P16, P84, P975, pair_pull, sigma68


def test_quantile_levels_are_phi_of_minus_and_plus_one():
    assert P16 == pytest.approx(sps.norm.cdf(-1.0), abs=1e-15)
    assert P84 == pytest.approx(sps.norm.cdf(1.0), abs=1e-15)
    assert (P025, P975) == (0.025, 0.975)


def test_sigma68_is_the_standard_deviation_of_a_gaussian(rng):
    x = rng.normal(3.0, 2.0, 400_000)
    # within 0.3%: the 16%/84% percentile width would be 0.55% narrower
    assert sigma68(x) == pytest.approx(2.0, rel=3e-3)


def test_sigma68_of_a_small_sample_interpolates_at_the_phi_levels():
    x = np.arange(11.0)  # quantile p of 0..10 is 10 p (linear interpolation)
    assert sigma68(x) == pytest.approx(0.5 * 10.0 * (P84 - P16), rel=1e-12)


def test_sigma68_ignores_non_finite_values_and_is_nan_when_empty():
    x = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf])
    assert sigma68(x) == sigma68([1.0, 2.0, 3.0])
    assert np.isnan(sigma68([])) and np.isnan(sigma68([np.nan]))
    assert sigma68(np.ones((3, 4))) == 0.0  # any shape, flattened


def test_pair_pull_is_eq19():
    d = pair_pull([10.0, 5.0, 1.0], [3.0, 1.0, 0.0], [6.0, 5.0, 2.0], [4.0, 1.0, 0.0])
    np.testing.assert_allclose(d[:2], [0.8, 0.0])
    assert np.isneginf(d[2])  # zero errors: no finite D
    # calibrated, independent Gaussian errors give unit width
    rng = np.random.default_rng(4)
    f, s1, s2 = 100.0, rng.uniform(1, 5, 50_000), rng.uniform(1, 5, 50_000)
    f1, f2 = f + s1 * rng.standard_normal(s1.size), f + s2 * rng.standard_normal(s2.size)
    d = pair_pull(f1, s1, f2, s2)
    assert sigma68(d) == pytest.approx(1.0, abs=0.02)
