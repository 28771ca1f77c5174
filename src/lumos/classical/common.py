"""The common input of every classical method (:class:`ContextCutouts`) and result helpers.

Every classical method reads the same inputs -- context cutouts centred on each galaxy, their
validity mask, the catalogue shape and the unit-flux PSF-convolved model profile on the same
grid -- and returns the same columns as the network (``flux``, ``flux_err``, ``flags``) plus
method-specific extras, so that comparing methods is one loop.

Pixel convention (as :mod:`lumos.stamps`): cutout element ``[j, i]`` is centred on
``x = i, y = j``; a ``C x C`` cutout is centred on ``((C - 1) / 2, (C - 1) / 2)`` and the source
sits at ``((C - 1) / 2 + dx, (C - 1) / 2 + dy)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..flags import Flag
from ..instrument import PIXEL_SCALE
from ..profiles import valid_profile_parameters

__all__ = [
    "ContextCutouts",
    "CONTEXT_SIZE",
    "empty_result",
    "mark_failed",
    "source_centre",
]

#: Default context-cutout size in pixels (a 45-pixel annulus needs at least 92).
CONTEXT_SIZE = 100


def _as_rows(name: str, value, n: int, dtype=float) -> np.ndarray:
    """Broadcast a scalar or length-N array to a float array of shape (N,)."""
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        return np.full(n, arr, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    return arr


@dataclass
class ContextCutouts:
    """Context cutouts of N galaxies: the one input of every classical method.

    Attributes
    ----------
    pixels : numpy.ndarray, float, shape (N, C, C)
        Image pixels in image units (ADU; electrons when ``gain`` is 1), *including the sky*
        (not sky-subtracted). Invalid pixels are 0 and are ignored.
    valid : numpy.ndarray, bool, shape (N, C, C)
        False for pixels outside the image or masked/NaN.
    offset : numpy.ndarray, float, shape (N, 2)
        Sub-pixel offset (dx, dy) of the source from the cutout centre, pixels.
    r50 : numpy.ndarray, float, shape (N,)
        Circularised half-light radius, arcsec.
    n : numpy.ndarray, float, shape (N,)
        Sersic index.
    q : numpy.ndarray, float, shape (N,)
        Axis ratio b/a (usable in [0.05, 1], see :func:`bad_shape`).
    pa : numpy.ndarray, float, shape (N,)
        Position angle, degrees counter-clockwise from the +x axis.
    profile : numpy.ndarray, float, shape (N, C, C)
        Unit-flux PSF-convolved model profile on the same grid and at the same offset.
    gain : float or numpy.ndarray of shape (N,)
        Gain in electrons per image unit (1 for images in electrons).
    read_noise : float or numpy.ndarray of shape (N,)
        Read noise in electrons.
    pixel_scale : float
        Pixel scale, arcsec per pixel.
    flags : numpy.ndarray, int64, shape (N,), optional
        Input flags (e.g. from :func:`lumos.stamps.cut_stamps`); OR-ed into every result.
    truth : numpy.ndarray, float, shape (N,), optional
        True flux in image units (simulations only; used by the oracle weighted sum).
    true_background : numpy.ndarray, optional
        True background level in image units, shape (N,) or (N, C, C) (simulations only).
    variance : numpy.ndarray, float, shape (N, C, C), optional
        Per-pixel variance of the sky and detector noise in image units^2 (from a weight
        map). When given, the methods use it as each pixel's sky noise instead of one sky
        variance per galaxy; the source's Poisson term is still added from ``gain``.
    """

    pixels: np.ndarray
    valid: np.ndarray
    offset: np.ndarray
    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    profile: np.ndarray
    gain: float | np.ndarray = 1.0
    read_noise: float | np.ndarray = 0.0
    pixel_scale: float = PIXEL_SCALE
    flags: np.ndarray | None = None
    truth: np.ndarray | None = None
    true_background: np.ndarray | None = None
    variance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels)
        if self.pixels.ndim != 3 or self.pixels.shape[1] != self.pixels.shape[2]:
            raise ValueError(f"pixels must have shape (N, C, C), got {self.pixels.shape}")
        if not np.issubdtype(self.pixels.dtype, np.floating):
            self.pixels = self.pixels.astype(np.float64)
        n = self.pixels.shape[0]
        self.valid = np.asarray(self.valid, dtype=bool)
        if self.valid.shape != self.pixels.shape:
            raise ValueError(
                f"valid shape {self.valid.shape} differs from pixels {self.pixels.shape}"
            )
        self.profile = np.asarray(self.profile)
        if self.profile.shape != self.pixels.shape:
            raise ValueError(
                f"profile shape {self.profile.shape} differs from pixels {self.pixels.shape}"
            )
        self.offset = np.asarray(self.offset, dtype=float)
        if self.offset.shape != (n, 2):
            raise ValueError(f"offset must have shape ({n}, 2), got {self.offset.shape}")
        for name in ("r50", "n", "q", "pa"):
            setattr(self, name, _as_rows(name, getattr(self, name), n))
        self.gain = _as_rows("gain", self.gain, n)
        self.read_noise = _as_rows("read_noise", self.read_noise, n)
        if not np.all(np.isfinite(self.gain) & (self.gain > 0)):
            raise ValueError("gain must be finite and positive")
        if not np.all(np.isfinite(self.read_noise) & (self.read_noise >= 0)):
            raise ValueError("read_noise must be finite and non-negative")
        if not (np.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            raise ValueError(f"pixel_scale must be positive, got {self.pixel_scale}")
        if self.flags is None:
            self.flags = np.zeros(n, dtype=np.int64)
        else:
            self.flags = _as_rows("flags", self.flags, n, dtype=np.int64)
        if self.truth is not None:
            self.truth = _as_rows("truth", self.truth, n)
        if self.true_background is not None:
            tb = np.asarray(self.true_background, dtype=float)
            if tb.shape == self.pixels.shape:
                self.true_background = tb
            else:
                self.true_background = _as_rows("true_background", tb, n)
        if self.variance is not None:
            var = np.asarray(self.variance, dtype=np.float64)
            if var.shape != self.pixels.shape:
                raise ValueError(
                    f"variance shape {var.shape} differs from pixels {self.pixels.shape}"
                )
            self.variance = var

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> int:
        """Cutout side C in pixels."""
        return int(self.pixels.shape[1])

    def __getitem__(self, index) -> ContextCutouts:
        """Select rows with a slice, an integer array or a boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "pixel_scale" or value is None:
                out[f.name] = value
            else:
                out[f.name] = np.asarray(value)[index]
        return ContextCutouts(**out)

    @classmethod
    def from_stamp_cut(
        cls,
        cut,
        profile: np.ndarray,
        r50,
        n,
        q,
        pa,
        gain: float | np.ndarray = 1.0,
        read_noise: float | np.ndarray = 0.0,
        pixel_scale: float = PIXEL_SCALE,
    ) -> ContextCutouts:
        """Build from a :class:`lumos.stamps.StampCut` (``cut_stamps(..., size=C)``).

        Parameters
        ----------
        cut : lumos.stamps.StampCut
            Cutouts from an image; its flags are carried over.
        profile : numpy.ndarray, shape (N, C, C)
            Unit-flux PSF-convolved model profiles drawn at ``cut.offset``.
        r50, n, q, pa : array_like, shape (N,)
            Catalogue shape (arcsec, Sersic index, b/a, degrees CCW from +x).
        gain, read_noise, pixel_scale
            As in :class:`ContextCutouts`.

        Returns
        -------
        ContextCutouts
        """
        return cls(
            pixels=cut.pixels,
            valid=cut.valid,
            offset=cut.offset,
            r50=r50,
            n=n,
            q=q,
            pa=pa,
            profile=profile,
            gain=gain,
            read_noise=read_noise,
            pixel_scale=pixel_scale,
            flags=cut.flags,
        )


