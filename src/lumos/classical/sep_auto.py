"""SExtractor AUTO (Kron) photometry through sep, as an external peer of the other methods.

The SExtractor algorithm as a library: background and its rms from ``sep.Background``
(64-pixel meshes, 3x3 median filter), detection with ``sep.extract`` on the
background-subtracted image (threshold 1.5 times the global rms), the Kron radius
``sep.kron_radius`` within 6 isophotal radii of each detection's moment ellipse, and the flux
``sep.sum_ellipse`` in the ellipse scaled by ``max(2.5 * kron_radius, 3.5)`` (SExtractor's
``PHOT_AUTOPARAMS 2.5, 3.5``: Kron factor and minimum radius, both in units of the moment
ellipse's A and B). Catalogue positions are matched to the nearest detection.

Two entry points: :func:`sep_auto_photometry` on a whole image with sep's own detection, and
:func:`sep_auto_cutouts` on context cutouts (one sep run per cutout with a single background
mesh, the detection nearest the cutout centre).
"""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree

from ..flags import Flag
from .common import ContextCutouts, bad_shape, mark_failed, source_centre

__all__ = ["sep_auto_photometry", "sep_auto_cutouts", "KRON_FACTOR", "MIN_RADIUS"]

#: SExtractor PHOT_AUTOPARAMS defaults.
KRON_FACTOR = 2.5
MIN_RADIUS = 3.5
#: Radius (in isophotal units) of the ellipse in which SExtractor measures the Kron radius.
KRON_WINDOW = 6.0

EXTRAS = ("detected", "kron_radius", "a", "b", "theta", "sep_flags")


def _native(array) -> np.ndarray:
    """C-contiguous float64 array in native byte order (what sep needs)."""
    return np.ascontiguousarray(np.asarray(array, dtype=np.float64))


def _sep_flags_to_lumos(flag: np.ndarray) -> np.ndarray:
    out = np.zeros(flag.shape, dtype=np.int64)
    out[(flag & sep.APER_TRUNC) != 0] |= int(Flag.EDGE)
    out[(flag & (sep.APER_HASMASKED | sep.APER_ALLMASKED)) != 0] |= int(Flag.MASKED_CORE)
    return out


def _wrap_angle(theta: np.ndarray) -> np.ndarray:
    """Angles in [-pi/2, pi/2] as sep requires (its float32 pi/2 exceeds the float64 one)."""
    t = np.mod(np.asarray(theta, dtype=np.float64) + np.pi / 2, np.pi) - np.pi / 2
    return np.clip(t, -np.pi / 2, np.pi / 2)


def _empty_results(n: int, flags: np.ndarray) -> dict[str, np.ndarray]:
    """The output columns for ``n`` positions before measuring: NaN, False or 0, and
    ``flags``."""
    return {
        "flux": np.full(n, np.nan),
        "flux_err": np.full(n, np.nan),
        "flags": flags,
        "detected": np.zeros(n, dtype=bool),
        "kron_radius": np.full(n, np.nan),
        "a": np.full(n, np.nan),
        "b": np.full(n, np.nan),
        "theta": np.full(n, np.nan),
        "sep_flags": np.zeros(n, dtype=np.int64),
    }


def _auto_flux_once(data, x, y, a, b, theta, err, gain, mask, kron_factor, min_radius, subpix):
    kr, kflag = sep.kron_radius(data, x, y, a, b, theta, KRON_WINDOW, mask=mask)
    kr = np.where(np.isfinite(kr), kr, 0.0)
    radius = np.maximum(kron_factor * kr, min_radius)
    kwargs = {"err": err, "mask": mask, "subpix": subpix}
    if gain is not None:
        kwargs["gain"] = gain
    flux, ferr, flag = sep.sum_ellipse(data, x, y, a, b, theta, radius, **kwargs)
    return flux, ferr, (flag | kflag).astype(np.int64), kr


def _auto_flux(data, x, y, a, b, theta, err, gain, mask, kron_factor, min_radius, subpix):
    """Kron radius and AUTO flux on a background-subtracted image, vectorised by sep.

    Invalid ellipses, and any object sep refuses, get NaN (never an exception for the batch).
    """
    x, y, a, b = (np.asarray(v, dtype=np.float64) for v in (x, y, a, b))
    theta = _wrap_angle(theta)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    ok &= np.isfinite(theta)
    n = x.size
    flux, ferr, kr = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    flag = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return flux, ferr, flag, kr
    args = (err, gain, mask, kron_factor, min_radius, subpix)
    try:
        res = _auto_flux_once(data, x[idx], y[idx], a[idx], b[idx], theta[idx], *args)
        flux[idx], ferr[idx], flag[idx], kr[idx] = res
    except Exception:  # sep raises plain Exception; retry one object at a time
        for i in idx:
            try:
                res = _auto_flux_once(
                    data,
                    x[i : i + 1],
                    y[i : i + 1],
                    a[i : i + 1],
                    b[i : i + 1],
                    theta[i : i + 1],
                    *args,
                )
            except Exception:
                continue
            flux[i], ferr[i], flag[i], kr[i] = (v[0] for v in res)
    return flux, ferr, flag, kr


