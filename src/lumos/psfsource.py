"""The PSF of an image being measured: Moffat parameters, a PSF image or a PSFEx model.

A *PSF source* gives the renderer's batched PSF (:mod:`lumos.psf`) for galaxies at given
image positions, so that the model-profile channel and the classical methods are drawn with
the PSF the survey delivers:

* :class:`MoffatSource`: the Moffat of the image metadata (FWHM, beta), the same everywhere;
* :class:`ImageSource`: one FITS PSF image (a 2-D array of any size, odd or even, centred on
  its geometric centre ``((W - 1) / 2, (H - 1) / 2)`` and pixel-integrated, i.e. an
  effective PSF such as a star stamp), the same everywhere;
* :class:`PSFExSource`: a PSFEx model evaluated at each galaxy (:mod:`lumos.psfex`).

:func:`load_psf` reads a file and tells the two file kinds apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy.ndimage import zoom

from .errors import LumosError
from .imageio import read_image
from .psf import PSF, BasisImagePSF, MoffatPSF
from .psfex import PSFExModel, is_psfex_file, read_psfex

__all__ = ["PSFSource", "MoffatSource", "ImageSource", "PSFExSource", "load_psf",
           "fwhm_pixels"]  # fmt: skip


class PSFSource(Protocol):
    """What the measurement needs from a PSF: the renderer's PSF at galaxy positions."""

    #: ``"moffat"``, ``"image"`` or ``"psfex"``.
    kind: str

    def at(self, x, y) -> PSF:
        """Batched renderer PSF for galaxies at 0-based positions ``x, y`` (shape (N,))."""
        ...

    def fwhm(self) -> float:
        """FWHM of the PSF at the image centre [arcsec]."""
        ...


def fwhm_pixels(image: np.ndarray, upsample: int = 8) -> float:
    """FWHM [pixels] of a PSF image: the diameter of the circle with the area above half peak.

    The image is upsampled ``upsample`` times (cubic spline) before counting, so that the
    estimate is good to about 1% for PSFs a few pixels wide.
    """
    img = np.asarray(image, dtype=np.float64)
    fine = zoom(img, upsample, order=3, mode="grid-constant", grid_mode=True)
    area = np.count_nonzero(fine >= 0.5 * fine.max()) / upsample**2
    return 2.0 * math.sqrt(area / math.pi)


class MoffatSource:
    """The Moffat PSF of the image metadata, the same at every position.

    Parameters
    ----------
    fwhm : float
        FWHM [arcsec].
    beta : float
        Moffat index.
    """

    kind = "moffat"

    def __init__(self, fwhm: float, beta: float) -> None:
        self._fwhm = float(fwhm)
        self.beta = float(beta)

    def at(self, x, y) -> PSF:
        n = int(np.size(x))
        return MoffatPSF(torch.full((n,), self._fwhm), torch.full((n,), self.beta))

    def fwhm(self) -> float:
        return self._fwhm


class ImageSource:
    """One PSF image used at every position.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W)
        Effective (pixel-integrated) PSF, centred on its geometric centre; normalised here.
    pixel_scale : float
        Its pixel scale [arcsec/pixel] (normally the image's).
    name : str
        For messages and table metadata.
    """

    kind = "image"

    def __init__(self, image: np.ndarray, pixel_scale: float, name: str = "PSF image") -> None:
        img = np.asarray(image, dtype=np.float64)
        if img.ndim != 2 or min(img.shape) < 3:
            raise LumosError(f"PSF image {name} must be a 2-D array of at least 3 x 3 pixels, "
                             f"got shape {img.shape}")  # fmt: skip
        if not np.all(np.isfinite(img)):
            raise LumosError(f"PSF image {name} contains NaN or infinite pixels")
        if not img.sum() > 0:
            raise LumosError(f"PSF image {name} must have a positive sum")
        self.image = img / img.sum()
        self.pixel_scale = float(pixel_scale)
        self.name = name
        self._psf = BasisImagePSF(self.image, None, self.pixel_scale)

    def at(self, x, y) -> PSF:
        n = int(np.size(x))
        return self._psf[torch.zeros(n, dtype=torch.long)]

    def fwhm(self) -> float:
        return fwhm_pixels(self.image) * self.pixel_scale


