"""PSFs given as pixel images: one image per galaxy, or a basis with per-galaxy weights.

:class:`ImagePSF` takes PSF images (e.g. drawn from a PSFEx model at each galaxy, or read
from a file); :class:`BasisImagePSF` keeps a set of basis images (a PSFEx model's) and one
coefficient vector per galaxy, and transforms every basis image once per wavenumber grid.
Both follow the :class:`lumos.psf_base.PSF` protocol; their images are pixel-integrated
samples whose pixel response is divided out by default, and their transforms are
band-limited at the image's Nyquist wavenumber.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from .instrument import PIXEL_SCALE
from .psf_base import to_batch

__all__ = ["ImagePSF", "BasisImagePSF"]


def _image_axis_factors(k: Tensor, size: int, pixel_scale: float,
                        includes_pixel: bool) -> Tensor:
    """Per-axis factors of the transform of an image PSF: (K, size), complex128.

    ``exp(-i k x_j)`` for the pixel centres ``x_j`` (relative to the image centre), times the
    band limit at the Nyquist wavenumber (half weight on it) and, for a pixel-integrated
    image, divided by the pixel response ``sinc(k p / 2)``.
    """
    p = pixel_scale
    k = k.to(torch.float64)
    x = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0) * p
    phase = torch.polar(torch.ones(k.shape[0], size, dtype=torch.float64),
                        -k[:, None] * x[None, :])
    knyq = math.pi / p
    ak = k.abs()
    window = torch.where(ak < knyq * (1 - 1e-9), 1.0, torch.where(ak <= knyq * (1 + 1e-9),
                                                                      0.5, 0.0))
    if includes_pixel:
        window = window / torch.sinc(k * p / (2 * math.pi)).clamp(min=1e-3)
    return phase * window[:, None]


class ImagePSF:
    """PSFs given as images (one shared image, or one per galaxy).

    Parameters
    ----------
    image : array or tensor, shape (H, W) or (N, H, W)
        PSF image(s); each is normalised to unit sum. The PSF centre is the geometric
        centre of the image, ``((W - 1) / 2, (H - 1) / 2)`` in 0-based pixel coordinates
        (the convention of :func:`lumos.profiles.draw_psf` and of the stamps).
    pixel_scale : float
        Pixel scale of the PSF image [arcsec/pixel].
    includes_pixel : bool
        True (default) if the image is a pixel-integrated PSF (as drawn by
        :func:`lumos.profiles.draw_psf`, GalSim ``drawImage`` or measured from stars): the
        pixel response is then divided out of its transform, since the renderer applies the
        pixel itself.

    Notes
    -----
    The transform is the discrete-time Fourier transform of the pixel values (exact for a
    band-limited PSF), band-limited to the image's Nyquist wavenumber ``pi / pixel_scale``
    (half weight on the Nyquist line, where the sampled transform is already folded).
    """

    def __init__(self, image, pixel_scale: float, includes_pixel: bool = True) -> None:
        img = _image_stack(image, "image", "(H, W) or (N, H, W)")
        total = img.sum(dim=(1, 2))
        if not bool(torch.all(total > 0)):
            raise ValueError("image must have a positive sum")
        if not (math.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError("pixel_scale must be finite and > 0 arcsec/pixel")
        self.image = img / total[:, None, None]
        self.pixel_scale = float(pixel_scale)
        self.includes_pixel = bool(includes_pixel)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, index) -> ImagePSF:
        img = self.image[index]
        return ImagePSF(img if img.ndim == 3 else img[None], self.pixel_scale,
                        self.includes_pixel)

    def __repr__(self) -> str:
        return f"ImagePSF(N={len(self)}, shape={tuple(self.image.shape[1:])})"

    def _axis_factors(self, k: Tensor, size: int) -> Tensor:
        """``exp(-i k x_j)`` times the per-axis band limit / pixel deconvolution: (K, size)."""
        return _image_axis_factors(k, size, self.pixel_scale, self.includes_pixel)

    def kvalue_grid(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Transform on the outer-product grid ``ky[:, None], kx[None, :]`` -> ``[N, ny, nx]``.

        Complex64 (a PSF image need not be symmetric).
        """
        h, w = self.image.shape[1:]
        ex = self._axis_factors(kx.reshape(-1), w)  # (nx, W)
        ey = self._axis_factors(ky.reshape(-1), h)  # (ny, H)
        img = self.image.to(torch.complex128)
        out = ey[None] @ img @ ex.T[None]
        return out.to(torch.complex64)

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Fourier transform at ``(kx, ky)`` [radians/arcsec], broadcast to ``[N, ...]``.

        Returns
        -------
        torch.Tensor, complex64, shape (N, ...), equal to 1 at k = 0.
        """
        kx = torch.as_tensor(kx, dtype=torch.float64)
        ky = torch.as_tensor(ky, dtype=torch.float64)
        n = len(self)
        kx, ky = torch.broadcast_tensors(kx, ky)
        kx, ky = to_batch(kx, n), to_batch(ky, n)
        shape = kx.shape
        kxf = kx.reshape(n, -1)
        kyf = ky.reshape(n, -1)
        h, w = self.image.shape[1:]
        out = torch.empty(kxf.shape, dtype=torch.complex128)
        img = self.image.to(torch.complex128)
        for i in range(n):
            ex = self._axis_factors(kxf[i], w)  # (P, W)
            ey = self._axis_factors(kyf[i], h)  # (P, H)
            out[i] = ((ey @ img[i]) * ex).sum(dim=1)
        return out.reshape(shape).to(torch.complex64)

    def kmax(self, threshold: float) -> Tensor:
        """Band limit of the image PSF: ``sqrt(2) pi / pixel_scale`` for every galaxy."""
        del threshold
        return torch.full((len(self),), math.sqrt(2.0) * math.pi / self.pixel_scale,
                          dtype=torch.float64)


def _image_stack(images, name: str, shapes: str) -> Tensor:
    """``images`` as a finite float64 CPU tensor of shape (K, H, W), H and W >= 2."""
    t = torch.as_tensor(np.asarray(images, dtype=np.float64) if not torch.is_tensor(images)
                        else images).detach().to("cpu", torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or min(t.shape[1:]) < 2:
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(t.shape)}")
    if not bool(torch.all(torch.isfinite(t))):
        raise ValueError(f"{name} contains non-finite values")
    return t


class _BasisTransforms:
    """Transforms of a set of basis images on wavenumber grids, kept per grid.

    Shared by a :class:`BasisImagePSF` and every selection of it, so that each grid is
    transformed once however many galaxies use it.
    """

    _MAX_GRIDS = 16

    def __init__(self, basis: Tensor, pixel_scale: float, includes_pixel: bool) -> None:
        self.basis = basis
        self.sums = basis.sum(dim=(1, 2))
        self.pixel_scale = pixel_scale
        self.includes_pixel = includes_pixel
        self._grids: dict[tuple, Tensor] = {}
        self._lock = threading.Lock()  # measurement renders from several threads

    def grid(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Basis transforms on the grid ``ky[:, None], kx[None, :]``: (T, ny, nx) complex128."""
        kx = kx.reshape(-1).to(torch.float64)
        ky = ky.reshape(-1).to(torch.float64)
        key = (kx.numel(), ky.numel(), kx.numpy().tobytes(), ky.numpy().tobytes())
        out = self._grids.get(key)
        if out is None:
            h, w = self.basis.shape[1:]
            ex = _image_axis_factors(kx, w, self.pixel_scale, self.includes_pixel)
            ey = _image_axis_factors(ky, h, self.pixel_scale, self.includes_pixel)
            out = ey[None] @ self.basis.to(torch.complex128) @ ex.T[None]
            with self._lock:
                if len(self._grids) >= self._MAX_GRIDS:
                    self._grids.pop(next(iter(self._grids)))
                self._grids[key] = out
        return out


