"""One-dimensional extreme deconvolution: Gaussian mixtures behind measurements with known errors.

The empirical flux prior (:func:`lumos.prior.empirical_prior`) is the distribution of true
colours that, convolved with each galaxy's measurement error, best explains the measured
colours. This module fits it:

* :func:`fit_mixture_1d`: a K-component mixture by EM (Bovy, Hogg & Roweis 2011, in one
  dimension);
* :func:`fit_mixture_bic`: the number of components chosen by the Bayesian information
  criterion;
* :func:`mixture_log_likelihood`: the objective both maximise;
* :func:`fit_linear_gaussian`: one Gaussian whose mean and log-width are linear in a second
  variable (the i magnitude), fitted to all measurements at once, with the uncertainty of
  the fit (:class:`LinearGaussian`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

__all__ = ["fit_mixture_1d", "fit_mixture_bic", "mixture_log_likelihood", "LinearGaussian",
           "fit_linear_gaussian"]

#: Fewest measurements, and narrowest range of ``t``, for :func:`fit_linear_gaussian` to fit
#: the slopes; with less the mean and width are constant.
LINEAR_MIN_POINTS = 10
LINEAR_MIN_SPAN = 0.1


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


@dataclass(frozen=True)
class LinearGaussian:
    """``x ~ N(a0 + a1 (t - t0), exp(2 (b0 + b1 (t - t0))))`` and the uncertainty of its fit.

    Attributes
    ----------
    t0 : float
        Centre of ``t`` (the mean of the fitted points).
    t_range : tuple of float
        The fitted points' range of ``t``; :meth:`at` evaluates the model clipped to it.
    params : numpy.ndarray, shape (4,)
        ``a0, a1, b0, b1``.
    covariance : numpy.ndarray, shape (4, 4)
        Inverse Hessian of ``-log L`` at the optimum (the Laplace approximation of the
        parameters' posterior with flat priors); zero where it is not positive definite.
    spread : float
        Standard deviation of the fitted measurements: the predictive width never exceeds
        it (nor falls below the maximum-likelihood width).
    """

    t0: float
    t_range: tuple[float, float]
    params: np.ndarray
    covariance: np.ndarray
    spread: float

    def at(self, t) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive width of ``x`` at ``t`` (clipped to :attr:`t_range`).

        The width holds the fit's own uncertainty: with ``m(t)`` and ``l(t)`` the mean and
        log-width, ``sigma^2 = exp(2 l + 2 var l) + var m`` (the variance of ``x`` under
        the Laplace posterior of the parameters, ``E[exp(2 l)] = exp(2 l + 2 var l)`` for
        a Gaussian ``l``), so a width the data barely constrain is not taken at its
        maximum-likelihood value; it is at most :attr:`spread`, the measurements' own
        scatter (where the likelihood is flat in ``l``, as for a width far below the
        errors, ``var l`` is unbounded).
        """
        d = np.clip(np.asarray(t, float), *self.t_range) - self.t0
        a0, a1, b0, b1 = self.params
        design = np.stack([np.ones_like(d), d])
        c = self.covariance
        var_m = np.einsum("ij,i...,j...->...", c[:2, :2], design, design)
        var_l = np.einsum("ij,i...,j...->...", c[2:, 2:], design, design)
        log_w = b0 + b1 * d
        ml_width = np.exp(log_w)
        width = np.exp(np.minimum(log_w + var_l, np.log(max(self.spread, 1e-300))))
        return a0 + a1 * d, np.maximum(np.sqrt(width**2 + var_m).clip(max=self.spread), ml_width)


def _linear_gaussian_nll(p: np.ndarray, x: np.ndarray, e2: np.ndarray, d: np.ndarray,
                         floor: float) -> tuple[float, np.ndarray]:
    """``-log L`` (without the constant) of :func:`fit_linear_gaussian` and its gradient."""
    mean = p[0] + p[1] * d
    log_w = np.clip(p[2] + p[3] * d, -30.0, 30.0)
    w2 = np.exp(2.0 * log_w)
    v = w2 + e2 + floor
    r = x - mean
    g_mean = -r / v
    g_log_w = (1.0 / v - r * r / v**2) * w2
    grad = np.array([g_mean.sum(), (g_mean * d).sum(), g_log_w.sum(), (g_log_w * d).sum()])
    return float(0.5 * np.sum(np.log(v) + r * r / v)), grad


def fit_linear_gaussian(x, err, t) -> LinearGaussian:
    """One Gaussian behind known errors whose mean and log-width are linear in ``t``.

    Maximises ``sum_j log N(x_j; a0 + a1 d_j, exp(2 (b0 + b1 d_j)) + err_j^2)`` with
    ``d_j = t_j - mean(t)`` (L-BFGS with the analytic gradient, started from the
    one-Gaussian deconvolution of :func:`fit_mixture_1d`), the extreme deconvolution of
    one component whose parameters vary with ``t``: every measurement informs the model
    at every ``t``, where binning in ``t`` fits each bin from its own points alone. With
    fewer than :data:`LINEAR_MIN_POINTS` points or a range of ``t`` under
    :data:`LINEAR_MIN_SPAN` the slopes are 0.

    Parameters
    ----------
    x, err, t : array_like, shape (N,)
        Measurements, their Gaussian errors (>= 0) and the variable the model follows;
        finite.

    Returns
    -------
    LinearGaussian

    Raises
    ------
    ValueError
        If the arrays are empty, of different lengths or not finite.
    """
    x, err, t = (np.asarray(a, float) for a in (x, err, t))
    if x.ndim != 1 or x.size == 0 or err.shape != x.shape or t.shape != x.shape \
            or not (np.all(np.isfinite(x)) and np.all(np.isfinite(err))
                    and np.all(np.isfinite(t))):  # fmt: skip
        raise ValueError("fit_linear_gaussian needs non-empty 1-D finite x, err and t of one "
                         "length")  # fmt: skip
    spread = float(np.std(x))
    scale = spread or float(np.max(np.abs(x))) or 1.0
    xs, e2 = x / scale, (err / scale) ** 2
    t0 = float(t.mean())
    d = t - t0
    slopes = x.size >= LINEAR_MIN_POINTS and float(np.ptp(t)) >= LINEAR_MIN_SPAN
    _, m0, s0 = fit_mixture_1d(xs, np.sqrt(e2), k=1)
    floor = 1e-12
    p0 = np.array([m0[0], 0.0, np.log(max(s0[0], 1e-3)), 0.0])
    free = [0, 1, 2, 3] if slopes else [0, 2]

    def objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.zeros(4)
        p[free] = q
        value, grad = _linear_gaussian_nll(p, xs, e2, d, floor)
        return value, grad[free]

    q = minimize(objective, p0[free], jac=True, method="L-BFGS-B").x
    hess = np.zeros((len(free), len(free)))
    for a in range(len(free)):
        h = 1e-5 * max(1.0, abs(q[a]))
        step = np.zeros(len(free))
        step[a] = h
        hess[a] = (objective(q + step)[1] - objective(q - step)[1]) / (2.0 * h)
    hess = 0.5 * (hess + hess.T)
    cov_free = np.zeros_like(hess)
    if np.all(np.isfinite(hess)) and np.all(np.linalg.eigvalsh(hess) > 0):
        cov_free = np.linalg.inv(hess)
    params = np.zeros(4)
    params[free] = q
    cov = np.zeros((4, 4))
    cov[np.ix_(free, free)] = cov_free
    # back to the units of x: the mean scales, the log-width shifts
    params[:2] *= scale
    params[2] += np.log(scale)
    cov[:2, :] *= scale
    cov[:, :2] *= scale
    return LinearGaussian(t0, (float(t.min()), float(t.max())), params, cov, spread)
