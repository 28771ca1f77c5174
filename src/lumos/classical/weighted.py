"""Optimal weighted pixel sum (LUMOS paper section 3.3, Eq. 6, Appendix A) and the Cramer-Rao bound.

With the model profile ``p_i`` (unit flux) and the pixel variance ``V_i``, the weights

    w_i = (p_i / V_i) / sum_j (p_j^2 / V_j)

give the minimum-variance unbiased linear estimator of the flux, ``F = sum_i w_i (d_i - b)``,
with variance ``sum_i w_i^2 V_i = 1 / sum_i (p_i^2 / V_i)`` when ``V_i`` is the true variance.

Two modes:

* ``background="annulus"`` (the practical method): ``b`` is the annulus background and
  ``V_i = s`` the sky variance (``b / gain + (read_noise / gain)^2``, or the annulus variance),
  optionally plus the source term ``F0 p_i / gain`` from a first pass (``source_variance``).
  Pixels within ``r_in`` of the source are used. The error is ``sum w_i^2 (s + F p_i / gain)``
  plus the background-level term ``(sum w_i)^2 sigma_pix^2 / n_ann``.
* ``background="oracle"``: the true profile, true background and true flux (simulations) give
  the exact ``V_i = (F p_i + b) / gain + (read_noise / gain)^2`` over every valid pixel of the
  cutout. Its variance is the Cramer-Rao bound of :func:`cramer_rao_sigma`: the best any
  unbiased linear method can do (the linear limit of the benchmarks).

The Cramer-Rao bound uses the Poisson + read-noise model with Fisher information
``sum_i p_i^2 / V_i`` (the Poisson information of the mean; the read noise broadens each
pixel's variance). Units: image units; pixels of electrons with ``gain = 1``.
"""

from __future__ import annotations

import numpy as np

from ..flags import Flag
from .background import R_IN, R_OUT, AnnulusBackground, annulus_background
from .common import ContextCutouts, bad_shape, mark_failed
from .modelfit import pixel_sky_variance
from .region import region_pixels

__all__ = ["weighted_photometry", "cramer_rao_sigma", "MODES"]

MODES = ("annulus", "oracle")
_CHUNK = 256