class BasisImagePSF:
    """PSF images that are linear combinations of shared basis images, one per galaxy.

    The PSF of galaxy ``n`` is ``sum_t c[n, t] B_t`` normalised to unit sum: a PSFEx model
    evaluated at each galaxy (``c`` its polynomial terms), or one PSF image shared by all
    (``T = 1``). Its transform is the same combination of the basis transforms, computed once
    per wavenumber grid, so that a batch of position-dependent PSFs costs little more than one.

    Parameters
    ----------
    basis : array or tensor, shape (T, H, W) or (H, W)
        Basis images, centred on the geometric centre ``((W - 1) / 2, (H - 1) / 2)``.
    coefficients : array or tensor, shape (N, T)
        Coefficients per galaxy (default one galaxy with all coefficients 1).
    pixel_scale : float
        Pixel scale of the basis images [arcsec/pixel].
    includes_pixel : bool
        True (default) if the images are pixel-integrated (effective PSFs, as PSFEx models
        and star images are); the pixel response is then divided out of the transform.

    Notes
    -----
    As for :class:`ImagePSF`: the transform is the discrete-time Fourier transform of the
    pixel values, band-limited to the Nyquist wavenumber ``pi / pixel_scale``.
    """

    def __init__(self, basis, coefficients=None, pixel_scale: float = PIXEL_SCALE,
                 includes_pixel: bool = True) -> None:
        b = _image_stack(basis, "basis", "(T, H, W) or (H, W)")
        if not (math.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError("pixel_scale must be finite and > 0 arcsec/pixel")
        shared = _BasisTransforms(b, float(pixel_scale), bool(includes_pixel))
        self._init(shared, coefficients)

    def _init(self, shared: _BasisTransforms, coefficients) -> None:
        t = shared.basis.shape[0]
        if coefficients is None:
            coefficients = torch.ones(1, t, dtype=torch.float64)
        c = torch.as_tensor(np.asarray(coefficients, dtype=np.float64)
                            if not torch.is_tensor(coefficients) else coefficients)
        c = c.detach().to("cpu", torch.float64)
        if c.ndim == 1:
            c = c[None]
        if c.ndim != 2 or c.shape[1] != t:
            raise ValueError(f"coefficients must have shape (N, {t}), got {tuple(c.shape)}")
        norm = c @ shared.sums
        if not bool(torch.all(torch.isfinite(norm) & (norm > 0))):
            raise ValueError("every PSF must have a finite, positive sum")
        self._shared = shared
        self.coefficients = c
        self._weights = c / norm[:, None]  # unit-sum normalisation folded into the weights

    @property
    def pixel_scale(self) -> float:
        """Pixel scale of the PSF images [arcsec/pixel]."""
        return self._shared.pixel_scale

    def __len__(self) -> int:
        return int(self.coefficients.shape[0])

    def __getitem__(self, index) -> BasisImagePSF:
        c = self.coefficients[index]
        return self.with_coefficients(c if c.ndim == 2 else c[None])

    def with_coefficients(self, coefficients) -> BasisImagePSF:
        """PSFs of the same basis with other coefficients (N', T), sharing its transforms."""
        out = object.__new__(BasisImagePSF)
        out._init(self._shared, coefficients)
        return out

    def __repr__(self) -> str:
        t, h, w = self._shared.basis.shape
        return f"BasisImagePSF(N={len(self)}, basis={t}, shape={(h, w)})"

    def images(self) -> Tensor:
        """The unit-sum PSF images, (N, H, W) float64."""
        return torch.tensordot(self._weights, self._shared.basis, dims=1)

    def kvalue_grid(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Transform on the outer-product grid ``ky[:, None], kx[None, :]`` -> ``[N, ny, nx]``.

        Complex64.
        """
        grid = self._shared.grid(kx, ky)
        t, ny, nx = grid.shape
        out = (self._weights.to(torch.complex128) @ grid.reshape(t, ny * nx)).reshape(-1, ny, nx)
        return out.to(torch.complex64)

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Fourier transform at ``(kx, ky)`` [radians/arcsec], broadcast to ``[N, ...]``.

        Returns
        -------
        torch.Tensor, complex64, shape (N, ...), equal to 1 at k = 0.
        """
        return ImagePSF(self.images(), self.pixel_scale, self._shared.includes_pixel).kvalue(
            kx, ky)

    def kmax(self, threshold: float) -> Tensor:
        """Band limit of the image PSF: ``sqrt(2) pi / pixel_scale`` for every galaxy."""
        del threshold
        return torch.full((len(self),), math.sqrt(2.0) * math.pi / self.pixel_scale,
                          dtype=torch.float64)
