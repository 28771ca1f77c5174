"""Robust pixel-noise estimation that survives gradients and sources."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["robust_sigma", "MAD_TO_SIGMA"]

#: Median absolute deviation of a unit Gaussian (the 75th percentile, 0.6745).
MAD_TO_SIGMA = 0.6744897501960817
_CHUNK = 1 << 19  # pixels per batch (keeps the temporaries in cache)


def _median(a: np.ndarray) -> np.ndarray:
    """Median along the last axis with one partition (the upper median for even lengths;
    the difference is irrelevant for the thousands of values used here)."""
    k = a.shape[-1] // 2
    return np.partition(a, k, axis=-1)[..., k]


def _mad_pooled(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """MAD of the pooled differences, each direction about its own median ([M, K] rows)."""
    d = np.concatenate([dx, dy], axis=-1)
    k = dx.shape[-1]
    d[:, :k] -= _median(dx)[:, None]
    d[:, k:] -= _median(dy)[:, None]
    np.abs(d, out=d)
    return _median(d)


def robust_sigma(pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Noise standard deviation of images from differences of adjacent pixels.

    The estimate is ``MAD(d) / sqrt(2) / 0.6745`` where ``d`` are the differences of
    horizontally and vertically adjacent pixels and MAD is the median absolute deviation
    (each direction about its own median, then pooled). Differencing removes smooth
    gradients; the medians ignore the few pixels on sources, cosmic rays and defects.
    For white noise it is the per-pixel standard deviation; for noise correlated between
    neighbouring pixels (resampled co-adds) it is ``sigma * sqrt(1 - rho)`` with ``rho``
    the neighbour correlation.

    Parameters
    ----------
    pixels : array_like
        [..., H, W] images (any units; the result is in the same units). The last two
        axes are the image; leading axes are a batch.
    valid : array_like of bool, optional
        Same shape as ``pixels`` (or broadcastable to it): False marks pixels to ignore.
        Non-finite pixels are always ignored.

    Returns
    -------
    numpy.ndarray
        float64 [...]: one estimate per image (0-d for a single image). NaN where an
        image has no pair of adjacent valid pixels.

    Raises
    ------
    ValueError
        If ``pixels`` has fewer than two dimensions or an image side is shorter than 2,
        or ``valid`` does not broadcast to ``pixels``.
    """
    x = np.asarray(pixels)
    if x.ndim < 2:
        raise ValueError(f"robust_sigma needs [..., H, W] images, got shape {x.shape}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"robust_sigma needs images of at least 2 x 2 pixels, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    lead = x.shape[:-2]

    ok = np.isfinite(x)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        try:
            v = np.broadcast_to(v, x.shape)
        except ValueError as exc:
            raise ValueError(
                f"valid of shape {v.shape} does not match pixels of shape {x.shape}"
            ) from exc
        ok = ok & v
    m = int(np.prod(lead, dtype=np.int64))
    xf = x.reshape(m, x.shape[-2], x.shape[-1])
    okf = ok.reshape(m, -1)
    mad = np.empty(m, dtype=np.float64)
    complete = okf.all(axis=1)
    full = np.flatnonzero(complete)
    step = max(1, _CHUNK // (x.shape[-2] * x.shape[-1]))
    for i in range(0, full.size, step):  # cache-sized batches of complete images
        sel = full[i : i + step]
        c = xf[sel] if full.size < m else xf[sel[0] : sel[-1] + 1]
        mad[sel] = _mad_pooled(
            (c[:, :, 1:] - c[:, :, :-1]).reshape(len(sel), -1),
            (c[:, 1:, :] - c[:, :-1, :]).reshape(len(sel), -1),
        )
    part = np.flatnonzero(~complete)
    if part.size:
        xp, op = xf[part], ok.reshape(xf.shape)[part]
        px = np.where(op[:, :, 1:] & op[:, :, :-1], xp[:, :, 1:] - xp[:, :, :-1], np.nan)
        py = np.where(op[:, 1:, :] & op[:, :-1, :], xp[:, 1:, :] - xp[:, :-1, :], np.nan)
        px, py = px.reshape(part.size, -1), py.reshape(part.size, -1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            # images without any valid pair give NaN by design
            warnings.simplefilter("ignore", RuntimeWarning)
            px -= np.nanmedian(px, axis=-1, keepdims=True)
            py -= np.nanmedian(py, axis=-1, keepdims=True)
            mad[part] = np.nanmedian(np.abs(np.concatenate([px, py], axis=-1)), axis=-1)
    mad = mad.reshape(lead)
    return np.asarray(mad, dtype=np.float64) / (np.sqrt(2.0) * MAD_TO_SIGMA)