def sep_auto_photometry(
    image: np.ndarray,
    x,
    y,
    mask: np.ndarray | None = None,
    gain: float | None = None,
    kron_factor: float = KRON_FACTOR,
    min_radius: float = MIN_RADIUS,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_cont: float = 0.005,
    back_size: int = 64,
    back_filter: int = 3,
    match_radius: float = 2.0,
    position: str = "detection",
    subpix: int = 1,
) -> dict[str, np.ndarray]:
    """SExtractor-like AUTO photometry of catalogue positions on a whole image.

    Parameters
    ----------
    image : numpy.ndarray, shape (ny, nx)
        Image (not background-subtracted), image units.
    x, y : array_like, shape (N,)
        Catalogue positions, 0-based pixel coordinates.
    mask : numpy.ndarray of bool, optional
        True for bad pixels (NaN pixels are masked automatically).
    gain : float, optional
        Electrons per image unit for the Poisson term of the error (none if omitted, like
        SExtractor with GAIN 0).
    kron_factor, min_radius : float
        SExtractor ``PHOT_AUTOPARAMS`` (2.5, 3.5).
    thresh : float
        Detection threshold in units of the global background rms.
    minarea : int
        Minimum detection area, pixels.
    deblend_cont : float
        sep/SExtractor deblending contrast (1.0 disables deblending).
    back_size, back_filter : int
        Background mesh size and median-filter size (SExtractor BACK_SIZE, BACK_FILTERSIZE).
    match_radius : float
        Largest catalogue-detection distance for a match, pixels.
    position : {"detection", "catalogue"}
        Centre the Kron aperture on the matched detection (SExtractor) or on the catalogue
        position.
    subpix : int
        sep sub-pixel sampling (1 = whole pixels like SExtractor AUTO; 0 = exact overlap).

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux``, ``flux_err`` (image units), ``flags``; extras ``detected`` (bool),
        ``kron_radius`` (in units of the ellipse), ``a``, ``b`` (pixels), ``theta``
        (radians CCW from +x) and ``sep_flags`` (sep's own aperture/detection bits).
        Unmatched positions get NaN and ``Flag.FAILED``.
    """
    if position not in ("detection", "catalogue"):
        raise ValueError(f"position must be 'detection' or 'catalogue', got {position!r}")
    data = _native(image)
    if data.ndim != 2:
        raise ValueError(f"image must be 2-dimensional, got shape {data.shape}")
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-dimensional arrays of the same length")
    bad_pix = ~np.isfinite(data)
    if mask is not None:
        if np.shape(mask) != data.shape:
            raise ValueError(f"mask shape {np.shape(mask)} differs from image {data.shape}")
        bad_pix |= np.asarray(mask, dtype=bool)
    data[bad_pix] = 0.0
    m = bad_pix if bad_pix.any() else None
    bkg = sep.Background(data, mask=m, bw=back_size, bh=back_size, fw=back_filter, fh=back_filter)
    sub = data - bkg.back()
    rms = bkg.rms()
    objs = sep.extract(
        sub, thresh, err=bkg.globalrms, mask=m, minarea=minarea, deblend_cont=deblend_cont
    )
    n = x.size
    out = _empty_results(n, np.zeros(n, dtype=np.int64))
    finite = np.isfinite(x) & np.isfinite(y)
    if len(objs) and finite.any():
        tree = cKDTree(np.column_stack([objs["x"], objs["y"]]))
        dist, idx = tree.query(np.column_stack([x[finite], y[finite]]))
        rows = np.flatnonzero(finite)[dist <= match_radius]
        det = objs[idx[dist <= match_radius]]
        if rows.size:
            cx = det["x"] if position == "detection" else x[rows]
            cy = det["y"] if position == "detection" else y[rows]
            a, b, th = det["a"], det["b"], det["theta"]
            flux, ferr, flag, kr = _auto_flux(
                sub, cx, cy, a, b, th, rms, gain, m, kron_factor, min_radius, subpix
            )
            out["flux"][rows] = flux
            out["flux_err"][rows] = ferr
            out["detected"][rows] = True
            out["kron_radius"][rows] = kr
            out["a"][rows] = a
            out["b"][rows] = b
            out["theta"][rows] = th
            out["sep_flags"][rows] = flag | det["flag"].astype(np.int64)
            out["flags"][rows] |= _sep_flags_to_lumos(flag)
    ny, nx = data.shape
    off = ~finite | (x < -0.5) | (x >= nx - 0.5) | (y < -0.5) | (y >= ny - 0.5)
    out["flags"][off] |= int(Flag.OFF_IMAGE)
    failed = ~out["detected"] | ~np.isfinite(out["flux"]) | ~np.isfinite(out["flux_err"])
    out["flags"][failed] |= int(Flag.FAILED)
    out["flux"][failed] = np.nan
    out["flux_err"][failed] = np.nan
    return out


