"""Batched rendering of PSF-convolved Sersic profiles, exactly integrated over pixels.

One function draws both the simulated galaxies and the model-profile channel the network
sees, for training and for measurement, so that the two cannot disagree.

Method (Fourier space, per galaxy, vectorised over a chunk of galaxies):

1. The radial transform ``F_n(kappa)`` of a unit-flux, unit-half-light-radius Sersic
   profile is read from the packaged table (:func:`lumos.sersic.sersic_table`),
   interpolated cubically in ``n`` once per galaxy and linearly in ``ln kappa`` per
   wavenumber. An elliptical profile with circularised half-light radius ``r50``, axis
   ratio ``q`` and position angle ``pa`` has ``kappa^2 = r50^2 (k_par^2 / q + k_perp^2 q)``
   (area-preserving shear).
2. It is multiplied by the PSF transform, the pixel response ``sinc(kx p/2) sinc(ky p/2)``
   and the phase ``exp(-i k.x0)`` of the source position.
3. The spectrum is evaluated beyond the Nyquist wavenumber (up to ``fold`` times it, where
   the PSF and profile are not yet negligible; galaxies are grouped by that extent) and
   folded, which makes the result the exact pixel-centre sampling of the pixel-convolved
   profile (aliasing included), and transformed back on an ``L x L`` grid (``L`` about
   ``S + 36``; twice that for the few galaxies whose wrapped light is too structured for
   step 4).
4. The periodic copies of the FFT (wrap-around) are subtracted in real space from an
   analytic far field (:mod:`lumos.wraparound`).

The parameter ranges and the validity rule (:func:`valid_profile_parameters`) live in
:mod:`lumos.sersic` and are re-exported here. :func:`draw_psf` draws pixel-integrated PSF
images with the same renderer.

Accuracy against GalSim (``bench/bench_render.py``, 1000 random galaxies and the parameter
corners): stamp flux within a few 1e-4, pixels within ~5e-4 of the peak.

Pixel convention (see :mod:`lumos.stamps`): ``stamp[j, i]`` is centred on ``x = i, y = j``;
a source with offset ``(dx, dy)`` sits at ``((S-1)/2 + dx, (S-1)/2 + dy)``; the position
angle is counter-clockwise from the +x axis (towards +y). This matches GalSim
``drawImage(nx=S, ny=S, scale=p, offset=(dx, dy))`` of
``Sersic(n, half_light_radius=r50).shear(q=q, beta=pa*degrees)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .chunks import intra_op_threads
from .instrument import PIXEL_SCALE
from .psf_base import PSF, as_tensor_1d, broadcast_named, psf_index, select_psf
from .sersic import (
    K_THRESHOLD,
    Q_RANGE,
    RENDER_R50_RANGE,
    SERSIC_N_RANGE,
    parameter_checks,
    sersic_b,
    sersic_lookup,
    sersic_table,
    valid_profile_parameters,
)
from .wraparound import WrapCorrection

__all__ = [
    "SersicRenderer",
    "render_sersic",
    "draw_psf",
    "valid_profile_parameters",
    "sersic_b",
    "SERSIC_N_RANGE",
    "RENDER_R50_RANGE",
    "Q_RANGE",
]

_POINTS_PER_GALAXY = 5000  # chunk budget unit: wavenumbers per galaxy


def _clamped(values: Tensor, lo: float, hi: float, default: float) -> Tensor:
    v = torch.where(torch.isfinite(values), values, torch.full_like(values, default))
    return v.clamp(lo, hi)


def _fast_fft_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (even)."""
    m = max(n, 8)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1 and m % 2 == 0:
            return m
        m += 1


