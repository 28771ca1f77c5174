"""Detector artefacts injected into synthetic images: cosmic rays, hot pixels, bad columns,
saturated stars with bleed trails.

Every function works on a batch of images ``pixels`` [N, H, W] (float32, electrons) in place
and returns per-image :class:`~lumos.sky.base.Artefact` bits. Positions are drawn per image,
so the functions serve both stamps and a full CCD (N = 1). The number of artefacts is
small, so the loops here run over artefacts (a handful per batch), never over pixels.
"""

from __future__ import annotations

import numpy as np

from lumos.sky.base import Artefact

__all__ = [
    "add_cosmic_rays",
    "add_hot_pixels",
    "add_bad_columns",
    "add_saturated_stars",
    "moffat_alpha",
]

#: Cosmic-ray rates are quoted per this exposure time (seconds), a PAUS NB685 exposure.
REFERENCE_EXPOSURE = 90.0


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _image_of_each(rng: np.random.Generator, mean: float, n: int) -> np.ndarray:
    """Image index of each artefact: a Poisson number of mean ``mean`` in each of ``n``
    images, in image order."""
    return np.repeat(np.arange(n), rng.poisson(mean, n))


def _in_core(px: np.ndarray, py: np.ndarray, core: tuple[slice, slice] | None) -> np.ndarray:
    """Whether pixel indices (x = column, y = row) fall in the core box."""
    if core is None:
        return np.zeros(np.shape(px), dtype=bool)
    rows, cols = core
    return (py >= rows.start) & (py < rows.stop) & (px >= cols.start) & (px < cols.stop)