def _profile_ellipse(profile: np.ndarray, xc: float, yc: float, floor: float = 0.1):
    """Moment ellipse (a, b, theta) of the model-profile pixels above ``floor`` x its peak."""
    p = np.clip(profile, 0.0, None)
    w = np.where(p >= floor * p.max(), p, 0.0)
    jj, ii = np.indices(p.shape)
    dx, dy = ii - xc, jj - yc
    tot = w.sum()
    x2, y2, xy = (w * dx * dx).sum() / tot, (w * dy * dy).sum() / tot, (w * dx * dy).sum() / tot
    half_sum = 0.5 * (x2 + y2)
    root = np.sqrt(0.25 * (x2 - y2) ** 2 + xy * xy)
    a = np.sqrt(max(half_sum + root, 1e-6))
    b = np.sqrt(max(half_sum - root, 1e-6))
    theta = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    return a, b, theta


def sep_auto_cutouts(
    cutouts: ContextCutouts,
    kron_factor: float = KRON_FACTOR,
    min_radius: float = MIN_RADIUS,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_cont: float = 0.005,
    match_radius: float = 3.0,
    subpix: int = 1,
) -> dict[str, np.ndarray]:
    """SExtractor-like AUTO photometry of the central source of each context cutout.

    Each cutout is run through sep separately: a single background mesh covering the cutout
    (SExtractor's clipped-mode estimate), detection, the detection nearest the source
    position (within ``match_radius``), its Kron radius and AUTO flux. When nothing is
    detected there, the aperture is centred on the catalogue position with the moment
    ellipse of the model profile (``detected`` is False; no flag is set for it).

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts, sky included.
    kron_factor, min_radius, thresh, minarea, deblend_cont, subpix
        As in :func:`sep_auto_photometry`.
    match_radius : float
        Largest distance of the detection from the source position, pixels.

    Returns
    -------
    dict of str to numpy.ndarray
        As :func:`sep_auto_photometry`.
    """
    n = len(cutouts)
    size = cutouts.size
    xc, yc = source_centre(cutouts)
    bad = bad_shape(cutouts)
    out = _empty_results(n, cutouts.flags.astype(np.int64).copy())
    for k in range(n):
        valid = cutouts.valid[k]
        if not valid.any():
            continue
        data = _native(np.where(valid, cutouts.pixels[k], 0.0))
        m = None if valid.all() else np.ascontiguousarray(~valid)
        try:
            bkg = sep.Background(data, mask=m, bw=size, bh=size, fw=1, fh=1)
            with np.errstate(invalid="ignore", over="ignore"):
                sub = data - bkg.back()
            rms = bkg.globalrms
            objs = sep.extract(
                sub, thresh, err=rms, mask=m, minarea=minarea, deblend_cont=deblend_cont
            )
        except Exception:  # sep raises plain Exceptions on pathological inputs
            continue
        det = None
        if len(objs):
            dist = np.hypot(objs["x"] - xc[k], objs["y"] - yc[k])
            j = int(np.argmin(dist))
            if dist[j] <= match_radius:
                det = objs[j]
        if det is not None:
            cx, cy = float(det["x"]), float(det["y"])
            a, b, th = float(det["a"]), float(det["b"]), float(det["theta"])
            det_flag = int(det["flag"])
        elif not bad[k]:
            cx, cy = float(xc[k]), float(yc[k])
            a, b, th = _profile_ellipse(cutouts.profile[k], cx, cy)
            det_flag = 0
        else:
            continue
        flux, ferr, flag, kr = _auto_flux(
            sub,
            np.array([cx]),
            np.array([cy]),
            np.array([a]),
            np.array([b]),
            np.array([th]),
            rms,
            float(cutouts.gain[k]),
            m,
            kron_factor,
            min_radius,
            subpix,
        )
        out["flux"][k] = flux[0]
        out["flux_err"][k] = ferr[0]
        out["detected"][k] = det is not None
        out["kron_radius"][k] = kr[0]
        out["a"][k], out["b"][k], out["theta"][k] = a, b, th
        out["sep_flags"][k] = int(flag[0]) | det_flag
        out["flags"][k] |= int(_sep_flags_to_lumos(flag)[0])
    mark_failed(out["flux"], out["flux_err"], out["flags"])
    return out
