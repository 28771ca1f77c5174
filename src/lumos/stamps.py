"""Stamps: the one batch type shared by simulations and real images, and cutting it from an image.

Pixel convention (astropy/photutils): array element ``image[j, i]`` is centred on
``x = i, y = j`` (0-based). A stamp of even size ``S`` is centred on the point
``((S - 1) / 2, (S - 1) / 2)`` between its four central pixels; a source at image position
``(x, y)`` sits in its stamp at ``(c + dx, c + dy)`` with ``c = (S - 1) / 2`` and the
sub-pixel offset ``dx, dy`` in ``[-0.5, 0.5)``. The same offset is given to the renderer of
the model-profile channel, so that the galaxy and its profile line up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .flags import Flag
from .rows import Rows

__all__ = [
    "StampBatch",
    "StampCut",
    "cut_stamps",
    "masked_light_flags",
    "on_image",
    "stamp_origin",
    "CORE_RADIUS",
    "MASKED_LIGHT_FRACTION",
    "STAMP_SIZE",
]

STAMP_SIZE = 60
#: Radius (pixels) of the central region in which masked pixels set ``Flag.MASKED_CORE``
#: (and, when no pixel in it is usable, ``Flag.FAILED``).
CORE_RADIUS = 8.0
#: Fraction of a galaxy's model-profile light (within the stamp) that bad pixels outside
#: the core must carry to set ``Flag.MASKED`` (:func:`masked_light_flags`).
MASKED_LIGHT_FRACTION = 1e-2
#: Positions are clipped to +-this many pixels before integer arithmetic (any such
#: position is off every image), so that huge coordinates cannot overflow an integer.
_POSITION_LIMIT = 1e12


@dataclass
class StampBatch(Rows):
    """A batch of galaxy stamps, as the network sees them.

    Simulations and real images both produce this type, and the network does its own
    normalisation, so that training and inference cannot disagree.

    Attributes
    ----------
    pixels : torch.Tensor, float32, shape (N, S, S)
        Image pixels in image units (electrons for PAUS-like images); NaN/masked set to 0.
    profile : torch.Tensor, float32, shape (N, S, S)
        The PSF-convolved model profile of the galaxy, unit total flux, drawn at the same
        sub-pixel offset.
    i_mag : torch.Tensor, float32, shape (N,)
        Catalogue i-band magnitude.
    ccd_xy : torch.Tensor, float32, shape (N, 2)
        Position on the CCD in pixels (x, y).
    band_idx : torch.Tensor, int64, shape (N,)
        Band x camera-state index, 0..79 (see :mod:`lumos.bands`).
    flags : torch.Tensor, int64, shape (N,)
        Bit mask of :class:`lumos.flags.Flag`.
    offset : torch.Tensor, float32, shape (N, 2)
        Sub-pixel offset (dx, dy) of the source from the stamp centre.
    truth : torch.Tensor or None, float32, shape (N,)
        True flux in image units (simulations only).
    truth_scale : torch.Tensor or None, float32, shape (N,)
        Softening of the training flux distribution, image units (simulations only): the
        truth was drawn with density ``~ 1 / sqrt(truth^2 + truth_scale^2)`` where it is
        positive, log-uniform (``~ 1 / truth``) where it is 0
        (:func:`lumos.simconfig.draw_training_flux`).
    """

    pixels: torch.Tensor
    profile: torch.Tensor
    i_mag: torch.Tensor
    ccd_xy: torch.Tensor
    band_idx: torch.Tensor
    flags: torch.Tensor
    offset: torch.Tensor
    truth: torch.Tensor | None = None
    truth_scale: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.pixels.shape[0]
        if self.pixels.ndim != 3 or self.pixels.shape[1] != self.pixels.shape[2]:
            raise ValueError(f"pixels must have shape (N, S, S), got {tuple(self.pixels.shape)}")
        if self.profile.shape != self.pixels.shape:
            raise ValueError(
                f"profile shape {tuple(self.profile.shape)} differs from pixels "
                f"{tuple(self.pixels.shape)}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"{f.name} has {value.shape[0]} rows, pixels has {n}")

    def _map(self, fn) -> StampBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return StampBatch(**{k: (None if v is None else fn(v)) for k, v in values.items()})

    def __getitem__(self, index) -> StampBatch:
        """Select rows with a slice, an integer array or a boolean mask."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda v: v[index])

    def to(self, device: torch.device | str) -> StampBatch:
        """Move every tensor to a device."""
        return self._map(lambda v: v.to(device))

    def replace(self, **changes) -> StampBatch:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    @staticmethod
    def concat(batches: list[StampBatch]) -> StampBatch:
        """Concatenate batches along the first axis."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of batches")
        out = {}
        for f in fields(StampBatch):
            values = [getattr(b, f.name) for b in batches]
            if any(v is None for v in values):
                out[f.name] = None
            else:
                out[f.name] = torch.cat(values)
        return StampBatch(**out)


@dataclass
class StampCut:
    """Stamps cut from an image.

    Attributes
    ----------
    pixels : numpy.ndarray, float32, shape (N, S, S)
        Stamp pixels; pixels outside the image or NaN/masked are 0.
    valid : numpy.ndarray, bool, shape (N, S, S)
        True where the pixel came from a finite, unmasked image pixel.
    offset : numpy.ndarray, float64, shape (N, 2)
        Sub-pixel offset (dx, dy) of the source from the stamp centre.
    origin : numpy.ndarray, int64, shape (N, 2)
        Image coordinates (i0, j0) of stamp pixel [0, 0].
    flags : numpy.ndarray, int64, shape (N,)
        ``EDGE``, ``MASKED_CORE``, ``MASKED``, ``FAILED`` (no usable pixel within the core
        radius) and ``OFF_IMAGE`` bits. ``MASKED`` is set here for any bad pixel on the
        image; :func:`masked_light_flags` keeps it only where the galaxy has light.
    bad : numpy.ndarray, bool, shape (N, S, S), optional
        True where the pixel lies on the image but is NaN, infinite or masked.
    """

    pixels: np.ndarray
    valid: np.ndarray
    offset: np.ndarray
    origin: np.ndarray
    flags: np.ndarray
    bad: np.ndarray | None = None


def stamp_origin(x: np.ndarray, y: np.ndarray, size: int = STAMP_SIZE):
    """Integer origin and sub-pixel offset of stamps centred on (x, y).

    Parameters
    ----------
    x, y : array_like
        Source positions, 0-based pixel coordinates.
    size : int
        Stamp size in pixels.

    Returns
    -------
    origin : numpy.ndarray, int64, shape (N, 2)
        (i0, j0) such that stamp pixel [b, a] is image pixel [j0 + b, i0 + a].
    offset : numpy.ndarray, float64, shape (N, 2)
        (dx, dy) in [-0.5, 0.5): the source is at stamp position ``c + dx, c + dy``
        with ``c = (size - 1) / 2``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    c = (size - 1) / 2.0
    xs = np.clip(np.where(np.isfinite(x), x, 0.0), -_POSITION_LIMIT, _POSITION_LIMIT)
    ys = np.clip(np.where(np.isfinite(y), y, 0.0), -_POSITION_LIMIT, _POSITION_LIMIT)
    i0 = np.floor(xs - c + 0.5).astype(np.int64)
    j0 = np.floor(ys - c + 0.5).astype(np.int64)
    offset = np.stack([xs - i0 - c, ys - j0 - c], axis=-1)
    return np.stack([i0, j0], axis=-1), offset


