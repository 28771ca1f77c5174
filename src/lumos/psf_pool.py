"""A survey's PSFEx models as the PSFs of simulated stamps.

:class:`PSFExPool` evaluates each PSFEx model of a survey (``[psf] family = "psfex"`` in the
survey file) on a grid of positions over its validity range, once, and serves these
images to :class:`lumos.simulate.Simulator` as its ``psf_factory``: each stamp draws one
image of the pool at random, and its galaxy, its neighbours and its model-profile channel
are drawn with that PSF, so the network sees the survey's real PSF shapes.

The simulator's per-stamp ``psf_fwhm`` is then the FWHM of the drawn image (measured as in
:func:`lumos.psfsource.fwhm_pixels`) and its ``psf_beta`` holds the image's index in the
pool (there is no Moffat beta); the profile channel uses the same image as the galaxy, so
catalogue PSF errors (``CatalogueErrors.psf_fwhm_frac``) do not apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import LumosError
from .psf import ImagePSF
from .psfex import read_psfex
from .psfsource import fwhm_pixels

__all__ = ["PSFExPool"]


def _pad(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad odd-sized (N, S, S) images to (N, size, size), keeping the centre pixel."""
    s = images.shape[-1]
    if s == size:
        return images
    lo = (size - s) // 2
    out = np.zeros(images.shape[:-2] + (size, size))
    out[..., lo : lo + s, lo : lo + s] = images
    return out


class PSFExPool:
    """PSF images of PSFEx models at a grid of positions, drawn at random per stamp.

    Parameters
    ----------
    files : sequence of str or Path
        PSFEx files.
    pixel_scale : float
        Pixel scale of the images the models describe, arcsec/pixel.
    grid : int
        Positions per axis over each model's validity range (``grid**2`` images per model;
        one for a constant model).

    Raises
    ------
    LumosError
        For an unreadable file or a model whose PSF has a non-positive sum on its range.
    """

    def __init__(self, files: Sequence[str | Path], pixel_scale: float, grid: int = 4) -> None:
        if not files:
            raise LumosError("a PSFEx pool needs at least one PSFEx file")
        if int(grid) < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.pixel_scale = float(pixel_scale)
        stacks = []
        for path in files:
            model = read_psfex(path)
            (xl, xh), (yl, yh) = model.valid_range()
            if model.degree == 0 or not all(map(math.isfinite, (xl, xh, yl, yh))):
                x, y = np.zeros(1), np.zeros(1)
            else:
                gx, gy = np.meshgrid(np.linspace(xl, xh, int(grid)), np.linspace(yl, yh, int(grid)))
                x, y = gx.ravel(), gy.ravel()
            try:
                stacks.append(model.evaluate(x, y))
            except ValueError:
                raise LumosError(f"PSFEx model {Path(path).name} gives a PSF with a "
                                 "non-positive sum on its validity range") from None  # fmt: skip
        size = max(s.shape[-1] for s in stacks)
        images = np.concatenate([_pad(s, size) for s in stacks])
        self.images = torch.from_numpy(images)
        self.fwhm = np.array([fwhm_pixels(im) for im in images]) * self.pixel_scale
        self.files = tuple(str(f) for f in files)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def draw(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """PSFs of ``m`` stamps: ``(fwhm, index)``, the index (as float) in ``psf_beta``."""
        k = rng.integers(0, len(self), int(m))
        return self.fwhm[k], k.astype(np.float64)

    def __call__(self, fwhm: torch.Tensor, beta: torch.Tensor) -> ImagePSF:
        """The renderer PSF of objects whose ``beta`` holds their pool index."""
        del fwhm
        index = torch.as_tensor(beta).round().long().clamp(0, len(self) - 1)
        return ImagePSF(self.images[index], self.pixel_scale)