class PSFExSource:
    """A PSFEx model evaluated at each galaxy's position.

    Parameters
    ----------
    model : PSFExModel
        The model.
    shape : tuple of int
        Image shape (ny, nx); the model must cover it (else LumosError). Positions outside
        the image (off-image galaxies, flagged elsewhere) use the PSF at the nearest edge.
    pixel_scale : float
        The image's pixel scale [arcsec/pixel].
    """

    kind = "psfex"

    def __init__(self, model: PSFExModel, shape: tuple[int, int], pixel_scale: float) -> None:
        model.check_covers(shape)
        self.model = model
        self.name = model.name
        self.shape = (int(shape[0]), int(shape[1]))
        self.pixel_scale = float(pixel_scale)
        self._basis = model.image_basis()
        ny, nx = self.shape
        corners_x = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2])
        corners_y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2])
        try:
            self._psf = BasisImagePSF(self._basis, model.coefficients(corners_x, corners_y),
                                      self.pixel_scale)  # fmt: skip
        except ValueError:
            raise LumosError(f"PSFEx model {self.name} gives a PSF with a non-positive sum "
                             "on the image") from None  # fmt: skip

    def _clamped(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.shape
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        x = np.clip(np.where(np.isfinite(x), x, (nx - 1) / 2), 0.0, nx - 1.0)
        y = np.clip(np.where(np.isfinite(y), y, (ny - 1) / 2), 0.0, ny - 1.0)
        return x, y

    def at(self, x, y) -> PSF:
        cx, cy = self._clamped(x, y)
        return self._psf.with_coefficients(torch.from_numpy(self.model.coefficients(cx, cy)))

    def images(self, x, y) -> np.ndarray:
        """Unit-sum PSF images at positions (clamped to the image), (N, S, S)."""
        return self.at(x, y).images().numpy()

    def fwhm(self) -> float:
        ny, nx = self.shape
        return fwhm_pixels(self.images([(nx - 1) / 2], [(ny - 1) / 2])[0]) * self.pixel_scale


def load_psf(path: str | Path, shape: tuple[int, int], pixel_scale: float) -> PSFSource:
    """Read a PSF file: a PSFEx model or a FITS PSF image (told apart from the file).

    Parameters
    ----------
    path : str or Path
        PSFEx file (a table with a ``PSF_MASK`` column) or a FITS file whose first 2-D image
        is the PSF. A PSF image is taken at the image's pixel scale unless its header gives
        ``PIXSCALE`` (arcsec/pixel).
    shape : tuple of int
        Shape (ny, nx) of the image measured (a PSFEx model must cover it).
    pixel_scale : float
        Pixel scale of the image measured [arcsec/pixel].

    Returns
    -------
    PSFSource

    Raises
    ------
    LumosError
        For a missing or unreadable file, an unusable PSF, or a PSFEx model that does not
        cover the image.
    """
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"PSF file not found: {path}")
    if is_psfex_file(path):
        return PSFExSource(read_psfex(path), shape, pixel_scale)
    try:
        image, header, _ = read_image(path)
    except LumosError as exc:
        raise LumosError(f"PSF file {path.name} is neither a PSFEx model nor a FITS image "
                         f"({exc})") from None  # fmt: skip
    scale = header.get("PIXSCALE", pixel_scale)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise LumosError(
            f"PSF image {path.name}: PIXSCALE must be a number, got {scale!r}"
        ) from None
    if not (math.isfinite(scale) and scale > 0):
        raise LumosError(f"PSF image {path.name}: PIXSCALE must be positive, got {scale}")
    return ImageSource(image, scale, path.name)
