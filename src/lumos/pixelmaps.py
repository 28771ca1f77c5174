"""Per-pixel maps given with an image: weight (inverse variance) maps and bad-pixel masks.

* A *weight map* holds the inverse variance of each pixel in the image's units (``1 / ADU^2``
  for an image in ADU), as survey pipelines deliver it: the noise of the sky and the
  detector, without the sources' own Poisson noise (the methods add that from the gain).
  A weight of 0 (or a negative or non-finite one) marks a pixel with no data.
* A *mask* marks bad pixels with any non-zero value (data-quality bit masks work as they
  are).

Both must have the image's shape. Bad pixels are zeroed and flagged (``MASKED``,
``MASKED_CORE``) by :func:`lumos.stamps.cut_stamps` on every measurement path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LumosError
from .imageio import read_image

__all__ = ["read_pixel_map", "bad_pixels", "variance_from_weight"]


def read_pixel_map(path: str | Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read a weight map or mask and check that it has the image's shape.

    Parameters
    ----------
    path : str or Path
        FITS file; its first 2-D image HDU is read.
    shape : tuple of int
        Image shape (ny, nx).
    what : str
        ``"weight map"`` or ``"mask"``, for messages.

    Returns
    -------
    numpy.ndarray, float32, shape ``shape``

    Raises
    ------
    LumosError
        If the file is missing or unreadable, or its shape differs from the image's.
    """
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"{what} file not found: {path}")
    try:
        data, _, _ = read_image(path)
    except LumosError as exc:
        raise LumosError(f"{what} {path.name}: {exc}") from None
    if data.shape != tuple(shape):
        raise LumosError(
            f"{what} {path.name} has shape {data.shape[1]} x {data.shape[0]} (x by y), the "
            f"image {shape[1]} x {shape[0]}: it must have the image's shape"
        )
    return data


def bad_pixels(
    shape: tuple[int, int], mask: np.ndarray | None = None, weight: np.ndarray | None = None
) -> np.ndarray | None:
    """Bad pixels from a mask (non-zero or NaN) and a weight map (not positive or NaN).

    Returns
    -------
    numpy.ndarray of bool or None
        True for bad pixels; None when neither map is given.
    """
    if mask is None and weight is None:
        return None
    bad = np.zeros(shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != tuple(shape):
            raise LumosError(f"mask shape {m.shape} differs from the image shape {tuple(shape)}")
        if np.issubdtype(m.dtype, np.floating):
            bad |= ~np.isfinite(m) | (m != 0)
        else:
            bad |= m != 0
    if weight is not None:
        w = np.asarray(weight)
        if w.shape != tuple(shape):
            raise LumosError(
                f"weight map shape {w.shape} differs from the image shape {tuple(shape)}"
            )
        bad |= ~(np.isfinite(w) & (w > 0))
    return bad


def variance_from_weight(weight: np.ndarray, gain: float) -> np.ndarray:
    """Per-pixel variance in electrons^2 from a weight map in image units (float32).

    ``gain^2 / weight``; 0 where the weight is not positive (those pixels are bad).
    """
    w = np.asarray(weight, dtype=np.float64)
    good = np.isfinite(w) & (w > 0)
    out = np.zeros(w.shape, dtype=np.float64)
    out[good] = float(gain) ** 2 / w[good]
    return out.astype(np.float32)
