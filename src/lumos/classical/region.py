"""Gather the pixels of an elliptical region around each source into flat padded arrays.

The fitting methods work on ``(rows, pixels)`` arrays so that every galaxy of a chunk is solved
at once: each row holds the pixels of the central box of its cutout, and a mask selects those
inside the region (pixel centres within an ellipse) that are valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import ContextCutouts, source_centre
from .geometry import elliptical_radius

__all__ = ["RegionPixels", "region_pixels"]


@dataclass
class RegionPixels:
    """Pixels of a region for a set of rows, flattened over a central box.

    Attributes
    ----------
    data : numpy.ndarray, float64, shape (m, P)
        Image pixels (0 outside the region).
    profile : numpy.ndarray, float64, shape (m, P)
        Model profile (0 outside the region).
    mask : numpy.ndarray, bool, shape (m, P)
        True for valid pixels inside the region.
    extra : list of numpy.ndarray, each (m, P)
        The requested extra per-pixel arrays, cropped the same way.
    """

    data: np.ndarray
    profile: np.ndarray
    mask: np.ndarray
    extra: list


def region_pixels(
    cutouts: ContextCutouts,
    rows: np.ndarray,
    semi_major: np.ndarray,
    q: np.ndarray | None = None,
    theta: np.ndarray | None = None,
    extra: tuple[np.ndarray, ...] = (),
) -> RegionPixels:
    """Pixels whose centres lie inside an ellipse around each source of ``rows``.

    Parameters
    ----------
    cutouts : ContextCutouts
        Context cutouts.
    rows : numpy.ndarray of int, shape (m,)
        Rows to gather.
    semi_major : numpy.ndarray, shape (m,)
        Region semi-major axis per row, pixels.
    q, theta : numpy.ndarray, shape (m,), optional
        Region axis ratio and angle (radians CCW from +x); a circle when omitted.
    extra : tuple of numpy.ndarray, each (N, C, C)
        Further per-pixel arrays (all rows of the cutouts) to crop the same way.

    Returns
    -------
    RegionPixels
    """
    size = cutouts.size
    m = len(rows)
    half = int(np.ceil(np.max(semi_major, initial=1.0))) + 2
    half = max(1, min(half, size // 2))
    c0 = size // 2 - half
    box = slice(c0, c0 + 2 * half)
    xc, yc = source_centre(cutouts)
    if q is None:
        q = np.ones(m)
    if theta is None:
        theta = np.zeros(m)
    r = elliptical_radius(xc[rows] - c0, yc[rows] - c0, q, theta, 2 * half)
    mask = (r <= semi_major[:, None, None]) & cutouts.valid[rows, box, box]
    data = np.where(mask, cutouts.pixels[rows, box, box], 0.0).reshape(m, -1)
    prof = np.where(mask, cutouts.profile[rows, box, box], 0.0).reshape(m, -1)
    ext = [np.where(mask, e[rows, box, box], 0.0).reshape(m, -1) for e in extra]
    return RegionPixels(
        data=data.astype(np.float64, copy=False),
        profile=prof.astype(np.float64, copy=False),
        mask=mask.reshape(m, -1),
        extra=ext,
    )