def cramer_rao_sigma(
    profile: np.ndarray,
    flux,
    background,
    read_noise,
    gain=1.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Cramer-Rao bound on the flux error for a known profile, Poisson + read noise.

    ``sigma^2 = 1 / sum_i p_i^2 / V_i`` with ``V_i = (F p_i + b_i) / gain + (RN / gain)^2``.

    Parameters
    ----------
    profile : numpy.ndarray, shape (H, W) or (N, H, W)
        Unit-flux model profile(s) (negative values are treated as 0).
    flux : float or array_like of shape (N,)
        True flux, image units.
    background : float or array_like of shape (N,) or (N, H, W)
        True background per pixel, image units.
    read_noise : float or array_like of shape (N,)
        Read noise, electrons.
    gain : float or array_like of shape (N,)
        Gain, electrons per image unit.
    valid : numpy.ndarray of bool, optional
        Pixels to include (all by default).

    Returns
    -------
    numpy.ndarray, shape (N,) (or a 0-d array for a single profile)
        The minimum flux standard deviation, image units.
    """
    p = np.asarray(profile, dtype=np.float64)
    single = p.ndim == 2
    if single:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"profile must have shape (H, W) or (N, H, W), got {p.shape}")
    n = p.shape[0]

    def rows(name, v):
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 0:
            return np.full((n, 1, 1), float(a))
        if a.ndim == 1 and a.shape[0] == n:
            return a[:, None, None]
        if a.shape == p.shape or (single and a.shape == p.shape[1:]):
            return a.reshape(p.shape)
        raise ValueError(f"{name} has shape {a.shape}, incompatible with profile {p.shape}")

    f = rows("flux", flux)
    b = rows("background", background)
    rn = rows("read_noise", read_noise)
    g = rows("gain", gain)
    if np.any(g <= 0):
        raise ValueError("gain must be positive")
    p = np.clip(p, 0.0, None)
    var = (f * p + b) / g + (rn / g) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        info = np.where(p > 0, p * p / var, 0.0)
    if valid is not None:
        info = info * np.broadcast_to(np.asarray(valid, dtype=bool), info.shape)
    with np.errstate(divide="ignore"):
        out = 1.0 / np.sqrt(info.sum(axis=(1, 2)))
    return out[0] if single else out


def _weighted_sum(d, p, V, V_err):
    """Flux, error and weight sum of the weighted sum with weight variance V, error variance
    V_err (rows of (m, P) arrays; p == 0 marks unused pixels)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pv = np.where(p > 0, p / V, 0.0)
        norm = np.sum(pv * p, axis=1)
        w = pv / norm[:, None]
        flux = np.sum(w * d, axis=1)
        var = np.sum(w * w * V_err, axis=1)
        wsum = np.sum(w, axis=1)
    return flux, var, wsum


@np.errstate(invalid="ignore", over="ignore", divide="ignore")
def weighted_photometry(
    cutouts: ContextCutouts,
    background: str = "annulus",
    sky_variance: str = "model",
    source_variance: bool = True,
    region_radius: float = R_IN,
    r_in: float = R_IN,
    r_out: float = R_OUT,
    annulus: AnnulusBackground | None = None,
    true_background=None,
    true_flux=None,
    true_profile: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Optimal weighted pixel sum of the flux (Eq. 6).

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts (sky included) with model profiles.
    background : {"annulus", "oracle"}
        Annulus background and model variance (practical), or the true profile, background
        and flux (oracle; simulations only).
    sky_variance : {"model", "annulus"}
        Annulus mode: sky variance per pixel from ``b / gain + (RN / gain)^2`` or measured in
        the annulus; with a per-pixel ``cutouts.variance`` (weight map) that is used instead.
    source_variance : bool
        Annulus mode: add the source Poisson term from a first-pass flux to the weights.
    region_radius : float
        Annulus mode: radius (pixels) of the circle of pixels used.
    r_in, r_out : float
        Annulus radii, pixels.
    annulus : AnnulusBackground, optional
        Precomputed annulus background (annulus mode).
    true_background : float or numpy.ndarray of shape (N,) or (N, C, C), optional
        Oracle mode: true background (default ``cutouts.true_background``), image units.
    true_flux : numpy.ndarray of shape (N,), optional
        Oracle mode: true flux for the variance (default ``cutouts.truth``; without it the
        weights use the sky variance only and the error's source term uses the measured
        flux).
    true_profile : numpy.ndarray of shape (N, C, C), optional
        Oracle mode: true unit-flux profile (default ``cutouts.profile``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux``, ``flux_err`` (image units), ``flags``, and extras ``background`` (image
        units per pixel) and ``n_pixels`` (pixels used).
    """
    if background not in MODES:
        raise ValueError(f"background must be one of {MODES}, got {background!r}")
    n = len(cutouts)
    flags = cutouts.flags.astype(np.int64).copy()
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    npix = np.zeros(n, dtype=np.int64)
    gain = cutouts.gain
    rn2 = (cutouts.read_noise / gain) ** 2
    bad = bad_shape(cutouts)

    if background == "oracle":
        tb = cutouts.true_background if true_background is None else true_background
        if tb is None:
            raise ValueError("oracle mode needs true_background (or cutouts.true_background)")
        tb = np.asarray(tb, dtype=np.float64)
        if tb.ndim == 0:
            tb = np.full(n, float(tb))
        if tb.shape not in ((n,), cutouts.pixels.shape):
            raise ValueError(f"true_background must have shape ({n},) or (N, C, C), got {tb.shape}")
        tf = cutouts.truth if true_flux is None else np.asarray(true_flux, dtype=np.float64)
        if tf is not None and np.shape(tf) != (n,):
            raise ValueError(f"true_flux must have shape ({n},), got {np.shape(tf)}")
        prof_all = cutouts.profile if true_profile is None else np.asarray(true_profile)
        if prof_all.shape != cutouts.pixels.shape:
            raise ValueError("true_profile must have the shape of the cutouts")
        psum = prof_all.sum(axis=(1, 2), dtype=np.float64)
        bad = ~np.isfinite(psum) | (psum <= 0)
        bmap = tb.ndim == 3
        for start in range(0, n, _CHUNK):
            sl = slice(start, min(start + _CHUNK, n))
            m = cutouts.valid[sl].shape[0]
            v = cutouts.valid[sl].reshape(m, -1)
            p = np.where(v, np.clip(prof_all[sl].reshape(m, -1), 0.0, None), 0.0)
            b = tb[sl].reshape(m, -1) if bmap else tb[sl, None]
            d = np.where(v, cutouts.pixels[sl].reshape(m, -1) - b, 0.0)
            g = gain[sl, None]
            sky = b / g + rn2[sl, None]
            if tf is None:
                f, _, _ = _weighted_sum(d, p, sky, sky)
                f_var = np.clip(f, 0.0, None)
                V = sky
            else:
                f_var = np.clip(tf[sl], 0.0, None)
                V = sky + f_var[:, None] * p / g
            f, _, _ = _weighted_sum(d, p, V, V)
            _, var, _ = _weighted_sum(d, p, V, sky + f_var[:, None] * p / g)
            flux[sl] = f
            err[sl] = np.sqrt(var)
            npix[sl] = np.count_nonzero(p, axis=1)
        level = tb if not bmap else tb.mean(axis=(1, 2))
    else:
        if annulus is None:
            annulus = annulus_background(cutouts, r_in=r_in, r_out=r_out)
        elif len(annulus.level) != n:
            raise ValueError(f"annulus has {len(annulus.level)} rows, cutouts have {n}")
        s_all = pixel_sky_variance(cutouts, annulus, sky_variance)
        rows_ok = np.flatnonzero(~bad & ~annulus.failed)
        for start in range(0, rows_ok.size, _CHUNK):
            rows = rows_ok[start : start + _CHUNK]
            extra = () if cutouts.variance is None else (cutouts.variance,)
            radius = np.full(rows.size, float(region_radius))
            reg = region_pixels(cutouts, rows, radius, extra=extra)
            b = annulus.level[rows]
            d = np.where(reg.mask, reg.data - b[:, None], 0.0)
            p = np.where(reg.mask, np.clip(reg.profile, 0.0, None), 0.0)
            g = gain[rows, None]
            if cutouts.variance is None:
                s = np.broadcast_to(s_all[rows, None], p.shape)
            else:  # per-pixel sky variance; pixels without a valid one carry no weight
                s = reg.extra[0]
                p = np.where(s > 0, p, 0.0)
            f0, _, _ = _weighted_sum(d, p, s, s)
            src = np.clip(f0, 0.0, None)[:, None] * p / g
            V_w = s + src if source_variance else s
            f, _, _ = _weighted_sum(d, p, V_w, V_w)
            src = np.clip(f, 0.0, None)[:, None] * p / g
            _, var, wsum = _weighted_sum(d, p, V_w, s + src)
            var = var + wsum**2 * annulus.level_variance[rows]
            flux[rows] = f
            err[rows] = np.sqrt(var)
            npix[rows] = np.count_nonzero(p, axis=1)
        flags[annulus.partial] |= int(Flag.EDGE)
        flags[annulus.failed] |= int(Flag.FAILED)
        level = annulus.level

    flags[bad] |= int(Flag.BAD_PROFILE)
    mark_failed(flux, err, flags, bad)
    return {
        "flux": flux,
        "flux_err": err,
        "flags": flags,
        "background": np.asarray(level, dtype=np.float64),
        "n_pixels": npix,
    }
