"""The project's one definition of each summary statistic: quantile levels, sigma68 and D.

Quantile convention (paper Eq. 14): ``sigma68 = (q84 - q16) / 2`` with ``q16`` and ``q84``
the quantiles at the probability levels :data:`P16` ``= Phi(-1) = 0.158655`` and
:data:`P84` ``= Phi(+1) = 0.841345``, so that sigma68 equals the standard deviation of a
Gaussian (the paper: "for Gaussian distributions, these two estimators coincide"). The
same levels serve the per-galaxy PDF summaries (:mod:`lumos.mixture`), the sample
statistics here (training logs, validation, transfer, benches) and the 68% coverage.
``sigma95`` uses the 2.5% and 97.5% quantiles (:data:`P025`, :data:`P975`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["P16", "P84", "P025", "P975", "sigma68", "pair_pull"]

#: Probability level of the "16%" quantile: Phi(-1).
P16 = 0.5 * math.erfc(1.0 / math.sqrt(2.0))
#: Probability level of the "84%" quantile: Phi(+1).
P84 = 1.0 - P16
#: Probability levels of the 2.5% and 97.5% quantiles (sigma95).
P025 = 0.025
P975 = 0.975


def sigma68(x) -> float:
    """Half the width of the central 68.27% of a sample: ``(q84 - q16) / 2`` (Eq. 14).

    Parameters
    ----------
    x : array_like
        Sample values; NaN and infinite values are ignored.

    Returns
    -------
    float
        The half width, with the quantiles at :data:`P16` and :data:`P84` (linear
        interpolation between order statistics); NaN for an empty sample.
    """
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    q16, q84 = np.quantile(x, [P16, P84])
    return float(0.5 * (q84 - q16))


def pair_pull(f1, s1, f2, s2) -> np.ndarray:
    """``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` of two observations of one galaxy (Eq. 19).

    Parameters
    ----------
    f1, s1, f2, s2 : array_like
        Fluxes and their errors in the two observations (broadcast together).

    Returns
    -------
    numpy.ndarray of float64
        D; unit width (sigma68 = 1) when the errors are calibrated, independent and the
        fluxes unbiased. NaN or infinite where both errors are zero or an input is NaN.
    """
    f1, s1, f2, s2 = (np.asarray(a, dtype=float) for a in (f1, s1, f2, s2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (f1 - f2) / np.sqrt(s1**2 + s2**2)