@dataclass(frozen=True)
class _Grid:
    """Wavenumber grid of one chunk: columns (kx >= 0 plus folded negatives), rows (ky)."""

    cols: Tensor  # (nc,) int64 frequency index a'
    rows: Tensor  # (nr,) int64 frequency index b'
    a2: Tensor  # (nc,) float32 a'^2
    b: Tensor  # (nr,) float32 b'
    b2: Tensor  # (nr,) float32 b'^2
    ab: Tensor  # (nr, nc) float32 a' b'
    target: Tensor | None  # (nr*nc,) flat index into (L, L//2+1), None: block copy
    radial_inverse: Tensor  # (nr*nc,) index into radial_k
    radial_k: Tensor  # (U,) float64 unique |k| in index units
    half: int  # A: max |index|


class SersicRenderer:
    """Batched renderer of PSF-convolved, pixel-integrated Sersic stamps.

    Parameters
    ----------
    size : int
        Stamp side S [pixels], >= 8 (60 for the network; 96 or 100 for context cutouts;
        any size for a single postage stamp).
    pixel_scale : float
        Pixel scale [arcsec/pixel].
    dtype : torch.dtype
        Working and output precision (float32 default; float64 for reference use).
    chunk : int
        Vectorisation budget: a chunk holds up to ``chunk * 5000`` wavenumbers (about
        ``chunk`` galaxies on an unfolded 60-pixel grid; fewer on larger grids, at most
        ``2 * chunk``), which keeps the working set in cache.
    fft_size : int, optional
        Side L of the FFT grid; default: the smallest fast size >= S + 36.
    fold : float
        Largest wavenumber evaluated, in units of the Nyquist wavenumber (aliasing beyond
        it is ignored); 1.5 keeps pixel errors below ~5e-4 of the peak for Moffat PSFs
        with FWHM >= 2.3 pixels.
    num_threads : int, optional
        If given, torch's intra-op thread count during :meth:`render` (restored after).
        The renderer runs many small vectorised operations: on a busy machine one thread
        per process is several times faster than two competing ones (see
        ``bench/bench_render.py``); parallelise over processes instead. Default: leave
        the thread count alone.

    Notes
    -----
    Tables and wavenumber grids are built on first use (about 1-2 s, once per process);
    later calls run at roughly 3000 stamps/s per core for 60x60 stamps of the benchmark
    population (``bench/bench_render.py``).
    """

    def __init__(self, size: int = 60, pixel_scale: float = PIXEL_SCALE,
                 dtype: torch.dtype = torch.float32, chunk: int = 64, *,
                 fft_size: int | None = None, fold: float = 1.5,
                 num_threads: int | None = None) -> None:
        size = int(size)
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        if not (math.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError(f"pixel_scale must be finite and > 0, got {pixel_scale}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if not 1.0 <= fold <= 2.0:
            raise ValueError(f"fold must be in [1, 2], got {fold}")
        self.size = size
        self.pixel_scale = float(pixel_scale)
        self.dtype = dtype
        self.cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.fft_size = int(fft_size) if fft_size else _fast_fft_size(size + 36)
        if self.fft_size < size or self.fft_size % 2:
            raise ValueError(f"fft_size must be even and >= size, got {self.fft_size}")
        self.fft_size_large = _fast_fft_size(2 * self.fft_size)
        self.fold = float(fold)
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = None if num_threads is None else int(num_threads)
        self.chunk = max(1, int(chunk))
        self._grids: dict[tuple[int, int], _Grid] = {}
        self._wrap = WrapCorrection(size, self.pixel_scale)

    # ------------------------------------------------------------------ public API
    def render(self, r50, n, q, pa, psf: PSF, offset=None, flux=None, *,
               strict: bool = False) -> Tensor:
        """Draw PSF-convolved Sersic stamps.

        Parameters
        ----------
        r50 : array-like, shape (N,) or scalar
            Circularised half-light radius [arcsec].
        n : array-like, shape (N,) or scalar
            Sersic index, in [0.3, 6.2].
        q : array-like, shape (N,) or scalar
            Axis ratio b/a, in (0, 1].
        pa : array-like, shape (N,) or scalar
            Position angle [degrees], counter-clockwise from the +x axis.
        psf : PSF
            N PSFs, or 1 broadcast to all galaxies.
        offset : array-like, shape (N, 2) or (2,), optional
            Sub-pixel offset (dx, dy) [pixels] of the source from the stamp centre.
        flux : array-like, shape (N,) or scalar, optional
            Total flux (default 1: unit total flux before clipping by the stamp).
        strict : bool
            If True, raise ValueError for NaN or out-of-range parameters; by default they
            are clamped into range (see :func:`valid_profile_parameters`).

        Returns
        -------
        torch.Tensor, shape (N, S, S), ``dtype`` of the renderer
            Pixel-integrated stamps; the source sits at ``((S-1)/2 + dx, (S-1)/2 + dy)``.

        Raises
        ------
        ValueError
            For shape mismatches, a PSF of the wrong length, or (``strict``) invalid values.
        """
        par = self._prepare(r50, n, q, pa, psf, offset, flux, strict)
        with intra_op_threads(self.num_threads):
            return self._render(par, psf, point=False)

    def render_point(self, psf: PSF, n: int | None = None, offset=None) -> Tensor:
        """Draw pixel-integrated PSF images (point sources of unit flux), shape (N, S, S)."""
        n = len(psf) if n is None else n
        par = self._prepare(np.zeros(n), np.ones(n), np.ones(n), np.zeros(n), psf, offset,
                            None, False, point=True)
        with intra_op_threads(self.num_threads):
            return self._render(par, psf, point=True)

    # ------------------------------------------------------------------ preparation
    def _prepare(self, r50, n, q, pa, psf, offset, flux, strict, point=False) -> dict:
        t = {"r50": as_tensor_1d(r50, "r50"), "n": as_tensor_1d(n, "n"),
             "q": as_tensor_1d(q, "q"), "pa": as_tensor_1d(pa, "pa")}
        if flux is not None:
            t["flux"] = as_tensor_1d(flux, "flux")
        t = broadcast_named(t)
        nobj = t["r50"].shape[0]
        if not hasattr(psf, "kvalue") or not hasattr(psf, "__len__"):
            raise ValueError(f"psf must implement the PSF protocol, got {type(psf).__name__}")
        if len(psf) not in (1, nobj):
            raise ValueError(f"psf has length {len(psf)}, expected 1 or {nobj} (one per galaxy)")
        if offset is None:
            off = torch.zeros(nobj, 2, dtype=torch.float64)
        else:
            off = torch.as_tensor(np.asarray(offset, dtype=np.float64) if not
                                  torch.is_tensor(offset) else offset).to("cpu", torch.float64)
            if off.ndim == 1 and off.shape[0] == 2:
                off = off[None].expand(nobj, 2)
            if off.ndim != 2 or off.shape[1] != 2 or off.shape[0] not in (1, nobj):
                raise ValueError(f"offset must have shape ({nobj}, 2), got {tuple(off.shape)}")
            off = off.expand(nobj, 2)
        if strict and not point:
            checks = {**parameter_checks(t), "offset": torch.isfinite(off).all(dim=1)}
            ranges = {"r50": f"(0, {RENDER_R50_RANGE[1]}] arcsec", "n": f"{list(SERSIC_N_RANGE)}",
                      "q": f"[{Q_RANGE[0]}, 1]", "pa": "finite", "offset": "finite"}
            for name, ok in checks.items():
                if not bool(ok.all()):
                    bad = int((~ok).sum())
                    raise ValueError(f"{name} out of range {ranges[name]} for {bad} galaxies")
        off = torch.where(torch.isfinite(off), off, torch.zeros_like(off))
        par = {
            "r50": _clamped(t["r50"], RENDER_R50_RANGE[0], RENDER_R50_RANGE[1], 0.5) if not point
            else t["r50"],
            "n": _clamped(t["n"], *SERSIC_N_RANGE, 1.0),
            "q": _clamped(t["q"], Q_RANGE[0], 1.0, 1.0),
            "pa": torch.where(torch.isfinite(t["pa"]), t["pa"], torch.zeros_like(t["pa"])),
            "offset": off.contiguous(),
            "flux": t.get("flux"),
            "count": nobj,
        }
        return par

    # ------------------------------------------------------------------ grids
    def _grid(self, L: int, half: int) -> _Grid:
        """Wavenumber grid for FFT size ``L`` and maximum index ``half`` (cached)."""
        g = self._grids.get((L, half))
        if g is not None:
            return g
        nyq = L // 2
        if half <= nyq:
            cols = torch.arange(0, half + 1)
            rows = torch.arange(-half, half + 1)
            target = None
        else:
            cols = torch.cat([torch.arange(0, nyq + 1), torch.arange(-half, -nyq + 1)])
            rows = torch.arange(-half, half + 1)
            col_t = torch.where(cols >= 0, cols, cols + L)
            row_t = torch.remainder(rows, L)
            target = (row_t[:, None] * (nyq + 1) + col_t[None, :]).reshape(-1)
        r2 = (rows[:, None] ** 2 + cols[None, :] ** 2).reshape(-1)
        uniq, inverse = torch.unique(r2, return_inverse=True)
        g = _Grid(
            cols=cols,
            rows=rows,
            a2=(cols.to(torch.float32) ** 2),
            b=rows.to(torch.float32),
            b2=(rows.to(torch.float32) ** 2),
            ab=(rows.to(torch.float32)[:, None] * cols.to(torch.float32)[None, :]).contiguous(),
            target=target,
            radial_inverse=inverse,
            radial_k=torch.sqrt(uniq.to(torch.float64)),
            half=half,
        )
        self._grids[(L, half)] = g
        return g

    def _needed_half(self, par: dict, psf: PSF, point: bool, L: int) -> Tensor:
        """Per galaxy, the largest frequency index where the spectrum is not negligible."""
        p = self.pixel_scale
        dk = 2 * math.pi / (L * p)
        cap = int(math.floor(self.fold * L / 2))
        nobj = par["count"]
        k_need = torch.full((nobj,), math.inf, dtype=torch.float64)
        kmax = getattr(psf, "kmax", None)
        if kmax is not None:
            kp = kmax(K_THRESHOLD).to(torch.float64)
            k_need = torch.minimum(k_need, kp.expand(nobj) if kp.shape[0] == 1 else kp)
        if not point:
            tab = sersic_table()
            pos = ((par["n"] - tab.n_min) / tab.n_step).clamp(0, tab.kappa_cut.shape[0] - 1)
            # Threshold relative to the peak pixel of a smooth profile, ~ (p / r50)^2:
            # large galaxies keep fainter wavenumbers.
            rel = (4 * (p / par["r50"]) ** 2).clamp(max=1.0)
            level = torch.ceil(-torch.log10(rel)).clamp(0, tab.kappa_cut.shape[1] - 1).long()
            cut = torch.maximum(tab.kappa_cut[pos.floor().long(), level],
                                tab.kappa_cut[pos.ceil().long(), level])
            ks = cut / (par["r50"] * torch.sqrt(par["q"]))
            k_need = torch.minimum(k_need, ks)
        half = torch.ceil(k_need / dk) + 1
        half = torch.nan_to_num(half, nan=cap, posinf=cap).clamp(4, cap)
        # Round up to a multiple of 4 (fewer distinct grids).
        return (torch.ceil(half / 4) * 4).clamp(max=cap).to(torch.long)

    # ------------------------------------------------------------------ rendering
    def _render(self, par: dict, psf: PSF, point: bool) -> Tensor:
        nobj = par["count"]
        S = self.size
        out = torch.empty(nobj, S, S, dtype=self.dtype)
        if nobj == 0:
            return out
        large = self._needs_large_fft(par, psf, point)
        for L, members in ((self.fft_size, ~large), (self.fft_size_large, large)):
            idx = torch.nonzero(members).reshape(-1)
            if idx.numel() == 0:
                continue
            if idx.numel() == nobj:
                out = self._render_group(par, psf, point, L)
            else:
                sub = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in par.items()}
                sub["count"] = idx.numel()
                out[idx] = self._render_group(sub, select_psf(psf, psf_index(psf, idx)),
                                              point, L)
        if par["flux"] is not None:
            out *= par["flux"].to(self.dtype)[:, None, None]
        return out

    def _render_group(self, par: dict, psf: PSF, point: bool, L: int) -> Tensor:
        """Render galaxies on FFT grids of size ``L`` and correct their wrap-around."""
        nobj = par["count"]
        S = self.size
        out = torch.empty(nobj, S, S, dtype=self.dtype)
        halves = self._needed_half(par, psf, point, L)
        order = torch.argsort(halves, stable=True)
        sorted_halves = halves[order].tolist()
        start = 0
        while start < nobj:
            # as many galaxies as fit the working-set budget at the chunk's largest grid
            stop = start + 1
            while stop < nobj and stop - start < 2 * self.chunk and (
                    (stop - start + 1) * self._grid_points(L, sorted_halves[stop])
                    <= self.chunk * _POINTS_PER_GALAXY):
                stop += 1
            idx = order[start:stop]
            half = int(sorted_halves[stop - 1])
            start = stop
            sub_psf = select_psf(psf, psf_index(psf, idx))
            sub = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in par.items()}
            out[idx] = self._render_chunk(sub, sub_psf, half, point, L)
        return self._wrap.subtract(out, par, psf, point, L)

    @staticmethod
    def _grid_points(L: int, half: int) -> int:
        """Number of wavenumbers evaluated per galaxy for a grid (see :meth:`_grid`)."""
        cols = half + 1 if half <= L // 2 else half + 2
        return cols * (2 * half + 1)

    def _needs_large_fft(self, par: dict, psf: PSF, point: bool) -> Tensor:
        """Galaxies drawn on the FFT grid twice as large (see :mod:`lumos.wraparound`)."""
        if point or self.fft_size_large == self.fft_size:
            return torch.zeros(par["count"], dtype=torch.bool)
        return self._wrap.needs_large_fft(par, psf, self.fft_size)

    def _render_chunk(self, par: dict, psf: PSF, half: int, point: bool, L: int) -> Tensor:
        S, p = self.size, self.pixel_scale
        g = self._grid(L, half)
        nc, nr = g.cols.shape[0], g.rows.shape[0]
        c = par["r50"].shape[0]
        rdt = self.dtype
        dk = 2 * math.pi / (L * p)

        # Pixel response and phase of the source position (separable).
        x0 = (S - 1) / 2.0 + par["offset"]  # (c, 2) in grid pixels
        ex = self._axis_factor(g.cols, x0[:, 0], L)  # (c, nc)
        ey = self._axis_factor(g.rows, x0[:, 1], L)  # (c, nr)

        # PSF transform on the grid.
        radial = hasattr(psf, "kvalue_radial")
        if radial:
            mtf = psf.kvalue_radial(g.radial_k * dk).to(rdt)  # (c, U)
            psf_grid = None
        elif hasattr(psf, "kvalue_grid"):
            psf_grid = psf.kvalue_grid(g.cols.double() * dk, g.rows.double() * dk)
        else:
            kx = (g.cols.double() * dk)[None, None, :]
            ky = (g.rows.double() * dk)[None, :, None]
            psf_grid = psf.kvalue(kx, ky).expand(c, nr, nc)

        if point:
            if radial:
                spec = torch.index_select(mtf, 1, g.radial_inverse).view(c, nr, nc)
            else:
                spec = psf_grid.to(self.cdtype if psf_grid.is_complex() else rdt)
            spec = spec * (ey[:, :, None] * ex[:, None, :])
        else:
            coef, lut_val, lut_slope, u_off = sersic_lookup(par, half, dk)
            spec = _sersic_spectrum(coef, g, lut_val, lut_slope, u_off,
                                    0.5 / sersic_table().lnk_step,
                                    mtf if radial else None, ex, ey)
            if not radial:
                spec = spec * psf_grid.to(self.cdtype)

        # Fold onto the rfft half plane and transform back.
        nh = L // 2 + 1
        if g.target is None:
            full = torch.zeros(c, L, nh, dtype=self.cdtype)
            full[:, : half + 1, : half + 1] = spec[:, half:, :]
            full[:, L - half:, : half + 1] = spec[:, :half, :]
        else:
            full = torch.zeros(c, L * nh, dtype=self.cdtype)
            full.index_add_(1, g.target, spec.reshape(c, nr * nc))
            full = full.view(c, L, nh)
        return torch.fft.irfft2(full, s=(L, L))[:, :S, :S]

    def _axis_factor(self, idx: Tensor, x0: Tensor, L: int) -> Tensor:
        """``sinc(pi a/L) exp(-2 pi i a x0 / L)`` for frequency indices ``a``: (c, len)."""
        a = idx.to(torch.float64)
        sinc = torch.sinc(a / L)
        phase = -2 * math.pi / L * (x0[:, None] * a[None, :])
        # Reduce the phase before the float32 cast (exact for the integer part of x0 a / L).
        phase = torch.remainder(phase, 2 * math.pi)
        return torch.polar(sinc[None, :].expand_as(phase).to(self.dtype), phase.to(self.dtype))


