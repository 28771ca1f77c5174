"""Exact overlap of elliptical apertures with the pixel grid, and elliptical radii.

Built on photutils' exact pixel-overlap routine (``photutils.geometry.elliptical_overlap_grid``):
one compiled call per aperture over the small pixel box that covers it.
"""

from __future__ import annotations

import numpy as np
from photutils.geometry import elliptical_overlap_grid

__all__ = ["ellipse_box", "ellipse_overlap", "elliptical_radius", "aperture_sum"]


def ellipse_box(
    xc: float, yc: float, a: float, b: float, theta: float, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Inclusive pixel-index box ``(i0, i1, j0, j1)`` covering an ellipse, clipped to ``shape``.

    Parameters
    ----------
    xc, yc : float
        Centre in pixel coordinates (pixel ``[j, i]`` centred on ``x = i, y = j``).
    a, b : float
        Semi-major and semi-minor axes, pixels.
    theta : float
        Angle of the major axis, radians counter-clockwise from +x.
    shape : tuple of int
        Image shape (ny, nx).

    Returns
    -------
    tuple of int
        ``(i0, i1, j0, j1)``; empty when ``i1 < i0`` or ``j1 < j0``.
    """
    c, s = np.cos(theta), np.sin(theta)
    hx = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    hy = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    i0 = max(0, int(np.floor(xc - hx + 0.5)))
    i1 = min(shape[1] - 1, int(np.floor(xc + hx + 0.5)))
    j0 = max(0, int(np.floor(yc - hy + 0.5)))
    j1 = min(shape[0] - 1, int(np.floor(yc + hy + 0.5)))
    return i0, i1, j0, j1


def ellipse_overlap(
    xc: float, yc: float, a: float, b: float, theta: float, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Exact fractional overlap of an ellipse with the pixels of an image.

    Parameters
    ----------
    xc, yc : float
        Centre in pixel coordinates.
    a, b : float
        Semi-axes in pixels (``a >= b > 0``).
    theta : float
        Major-axis angle, radians counter-clockwise from +x.
    shape : tuple of int
        Image shape (ny, nx).

    Returns
    -------
    window : tuple of slice
        ``(rows, cols)`` of the covering box in the image.
    frac : numpy.ndarray
        Overlap fraction in [0, 1] of each pixel of the box with the ellipse (its sum is the
        exact area of the part of the ellipse inside the image, pixels).
    """
    i0, i1, j0, j1 = ellipse_box(xc, yc, a, b, theta, shape)
    if i1 < i0 or j1 < j0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0))
    frac = elliptical_overlap_grid(
        i0 - 0.5 - xc,
        i1 + 0.5 - xc,
        j0 - 0.5 - yc,
        j1 + 0.5 - yc,
        i1 - i0 + 1,
        j1 - j0 + 1,
        float(a),
        float(b),
        float(theta),
        1,
        1,
    )
    return (slice(j0, j1 + 1), slice(i0, i1 + 1)), frac


def aperture_sum(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact elliptical-aperture sums on one image (no background subtraction).

    Parameters
    ----------
    image : numpy.ndarray, shape (ny, nx)
        Image.
    x, y : array_like, shape (N,)
        Aperture centres, pixel coordinates.
    a, b : array_like, shape (N,)
        Semi-major and semi-minor axes, pixels.
    theta : array_like, shape (N,)
        Major-axis angles, radians counter-clockwise from +x.
    valid : numpy.ndarray of bool, optional
        False for pixels to ignore.

    Returns
    -------
    total : numpy.ndarray, shape (N,)
        Sum of ``image * overlap`` over valid pixels, image units.
    area : numpy.ndarray, shape (N,)
        Overlap area over valid pixels, pixels.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-dimensional, got shape {image.shape}")
    x, y, a, b, theta = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, a, b, theta))
    x, y, a, b, theta = np.broadcast_arrays(x, y, a, b, theta)
    total = np.full(x.shape, np.nan)
    area = np.full(x.shape, np.nan)
    for k in range(x.size):
        if not (np.isfinite([x[k], y[k], a[k], b[k], theta[k]]).all() and a[k] > 0 and b[k] > 0):
            continue
        win, frac = ellipse_overlap(x[k], y[k], a[k], b[k], theta[k], image.shape)
        if valid is not None:
            frac = frac * valid[win]
        total[k] = float(np.sum(frac * image[win]))
        area[k] = float(frac.sum())
    return total, area


def elliptical_radius(
    xc: np.ndarray, yc: np.ndarray, q: np.ndarray, theta: np.ndarray, size: int
) -> np.ndarray:
    """Elliptical radius (the semi-major axis of the ellipse through each pixel centre).

    Parameters
    ----------
    xc, yc : numpy.ndarray, shape (N,)
        Centres in cutout pixel coordinates.
    q : numpy.ndarray, shape (N,)
        Axis ratios b/a.
    theta : numpy.ndarray, shape (N,)
        Major-axis angles, radians counter-clockwise from +x.
    size : int
        Cutout side C.

    Returns
    -------
    numpy.ndarray, shape (N, C, C)
        ``sqrt(u^2 + (v / q)^2)`` with (u, v) the pixel-centre offset along the major and
        minor axes, pixels.
    """
    g = np.arange(size, dtype=float)
    dx = g[None, None, :] - xc[:, None, None]
    dy = g[None, :, None] - yc[:, None, None]
    c = np.cos(theta)[:, None, None]
    s = np.sin(theta)[:, None, None]
    u = dx * c + dy * s
    v = (dy * c - dx * s) / q[:, None, None]
    return np.sqrt(u * u + v * v)
