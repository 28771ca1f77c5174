"""Forced elliptical aperture photometry as PAUS does it (MEMBA; LUMOS paper section 3.2).

For each galaxy the aperture is the ellipse with the catalogue axis ratio and position angle
whose exact pixel-overlap sum of the PSF-convolved model profile is 62.5% of the total (unit)
model flux (solved to 1e-3 in the fraction; the flux is then divided by the exact fraction of
the aperture used, so the solver tolerance never biases it). The flux is the aperture sum minus
the annulus background times the aperture area, divided by 0.625 (the aperture correction).
The error is the textbook

    sigma_F = sqrt(F_ap / gain + A sigma_pix^2 + A^2 sigma_pix^2 / n_ann) / 0.625

(source Poisson noise, sky noise in the aperture, uncertainty of the background level; ``A``
the aperture area in pixels, ``sigma_pix`` the clipped standard deviation of the annulus pixels,
``n_ann`` the number of clipped annulus pixels), evaluated exactly for partial pixels: with
overlap fractions ``w_i``, ``A sigma^2`` becomes ``sum(w_i^2) sigma^2`` and ``F_ap`` becomes
``F sum(w_i^2 p_i)`` (pixels cut by the aperture edge contribute ``w_i^2`` of their variance).
Without that, the errors of small apertures are overestimated by up to ~10%.

Flags (bits of :class:`lumos.flags.Flag`, on top of the input flags):

* ``MASKED_CORE``: the aperture touches invalid pixels (their flux is missing);
* ``EDGE``: fewer than half of the annulus pixels are valid;
* ``BAD_PROFILE | FAILED``: unusable shape or model profile, or a profile that never reaches
  the target fraction inside the cutout (NaN flux);
* ``FAILED``: no usable background (fewer than 20 annulus pixels; NaN flux).
"""

from __future__ import annotations

import numpy as np

from ..flags import Flag
from .background import R_IN, R_OUT, AnnulusBackground, annulus_background
from .common import ContextCutouts, bad_shape, mark_failed, source_centre
from .geometry import ellipse_overlap, elliptical_radius

__all__ = ["APERTURE_FRACTION", "aperture_photometry", "aperture_semi_major", "cog_estimate"]

#: Fraction of the model light enclosed by the PAUS forced aperture.
APERTURE_FRACTION = 0.625
_BIN = 0.25  # pixels, radial bin of the curve-of-growth first guess
_CHUNK = 256
_BOX_SMALL = 16  # half-size of the first, small box (a < 15 pixels)
_BOX_HALF = 34  # half-size of the central box searched for the aperture (a < 33 pixels)

EXTRAS = ("aperture_a", "aperture_area", "background", "background_sigma")


def cog_estimate(
    profile: np.ndarray,
    xc: np.ndarray,
    yc: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    fraction: float = APERTURE_FRACTION,
    r_max: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """First guess of the semi-major axis enclosing ``fraction`` of the model (vectorised).

    Bins the model light in elliptical radius of the pixel centres (0.25-pixel bins) and
    interpolates the cumulative sum.

    Parameters
    ----------
    profile : numpy.ndarray, shape (N, C, C)
        Unit-flux model profiles.
    xc, yc : numpy.ndarray, shape (N,)
        Source centres, cutout pixel coordinates.
    q, theta : numpy.ndarray, shape (N,)
        Axis ratio and major-axis angle (radians CCW from +x).
    fraction : float
        Target enclosed fraction of the unit total.
    r_max : float, optional
        Largest semi-major axis considered, pixels (default: half the cutout).

    Returns
    -------
    a0 : numpy.ndarray, shape (N,)
        Semi-major axis estimate, pixels (NaN when never reached).
    slope : numpy.ndarray, shape (N,)
        d(enclosed fraction)/da at ``a0``, per pixel.
    """
    n, size = profile.shape[0], profile.shape[1]
    if r_max is None:
        r_max = size / 2.0
    nbins = int(np.ceil(r_max / _BIN)) + 1
    r = elliptical_radius(xc, yc, q, theta, size)
    idx = np.minimum((r / _BIN).astype(np.int64), nbins - 1)
    idx += (np.arange(n) * nbins)[:, None, None]
    hist = np.bincount(idx.ravel(), weights=profile.ravel(), minlength=n * nbins)
    hist = hist.reshape(n, nbins)
    hist[:, -1] = 0.0  # everything beyond r_max
    cum = np.cumsum(hist, axis=1)
    reached = cum[:, -1] >= fraction
    k = np.argmax(cum >= fraction, axis=1)
    rows = np.arange(n)
    lower = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)
    inbin = hist[rows, k]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(inbin > 0, (fraction - lower) / inbin, 0.5)
        # bin k holds pixel centres with k*BIN <= r < (k+1)*BIN: the enclosed light rises
        # across it; interpolate between its edges.
        a0 = (k + np.clip(t, 0.0, 1.0)) * _BIN
        slope = np.maximum(inbin / _BIN, 1e-6)
    a0 = np.where(reached, np.maximum(a0, 0.3), np.nan)
    return a0, slope


