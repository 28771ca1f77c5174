"""Accuracy and calibration metrics of flux estimates against known true fluxes."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

__all__ = [
    "MAG_BINS",
    "sigma68",
    "relative_error",
    "binned_accuracy",
    "pit_values",
    "pit_ks_distance",
    "interval_coverage",
]

#: i-magnitude bin edges used throughout (the paper's Fig. 7 range).
MAG_BINS = np.arange(18.0, 23.01, 1.0)


def sigma68(x: np.ndarray) -> float:
    """Half the width of the central 68% of ``x``: (q84 - q16) / 2, ignoring NaN."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    q16, q84 = np.percentile(x, [15.865, 84.135])
    return float(0.5 * (q84 - q16))


def relative_error(flux: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(f - f_true) / f_true."""
    truth = np.asarray(truth, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.asarray(flux, dtype=float) - truth) / truth


def binned_accuracy(
    mag: np.ndarray, flux: np.ndarray, truth: np.ndarray, bins: np.ndarray = MAG_BINS
) -> Table:
    """Bias (median) and sigma68 of (f - f_true)/f_true in magnitude bins.

    Parameters
    ----------
    mag : array_like
        Magnitude used for binning (catalogue i-band).
    flux, truth : array_like
        Estimated and true fluxes.
    bins : array_like
        Bin edges.

    Returns
    -------
    astropy.table.Table
        Columns ``mag_lo, mag_hi, n, bias, sigma68``.
    """
    mag = np.asarray(mag, dtype=float)
    err = relative_error(flux, truth)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (mag >= lo) & (mag < hi) & np.isfinite(err)
        e = err[sel]
        rows.append((lo, hi, int(sel.sum()),
                     float(np.median(e)) if e.size else np.nan, sigma68(e)))  # fmt: skip
    return Table(rows=rows, names=("mag_lo", "mag_hi", "n", "bias", "sigma68"))


def pit_values(weight, mean, sigma, truth) -> np.ndarray:
    """Probability integral transform: the CDF of each mixture at its true flux.

    Parameters
    ----------
    weight, mean, sigma : array_like, shape (N, K)
        Mixture components (components with zero weight are ignored).
    truth : array_like, shape (N,)
        True fluxes.
    """
    from scipy.special import ndtr

    weight = np.asarray(weight, dtype=float)
    mean = np.asarray(mean, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    truth = np.asarray(truth, dtype=float)[:, None]
    use = weight > 0
    z = np.where(use, (truth - np.where(use, mean, 0.0)) / np.where(use, sigma, 1.0), 0.0)
    return np.sum(np.where(use, weight * ndtr(z), 0.0), axis=1) / np.sum(weight, axis=1)


def pit_ks_distance(pit: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the PIT values and a uniform distribution."""
    pit = np.sort(np.asarray(pit, dtype=float)[np.isfinite(pit)])
    n = pit.size
    if n == 0:
        return float("nan")
    upper = np.arange(1, n + 1) / n - pit
    lower = pit - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def interval_coverage(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of rows whose true value lies within [lo, hi]."""
    lo, hi, truth = (np.asarray(a, dtype=float) for a in (lo, hi, truth))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(truth)
    return float(np.mean((truth[ok] >= lo[ok]) & (truth[ok] <= hi[ok])))