def source_centre(cutouts: ContextCutouts) -> tuple[np.ndarray, np.ndarray]:
    """Source position (x, y) in cutout pixel coordinates, each of shape (N,)."""
    c = (cutouts.size - 1) / 2.0
    return c + cutouts.offset[:, 0], c + cutouts.offset[:, 1]


def empty_result(n: int, flags: np.ndarray | None = None, extras: tuple[str, ...] = ()) -> dict:
    """A result dictionary of N rows filled with NaN and ``Flag.FAILED``.

    Parameters
    ----------
    n : int
        Number of rows.
    flags : numpy.ndarray, optional
        Input flags to start from (``FAILED`` is added to them).
    extras : tuple of str
        Names of extra float columns (NaN-filled).

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux``, ``flux_err`` (float64, NaN), ``flags`` (int64) and the extras.
    """
    out = {
        "flux": np.full(n, np.nan),
        "flux_err": np.full(n, np.nan),
        "flags": (np.zeros(n, dtype=np.int64) if flags is None else flags.astype(np.int64).copy())
        | int(Flag.FAILED),
    }
    for name in extras:
        out[name] = np.full(n, np.nan)
    return out


def mark_failed(flux: np.ndarray, flux_err: np.ndarray, flags: np.ndarray,
                *also: np.ndarray) -> np.ndarray:
    """Mark the rows without a measurement, in place: ``FAILED`` in ``flags`` and NaN flux.

    A row has no measurement where its flux or error is not finite, where ``flags``
    already hold ``FAILED``, or where one of the masks ``also`` is True.

    Parameters
    ----------
    flux, flux_err : numpy.ndarray, float (N,)
        Flux and error; NaN on the failed rows afterwards.
    flags : numpy.ndarray, int64 (N,)
        Flags; ``FAILED`` is added on the failed rows.
    *also : numpy.ndarray, bool (N,)
        Further rows that failed.

    Returns
    -------
    numpy.ndarray, bool (N,)
        The failed rows.
    """
    failed = ~np.isfinite(flux) | ~np.isfinite(flux_err) | ((flags & int(Flag.FAILED)) != 0)
    for mask in also:
        failed |= mask
    flags[failed] |= int(Flag.FAILED)
    flux[failed] = np.nan
    flux_err[failed] = np.nan
    return failed


def bad_shape(cutouts: ContextCutouts) -> np.ndarray:
    """Rows whose catalogue shape or model profile is unusable, shape (N,) bool.

    A shape is unusable where its parameters fail
    :func:`lumos.profiles.valid_profile_parameters` (the rule that sets ``BAD_PROFILE``
    in catalogues and simulations), an offset is not finite, or the model profile does not
    have a positive finite sum.
    """
    bad = ~valid_profile_parameters(cutouts.r50, cutouts.n, cutouts.q, cutouts.pa).numpy()
    bad |= ~np.all(np.isfinite(cutouts.offset), axis=1)
    psum = cutouts.profile.sum(axis=(1, 2), dtype=np.float64)
    bad |= ~np.isfinite(psum) | (psum <= 0)
    return bad