def _enclosed(profile2d, xc, yc, a, q, theta):
    """Exact model fraction inside the ellipse of semi-major ``a``; also the overlap."""
    win, frac = ellipse_overlap(xc, yc, a, a * q, theta, profile2d.shape)
    return float(np.sum(frac * profile2d[win])), win, frac


def _solve_semi_major(
    profile2d: np.ndarray,
    xc: float,
    yc: float,
    q: float,
    theta: float,
    a0: float,
    slope: float,
    fraction: float,
    tol: float,
    max_iter: int = 40,
):
    """Semi-major axis where the exact enclosed model fraction equals ``fraction``.

    Secant iterations kept inside a bracket (regula falsi when a step leaves it).

    Returns
    -------
    a : float
        Semi-major axis of the last evaluation, pixels (NaN if not converged).
    enclosed : float
        Exact enclosed model fraction at ``a``.
    win, frac
        The overlap window and fractions at ``a`` (see ``ellipse_overlap``).
    """
    lo, hi = 0.0, np.inf
    f_lo, f_hi = -fraction, np.nan
    a = a0
    s, win, frac = _enclosed(profile2d, xc, yc, a, q, theta)
    fa = s - fraction
    a_prev, f_prev = np.nan, np.nan
    for _ in range(max_iter):
        if abs(fa) <= tol:
            return a, s, win, frac
        if fa < 0:
            lo, f_lo = a, fa
        else:
            hi, f_hi = a, fa
        if np.isfinite(a_prev) and fa != f_prev:
            new = a - fa * (a - a_prev) / (fa - f_prev)
        else:
            new = a - fa / slope
        if not (lo < new < hi):
            if np.isfinite(hi):
                w = f_lo / (f_lo - f_hi)
                new = lo + (hi - lo) * min(max(w, 0.1), 0.9)
            else:
                new = max(2.0 * a, a + 1.0)
        a_prev, f_prev = a, fa
        a = new
        s, win, frac = _enclosed(profile2d, xc, yc, a, q, theta)
        fa = s - fraction
    if abs(fa) <= tol:
        return a, s, win, frac
    return np.nan, np.nan, win, frac


