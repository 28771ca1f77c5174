"""Point-spread functions for the batched renderer: Moffat, Gaussian and image PSFs.

Every PSF here is *batched*: it holds one set of parameters per galaxy (tensors of shape
``[N]``) and returns its Fourier transform for all of them at once. Conventions:

* wavenumbers ``k`` are in radians per arcsec; the transform of a unit-flux PSF is
  ``P(k) = integral I(x) exp(-i k.x) d^2x``, so that ``P(0) = 1``;
* the PSF is *not* pixel-integrated: the renderer applies the pixel response itself.
  (:class:`ImagePSF` and :class:`BasisImagePSF` images are pixel-integrated samples; by
  default that pixel is divided out, see there.)

Besides the :class:`PSF` protocol (``kvalue`` and ``__len__``), the built-in PSFs implement
a few optional methods the renderer uses when present: ``kvalue_grid`` (transform on an
outer-product grid), ``kvalue_radial`` (radially symmetric PSFs), ``kmax`` (wavenumber
beyond which the transform is negligible), ``intensity`` and ``flux_outside`` (surface
brightness and encircled-light complement of the wings, for the wrap-around correction)
and ``__getitem__`` (select galaxies). A PSF with only ``kvalue`` and ``__len__`` works
too, more slowly and without the wing correction.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from .instrument import PIXEL_SCALE

__all__ = ["PSF", "MoffatPSF", "GaussianPSF", "ImagePSF", "BasisImagePSF", "as_tensor_1d"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

#: Range of the Moffat index accepted (the untruncated profile needs beta > 1).
MOFFAT_BETA_RANGE = (1.1, 10.0)

# Grid of the tabulated Moffat transform: nu = beta - 1 and ln(x), x = k * alpha.
_MOF_NU_MIN, _MOF_NU_MAX, _MOF_NU_STEP = 0.1, 9.0, 0.02
_MOF_LNX_MIN, _MOF_LNX_MAX, _MOF_LNX_STEP = -8.0, 5.0, 0.01


@runtime_checkable
class PSF(Protocol):
    """A batch of PSFs, one per galaxy, described by its Fourier transform."""

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Fourier transform at ``(kx, ky)`` (radians/arcsec), broadcast to ``[N, ...]``.

        Equal to 1 at ``k = 0``.
        """
        ...

    def __len__(self) -> int:
        """Number of PSFs in the batch (1 broadcasts to any number of galaxies)."""
        ...


