"""Sersic profile fitting of the flux (LUMOS paper section 3.1, Eq. 3).

With the model profile fixed (catalogue shape, PSF-convolved, unit flux), the only free
parameter is the amplitude A minimising the Poisson chi-square

    chi2(A) = sum_i (d_i - b - A p_i)^2 / V_i(A),   V_i(A) = s + A p_i / gain

over the pixels of the fitting region, with ``b`` the annulus background and ``s`` the sky
variance per pixel: ``b / gain + (read_noise / gain)^2`` (``sky_variance="model"``; Eq. 3 in
electrons) or the clipped annulus variance (``sky_variance="annulus"``).

**Fitting region**: valid pixels whose centres lie within the ellipse of the catalogue axis
ratio and position angle with semi-major axis ``region_scale`` (2) times the 62.5%-light
semi-major axis of the model (at least 4 pixels, at most ``r_in - 1`` so that it never reaches
the background annulus). It holds about 90% of the model light.

Solvers: ``"newton"`` (default) solves d chi2 / dA = 0 for all galaxies of a chunk at once by
safeguarded Newton iterations inside a bracket (chi2 is convex in A on its domain
``V_i > 0``, so the root is unique); ``"nelder-mead"`` is the per-galaxy scipy reference.

The error is ``sqrt(2 / chi2''(A))`` from the curvature at the minimum, combined with the
propagated uncertainty of the background level, ``(dA/db)^2 sigma_pix^2 / n_ann``.

``objective="loglike"`` minimises the full Gaussian ``-2 ln L = chi2 + sum ln V_i`` instead:
the ``ln V`` term removes the known upward bias of the Poisson chi-square at low signal-to-noise.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ..flags import Flag
from .aperture import APERTURE_FRACTION, first_aperture_guess
from .background import R_IN, R_OUT, AnnulusBackground, annulus_background
from .common import ContextCutouts, bad_shape, mark_failed
from .region import region_pixels

__all__ = ["modelfit_photometry", "fit_amplitude", "fit_amplitude_nelder_mead", "OBJECTIVES"]

OBJECTIVES = ("chi2", "loglike")
_CHUNK = 256


def _col(s: np.ndarray) -> np.ndarray:
    """Sky variance broadcastable against (m, P) rows: one per row (m,) or per pixel."""
    return s[:, None] if s.ndim == 1 else s


def _objective(A, d, p, s, k, objective):
    """Objective value for amplitudes A (m,) on rows d, p (m, P) with sky variance s (m,)
    or (m, P)."""
    V = _col(s) + k[:, None] * A[:, None] * p
    r = d - A[:, None] * p
    valid = p != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(valid, r * r / V, 0.0)
        if objective == "loglike":
            term = term + np.where(valid, np.log(V), 0.0)
        out = term.sum(axis=1)
    bad = np.any(valid & (V <= 0), axis=1)
    return np.where(bad, np.inf, out)


def _gradient(A, d, p, s, k, objective):
    """First and second derivative of the objective with respect to A, shape (m,) each."""
    V = _col(s) + k[:, None] * A[:, None] * p
    r = d - A[:, None] * p
    kk = k[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        iv = np.where(p != 0, 1.0 / V, 0.0)
        t = 1.0 + kk * r * iv
        g = np.sum(iv * p * (-2.0 * r - kk * r * r * iv), axis=1)
        h = np.sum(2.0 * iv * p * p * t * t, axis=1)
        if objective == "loglike":
            g = g + np.sum(kk * p * iv, axis=1)
            h = h - np.sum((kk * p * iv) ** 2, axis=1)
    return g, h


def _fit_arrays(data, profile, sky_variance, gain, objective: str):
    """Check ``objective`` and convert the arguments of :func:`fit_amplitude` to float64:
    data, profile, sky variance and the inverse gain."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    d = np.asarray(data, dtype=np.float64)
    p = np.asarray(profile, dtype=np.float64)
    s = np.asarray(sky_variance, dtype=np.float64)
    return d, p, s, 1.0 / np.asarray(gain, dtype=np.float64)