def first_aperture_guess(cutouts: ContextCutouts, fraction: float, start: int, stop: int, bad,
                         theta):
    """Curve-of-growth first guesses for rows ``start:stop`` on a central box.

    A small box (semi-major axes up to 15 pixels) serves most galaxies; rows whose aperture
    does not fit are redone on the large box (up to 33 pixels).
    """
    sl = slice(start, stop)
    b = bad[sl]
    q = np.where(b, 1.0, cutouts.q[sl])
    th = np.where(b, 0.0, theta[sl])
    a0 = np.full(stop - start, np.nan)
    slope = np.full(stop - start, np.nan)
    todo = np.flatnonzero(~b)
    for half in (_BOX_SMALL, _BOX_HALF):
        if todo.size == 0:
            break
        half = min(half, cutouts.size // 2)
        rows = start + todo
        c0 = cutouts.size // 2 - half
        box = slice(c0, c0 + 2 * half)
        xc, yc = source_centre(cutouts)
        a_k, s_k = cog_estimate(
            cutouts.profile[rows, box, box],
            xc[rows] - c0,
            yc[rows] - c0,
            q[todo],
            th[todo],
            fraction,
            r_max=half - 1.0,
        )
        a0[todo] = a_k
        slope[todo] = s_k
        todo = todo[~np.isfinite(a_k)]
    return a0, slope, q


def aperture_semi_major(
    cutouts: ContextCutouts, fraction: float = APERTURE_FRACTION, tol: float = 1e-6
) -> np.ndarray:
    """Semi-major axis of the aperture enclosing ``fraction`` of each model profile.

    The enclosed fraction is the exact pixel-overlap sum of the unit-flux PSF-convolved model
    over the ellipse with the catalogue axis ratio and position angle. Apertures are searched
    up to a semi-major axis of 33 pixels.

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts with their model profiles.
    fraction : float
        Target enclosed fraction of the unit total (0.625 for PAUS).
    tol : float
        Absolute tolerance on the enclosed fraction.

    Returns
    -------
    numpy.ndarray, shape (N,)
        Semi-major axes in pixels (NaN where the profile is unusable or never reaches it).
    """
    return _apertures(cutouts, fraction, tol, data=False)["a"]


def _apertures(cutouts: ContextCutouts, fraction: float, tol: float, data: bool) -> dict:
    """Solve for every aperture and (``data=True``) accumulate the data sums in it."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n = len(cutouts)
    xc, yc = source_centre(cutouts)
    theta = np.deg2rad(cutouts.pa)
    bad = bad_shape(cutouts)
    out = {k: np.full(n, np.nan)
           for k in ("a", "enclosed", "total", "area", "area2", "p2", "sky2")}  # fmt: skip
    out["touches_invalid"] = np.zeros(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        with np.errstate(invalid="ignore", over="ignore"):
            _solve_chunk(cutouts, fraction, tol, data, start, stop, bad, theta, xc, yc, out)
    return out


def _solve_chunk(cutouts, fraction, tol, data, start, stop, bad, theta, xc, yc, out) -> None:
    """Solve the apertures of rows ``start:stop`` and fill ``out`` in place."""
    a0, slope, q = first_aperture_guess(cutouts, fraction, start, stop, bad, theta)
    for k in range(start, stop):
        i = k - start
        if bad[k] or not np.isfinite(a0[i]):
            continue
        prof = cutouts.profile[k]
        a, s, win, frac = _solve_semi_major(
            prof, xc[k], yc[k], q[i], theta[k], a0[i], slope[i], fraction, tol
        )
        out["a"][k] = a
        out["enclosed"][k] = s
        if not data or not np.isfinite(a):
            continue
        ok = cutouts.valid[k][win]
        fv = frac * ok
        f2 = fv * fv
        out["total"][k] = float(np.sum(fv * cutouts.pixels[k][win], dtype=np.float64))
        out["area"][k] = float(fv.sum())
        out["area2"][k] = float(f2.sum())
        out["p2"][k] = float(np.sum(f2 * prof[win]))
        if cutouts.variance is not None:
            out["sky2"][k] = float(np.sum(f2 * cutouts.variance[k][win], dtype=np.float64))
        out["touches_invalid"][k] = bool(np.any((frac > 0) & ~ok))


def aperture_photometry(
    cutouts: ContextCutouts,
    fraction: float = APERTURE_FRACTION,
    r_in: float = R_IN,
    r_out: float = R_OUT,
    background: AnnulusBackground | None = None,
    tol: float = 1e-3,
) -> dict[str, np.ndarray]:
    """Forced elliptical aperture photometry (PAUS MEMBA).

    The aperture is solved to ``|enclosed - fraction| <= tol`` and the flux is divided by the
    exact model fraction enclosed by the aperture actually used (equal to ``fraction`` within
    ``tol``), so that the solver tolerance never biases the flux.

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts (at least 92 pixels for the default annulus), sky included.
    fraction : float
        Fraction of the model light enclosed by the aperture (0.625).
    r_in, r_out : float
        Background annulus radii, pixels (30, 45).
    background : AnnulusBackground, optional
        A precomputed annulus background (computed here otherwise).
    tol : float
        Absolute tolerance on the enclosed model fraction when solving for the aperture.

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux`` and ``flux_err`` (image units; total flux, i.e. aperture flux / fraction),
        ``flags`` (int64), and extras ``aperture_a`` (semi-major axis, pixels),
        ``aperture_area`` (valid overlap area, pixels), ``background`` (per pixel, image
        units) and ``background_sigma`` (annulus pixel standard deviation, image units).

    Notes
    -----
    The error is the exact variance of this linear estimator for independent pixels: with
    overlap fractions ``w_i`` of the valid pixels, ``var = sum(w_i^2 p_i) F / gain +
    sum(w_i^2) sigma_pix^2 + (sum w_i)^2 sigma_pix^2 / n_ann``, divided by the enclosed
    fraction squared. It reduces to the usual ``F_ap / gain + A sigma^2 + A^2 sigma^2 / n``
    for whole pixels; partial pixels at the aperture edge make the exact form smaller.
    With a per-pixel variance map (``cutouts.variance``) the sky term is
    ``sum(w_i^2 v_i)`` instead of ``sum(w_i^2) sigma_pix^2``.
    """
    n = len(cutouts)
    if background is None:
        background = annulus_background(cutouts, r_in=r_in, r_out=r_out)
    elif len(background.level) != n:
        raise ValueError(f"background has {len(background.level)} rows, cutouts have {n}")
    ap = _apertures(cutouts, fraction, tol, data=True)
    b = background.level
    s2 = background.sigma**2
    enclosed = ap["enclosed"]
    f_ap = ap["total"] - ap["area"] * b
    flux = f_ap / enclosed
    sky = ap["area2"] * s2 if cutouts.variance is None else ap["sky2"]
    var = (
        np.maximum(flux, 0.0) * ap["p2"] / cutouts.gain
        + sky
        + ap["area"] ** 2 * s2 / background.n_pixels
    )
    err = np.sqrt(var) / enclosed

    flags = cutouts.flags.astype(np.int64).copy()
    flags[ap["touches_invalid"]] |= int(Flag.MASKED_CORE)
    flags[background.partial] |= int(Flag.EDGE)
    flags[~np.isfinite(ap["a"])] |= int(Flag.BAD_PROFILE | Flag.FAILED)
    flags[background.failed] |= int(Flag.FAILED)
    mark_failed(flux, err, flags)
    return {
        "flux": flux,
        "flux_err": err,
        "flags": flags,
        "aperture_a": ap["a"],
        "aperture_area": ap["area"],
        "background": b,
        "background_sigma": background.sigma,
    }