def add_cosmic_rays(
    pixels: np.ndarray,
    exposure_time: np.ndarray,
    rng: np.random.Generator,
    *,
    rate: float,
    track_fraction: float,
    track_length: tuple[float, float],
    charge: tuple[float, float],
    core: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Add cosmic-ray hits and tracks.

    Events fall uniformly in area and time: ``rate`` events per 10^4 pixels in a 90 s
    exposure (scaled by ``exposure_time / 90``), counted over the image extended by half
    the longest track on each side so that tracks crossing the border are included.
    A fraction ``track_fraction`` are tracks, straight lines of log-uniform projected length
    in ``track_length`` (pixels) at a uniform random angle; the others are hits, segments
    shorter than 2 pixels that light 1-3 pixels. Each event deposits a log-uniform charge
    per pixel of path in ``charge`` (electrons), with +-30 % (log-normal) fluctuations along
    the track; a pixel receives charge in proportion to the path length through it
    (sampled every 0.5 pixel).

    Parameters
    ----------
    pixels : numpy.ndarray
        float32 [N, H, W] images, electrons, modified in place.
    exposure_time : numpy.ndarray
        [N] seconds.
    rng : numpy.random.Generator
    rate : float
        Events per 10^4 pixels per 90 s.
    track_fraction : float
        Fraction of events that are tracks.
    track_length : (float, float)
        Range of track lengths, pixels.
    charge : (float, float)
        Range of the charge per pixel of path, electrons.
    core : (slice, slice), optional
        Rows and columns of the core box for :attr:`Artefact.COSMIC_RAY_CORE`.

    Returns
    -------
    numpy.ndarray
        int64 [N] artefact bits: :attr:`Artefact.COSMIC_RAY` and ``COSMIC_RAY_CORE``.
    """
    n, h, w = pixels.shape
    flags = np.zeros(n, dtype=np.int64)
    margin = 0.5 * track_length[1] + 1.0
    area = (h + 2 * margin) * (w + 2 * margin)
    counts = rng.poisson(rate * 1e-4 * area * np.asarray(exposure_time) / REFERENCE_EXPOSURE)
    n_events = int(counts.sum())
    if n_events == 0:
        return flags
    image = np.repeat(np.arange(n), counts)
    cx = rng.uniform(-margin, w - 1 + margin, n_events)
    cy = rng.uniform(-margin, h - 1 + margin, n_events)
    is_track = rng.random(n_events) < track_fraction
    length = np.where(
        is_track,
        _log_uniform(rng, track_length[0], track_length[1], n_events),
        rng.uniform(0.0, 2.0, n_events),
    )
    theta = rng.uniform(0.0, np.pi, n_events)
    per_pixel = _log_uniform(rng, charge[0], charge[1], n_events)

    step = 0.5
    n_steps = np.floor(length / step).astype(np.int64) + 1
    k = np.arange(int(n_steps.max()))
    fluct = rng.lognormal(0.0, 0.3, (n_events, k.size))
    s = (k[None, :] - 0.5 * (n_steps[:, None] - 1)) * step
    px = np.rint(cx[:, None] + s * np.cos(theta)[:, None]).astype(np.int64)
    py = np.rint(cy[:, None] + s * np.sin(theta)[:, None]).astype(np.int64)
    # total charge = charge per pixel x max(path, 1 pixel), shared by the samples
    deposit = (per_pixel * np.maximum(length, 1.0) / n_steps)[:, None] * fluct
    use = (k[None, :] < n_steps[:, None]) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    img = np.broadcast_to(image[:, None], use.shape)[use]
    flat = (img * h + py[use]) * w + px[use]
    np.add.at(pixels.reshape(-1), flat, deposit[use].astype(pixels.dtype))

    flags[np.unique(img)] |= int(Artefact.COSMIC_RAY)
    in_core = _in_core(px[use], py[use], core)
    flags[np.unique(img[in_core])] |= int(Artefact.COSMIC_RAY_CORE)
    return flags


def add_hot_pixels(
    pixels: np.ndarray,
    exposure_time: np.ndarray,
    rng: np.random.Generator,
    *,
    fraction: float,
    dark_rate: tuple[float, float],
    core: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Add hot pixels: single pixels with a large dark current.

    Parameters
    ----------
    pixels : numpy.ndarray
        float32 [N, H, W], electrons, modified in place.
    exposure_time : numpy.ndarray
        [N] seconds.
    rng : numpy.random.Generator
    fraction : float
        Expected fraction of hot pixels.
    dark_rate : (float, float)
        Range of the (log-uniform) dark current of a hot pixel, electrons per second.
    core : (slice, slice), optional
        Core box for :attr:`Artefact.DEFECT_CORE`.

    Returns
    -------
    numpy.ndarray
        int64 [N] artefact bits: :attr:`Artefact.HOT_PIXEL` and ``DEFECT_CORE``.
    """
    n, h, w = pixels.shape
    flags = np.zeros(n, dtype=np.int64)
    image = _image_of_each(rng, fraction * h * w, n)
    total = image.size
    if total == 0:
        return flags
    px = rng.integers(0, w, total)
    py = rng.integers(0, h, total)
    value = _log_uniform(rng, dark_rate[0], dark_rate[1], total) * exposure_time[image]
    np.add.at(pixels, (image, py, px), value.astype(pixels.dtype))
    flags[image] |= int(Artefact.HOT_PIXEL)
    flags[image[_in_core(px, py, core)]] |= int(Artefact.DEFECT_CORE)
    return flags


def add_bad_columns(
    pixels: np.ndarray,
    rng: np.random.Generator,
    *,
    columns_per_ccd: float,
    ccd_width: int,
    hot_fraction: float = 0.7,
    offset: tuple[float, float] = (30.0, 1000.0),
    core: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Add hot (bright) and dead (low-response) columns.

    A CCD has on average ``columns_per_ccd`` bad columns, so an image of width W has
    ``columns_per_ccd * W / ccd_width`` on average. A hot column adds a log-uniform offset
    in ``offset`` (electrons, with its Poisson noise); a dead column keeps 0-30 % of the
    signal. Half the columns run over the whole image height, half start at a random row
    and run to row 0 (the read-out side).

    Parameters
    ----------
    pixels : numpy.ndarray
        float32 [N, H, W], electrons, modified in place.
    rng : numpy.random.Generator
    columns_per_ccd : float
        Mean number of bad columns on a full CCD.
    ccd_width : int
        Width of the full CCD, pixels.
    hot_fraction : float
        Fraction of bad columns that are hot (the rest are dead).
    offset : (float, float)
        Range of hot-column offsets, electrons.
    core : (slice, slice), optional
        Core box for :attr:`Artefact.DEFECT_CORE`.

    Returns
    -------
    numpy.ndarray
        int64 [N] artefact bits: :attr:`Artefact.BAD_COLUMN` and ``DEFECT_CORE``.
    """
    n, h, w = pixels.shape
    flags = np.zeros(n, dtype=np.int64)
    image = _image_of_each(rng, columns_per_ccd * w / ccd_width, n)
    total = image.size
    if total == 0:
        return flags
    col = rng.integers(0, w, total)
    hot = rng.random(total) < hot_fraction
    full = rng.random(total) < 0.5
    top = np.where(full, h, rng.integers(1, h + 1, total))
    level = _log_uniform(rng, offset[0], offset[1], total)
    keep = rng.uniform(0.0, 0.3, total)
    for e in range(total):
        column = pixels[image[e], : top[e], col[e]]
        if hot[e]:
            column += (level[e] + np.sqrt(level[e]) * rng.standard_normal(column.size)).astype(
                pixels.dtype
            )
        else:
            column *= keep[e]
        flags[image[e]] |= int(Artefact.BAD_COLUMN)
        if core is not None:
            rows, cols = core
            if cols.start <= col[e] < cols.stop and top[e] > rows.start:
                flags[image[e]] |= int(Artefact.DEFECT_CORE)
    return flags


def moffat_alpha(fwhm: float | np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """Moffat scale radius alpha from the FWHM (same units) and beta."""
    return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / np.asarray(beta)) - 1.0))


def _moffat(r2: np.ndarray, flux: float, alpha: float, beta: float) -> np.ndarray:
    """Moffat surface brightness (per pixel) at squared radius r2 (pixels^2)."""
    return flux * (beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)


def add_saturated_stars(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    stars_per_ccd: float,
    ccd_pixels: int,
    saturation: float,
    fwhm_pixels: tuple[float, float],
    beta: tuple[float, float],
    overflow: tuple[float, float] = (1.0, 100.0),
    radius: int = 40,
) -> list[tuple[int, float, float, float, float, float]]:
    """Add the light of bright (saturating) stars to noiseless images.

    Stars fall uniformly in area, ``stars_per_ccd`` per full CCD, over the image extended
    by ``radius`` pixels on each side (so halos of stars just outside reach in). Each is a
    Moffat profile (pixel-centre sampled) with FWHM and beta drawn uniformly in the given
    ranges and a total flux such that its peak is ``overflow`` (log-uniform) times the
    saturation level. Saturation and bleeding are applied later, after the noise, by
    :func:`saturate_stars`.

    Parameters
    ----------
    signal : numpy.ndarray
        float32 [N, H, W] noiseless images, electrons, modified in place.
    rng : numpy.random.Generator
    stars_per_ccd : float
        Mean number of saturated stars on a full CCD.
    ccd_pixels : int
        Number of pixels of a full CCD.
    saturation : float
        Saturation (full-well) level, electrons.
    fwhm_pixels, beta : (float, float)
        Ranges of the Moffat FWHM (pixels) and beta.
    overflow : (float, float)
        Range of peak / saturation.
    radius : int
        Half size of the box the profile is drawn in, pixels.

    Returns
    -------
    list of tuple
        One ``(image, x, y, flux, alpha, beta)`` per star (pixel coordinates of the image),
        for :func:`saturate_stars`.
    """
    n, h, w = signal.shape
    area = (h + 2 * radius) * (w + 2 * radius)
    image = _image_of_each(rng, stars_per_ccd * area / ccd_pixels, n)
    total = image.size
    if total == 0:
        return []
    x = rng.uniform(-radius, w - 1 + radius, total)
    y = rng.uniform(-radius, h - 1 + radius, total)
    fwhm = rng.uniform(fwhm_pixels[0], fwhm_pixels[1], total)
    b = rng.uniform(beta[0], beta[1], total)
    alpha = moffat_alpha(fwhm, b)
    peak = saturation * _log_uniform(rng, overflow[0], overflow[1], total)
    flux = peak * np.pi * alpha**2 / (b - 1.0)
    stars = []
    for e in range(total):
        j0, j1 = max(int(y[e]) - radius, 0), min(int(y[e]) + radius + 1, h)
        i0, i1 = max(int(x[e]) - radius, 0), min(int(x[e]) + radius + 1, w)
        if j1 > j0 and i1 > i0:
            jj = np.arange(j0, j1)[:, None] - y[e]
            ii = np.arange(i0, i1)[None, :] - x[e]
            signal[image[e], j0:j1, i0:i1] += _moffat(
                jj**2 + ii**2, flux[e], alpha[e], b[e]
            ).astype(signal.dtype)
        stars.append((int(image[e]), x[e], y[e], flux[e], alpha[e], b[e]))
    return stars


def saturate_stars(
    pixels: np.ndarray,
    stars: list[tuple[int, float, float, float, float, float]],
    sky: np.ndarray,
    sigma: np.ndarray,
    *,
    saturation: float,
    radius: int = 40,
    core: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Clip saturated star pixels to the full well and draw their bleed trails.

    For each star the charge above ``saturation`` in each column (from the noiseless
    profile plus sky, in a box of half size ``radius`` around the star) spills along the
    column: the saturated run of that column is extended by ``excess / saturation`` pixels,
    half up and half down. Pixels of the run are set to ``saturation``.

    Parameters
    ----------
    pixels : numpy.ndarray
        float32 [N, H, W] noisy images, electrons, modified in place.
    stars : list of tuple
        From :func:`add_saturated_stars`.
    sky : numpy.ndarray
        [N] sky level under each image, electrons.
    sigma : numpy.ndarray
        [N] noise of each image, electrons (a star counts when it adds more than this).
    saturation : float
        Full-well level, electrons.
    radius : int
        Half size of the box the profile was drawn in, pixels.
    core : (slice, slice), optional
        Core box for :attr:`Artefact.SATURATED_CORE`.

    Returns
    -------
    numpy.ndarray
        int64 [N] artefact bits: :attr:`Artefact.SATURATED_STAR` and ``SATURATED_CORE``.
    """
    n, h, w = pixels.shape
    flags = np.zeros(n, dtype=np.int64)
    for img, x, y, flux, alpha, beta in stars:
        yc, xc = int(np.rint(y)), int(np.rint(x))
        jj = np.arange(yc - radius, yc + radius + 1)
        ii = np.arange(xc - radius, xc + radius + 1)
        model = _moffat((jj[:, None] - y) ** 2 + (ii[None, :] - x) ** 2, flux, alpha, beta)
        model += sky[img]
        over = model > saturation
        excess = np.where(over, model - saturation, 0.0).sum(axis=0)
        # visible light of the star in this image
        sub_j = (jj >= 0) & (jj < h)
        sub_i = (ii >= 0) & (ii < w)
        if sub_j.any() and sub_i.any():
            visible = model[np.ix_(sub_j, sub_i)] - sky[img]
            if visible.max() > sigma[img]:
                flags[img] |= int(Artefact.SATURATED_STAR)
        for c in np.flatnonzero(over.any(axis=0)):
            col = ii[c]
            if not 0 <= col < w:
                continue
            rows = np.flatnonzero(over[:, c])
            spill = excess[c] / saturation
            lo = int(np.floor(jj[rows[0]] - 0.5 * spill))
            hi = int(np.ceil(jj[rows[-1]] + 0.5 * spill)) + 1
            lo, hi = max(lo, 0), min(hi, h)
            if hi <= lo:
                continue
            pixels[img, lo:hi, col] = saturation
            flags[img] |= int(Artefact.SATURATED_STAR)
            if core is not None:
                r, cc = core
                if cc.start <= col < cc.stop and lo < r.stop and hi > r.start:
                    flags[img] |= int(Artefact.SATURATED_CORE)
    return flags