def _sersic_spectrum(coef: Tensor, g: _Grid, lut_val: Tensor, lut_slope: Tensor,
                     u_off: float, u_scale: float, mtf: Tensor | None, ex: Tensor,
                     ey: Tensor) -> Tensor:
    """Spectrum of a chunk: Sersic transform x PSF x pixel x phase, (c, nr, nc) complex."""
    c = coef.shape[0]
    nr, nc = g.rows.shape[0], g.cols.shape[0]
    quad = torch.addcmul((coef[:, 0, None] * g.b2[None, :])[:, :, None],
                         coef[:, 1, None, None], g.a2[None, None, :])
    quad.addcmul_(coef[:, 2, None, None], g.ab[None])
    u = quad.log_().mul_(u_scale).add_(u_off)
    u.clamp_(0.0, lut_val.shape[1] - 1.0)
    i = u.to(torch.int64).view(c, nr * nc)
    frac = u.view(c, nr * nc).sub_(i)
    val = torch.addcmul(torch.gather(lut_val, 1, i), frac, torch.gather(lut_slope, 1, i))
    if mtf is not None:
        val.mul_(torch.index_select(mtf, 1, g.radial_inverse))
    return (val.view(c, nr, nc) * ex[:, None, :]).mul_(ey[:, :, None])


