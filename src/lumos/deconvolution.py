"""One-dimensional extreme deconvolution: Gaussian mixtures behind measurements with known errors.

The empirical flux prior (:func:`lumos.prior.empirical_prior`) is the distribution of true
colours that, convolved with each galaxy's measurement error, best explains the measured
colours. This module fits it:

* :func:`fit_mixture_1d`: a K-component mixture by EM (Bovy, Hogg & Roweis 2011, in one
  dimension);
* :func:`fit_mixture_bic`: the number of components chosen by the Bayesian information
  criterion;
* :func:`mixture_log_likelihood`: the objective both maximise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_mixture_1d", "fit_mixture_bic", "mixture_log_likelihood"]


def fit_mixture_1d(x: np.ndarray, err: np.ndarray | None = None, k: int = 3,
                   iterations: int = 200, seed: int = 0,
                   min_sigma: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-likelihood 1-D Gaussian mixture, deconvolving known Gaussian errors.

    With ``err`` this is extreme deconvolution (Bovy, Hogg & Roweis 2011) in one
    dimension: the mixture ``sum_k a_k N(m_k, V_k)`` maximises
    ``sum_j log sum_k a_k N(x_j; m_k, V_k + err_j^2)``. The EM steps are, with
    ``T = V_k + err_j^2`` and responsibilities ``r_jk``: ``b_jk = m_k + V_k (x_j - m_k) / T``,
    ``B_jk = V_k - V_k^2 / T``, ``a_k = mean_j r_jk``, ``m_k = sum r b / sum r``,
    ``V_k = sum r ((m_k - b)^2 + B) / sum r``.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,)
        Measurements (finite).
    err : numpy.ndarray, shape (N,), optional
        Their Gaussian errors (default 0: a plain mixture fit).
    k : int
        Number of components (reduced to N if fewer points).
    iterations : int
        EM iterations.
    seed : int
        Seed of the initial means (quantiles of x with a small jitter).
    min_sigma : float
        Floor of the component sigmas, relative to the spread of x.

    Returns
    -------
    weight, mean, sigma : numpy.ndarray, shape (K,)
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("fit_mixture_1d needs a non-empty 1-D array of finite values")
    e2 = np.zeros_like(x) if err is None else np.asarray(err, dtype=float) ** 2
    k = max(1, min(int(k), x.size))
    spread = float(np.std(x)) or 1.0
    floor = (min_sigma * spread) ** 2
    rng = np.random.default_rng(seed)
    m = np.quantile(x, (np.arange(k) + 0.5) / k) + 1e-3 * spread * rng.standard_normal(k)
    v = np.full(k, max(spread**2 / k, floor))
    a = np.full(k, 1.0 / k)
    for _ in range(iterations):
        t = v[None, :] + e2[:, None]
        logp = np.log(a)[None, :] - 0.5 * ((x[:, None] - m[None, :]) ** 2 / t + np.log(t))
        logp -= logp.max(axis=1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=1, keepdims=True)
        b = m[None, :] + v[None, :] * (x[:, None] - m[None, :]) / t
        big_b = v[None, :] - v[None, :] ** 2 / t
        rs = r.sum(axis=0) + 1e-300
        a = np.clip(rs / x.size, 1e-12, None)
        m = (r * b).sum(axis=0) / rs
        v = np.maximum((r * ((m[None, :] - b) ** 2 + big_b)).sum(axis=0) / rs, floor)
    a = a / a.sum()
    return a, m, np.sqrt(v)


def mixture_log_likelihood(x, err, weight, mean, sigma) -> float:
    """``sum_j log sum_k a_k N(x_j; m_k, sigma_k^2 + err_j^2)`` (the deconvolution objective)."""
    x = np.asarray(x, float)[:, None]
    e2 = (np.zeros_like(x) if err is None else np.asarray(err, float)[:, None] ** 2)
    t = np.asarray(sigma, float)[None, :] ** 2 + e2
    logp = (np.log(np.clip(weight, 1e-300, None))[None, :]
            - 0.5 * ((x - np.asarray(mean)[None, :]) ** 2 / t + np.log(2 * np.pi * t)))
    top = logp.max(axis=1, keepdims=True)
    return float((top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))).sum())


def fit_mixture_bic(x, err=None, k_max: int = 3, seed: int = 0):
    """:func:`fit_mixture_1d` with the number of components chosen by the Bayesian
    information criterion, ``BIC = -2 log L + (3 k - 1) log N``, over ``k = 1 .. k_max``:
    a few dozen galaxies support one or two components, not a spiky many-component prior.

    Parameters
    ----------
    x, err : numpy.ndarray, shape (N,)
        Measurements and their Gaussian errors (default 0).
    k_max : int
        Most components tried.
    seed : int
        Seed of the EM starts.

    Returns
    -------
    weight, mean, sigma : numpy.ndarray, shape (k,)
    """
    x = np.asarray(x, float)
    best, best_bic = None, np.inf
    for k in range(1, max(1, int(k_max)) + 1):
        if 3 * k - 1 >= x.size:
            break
        fit = fit_mixture_1d(x, err, k=k, seed=seed)
        bic = -2.0 * mixture_log_likelihood(x, err, *fit) + (3 * k - 1) * np.log(x.size)
        if bic < best_bic:
            best, best_bic = fit, bic
    return best if best is not None else fit_mixture_1d(x, err, k=1, seed=seed)
