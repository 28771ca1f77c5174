"""Accuracy and calibration metrics of flux estimates against known true fluxes."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.special import ndtr

from ..stats import P025, P16, P84, P975, sigma68

__all__ = [
    "MAG_BINS",
    "relative_error",
    "binned_accuracy",
    "pit_values",
    "pit_ks_distance",
    "interval_coverage",
    "CALIBRATION_TOLERANCES",
    "COVERAGE68",
    "COVERAGE95",
    "binned_statistic",
    "calibration_checks",
    "colour_error",
    "gaussian_pit",
    "outlier_fractions",
    "tolerance_for_error",
]

#: Calibration checks of :func:`calibration_checks`: largest accepted PIT KS distance and
#: largest accepted deviations of the 68% and 95% interval coverages from nominal.
CALIBRATION_TOLERANCES = {"pit_ks": 0.1, "coverage68": 0.08, "coverage95": 0.05}

#: Nominal coverage of the central 68% interval (q16-q84) and of the 95% interval.
COVERAGE68 = P84 - P16
COVERAGE95 = P975 - P025

#: i-magnitude bin edges used throughout (the paper's Fig. 7 range).
MAG_BINS = np.arange(18.0, 23.01, 1.0)


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


def gaussian_pit(flux: np.ndarray, flux_err: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PIT of a Gaussian error bar: Phi((f_true - f) / flux_err) (NaN where undefined)."""
    flux, err, truth = (np.asarray(a, dtype=float) for a in (flux, flux_err, truth))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (truth - flux) / err
    return np.where(np.isfinite(z) & (err > 0), ndtr(z), np.nan)


def calibration_checks(
    pit_ks: float, coverage68: float, coverage95: float, tolerances: dict | None = None
) -> dict[str, bool]:
    """Whether calibration metrics lie within tolerance of a calibrated PDF.

    Parameters
    ----------
    pit_ks : float
        KS distance of the PIT values to a uniform distribution (:func:`pit_ks_distance`).
    coverage68, coverage95 : float
        Fractions of true values inside the central 68.27% (``q16``-``q84``) and 95%
        (``q2.5``-``q97.5``) intervals; nominal :data:`COVERAGE68` and :data:`COVERAGE95`.
    tolerances : dict, optional
        ``pit_ks``, ``coverage68``, ``coverage95`` (default :data:`CALIBRATION_TOLERANCES`).

    Returns
    -------
    dict of str to bool
        ``pit_ks``, ``coverage68``, ``coverage95`` and ``all`` (True = passed).
    """
    tol = {**CALIBRATION_TOLERANCES, **(tolerances or {})}
    out = {
        "pit_ks": bool(np.isfinite(pit_ks) and pit_ks <= tol["pit_ks"]),
        "coverage68": bool(abs(coverage68 - COVERAGE68) <= tol["coverage68"]),
        "coverage95": bool(abs(coverage95 - COVERAGE95) <= tol["coverage95"]),
    }
    out["all"] = all(out.values())
    return out


def outlier_fractions(
    flux: np.ndarray, flux_err: np.ndarray, truth: np.ndarray
) -> dict[str, float]:
    """Fractions of outliers among the finite measurements.

    Returns
    -------
    dict
        ``outlier_3sigma``: fraction with ``|f - f_true| > 3 flux_err``;
        ``outlier_50pct``: fraction with ``|f - f_true| > 0.5 f_true``;
        ``failed``: fraction of rows without a finite flux or error; ``n``: rows.
    """
    flux, err, truth = (np.asarray(a, dtype=float) for a in (flux, flux_err, truth))
    ok = np.isfinite(flux) & np.isfinite(err) & np.isfinite(truth)
    n = int(flux.size)
    if not ok.any():
        return {"outlier_3sigma": float("nan"), "outlier_50pct": float("nan"),
                "failed": 1.0 if n else float("nan"), "n": n}  # fmt: skip
    d = np.abs(flux[ok] - truth[ok])
    return {
        "outlier_3sigma": float(np.mean(d > 3.0 * err[ok])),
        "outlier_50pct": float(np.mean(d > 0.5 * np.abs(truth[ok]))),
        "failed": float(1.0 - ok.mean()),
        "n": n,
    }


def colour_error(
    f1: np.ndarray, f2: np.ndarray, true1: np.ndarray, true2: np.ndarray
) -> np.ndarray:
    """Measured minus true colour, magnitudes: -2.5 log10((f1 / f2) / (true1 / true2)).

    NaN where a measured flux is not positive.
    """
    f1, f2, t1, t2 = (np.asarray(a, dtype=float) for a in (f1, f2, true1, true2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (f1 / f2) / (t1 / t2)
        return np.where((f1 > 0) & (f2 > 0), -2.5 * np.log10(ratio), np.nan)


def binned_statistic(
    x: np.ndarray, values: np.ndarray, bins: np.ndarray, statistic=sigma68, min_count: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """A statistic of ``values`` in bins of ``x``.

    Parameters
    ----------
    x, values : array_like, shape (N,)
        Binning variable and values (non-finite values are ignored).
    bins : array_like
        Bin edges.
    statistic : callable
        Array -> float (default :func:`sigma68`).
    min_count : int
        Bins with fewer finite values give NaN.

    Returns
    -------
    stat : numpy.ndarray, shape (len(bins) - 1,)
    count : numpy.ndarray of int, shape (len(bins) - 1,)
    """
    x, values = np.asarray(x, dtype=float), np.asarray(values, dtype=float)
    bins = np.asarray(bins, dtype=float)
    stat = np.full(bins.size - 1, np.nan)
    count = np.zeros(bins.size - 1, dtype=np.int64)
    for k, (lo, hi) in enumerate(zip(bins[:-1], bins[1:], strict=True)):
        v = values[(x >= lo) & (x < hi) & np.isfinite(values)]
        count[k] = v.size
        if v.size >= min_count:
            stat[k] = float(statistic(v))
    return stat, count


def tolerance_for_error(
    perturbation: np.ndarray, response: np.ndarray, level: float = 0.10
) -> tuple[float, bool]:
    """Smallest perturbation whose response reaches ``level`` in absolute value.

    The response is interpolated linearly between the tested perturbations (starting from
    a zero response at zero perturbation), on one side of zero.

    Parameters
    ----------
    perturbation : array_like
        Tested perturbations of one sign (e.g. relative errors 0.05, 0.1, ...).
    response : array_like
        The resulting (signed) relative flux error at each perturbation.
    level : float
        Target absolute response (0.10 for a 10% flux error).

    Returns
    -------
    value : float
        The perturbation (same units, positive) reaching ``level``, or the largest tested
        perturbation when it is never reached.
    reached : bool
        Whether ``level`` was reached within the tested range.
    """
    p = np.abs(np.asarray(perturbation, dtype=float))
    r = np.abs(np.asarray(response, dtype=float))
    order = np.argsort(p)
    p = np.concatenate([[0.0], p[order]])
    r = np.concatenate([[0.0], r[order]])
    ok = np.isfinite(r)
    p, r = p[ok], r[ok]
    above = np.flatnonzero(r >= level)
    if above.size == 0:
        return float(p.max()), False
    k = int(above[0])
    if k == 0:
        return 0.0, True
    p0, p1, r0, r1 = p[k - 1], p[k], r[k - 1], r[k]
    return float(p0 + (level - r0) * (p1 - p0) / (r1 - r0)), True
