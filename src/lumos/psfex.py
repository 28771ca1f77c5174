"""Reading and evaluating PSFEx models (``*.psf`` / ``*-psfex.fits`` files).

A PSFEx model is a set of basis images ``B_t`` (the ``PSF_MASK`` cube of the ``PSF_DATA``
table) whose coefficients are the monomials ``X^i Y^j`` (``i + j <= POLDEG1``, ``j`` the slow
index) of the normalised position ``X = (x_fits - POLZERO1) / POLSCAL1``,
``Y = (y_fits - POLZERO2) / POLSCAL2``; the PSF at a position is ``sum_t X^i Y^j B_t``.

Conventions:

* positions given to this module are 0-based pixel coordinates (``image[j, i]`` is centred on
  ``x = i, y = j``, as everywhere in lumos); PSFEx works in 1-based FITS coordinates
  (``X_IMAGE = x + 1``), converted here;
* the basis images are sampled every ``PSF_SAMP`` image pixels and centred on the PSFEx pixel
  ``(W // 2, H // 2)`` (0-based); :meth:`PSFExModel.evaluate` resamples them to the image
  pixel grid (Lanczos-3 interpolation, as PSFEx and GalSim do) when ``PSF_SAMP != 1``;
* the model is an *effective* PSF: it already includes the pixel response;
* the validity range is where the model's stars were, ``POLZERO -/+ POLSCAL / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import LumosError

__all__ = ["PSFExModel", "read_psfex", "is_psfex_file", "COVERAGE_MARGIN"]

#: Fraction of the validity range by which an image may extend beyond it (the stars that
#: built the model never reach the very edge of the CCD).
COVERAGE_MARGIN = 0.05
_LANCZOS_ORDER = 3


def _psf_table(hdul) -> tuple[object, str] | None:
    """The HDU of a PSFEx table and the name of its ``PSF_MASK`` column, or None."""
    tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
    tables.sort(key=lambda h: h.name.upper() != "PSF_DATA")
    for hdu in tables:
        for name in hdu.columns.names:
            if name.upper() == "PSF_MASK":
                return hdu, name
    return None


def is_psfex_file(path: str | Path) -> bool:
    """True when ``path`` is a FITS file holding a PSFEx ``PSF_MASK`` table."""
    try:
        with fits.open(path, memmap=False) as hdul:
            return _psf_table(hdul) is not None
    except Exception:
        return False


@dataclass(frozen=True)
class PSFExModel:
    """A position-dependent PSFEx model.

    Attributes
    ----------
    basis : numpy.ndarray, float64, shape (T, H, W)
        Basis images on the PSFEx grid.
    degree : int
        Polynomial degree (0 for a constant model); ``T = (degree + 1)(degree + 2) / 2``.
    zero, scale : tuple of float
        ``POLZERO1/2`` and ``POLSCAL1/2`` in 1-based FITS pixel coordinates.
    sampling : float
        ``PSF_SAMP``: image pixels per PSFEx pixel.
    name : str
        File name (for messages).
    """

    basis: np.ndarray
    degree: int
    zero: tuple[float, float]
    scale: tuple[float, float]
    sampling: float
    name: str = "PSFEx model"

    # ------------------------------------------------------------------ geometry
    def valid_range(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Validity range ``((x_lo, x_hi), (y_lo, y_hi))`` in 0-based pixel coordinates.

        Infinite for a constant model.
        """
        if self.degree == 0:
            return (-math.inf, math.inf), (-math.inf, math.inf)
        (zx, zy), (sx, sy) = self.zero, self.scale
        return ((zx - abs(sx) / 2 - 1, zx + abs(sx) / 2 - 1),
                (zy - abs(sy) / 2 - 1, zy + abs(sy) / 2 - 1))  # fmt: skip

    def check_covers(self, shape: tuple[int, int], margin: float = COVERAGE_MARGIN) -> None:
        """Raise LumosError unless the model covers an image of ``shape`` = (ny, nx).

        The image's pixel centres ``0..nx-1``, ``0..ny-1`` must lie in the validity range
        widened by ``margin`` times its size on each side.
        """
        if self.degree == 0:
            return
        ny, nx = int(shape[0]), int(shape[1])
        (xl, xh), (yl, yh) = self.valid_range()
        mx, my = margin * abs(self.scale[0]), margin * abs(self.scale[1])
        if xl - mx <= 0 and nx - 1 <= xh + mx and yl - my <= 0 and ny - 1 <= yh + my:
            return
        raise LumosError(
            f"PSFEx model {self.name} does not cover the image: it is valid for x "
            f"{xl:.0f}..{xh:.0f}, y {yl:.0f}..{yh:.0f} (0-based pixels), the image spans x "
            f"0..{nx - 1}, y 0..{ny - 1}"
        )

    # ------------------------------------------------------------------ evaluation
    def coefficients(self, x, y) -> np.ndarray:
        """Basis coefficients at 0-based positions ``x, y`` (arrays of shape (N,)): (N, T)."""
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError("x and y must be 1-dimensional arrays of the same length")
        if self.degree == 0:
            return np.ones((x.size, 1))
        u = (x + 1.0 - self.zero[0]) / self.scale[0]
        v = (y + 1.0 - self.zero[1]) / self.scale[1]
        d = self.degree
        upow = u[:, None] ** np.arange(d + 1)[None, :]
        vpow = v[:, None] ** np.arange(d + 1)[None, :]
        terms = [upow[:, i] * vpow[:, j] for j in range(d + 1) for i in range(d + 1 - j)]
        return np.stack(terms, axis=1)

    def raw(self, x, y) -> np.ndarray:
        """The model on its own grid at 0-based positions, unnormalised: (N, H, W).

        This is PSFEx's own output (GalSim's ``DES_PSFEx.getPSFArray`` at ``x + 1, y + 1``).
        """
        coef = self.coefficients(x, y)
        return np.tensordot(coef, self.basis, axes=(1, 0))

    def image_basis(self) -> np.ndarray:
        """The basis resampled to the image pixel grid, shape (T, S, S) with S odd.

        Image pixel ``(S - 1) / 2`` is the PSF centre. Without resampling (``PSF_SAMP = 1``)
        the basis is only padded or cropped so that its centre lands there.
        """
        t, h, w = self.basis.shape
        wy = _resampling_matrix(h, self.sampling)
        wx = _resampling_matrix(w, self.sampling)
        size = max(wx.shape[0], wy.shape[0])
        wy = _pad_rows(wy, size)
        wx = _pad_rows(wx, size)
        return np.einsum("sj,tji,ri->tsr", wy, self.basis, wx, optimize=True)

    def evaluate(self, x, y) -> np.ndarray:
        """The PSF at 0-based positions on the image pixel grid, unit sum: (N, S, S).

        Parameters
        ----------
        x, y : array_like, shape (N,)
            Positions in 0-based image pixel coordinates.

        Returns
        -------
        numpy.ndarray, float64, shape (N, S, S)
            Effective (pixel-convolved) PSF images centred on pixel ``((S-1)/2, (S-1)/2)``,
            each normalised to unit sum.

        Raises
        ------
        ValueError
            Where the model's sum is not positive (far outside its validity range).
        """
        coef = self.coefficients(x, y)
        img = np.tensordot(coef, self.image_basis(), axes=(1, 0))
        total = img.sum(axis=(1, 2))
        if not np.all(np.isfinite(total) & (total > 0)):
            raise ValueError(f"PSFEx model {self.name} has a non-positive sum at some positions")
        return img / total[:, None, None]