def on_image(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Whether each position is finite and its centre pixel lies on the image.

    Parameters
    ----------
    x, y : array_like, shape (N,)
        Source positions, 0-based pixel coordinates.
    shape : tuple of int
        Image shape ``(ny, nx)``.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
        False where :func:`cut_stamps` sets ``Flag.OFF_IMAGE``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ny, nx = shape
    with np.errstate(invalid="ignore"):
        return (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)


def cut_stamps(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    size: int = STAMP_SIZE,
    mask: np.ndarray | None = None,
    core_radius: float = CORE_RADIUS,
) -> StampCut:
    """Cut square stamps centred on catalogue positions, vectorised over sources.

    Sources near or beyond the image edge keep the source at the stamp centre: the part of
    the stamp outside the image is padded with zeros and ``Flag.EDGE`` is set. NaN,
    infinite and masked pixels become 0 and set ``Flag.MASKED`` (``Flag.MASKED_CORE`` when
    within ``core_radius`` of the source); when no pixel within ``core_radius`` is usable,
    nothing can be measured and ``Flag.FAILED`` is set. A position that is not finite or
    whose centre lies outside the image sets ``Flag.OFF_IMAGE`` (and no other bit).

    Parameters
    ----------
    image : numpy.ndarray, shape (ny, nx)
        The image.
    x, y : array_like, shape (N,)
        Source positions, 0-based pixel coordinates (``image[j, i]`` is centred on x=i, y=j).
    size : int
        Stamp size in pixels (default 60).
    mask : numpy.ndarray of bool, optional
        True for bad pixels, same shape as ``image``.
    core_radius : float
        Radius in pixels of the central region for ``Flag.MASKED_CORE``.

    Returns
    -------
    StampCut
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-dimensional, got shape {image.shape}")
    if mask is not None and np.shape(mask) != image.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from image shape {image.shape}")
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-dimensional arrays of the same length")
    ny, nx = image.shape
    n = x.size
    origin, offset = stamp_origin(x, y, size)

    bad_position = ~on_image(x, y, image.shape)

    a = np.arange(size)
    cols = origin[:, 0, None] + a[None, :]  # (N, S)
    rows = origin[:, 1, None] + a[None, :]  # (N, S)
    col_in = (cols >= 0) & (cols < nx)
    row_in = (rows >= 0) & (rows < ny)
    inside = row_in[:, :, None] & col_in[:, None, :]  # (N, S, S)
    cc = np.clip(cols, 0, nx - 1)
    rr = np.clip(rows, 0, ny - 1)
    pixels = image[rr[:, :, None], cc[:, None, :]].astype(np.float32)
    good = np.isfinite(pixels)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)[rr[:, :, None], cc[:, None, :]]
    valid = inside & good
    pixels = np.where(valid, pixels, np.float32(0.0))

    flags = np.zeros(n, dtype=np.int64)
    edge = ~inside.all(axis=(1, 2))
    flags[edge] |= int(Flag.EDGE)
    masked = (inside & ~good).any(axis=(1, 2))
    flags[masked] |= int(Flag.MASKED)
    c = (size - 1) / 2.0
    # the core lies within c +- (core_radius + 0.5): look at that box only
    lo = max(0, int(np.floor(c - core_radius - 0.5)))
    hi = min(size, int(np.ceil(c + core_radius + 0.5)) + 1)
    b = a[lo:hi]
    dxg = b[None, None, :] - c - offset[:, 0, None, None]
    dyg = b[None, :, None] - c - offset[:, 1, None, None]
    core = dxg**2 + dyg**2 <= core_radius**2
    core_valid = valid[:, lo:hi, lo:hi]
    core_bad = (core & ~core_valid).any(axis=(1, 2)) & ~bad_position
    flags[core_bad] |= int(Flag.MASKED_CORE)
    core_empty = core.any(axis=(1, 2)) & ~(core & core_valid).any(axis=(1, 2)) & ~bad_position
    flags[core_empty] |= int(Flag.FAILED)
    flags[bad_position] = int(Flag.OFF_IMAGE)
    pixels[bad_position] = 0.0
    valid[bad_position] = False
    bad = inside & ~good
    bad[bad_position] = False
    return StampCut(pixels=pixels, valid=valid, offset=offset, origin=origin, flags=flags,
                    bad=bad)


def masked_light_flags(cut: StampCut, profile: np.ndarray | torch.Tensor,
                       fraction: float = MASKED_LIGHT_FRACTION,
                       core_radius: float = CORE_RADIUS) -> np.ndarray:
    """The cut's flags with ``Flag.MASKED`` kept only where the galaxy has light.

    Bad pixels (NaN, infinite, masked) outside the core set ``Flag.MASKED`` when together
    they carry at least ``fraction`` of the galaxy's model-profile light within the stamp;
    bad pixels
    where the model puts less light (a bad column or a cosmic ray far out in the stamp)
    are still zeroed but do not flag the galaxy. A row whose profile is not finite or
    carries no light keeps the flag for any bad pixel. ``MASKED_CORE`` and the other bits
    are left as they are.

    Parameters
    ----------
    cut : StampCut
        Stamps from :func:`cut_stamps`.
    profile : numpy.ndarray or torch.Tensor, shape (N, S, S)
        The galaxies' PSF-convolved model profiles on the stamp grid.
    fraction : float
        Light fraction threshold (default :data:`MASKED_LIGHT_FRACTION`).
    core_radius : float
        Radius in pixels of the core (as given to :func:`cut_stamps`).

    Returns
    -------
    numpy.ndarray of int64, shape (N,)
    """
    flags = np.asarray(cut.flags, dtype=np.int64).copy()
    if cut.bad is None:
        return flags
    p = profile.detach().cpu().numpy() if isinstance(profile, torch.Tensor) else profile
    p = np.asarray(p, dtype=np.float64)
    if p.shape != cut.bad.shape:
        raise ValueError(f"profile shape {p.shape} differs from the stamps' {cut.bad.shape}")
    size = p.shape[-1]
    c = (size - 1) / 2.0
    a = np.arange(size)
    dx = a[None, None, :] - c - np.asarray(cut.offset)[:, 0, None, None]
    dy = a[None, :, None] - c - np.asarray(cut.offset)[:, 1, None, None]
    outside_core = dx**2 + dy**2 > core_radius**2
    total = p.sum(axis=(1, 2))
    light = np.where(cut.bad & outside_core, p, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        faint = np.isfinite(total) & (total > 0) & np.isfinite(light) & (light < fraction * total)
    flags[faint] &= ~int(Flag.MASKED)
    return flags