def fit_amplitude(
    data: np.ndarray,
    profile: np.ndarray,
    sky_variance: np.ndarray,
    gain: np.ndarray,
    objective: str = "chi2",
    xtol: float = 1e-7,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise the Poisson chi-square in the amplitude for many galaxies at once.

    Parameters
    ----------
    data : numpy.ndarray, shape (m, P)
        Background-subtracted pixels ``d_i - b``, image units; 0 where unused.
    profile : numpy.ndarray, shape (m, P)
        Model profile ``p_i``; exactly 0 where unused (such pixels are ignored).
    sky_variance : numpy.ndarray, shape (m,) or (m, P)
        Sky variance per pixel ``s``, image units^2 (``V_i = s + A p_i / gain``): one value
        per row, or one per pixel (from a weight map; ignored where the profile is 0).
    gain : numpy.ndarray, shape (m,)
        Gain, electrons per image unit.
    objective : {"chi2", "loglike"}
        Eq. 3 chi-square, or the Gaussian ``chi2 + sum ln V``.
    xtol : float
        Convergence when a step is below ``xtol`` times the curvature error of A.
    max_iter : int
        Iteration limit.

    Returns
    -------
    amplitude : numpy.ndarray, shape (m,)
        Best-fitting amplitude (flux), image units (NaN where it failed).
    curvature : numpy.ndarray, shape (m,)
        Second derivative of the objective at the minimum.
    converged : numpy.ndarray, bool, shape (m,)
    """
    d, p, s, k = _fit_arrays(data, profile, sky_variance, gain, objective)
    m = d.shape[0]
    pmax = p.max(axis=1, initial=0.0)
    if s.ndim == 1:
        usable = (pmax > 0) & np.isfinite(s) & (s > 0) & np.all(np.isfinite(d), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a_min = np.where(usable, -s / (k * pmax), np.nan)  # V_i > 0 requires A > a_min
            spp = np.sum(p * p, axis=1)
            A = np.where(usable, np.sum(p * d, axis=1) / spp, np.nan)
        s_row = s
    else:
        usable, a_min, spp, A, s_row = _start_per_pixel(d, p, s, k)
    lo = a_min.copy()
    hi = np.full(m, np.inf)
    A = np.where(A > a_min, A, 0.5 * a_min)
    active = usable.copy()
    converged = np.zeros(m, dtype=bool)
    h = np.full(m, np.nan)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        a = A[idx]
        g, hh = _gradient(a, d[idx], p[idx], s[idx], k[idx], objective)
        h[idx] = hh
        neg = g < 0
        lo[idx] = np.where(neg, a, lo[idx])
        hi[idx] = np.where(neg, hi[idx], a)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = a - g / hh
        ok = (hh > 0) & (new > lo[idx]) & (new < hi[idx])
        finite_hi = np.isfinite(hi[idx])
        expand = a + 2.0 * np.maximum(np.abs(a),
                                      np.sqrt(s_row[idx] / np.maximum(spp[idx], 1e-300)))
        fallback = np.where(finite_hi, 0.5 * (lo[idx] + hi[idx]), expand)
        new = np.where(ok, new, fallback)
        new = np.where(g == 0, a, new)  # exactly at the minimum
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(hh > 0, np.sqrt(2.0 / hh), np.abs(a) + 1.0)
        done = (np.abs(new - a) <= xtol * scale) | (g == 0)
        A[idx] = new
        converged[idx[done]] = True
        active[idx[done]] = False
        stalled = (hi[idx] - lo[idx]) <= 1e-12 * (np.abs(a) + 1.0)
        converged[idx[stalled]] = True
        active[idx[stalled]] = False
    # curvature at the final amplitude
    idx = np.flatnonzero(converged)
    if idx.size:
        _, h[idx] = _gradient(A[idx], d[idx], p[idx], s[idx], k[idx], objective)
    A[~converged] = np.nan
    h[~converged] = np.nan
    return A, h, converged


def _start_per_pixel(d, p, s, k):
    """Start of :func:`fit_amplitude` for a per-pixel sky variance ``s`` (m, P).

    Returns the usable rows, the lower bound of the amplitude (``V_i > 0`` on every pixel
    with ``p_i > 0``), ``sum p^2``, the least-squares start and a typical sky variance per
    row (profile-squared weighted mean) for the step sizes.
    """
    used = p != 0
    pos = p > 0
    sky_ok = np.all(~used | (np.isfinite(s) & (s > 0)), axis=1)
    usable = pos.any(axis=1) & sky_ok & np.all(np.isfinite(d), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pos, s / np.where(pos, p, 1.0), np.inf).min(axis=1)
        a_min = np.where(usable, -ratio / k, np.nan)
        spp = np.sum(p * p, axis=1)
        A = np.where(usable, np.sum(p * d, axis=1) / spp, np.nan)
        s_row = np.sum(np.where(used, s, 0.0) * p * p, axis=1) / spp
    return usable, a_min, spp, A, s_row


def fit_amplitude_nelder_mead(
    data: np.ndarray,
    profile: np.ndarray,
    sky_variance: np.ndarray,
    gain: np.ndarray,
    objective: str = "chi2",
    xatol: float = 1e-6,
) -> np.ndarray:
    """Reference solution of :func:`fit_amplitude` with scipy's Nelder-Mead, one row at a time.

    Parameters
    ----------
    data, profile, sky_variance, gain, objective
        As in :func:`fit_amplitude`.
    xatol : float
        Absolute amplitude tolerance in units of the sky-only amplitude error.

    Returns
    -------
    numpy.ndarray, shape (m,)
        Best-fitting amplitudes (NaN where the row is unusable or the fit failed).
    """
    d, p, s, k = _fit_arrays(data, profile, sky_variance, gain, objective)
    out = np.full(d.shape[0], np.nan)
    for j in range(d.shape[0]):
        used = p[j] != 0
        sj = s[j : j + 1] if s.ndim == 1 else s[j, used][None]
        if not used.any() or not np.all(np.isfinite(sj) & (sj > 0)):
            continue
        dj, pj = d[j, used][None], p[j, used][None]
        kj = k[j : j + 1]
        spp = float(np.sum(pj * pj))
        a0 = float(np.sum(pj * dj) / spp)
        if s.ndim == 1:
            scale = float(np.sqrt(sj[0] / spp))
            a_min = -sj[0] / (kj[0] * pj.max())
        else:
            scale = float(np.sqrt(np.sum(sj * pj * pj) / spp / spp))
            a_min = -float(np.min(np.where(pj > 0, sj / np.where(pj > 0, pj, 1.0), np.inf))
                           ) / kj[0]  # fmt: skip
        if a0 <= a_min:
            a0 = 0.5 * a_min

        def fun(x, dj=dj, pj=pj, sj=sj, kj=kj):
            return float(_objective(np.atleast_1d(x), dj, pj, sj, kj, objective)[0])

        res = minimize(
            fun,
            x0=[a0],
            method="Nelder-Mead",
            options={
                "xatol": xatol * scale,
                "fatol": 1e-12,
                "maxiter": 2000,
                "initial_simplex": [[a0], [a0 + scale]],
            },
        )
        if res.success:
            out[j] = float(res.x[0])
    return out


def pixel_sky_variance(cutouts: ContextCutouts, bg: AnnulusBackground, mode: str) -> np.ndarray:
    """Per-pixel sky variance s (image units^2) from the Poisson model or the annulus.

    ``"model"`` is ``b / gain + (read_noise / gain)^2``; where it disagrees with the annulus
    variance by more than a factor of two (a sky-subtracted image, a wrong gain or read
    noise) the measured annulus variance is used instead.
    """
    measured = bg.sigma**2
    if mode == "annulus":
        return measured
    if mode == "model":
        s = bg.level / cutouts.gain + (cutouts.read_noise / cutouts.gain) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = s / measured
        usable = np.isfinite(measured) & (measured > 0)
        inconsistent = usable & ~(np.isfinite(ratio) & (ratio > 0.5) & (ratio < 2.0))
        return np.where(inconsistent | ~(s > 0), measured, s)
    raise ValueError(f"sky_variance must be 'model' or 'annulus', got {mode!r}")


def modelfit_photometry(
    cutouts: ContextCutouts,
    objective: str = "chi2",
    solver: str = "newton",
    region_scale: float = 2.0,
    min_region: float = 4.0,
    sky_variance: str = "model",
    r_in: float = R_IN,
    r_out: float = R_OUT,
    background: AnnulusBackground | None = None,
) -> dict[str, np.ndarray]:
    """Flux from fitting the amplitude of the fixed model profile (Eq. 3).

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts (sky included) with the model profiles.
    objective : {"chi2", "loglike"}
        Eq. 3 Poisson chi-square (default) or the Gaussian log-likelihood.
    solver : {"newton", "nelder-mead"}
        Vectorised exact solver (default) or the per-galaxy scipy reference.
    region_scale : float
        Fitting-region semi-major axis in units of the 62.5%-light semi-major axis.
    min_region : float
        Smallest fitting-region semi-major axis, pixels.
    sky_variance : {"model", "annulus"}
        Sky variance per pixel: ``b / gain + (read_noise / gain)^2`` (Eq. 3; replaced by the
        annulus variance where the two differ by more than a factor of two, e.g. on
        sky-subtracted images) or the clipped annulus variance. Not used when the cutouts
        carry a per-pixel ``variance`` (weight map): ``s_i`` is then that variance.
    r_in, r_out : float
        Background annulus radii, pixels.
    background : AnnulusBackground, optional
        Precomputed annulus background.

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux``, ``flux_err`` (image units), ``flags`` and extras ``background`` (image units
        per pixel), ``chi2`` (the minimum of Eq. 3) and ``n_fit_pixels``.
    """
    if solver not in ("newton", "nelder-mead"):
        raise ValueError(f"solver must be 'newton' or 'nelder-mead', got {solver!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if region_scale <= 0 or min_region <= 0:
        raise ValueError("region_scale and min_region must be positive")
    n = len(cutouts)
    if background is None:
        background = annulus_background(cutouts, r_in=r_in, r_out=r_out)
    elif len(background.level) != n:
        raise ValueError(f"background has {len(background.level)} rows, cutouts have {n}")
    s_all = pixel_sky_variance(cutouts, background, sky_variance)
    theta = np.deg2rad(cutouts.pa)
    bad = bad_shape(cutouts) | background.failed
    a_reg = np.full(n, np.nan)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        a0, _, _ = first_aperture_guess(cutouts, APERTURE_FRACTION, start, stop, bad, theta)
        a_reg[start:stop] = np.clip(region_scale * a0, min_region, r_in - 1.0)
    bad |= ~np.isfinite(a_reg)

    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    chi2 = np.full(n, np.nan)
    npix = np.zeros(n, dtype=np.int64)
    good = np.flatnonzero(~bad)
    order = good[np.argsort(a_reg[good], kind="stable")]  # similar sizes share a box
    for start in range(0, order.size, _CHUNK):
        rows = order[start : start + _CHUNK]
        extra = () if cutouts.variance is None else (cutouts.variance,)
        reg = region_pixels(cutouts, rows, a_reg[rows], cutouts.q[rows], theta[rows], extra)
        b = background.level[rows]
        d = np.where(reg.mask, reg.data - b[:, None], 0.0)
        # pixels with a zero (or unphysical negative) model carry no information on A
        p = np.where(reg.mask, np.clip(reg.profile, 0.0, None), 0.0)
        s = s_all[rows] if cutouts.variance is None else reg.extra[0]
        if s.ndim == 2:  # per-pixel sky variance; pixels without a valid one carry no weight
            p = np.where(s > 0, p, 0.0)
        g = cutouts.gain[rows]
        if solver == "newton":
            A, h, conv = fit_amplitude(d, p, s, g, objective)
        else:
            A = fit_amplitude_nelder_mead(d, p, s, g, objective)
            conv = np.isfinite(A)
            A_safe = np.where(conv, A, 0.0)
            h = _gradient(A_safe, d, p, s, g**-1.0, objective)[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            V = _col(s) + A[:, None] * p / g[:, None]
            dadb = 2.0 * np.sum(np.where(p != 0, p / V, 0.0), axis=1) / h
            var = 2.0 / h + dadb**2 * background.level_variance[rows]
        ok = conv & np.isfinite(var) & (var > 0)
        flux[rows] = np.where(ok, A, np.nan)
        err[rows] = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), np.nan)
        chi2[rows] = _objective(np.where(ok, A, 0.0), d, p, s, 1.0 / g, "chi2")
        npix[rows] = np.count_nonzero(p, axis=1)

    flags = cutouts.flags.astype(np.int64).copy()
    no_region = ~np.isfinite(a_reg) & ~background.failed
    flags[bad_shape(cutouts) | no_region] |= int(Flag.BAD_PROFILE)
    flags[background.partial] |= int(Flag.EDGE)
    chi2[mark_failed(flux, err, flags)] = np.nan
    return {
        "flux": flux,
        "flux_err": err,
        "flags": flags,
        "background": background.level,
        "chi2": chi2,
        "n_fit_pixels": npix,
    }