@lru_cache(maxsize=8)
def _cached_renderer(size: int, pixel_scale: float) -> SersicRenderer:
    return SersicRenderer(size=size, pixel_scale=pixel_scale)


def render_sersic(r50, n, q, pa, psf: PSF, offset=None, flux=None, size: int = 60,
                  pixel_scale: float = PIXEL_SCALE) -> Tensor:
    """Draw PSF-convolved Sersic stamps with a cached :class:`SersicRenderer`.

    Parameters are those of :meth:`SersicRenderer.render`; ``size`` [pixels] and
    ``pixel_scale`` [arcsec/pixel] select the cached renderer.

    Returns
    -------
    torch.Tensor, float32, shape (N, size, size)
    """
    return _cached_renderer(int(size), float(pixel_scale)).render(
        r50, n, q, pa, psf, offset=offset, flux=flux)


def draw_psf(psf: PSF, size: int, pixel_scale: float) -> Tensor:
    """Draw pixel-integrated PSF images centred on the stamp centre.

    Parameters
    ----------
    psf : PSF
        Batch of N PSFs.
    size : int
        Image side [pixels], >= 8.
    pixel_scale : float
        Pixel scale [arcsec/pixel].

    Returns
    -------
    torch.Tensor, float32, shape (N, size, size)
        Unit-flux PSFs integrated over pixels, centred at ``((size-1)/2, (size-1)/2)``;
        the sum is below 1 by the PSF light falling outside the image.
    """
    return SersicRenderer(size=size, pixel_scale=pixel_scale).render_point(psf, n=len(psf))