def as_tensor_1d(value, name: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """Convert a float, list, array or tensor to a 1-d CPU tensor.

    Parameters
    ----------
    value : float, sequence, numpy.ndarray or torch.Tensor
        Scalar or 1-d values.
    name : str
        Argument name used in error messages.
    dtype : torch.dtype
        Output dtype.

    Returns
    -------
    torch.Tensor
        Shape ``[N]`` (``N = 1`` for a scalar).

    Raises
    ------
    ValueError
        If the input has more than one dimension or cannot be converted to numbers.
    """
    try:
        t = torch.as_tensor(np.asarray(value, dtype=np.float64) if not torch.is_tensor(value)
                            else value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}") from exc
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real numbers")
    t = t.detach().to(device="cpu", dtype=dtype)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-d, got shape {tuple(t.shape)}")
    return t


def _broadcast(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Broadcast named 1-d tensors to a common length (1 broadcasts), naming mismatches."""
    n = max(t.shape[0] for t in tensors.values())
    out = {}
    for name, t in tensors.items():
        if t.shape[0] not in (1, n):
            lengths = ", ".join(f"{k}={v.shape[0]}" for k, v in tensors.items())
            raise ValueError(f"shape mismatch: {name} has length {t.shape[0]} ({lengths})")
        out[name] = t.expand(n).contiguous()
    return out


def _to_batch(k: Tensor, n: int) -> Tensor:
    """Expand wavenumbers to a leading batch dimension ``n``.

    A tensor whose first dimension is 1 or ``n`` is broadcast along it; any other tensor
    (including a scalar) is taken as shared by all galaxies and gets a new leading axis.
    """
    if k.ndim == 0 or k.shape[0] not in (1, n):
        k = k.unsqueeze(0)
    return k.expand((n,) + tuple(k.shape[1:]))


def _index(t: Tensor, index) -> Tensor:
    """Select rows of a per-galaxy tensor, always returning at least 1-d."""
    out = t[index]
    return out.reshape(-1) if out.ndim == 0 else out


class _MoffatTable:
    """Moffat transform ``2 (x/2)^nu K_nu(x) / Gamma(nu)`` tabulated on (nu, ln x).

    Rows (one per tabulated ``nu``) are computed with SciPy when first needed and kept, so
    that a batch with a few distinct ``beta`` costs a few rows only.
    """

    nu0, dnu = _MOF_NU_MIN, _MOF_NU_STEP
    lnx0, dlnx = _MOF_LNX_MIN, _MOF_LNX_STEP

    def __init__(self) -> None:
        self.n_rows = int(round((_MOF_NU_MAX - _MOF_NU_MIN) / _MOF_NU_STEP)) + 1
        self.n_cols = int(round((_MOF_LNX_MAX - _MOF_LNX_MIN) / _MOF_LNX_STEP)) + 1
        self._table = torch.zeros(self.n_rows, self.n_cols, dtype=torch.float32)
        self._done = torch.zeros(self.n_rows, dtype=torch.bool)
        self._lock = threading.Lock()  # measurement renders from several threads

    def _compute(self, index: list[int]) -> None:
        from scipy.special import gammaln, kve

        nu = (self.nu0 + self.dnu * np.asarray(index, dtype=np.float64))[:, None]
        x = np.exp(self.lnx0 + self.dlnx * np.arange(self.n_cols))[None, :]
        with np.errstate(under="ignore", over="ignore", divide="ignore", invalid="ignore"):
            val = np.exp(math.log(2.0) + nu * np.log(x / 2.0) + np.log(kve(nu, x)) - x
                         - gammaln(nu))
        val = np.where(np.isfinite(val), val, 0.0)
        rows = torch.as_tensor(index, dtype=torch.long)
        self._table[rows] = torch.as_tensor(val, dtype=torch.float32)
        self._done[rows] = True

    def rows(self, index: Tensor) -> Tensor:
        """Rows for the tabulated ``nu`` indices ``index`` (N,), shape (N, n_cols)."""
        if not bool(self._done[index].all()):
            with self._lock:
                missing = torch.unique(index[~self._done[index]])
                if missing.numel():
                    self._compute(missing.tolist())
        return self._table[index]

    def xcut(self, index: Tensor, threshold: float) -> Tensor:
        """Per row, the ``x`` beyond which the transform is below ``threshold`` (float64)."""
        count = (self.rows(index) >= threshold).sum(dim=1).to(torch.float64)
        return torch.exp(self.lnx0 + self.dlnx * count)


@lru_cache(maxsize=1)
def _moffat_table() -> _MoffatTable:
    """The process-wide Moffat transform table (rows filled on demand)."""
    return _MoffatTable()


def cubic_rows(table: Tensor, pos: Tensor) -> Tensor:
    """Catmull-Rom interpolation between rows of a table with one ghost row at each end.

    Parameters
    ----------
    table : torch.Tensor, shape (R + 2, T)
        Rows ``0..R-1`` of the grid stored at ``1..R``; rows 0 and R+1 are ghosts.
    pos : torch.Tensor, shape (N,)
        Fractional row positions in ``[0, R - 1]`` (grid units, without the ghost).

    Returns
    -------
    torch.Tensor, shape (N, T)
    """
    n_rows = table.shape[0] - 2
    pos = pos.to(torch.float64).clamp(0.0, n_rows - 1.0)
    i0 = pos.floor().clamp(max=n_rows - 2).to(torch.long)
    t = (pos - i0).to(table.dtype)[:, None]
    p0, p1, p2, p3 = table[i0], table[i0 + 1], table[i0 + 2], table[i0 + 3]
    t2 = t * t
    t3 = t2 * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def lerp_rows(rows: Tensor, u: Tensor) -> Tensor:
    """Linear interpolation of per-galaxy rows at fractional positions ``u``.

    Parameters
    ----------
    rows : torch.Tensor, shape (N, T)
    u : torch.Tensor, shape (N, P)
        Positions in grid units; clamped to ``[0, T - 1]``.

    Returns
    -------
    torch.Tensor, shape (N, P)
    """
    last = rows.shape[1] - 1
    u = u.clamp(0.0, last - 1e-3)
    i = u.floor()
    frac = u - i
    il = i.to(torch.long)
    lo = torch.gather(rows, 1, il)
    hi = torch.gather(rows, 1, il + 1)
    return torch.lerp(lo, hi, frac.to(rows.dtype))


class _RadialPSF:
    """Shared machinery of radially symmetric analytic PSFs."""

    def __len__(self) -> int:
        return int(self.fwhm.shape[0])

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Fourier transform at ``(kx, ky)`` [radians/arcsec], broadcast to ``[N, ...]``.

        Parameters
        ----------
        kx, ky : torch.Tensor
            Wavenumbers broadcastable to ``[N, ...]`` (or 1-d/scalar, broadcast over N).

        Returns
        -------
        torch.Tensor, shape (N, ...), real, equal to 1 at k = 0.
        """
        kx = torch.as_tensor(kx, dtype=torch.float64)
        ky = torch.as_tensor(ky, dtype=torch.float64)
        k = _to_batch(torch.sqrt(kx * kx + ky * ky), len(self))
        return self._radial_values(k.reshape(len(self), -1)).reshape(k.shape)

    def kvalue_radial(self, k: Tensor) -> Tensor:
        """Fourier transform at radii ``k`` [radians/arcsec] shared by all galaxies.

        Parameters
        ----------
        k : torch.Tensor, shape (U,)
            Non-negative wavenumbers.

        Returns
        -------
        torch.Tensor, shape (N, U), float32.
        """
        return self._radial_shared(k.reshape(-1))

    def _radial_shared(self, k: Tensor) -> Tensor:
        return self._radial_values(k.reshape(1, -1).expand(len(self), -1))

    def kvalue_grid(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Transform on the outer-product grid ``ky[:, None], kx[None, :]`` -> ``[N, ny, nx]``."""
        k = torch.sqrt(ky.to(torch.float64)[:, None] ** 2 + kx.to(torch.float64)[None, :] ** 2)
        return self.kvalue_radial(k.reshape(-1)).reshape(len(self), *k.shape)


class MoffatPSF(_RadialPSF):
    """Moffat PSFs ``I(r) ~ (1 + (r/alpha)^2)^-beta``, one per galaxy (untruncated).

    Parameters
    ----------
    fwhm : float, array or tensor, shape (N,) or scalar
        Full width at half maximum [arcsec], > 0.
    beta : float, array or tensor, shape (N,) or scalar
        Moffat index, in ``[1.1, 10]``.

    Notes
    -----
    Fourier transform: ``P(k) = 2 (x/2)^nu K_nu(x) / Gamma(nu)`` with ``x = k alpha``,
    ``nu = beta - 1`` and ``alpha = fwhm / (2 sqrt(2^(1/beta) - 1))``; it is evaluated from
    a table (linear in ``nu`` on a 0.02 grid and in ``ln x`` on a 0.01 grid; error < 1e-5).
    """

    def __init__(self, fwhm, beta) -> None:
        p = _broadcast({"fwhm": as_tensor_1d(fwhm, "fwhm"), "beta": as_tensor_1d(beta, "beta")})
        fwhm, beta = p["fwhm"], p["beta"]
        if not bool(torch.all(torch.isfinite(fwhm) & (fwhm > 0))):
            raise ValueError("fwhm must be finite and > 0 arcsec")
        lo, hi = MOFFAT_BETA_RANGE
        if not bool(torch.all(torch.isfinite(beta) & (beta >= lo) & (beta <= hi))):
            raise ValueError(f"beta must be in [{lo}, {hi}]")
        self.fwhm = fwhm
        self.beta = beta
        self.alpha = fwhm / (2.0 * torch.sqrt(2.0 ** (1.0 / beta) - 1.0))

    def __getitem__(self, index) -> MoffatPSF:
        out = object.__new__(MoffatPSF)  # parameters already validated
        out.fwhm = _index(self.fwhm, index)
        out.beta = _index(self.beta, index)
        out.alpha = _index(self.alpha, index)
        return out

    def __repr__(self) -> str:
        return f"MoffatPSF(N={len(self)})"

    def _rows(self, j_lo: int = 0, j_hi: int | None = None) -> Tensor:
        """Per-galaxy rows of the transform on the ln(x) grid (columns j_lo:j_hi), (N, T).

        Linear interpolation between the tabulated nu = beta - 1 (step 0.02).
        """
        tab = _moffat_table()
        i0, t = self._nu_position()
        return torch.lerp(tab.rows(i0)[:, j_lo:j_hi], tab.rows(i0 + 1)[:, j_lo:j_hi], t[:, None])

    def _nu_position(self) -> tuple[Tensor, Tensor]:
        tab = _moffat_table()
        pos = ((self.beta - 1.0 - tab.nu0) / tab.dnu).clamp(0, tab.n_rows - 1)
        i0 = pos.floor().clamp(max=tab.n_rows - 2).to(torch.long)
        return i0, (pos - i0).to(torch.float32)

    def _radial_shared(self, k: Tensor) -> Tensor:
        tab = _moffat_table()
        lnx0, dlnx, ncol = tab.lnx0, tab.dlnx, tab.n_cols
        k = k.to(torch.float64)
        lnk = torch.log(k)
        lna = torch.log(self.alpha)
        pos = lnk > -math.inf
        if not bool(pos.any()):
            return torch.ones(len(self), k.shape[0])
        lo_x = float(lnk[pos].min() + lna.min())
        hi_x = float(lnk[pos].max() + lna.max())
        j_lo = min(max(int(math.floor((lo_x - lnx0) / dlnx)) - 1, 0), ncol - 2)
        j_hi = min(max(int(math.ceil((hi_x - lnx0) / dlnx)) + 2, j_lo + 2), ncol)
        rows = self._rows(j_lo, j_hi)
        a = torch.where(pos, (lnk - lnx0) / dlnx - j_lo, -1e6).to(torch.float32)
        b = (lna / dlnx).to(torch.float32)
        out = lerp_rows(rows, a[None, :] + b[:, None])
        out[:, ~pos] = 1.0
        # beyond the table the transform is < 1e-50
        return torch.where(a[None, :] + b[:, None] > rows.shape[1] - 1 + (ncol - j_hi),
                           torch.zeros_like(out), out)

    def _radial_values(self, k: Tensor) -> Tensor:
        tab = _moffat_table()
        lnx0, dlnx, ncol = tab.lnx0, tab.dlnx, tab.n_cols
        x = k.to(torch.float64) * self.alpha[:, None]
        lnx = torch.log(x)
        finite = torch.isfinite(lnx)
        if bool(finite.any()):
            lo_x, hi_x = float(lnx[finite].min()), float(lnx[finite].max())
        else:
            lo_x = hi_x = lnx0
        j_lo = min(max(int(math.floor((lo_x - lnx0) / dlnx)) - 1, 0), ncol - 2)
        j_hi = min(max(int(math.ceil((hi_x - lnx0) / dlnx)) + 2, j_lo + 2), ncol)
        rows = self._rows(j_lo, j_hi)
        u = ((lnx - lnx0) / dlnx - j_lo).to(torch.float32)
        out = lerp_rows(rows, u)
        # beyond the table: 0 above (x > e^5 the transform is < 1e-50), 1 at k = 0
        out = torch.where(lnx > lnx0 + (ncol - 1) * dlnx, torch.zeros_like(out), out)
        return torch.where(x <= 0, torch.ones_like(out), out)

    def kmax(self, threshold: float) -> Tensor:
        """Wavenumber [radians/arcsec] beyond which ``P(k) < threshold``, shape (N,)."""
        tab = _moffat_table()
        i0, _ = self._nu_position()
        cut = torch.maximum(tab.xcut(i0, threshold), tab.xcut(i0 + 1, threshold))
        return cut / self.alpha

    def intensity(self, r: Tensor) -> Tensor:
        """Surface brightness [1/arcsec^2] of the unit-flux PSF at radii ``r`` [N, ...].

        Computed in the dtype of ``r``.
        """
        shape = (-1,) + (1,) * (r.ndim - 1)
        a2 = (self.alpha**2).reshape(shape)
        b = self.beta.reshape(shape)
        norm = torch.log((b - 1.0) / (math.pi * a2)).to(r.dtype)
        return torch.exp(norm - b.to(r.dtype) * torch.log1p(r * r / a2.to(r.dtype)))

    def flux_outside(self, r: Tensor) -> Tensor:
        """Fraction of the PSF light outside radii ``r`` [arcsec], shape (N, ...)."""
        shape = (-1,) + (1,) * (r.ndim - 1)
        a2 = (self.alpha**2).reshape(shape)
        b = self.beta.reshape(shape)
        return (1.0 + r * r / a2) ** (1.0 - b)


class GaussianPSF(_RadialPSF):
    """Circular Gaussian PSFs, one per galaxy.

    Parameters
    ----------
    fwhm : float, array or tensor, shape (N,) or scalar
        Full width at half maximum [arcsec], > 0.
    """

    def __init__(self, fwhm) -> None:
        fwhm = as_tensor_1d(fwhm, "fwhm")
        if not bool(torch.all(torch.isfinite(fwhm) & (fwhm > 0))):
            raise ValueError("fwhm must be finite and > 0 arcsec")
        self.fwhm = fwhm
        self.sigma = fwhm * FWHM_TO_SIGMA

    def __getitem__(self, index) -> GaussianPSF:
        out = object.__new__(GaussianPSF)  # parameters already validated
        out.fwhm = _index(self.fwhm, index)
        out.sigma = _index(self.sigma, index)
        return out

    def __repr__(self) -> str:
        return f"GaussianPSF(N={len(self)})"

    def _radial_values(self, k: Tensor) -> Tensor:
        s = self.sigma[:, None]
        return torch.exp(-0.5 * (k.to(torch.float64) * s) ** 2).to(torch.float32)

    def kmax(self, threshold: float) -> Tensor:
        """Wavenumber [radians/arcsec] beyond which ``P(k) < threshold``, shape (N,)."""
        return math.sqrt(2.0 * math.log(1.0 / threshold)) / self.sigma

    def intensity(self, r: Tensor) -> Tensor:
        """Surface brightness [1/arcsec^2] of the unit-flux PSF at radii ``r`` [N, ...]."""
        s2 = (self.sigma**2).reshape((-1,) + (1,) * (r.ndim - 1))
        return torch.exp(-0.5 * r * r / s2) / (2.0 * math.pi * s2)

    def flux_outside(self, r: Tensor) -> Tensor:
        """Fraction of the PSF light outside radii ``r`` [arcsec], shape (N, ...)."""
        s2 = (self.sigma**2).reshape((-1,) + (1,) * (r.ndim - 1))
        return torch.exp(-0.5 * r * r / s2)


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
        kx, ky = _to_batch(kx, n), _to_batch(ky, n)
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