def _lanczos(t: np.ndarray, order: int = _LANCZOS_ORDER) -> np.ndarray:
    """Lanczos kernel ``sinc(t) sinc(t / order)`` for ``|t| < order``, 0 beyond."""
    return np.where(np.abs(t) < order, np.sinc(t) * np.sinc(t / order), 0.0)


def _resampling_matrix(n: int, sampling: float) -> np.ndarray:
    """Matrix (S, n) taking a PSFEx axis of ``n`` samples to image pixels (S odd).

    Image pixel ``u`` (offset ``u - (S-1)/2`` image pixels from the centre) reads the PSFEx
    axis at ``n // 2 + offset / sampling`` by Lanczos-3 interpolation, each row normalised
    to unit sum (flux conserving); with ``sampling = 1`` the rows are exact selections.
    """
    centre = n // 2
    half = int(math.floor((n // 2) * sampling + 1e-9))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    if sampling == 1.0:
        pos = centre + offsets.astype(np.int64)
        m = np.zeros((offsets.size, n))
        inside = (pos >= 0) & (pos < n)
        m[np.flatnonzero(inside), pos[inside]] = 1.0
        return m
    src = centre + offsets / sampling
    m = _lanczos(src[:, None] - np.arange(n)[None, :])
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums != 0)


def _pad_rows(m: np.ndarray, size: int) -> np.ndarray:
    """Pad a resampling matrix with zero rows at both ends to ``size`` rows (both odd)."""
    extra = (size - m.shape[0]) // 2
    return np.pad(m, ((extra, extra), (0, 0))) if extra else m


def _header_int(header, key: str, default: int | None, name: str) -> int:
    value = header.get(key, default)
    if value is None:
        raise LumosError(f"PSFEx file {name} lacks the header keyword {key}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LumosError(f"PSFEx file {name}: {key} must be an integer, got {value!r}") from None


def _header_float(header, key: str, name: str, default: float | None = None) -> float:
    value = header.get(key, default)
    if value is None:
        raise LumosError(f"PSFEx file {name} lacks the header keyword {key}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise LumosError(f"PSFEx file {name}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise LumosError(f"PSFEx file {name}: {key} is not finite")
    return out


def read_psfex(path: str | Path) -> PSFExModel:
    """Read a PSFEx model file.

    Parameters
    ----------
    path : str or Path
        FITS file with a ``PSF_DATA`` table (or the first binary table with a ``PSF_MASK``
        column, as in the merged files of the Legacy Surveys).

    Returns
    -------
    PSFExModel

    Raises
    ------
    LumosError
        If the file is missing or unreadable, or the model is not a polynomial in the two
        image coordinates of one context group (the PSFEx default).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise LumosError(f"PSF file not found: {path}")
    try:
        with fits.open(path, memmap=False) as hdul:
            found = _psf_table(hdul)
            if found is None:
                raise LumosError(f"{name} is not a PSFEx file (no PSF_MASK table)")
            hdu, column = found
            header = hdu.header.copy()
            cube = np.array(hdu.data.field(column)[0], dtype=np.float64)
    except LumosError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LumosError(f"cannot read PSFEx file {name}: {msg}") from None
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3 or min(cube.shape[1:]) < 3:
        raise LumosError(f"PSFEx file {name}: PSF_MASK has shape {cube.shape}, expected (T, H, W)")
    if not np.all(np.isfinite(cube)):
        raise LumosError(f"PSFEx file {name}: PSF_MASK contains non-finite values")
    n_axes = _header_int(header, "POLNAXIS", sum(f"POLNAME{i}" in header for i in (1, 2, 3)),
                         name)  # fmt: skip
    sampling = _header_float(header, "PSF_SAMP", name, default=1.0)
    if sampling <= 0:
        raise LumosError(f"PSFEx file {name}: PSF_SAMP must be positive, got {sampling}")
    if n_axes == 0:
        if cube.shape[0] != 1:
            raise LumosError(f"PSFEx file {name}: a constant model needs one basis image, "
                             f"got {cube.shape[0]}")  # fmt: skip
        return PSFExModel(cube, 0, (0.0, 0.0), (1.0, 1.0), sampling, name)
    names = [str(header.get(f"POLNAME{i}", "")).strip().upper() for i in (1, 2)]
    if (n_axes != 2 or not (names[0].startswith("X") and names[0].endswith("IMAGE"))
            or not (names[1].startswith("Y") and names[1].endswith("IMAGE"))):
        raise LumosError(f"PSFEx file {name}: only models in the image coordinates "
                         f"(POLNAME X_IMAGE, Y_IMAGE) are supported, got {n_axes} axes "
                         f"{', '.join(names)}")  # fmt: skip
    groups = (_header_int(header, "POLNGRP", 1, name), _header_int(header, "POLGRP1", 1, name),
              _header_int(header, "POLGRP2", 1, name))  # fmt: skip
    if groups != (1, 1, 1):
        raise LumosError(f"PSFEx file {name}: only one context group is supported "
                         f"(POLNGRP, POLGRP1, POLGRP2 = {groups})")  # fmt: skip
    degree = _header_int(header, "POLDEG1", None, name)
    n_terms = (degree + 1) * (degree + 2) // 2
    if degree < 0 or cube.shape[0] != n_terms:
        raise LumosError(f"PSFEx file {name}: degree {degree} needs {n_terms} basis images, "
                         f"PSF_MASK has {cube.shape[0]}")  # fmt: skip
    zero = (_header_float(header, "POLZERO1", name), _header_float(header, "POLZERO2", name))
    scale = (_header_float(header, "POLSCAL1", name), _header_float(header, "POLSCAL2", name))
    if scale[0] == 0 or scale[1] == 0:
        raise LumosError(f"PSFEx file {name}: POLSCAL1/2 must be non-zero")
    return PSFExModel(cube, degree, zero, scale, sampling, name)
