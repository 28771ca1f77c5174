"""The background-source contract: the sample type, the protocol and the artefact bit mask.

A background source produces the image a simulated galaxy is pasted onto: sky level, noise
and whatever else a real exposure contains (scattered light, cosmic rays, defects,
neighbours). Every source returns a :class:`BackgroundSample` in electrons, *including* the
sky level (PAUS images are not sky-subtracted).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lumos.bands import N_BAND_INDEX
from lumos.instrument import CCD_HEIGHT, CCD_WIDTH
from lumos.rows import Rows

__all__ = [
    "CORE_HALF_WIDTH",
    "Artefact",
    "BackgroundSample",
    "BackgroundSource",
    "check_request",
    "core_slice",
]

#: Half width (pixels) of the central box used by the ``*_CORE`` artefact bits: the central
#: 10 x 10 pixels of a stamp.
CORE_HALF_WIDTH = 5


class Artefact(enum.IntFlag):
    """Bits of :attr:`BackgroundSample.artefacts`: what was injected into a background stamp.

    Only injected artefacts are recorded. Cutouts of real images carry their own
    (unknown) artefacts and report 0. The "core" is the central 10 x 10 pixels of the
    stamp (rows and columns ``S//2 - 5 .. S//2 + 4``).

    Attributes
    ----------
    COSMIC_RAY
        At least one cosmic-ray pixel (hit or track) in the stamp.
    COSMIC_RAY_CORE
        A cosmic-ray pixel in the core.
    HOT_PIXEL
        At least one hot pixel in the stamp.
    BAD_COLUMN
        A hot (bright) or dead (low-response) column crosses part of the stamp.
    DEFECT_CORE
        A hot pixel or bad column in the core.
    SATURATED_STAR
        Light of a saturated star (profile, saturated core or bleed trail) in the stamp.
    SATURATED_CORE
        Saturated or bleed-trail pixels in the core.
    """

    COSMIC_RAY = 1
    COSMIC_RAY_CORE = 2
    HOT_PIXEL = 4
    BAD_COLUMN = 8
    DEFECT_CORE = 16
    SATURATED_STAR = 32
    SATURATED_CORE = 64


@dataclass
class BackgroundSample(Rows):
    """A batch of background stamps.

    Attributes
    ----------
    pixels : numpy.ndarray
        float32 [N, S, S], electrons, including the sky level, with all noise and artefacts.
    sky_model : numpy.ndarray
        float32 [N, S, S], the noiseless smooth background (sky + scattered light) in
        electrons: the "true background" for oracle methods.
    sky_sigma : numpy.ndarray
        float32 [N], noise standard deviation of the background pixels, electrons.
    artefacts : numpy.ndarray
        int64 [N], bit mask of injected artefacts (:class:`Artefact`).
    source : numpy.ndarray or None
        int64 [N], which component of a :class:`~lumos.sky.composite.CompositeBackground`
        produced each stamp (None for a single source).
    """

    pixels: np.ndarray
    sky_model: np.ndarray
    sky_sigma: np.ndarray
    artefacts: np.ndarray
    source: np.ndarray | None = None


@runtime_checkable
class BackgroundSource(Protocol):
    """Anything that can produce background stamps.

    Any object with a matching :meth:`sample` method is a background source. The sources
    of this package also subclass :class:`BackgroundSource` and inherit its :meth:`sample`,
    which checks and normalises the arguments with :func:`check_request` and passes them on
    to the source's own ``_sample(n, size, band_idx, ccd_xy, exposure_time, rng)``.
    """

    def sample(
        self,
        n: int,
        size: int,
        band_idx: np.ndarray,
        ccd_xy: np.ndarray,
        exposure_time: np.ndarray,
        rng: np.random.Generator,
    ) -> BackgroundSample:
        """Draw ``n`` background stamps of ``size`` x ``size`` pixels.

        Parameters
        ----------
        n : int
            Number of stamps.
        size : int
            Stamp side, pixels.
        band_idx : numpy.ndarray
            int [n], band x camera-state index 0..79 (:func:`lumos.bands.band_from_index`).
        ccd_xy : numpy.ndarray
            float [n, 2], stamp centre (x, y) on the 4096 x 2048 CCD, pixels; the stamp
            centre is at ((size - 1) / 2, (size - 1) / 2) in stamp pixel coordinates.
        exposure_time : numpy.ndarray
            float [n], exposure time, seconds.
        rng : numpy.random.Generator
            Random generator; the same state gives identical output.

        Returns
        -------
        BackgroundSample

        Raises
        ------
        ValueError
            For invalid arguments (see :func:`check_request`).
        """
        n, size, b, xy, t = check_request(n, size, band_idx, ccd_xy, exposure_time, rng)
        return self._sample(n, size, b, xy, t, rng)


def check_request(
    n: int,
    size: int,
    band_idx: np.ndarray,
    ccd_xy: np.ndarray,
    exposure_time: np.ndarray,
    rng: np.random.Generator,
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and normalise the arguments of :meth:`BackgroundSource.sample`.

    Scalars are broadcast to ``n`` (a single ``(x, y)`` pair to ``[n, 2]``).

    Returns
    -------
    n : int
    size : int
    band_idx : numpy.ndarray
        int64 [n].
    ccd_xy : numpy.ndarray
        float64 [n, 2].
    exposure_time : numpy.ndarray
        float64 [n].

    Raises
    ------
    ValueError
        Naming the first problem found.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an integer >= 2 (pixels), got {size!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
    n, size = int(n), int(size)

    bidx = np.asarray(band_idx)
    if bidx.ndim == 0:
        bidx = np.full(n, bidx)
    if bidx.shape != (n,):
        raise ValueError(f"band_idx must have shape ({n},), got {bidx.shape}")
    if bidx.size and not np.issubdtype(bidx.dtype, np.integer):
        if not (np.all(np.isfinite(bidx)) and np.all(bidx == np.round(bidx))):
            raise ValueError("band_idx must hold integers (band x camera-state index 0..79)")
    bidx = bidx.astype(np.int64)
    if bidx.size and (bidx.min() < 0 or bidx.max() >= N_BAND_INDEX):
        raise ValueError(
            f"band_idx must be in 0..{N_BAND_INDEX - 1}, got values in "
            f"{bidx.min()}..{bidx.max()}"
        )

    xy = np.asarray(ccd_xy, dtype=np.float64)
    if xy.shape == (2,):
        xy = np.broadcast_to(xy, (n, 2))
    if xy.shape != (n, 2):
        raise ValueError(f"ccd_xy must have shape ({n}, 2), got {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise ValueError("ccd_xy holds NaN or infinite positions")
    if xy.size and (
        xy[:, 0].min() < -0.5
        or xy[:, 0].max() > CCD_WIDTH
        or xy[:, 1].min() < -0.5
        or xy[:, 1].max() > CCD_HEIGHT
    ):
        raise ValueError(
            f"ccd_xy must lie on the {CCD_WIDTH} x {CCD_HEIGHT} CCD (x in 0..{CCD_WIDTH}, "
            f"y in 0..{CCD_HEIGHT}), got x in {xy[:, 0].min():g}..{xy[:, 0].max():g}, "
            f"y in {xy[:, 1].min():g}..{xy[:, 1].max():g}"
        )

    t = np.asarray(exposure_time, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n, t)
    if t.shape != (n,):
        raise ValueError(f"exposure_time must have shape ({n},), got {t.shape}")
    if t.size and not (np.all(np.isfinite(t)) and t.min() > 0):
        raise ValueError("exposure_time must be finite and positive (seconds)")
    return n, size, bidx, np.ascontiguousarray(xy), t


def core_slice(size: int) -> slice:
    """Rows (or columns) of the central 10 x 10 core of a ``size`` x ``size`` stamp."""
    lo = max(size // 2 - CORE_HALF_WIDTH, 0)
    return slice(lo, min(size // 2 + CORE_HALF_WIDTH, size))
