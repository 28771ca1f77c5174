"""Point-spread functions for the batched renderer: the analytic Moffat and Gaussian PSFs.

This is where the PSFs are imported from: the image PSFs (:class:`ImagePSF`,
:class:`BasisImagePSF`, defined in :mod:`lumos.image_psf`) and the :class:`PSF` protocol
(:mod:`lumos.psf_base`) are re-exported here.

Every PSF is *batched*: it holds one set of parameters per galaxy (tensors of shape ``[N]``)
and returns its Fourier transform for all of them at once. Conventions:

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

import numpy as np
import torch
from scipy.special import gammaln, kve
from torch import Tensor

from .image_psf import BasisImagePSF, ImagePSF
from .psf_base import PSF, as_tensor_1d, broadcast_named, cubic_rows, lerp_rows, to_batch

__all__ = ["PSF", "MoffatPSF", "GaussianPSF", "ImagePSF", "BasisImagePSF", "as_tensor_1d",
           "cubic_rows"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

#: Range of the Moffat index accepted (the untruncated profile needs beta > 1).
MOFFAT_BETA_RANGE = (1.1, 10.0)

# Grid of the tabulated Moffat transform: nu = beta - 1 and ln(x), x = k * alpha.
_MOF_NU_MIN, _MOF_NU_MAX, _MOF_NU_STEP = 0.1, 9.0, 0.02
_MOF_LNX_MIN, _MOF_LNX_MAX, _MOF_LNX_STEP = -8.0, 5.0, 0.01



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
        k = to_batch(torch.sqrt(kx * kx + ky * ky), len(self))
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
        p = broadcast_named({"fwhm": as_tensor_1d(fwhm, "fwhm"),
                             "beta": as_tensor_1d(beta, "beta")})
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
