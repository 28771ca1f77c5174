"""The wrap-around correction of the FFT renderer: the light of the periodic copies.

An FFT on an ``L x L`` grid draws the sum over periodic copies ``g(x + m L)`` of a
PSF-convolved profile; extended, flattened, high-n galaxies put light far beyond the box,
which wraps into the stamp. :class:`WrapCorrection` subtracts it in real space: far from
the source the PSF-convolved profile is the analytic Sersic light plus the analytic PSF
wings; the nearest rings of copies (up to ``WRAP_MAX_COPIES``) are evaluated on coarse nodes
(spacing set by the curvature of the profile and the brightness of the wrapped light) and
interpolated bicubically in log space, the rest is a uniform level from the light outside
them. Galaxies whose wrapped light is too structured for that far-field model (error above
``WRAP_HARD``) are chosen by :meth:`WrapCorrection.needs_large_fft` for a grid twice as large.

The renderer's per-galaxy parameters are passed as its dict ``par`` (tensors ``n``, ``r50``,
``q``, ``pa``, ``offset`` of shape (N,) or (N, 2), and ``count``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .psf_base import PSF, psf_index, select_psf
from .sersic import sersic_b

__all__ = ["WrapCorrection", "WRAP_NEED", "WRAP_TAIL", "WRAP_HARD", "WRAP_MAX_COPIES"]

WRAP_NEED = 1e-6  # light fraction beyond the nearest copy distance that triggers correction
WRAP_TAIL = 1e-5  # light fraction beyond the explicit copies treated as a uniform level
WRAP_HARD = 3e-3  # far-field model error (flux units) above which a 2x FFT grid is used
WRAP_MAX_COPIES = 3  # rings of periodic copies evaluated explicitly


class WrapCorrection:
    """Wrap-around light of the periodic FFT copies for stamps of one size and pixel scale.

    Parameters
    ----------
    size : int
        Stamp side S [pixels].
    pixel_scale : float
        Pixel scale [arcsec/pixel].
    """

    def __init__(self, size: int, pixel_scale: float) -> None:
        self.size = int(size)
        self.pixel_scale = float(pixel_scale)

    def needs_large_fft(self, par: dict, psf: PSF, fft_size: int) -> Tensor:
        """Galaxies whose wrap-around light is too strong for the analytic far field.

        The far-field model ignores the PSF smoothing of the wrapped light; its relative
        error is about ``sigma^2 / 2 |laplacian ln f|`` at the nearest copies. Galaxies for
        which that error times the wrapped light fraction exceeds ``WRAP_HARD`` are drawn
        on an FFT grid twice as large (``fft_size`` is the normal grid).
        """
        nobj = par["count"]
        L, S, p = fft_size, self.size, self.pixel_scale
        n, r50, q = par["n"], par["r50"], par["q"]
        b = sersic_b(n)
        ext = half_extent(S, par["offset"])
        near = (L - ext - 1.0) * p
        frac = torch.special.gammaincc(2 * n, b * (near * torch.sqrt(q) / r50) ** (1.0 / n))
        fwhm = getattr(psf, "fwhm", None)
        fwhm = (torch.ones(1, dtype=torch.float64) if fwhm is None else fwhm.to(torch.float64))
        fwhm = fwhm.expand(nobj) if fwhm.shape[0] == 1 else fwhm
        sigma2 = 2.0 * (fwhm / 2.3548) ** 2 + p * p / 12.0
        curv = torch.zeros(nobj, dtype=torch.float64)
        for dist in (L - ext, L + ext):
            rc = dist * p * torch.sqrt(q)
            g1 = (b / n) * (rc / r50) ** (1.0 / n) / rc
            g2 = g1 * (1.0 / n - 1.0).abs() / rc
            curv = torch.maximum(curv, g1 / (q * rc) + g2 * q + g1 * g1 * q)
        return frac * 0.5 * sigma2 * curv > WRAP_HARD

    def subtract(self, img: Tensor, par: dict, psf: PSF, point: bool, L: int) -> Tensor:
        """Subtract the light of the FFT's periodic copies (analytic far field).

        The FFT image is the sum over copies ``g(x + m L)``; far from the source the
        PSF-convolved profile is ``g ~ f + P`` (Sersic light plus PSF wings, pixel area
        times surface brightness). Copies with ``max(|mx|, |my|) <= M`` are evaluated on
        coarse nodes and interpolated (log-bilinear), farther ones as a uniform level.
        """
        S, p = self.size, self.pixel_scale
        c = img.shape[0]
        use_psf = hasattr(psf, "flux_outside") and hasattr(psf, "intensity")
        if point and not use_psf:
            return img
        ext = half_extent(S, par["offset"])
        near = (L - ext - 1.0) * p  # light beyond this box can wrap into the stamp
        # Cheap upper bound first: light beyond the circle inscribed in the box.
        bound = torch.zeros(c, dtype=torch.float64)
        if not point:
            n, r50, q = par["n"], par["r50"], par["q"]
            b = sersic_b(n)
            z = b * (near * torch.sqrt(q) / r50) ** (1.0 / n)
            bound += torch.special.gammaincc(2 * n, z)
        if use_psf:
            ps = psf.flux_outside(torch.full((len(psf), 1), near, dtype=torch.float64))[:, 0]
            bound += ps.expand(c) if ps.shape[0] == 1 else ps
        cand = torch.nonzero(bound > WRAP_NEED).reshape(-1)
        if cand.numel() == 0:
            return img
        nc = cand.shape[0]
        sub = {k: (v[cand] if torch.is_tensor(v) else v) for k, v in par.items()}
        sub_psf = select_psf(psf, psf_index(psf, cand)) if use_psf else None
        sers = None if point else self._sersic_far_params(sub)
        m_max = WRAP_MAX_COPIES

        def outside(widths: list[float], keep: Tensor) -> Tensor:
            """Light fractions outside squares of half-widths [pixels]: (W, len(keep))."""
            hw = torch.tensor(widths, dtype=torch.float64) * p
            out = torch.zeros(len(widths), keep.shape[0], dtype=torch.float64)
            if sers is not None:
                out += self._sersic_outside_box({k: v[keep] for k, v in sers.items()}, hw)
            if sub_psf is not None:
                out += _psf_outside_box(select_psf(sub_psf, psf_index(sub_psf, keep)), hw,
                                        keep.shape[0])
            return out

        need = outside([L - ext - 1.0], torch.arange(nc))[0] > WRAP_NEED
        if not bool(need.any()):
            return img
        # keep only the galaxies that need a correction
        keep = torch.nonzero(need).reshape(-1)
        cand, nc = cand[keep], keep.shape[0]
        sub = {k: (v[keep] if torch.is_tensor(v) else v) for k, v in sub.items()}
        sub_psf = select_psf(sub_psf, psf_index(sub_psf, keep)) if sub_psf is not None else None
        sers = {k: v[keep] for k, v in sers.items()} if sers is not None else None
        # light beyond the reach of rings 1..m, and the cell boxes of rings > m (tail level)
        widths = [(m + 1) * L - ext - 1.0 for m in range(1, m_max + 1)]
        widths += [(m + 0.5) * L for m in range(1, m_max + 1)]
        outs = outside(widths, torch.arange(nc))
        ok = outs[:m_max] < WRAP_TAIL
        m_sel = torch.where(ok.any(dim=0), ok.to(torch.int8).argmax(dim=0) + 1,
                            torch.full_like(cand, m_max))
        tail = outs[m_max - 1 + m_sel, torch.arange(nc)] / (L * L)
        tail = torch.where(ok[m_sel - 1, torch.arange(nc)], torch.zeros_like(tail), tail)
        step = self._node_step(sers, img[cand].amax(dim=(1, 2)), L, ext)
        keys = m_sel * 1000 + step
        img = img.clone()
        for key in torch.unique(keys).tolist():
            m, h = divmod(int(key), 1000)
            local = torch.nonzero(keys == key).reshape(-1)
            w = self._wrap_light(sub, local, sub_psf, sers, 1, 1, h, L)
            if m > 1:
                w += self._wrap_light(sub, local, sub_psf, sers, 2, m, min(2 * h, 15), L)
            w += tail[local][:, None, None].to(w.dtype)
            img[cand[local]] -= w.to(img.dtype)
        return img

    def _sersic_far_params(self, par: dict) -> dict:
        n, r50, q = par["n"], par["r50"], par["q"]
        b = sersic_b(n)
        log_i0 = (2 * n * torch.log(b) - math.log(2 * math.pi) - torch.log(n)
                  - torch.lgamma(2 * n) - 2 * torch.log(r50))
        theta = torch.deg2rad(par["pa"])
        return {"n": n, "r50": r50, "q": q, "b": b, "log_i0": log_i0,
                "cos": torch.cos(theta), "sin": torch.sin(theta)}

    @staticmethod
    def _sersic_outside_box(sers: dict, half_widths: Tensor, nphi: int = 48) -> Tensor:
        """Fraction of each Sersic profile's light outside squares ``|x|,|y| <= w``: (W, c).

        Integrates the radial complementary CDF over directions in the coordinates where
        the profile is circular (the square becomes a parallelogram); ``half_widths`` in
        arcsec, shape (W,).
        """
        phi = (torch.arange(nphi, dtype=torch.float64) + 0.5) * (math.pi / nphi)
        sq = torch.sqrt(sers["q"])[:, None]
        u = torch.cos(phi)[None, :] / sq
        v = torch.sin(phi)[None, :] * sq
        cs, sn = sers["cos"][:, None], sers["sin"][:, None]
        dx = u * cs - v * sn
        dy = u * sn + v * cs
        inv = 1.0 / torch.maximum(dx.abs(), dy.abs())  # (c, nphi): radius of the unit square
        n = sers["n"][:, None]
        base = sers["b"][:, None] * (inv / sers["r50"][:, None]) ** (1.0 / n)  # (c, nphi)
        z = base[None] * (half_widths[:, None, None] ** (1.0 / n)[None])  # (W, c, nphi)
        a = (2 * n)[None].expand_as(z)
        return torch.special.gammaincc(a, z).mean(dim=2)

    def _node_step(self, sers: dict | None, peak: Tensor, L: int, ext: float) -> Tensor:
        """Node spacing [pixels] for log-bilinear interpolation of the wrapped light.

        The interpolation error of ``ln f`` is about ``h^2 / 8`` times its curvature (along
        the minor and major axes at the nearest and farthest copies of the first ring); it
        is kept below ``2e-4 peak / W`` (at least 0.01), ``W`` being the brightest wrapped
        light per pixel and ``peak`` the brightest stamp pixel.
        """
        p = self.pixel_scale
        count = peak.shape[0]
        if sers is None:
            return torch.full((count,), 12, dtype=torch.long)
        n, r50, q, b = (sers[k] for k in ("n", "r50", "q", "b"))
        curv = torch.zeros(count, dtype=torch.float64)
        for dist in (L - ext, L + ext):
            rc = dist * p * torch.sqrt(q)  # circular radius on the major axis [arcsec]
            g1 = (b / n) * (rc / r50) ** (1.0 / n) / rc  # |d ln f / d rc|
            g2 = g1 * (1.0 / n - 1.0).abs() / rc  # |d2 ln f / d rc2|
            minor = g1 / (q * rc)  # d2/dv2 across the major axis
            major = g2 * q  # d2/du2 along it
            curv = torch.maximum(curv, torch.maximum(minor, major) * p * p)
        rc_near = (L - ext - 1.0) * p * torch.sqrt(q)
        w_max = 2 * p * p * torch.exp(sers["log_i0"] - b * (rc_near / r50) ** (1.0 / n))
        eps = (2e-4 * peak.to(torch.float64) / w_max.clamp(min=1e-300)).clamp(0.01, 1.0)
        h = torch.sqrt(8 * eps / curv.clamp(min=1e-12)).clamp(1, 12)
        steps = torch.tensor([1, 2, 3, 4, 6, 8, 12])
        return steps[torch.searchsorted(steps.to(torch.float64), h, right=True) - 1]

    def _wrap_light(self, par: dict, sel: Tensor, psf, sers, ring_lo: int, ring_hi: int,
                    step: int, L: int) -> Tensor:
        """Light of the copies in rings ``ring_lo..ring_hi`` at the stamp pixels, (g, S, S).

        Ring ``r`` holds the copies with ``max(|mx|, |my|) = r``; evaluated (float32) on
        nodes ``step`` pixels apart and interpolated log-bilinearly.
        """
        S, p = self.size, self.pixel_scale
        f32 = torch.float32
        nodes = S if step <= 1 else int(math.ceil((S - 1) / step)) + 1
        if nodes == S:
            xs = torch.arange(S, dtype=torch.float64)
        else:  # nodes spanning the stamp plus one ghost node beyond each edge
            h = (S - 1) / (nodes - 1)
            xs = torch.linspace(-h, S - 1 + h, nodes + 2, dtype=torch.float64)
        shifts = torch.arange(-ring_hi, ring_hi + 1, dtype=torch.float64)
        sx, sy = torch.meshgrid(shifts, shifts, indexing="xy")
        ring = torch.maximum(sx.abs(), sy.abs())
        keep = (ring >= ring_lo) & (ring <= ring_hi)
        sx, sy = sx[keep] * L, sy[keep] * L  # (K,)
        x0 = (S - 1) / 2.0 + par["offset"][sel]  # (g, 2)
        # positions [arcsec] relative to the source: (g, K, nodes_y, nodes_x)
        dx = ((xs[None, None, None, :] + sx[None, :, None, None] - x0[:, 0, None, None, None])
              * p).to(f32)
        dy = ((xs[None, None, :, None] + sy[None, :, None, None] - x0[:, 1, None, None, None])
              * p).to(f32)
        total = torch.zeros(sel.shape[0], xs.shape[0], xs.shape[0], dtype=f32)
        shape = (-1, 1, 1, 1)
        if sers is not None:
            n, q, b, log_i0, cs, sn, r50 = (sers[k][sel].reshape(shape) for k in
                                            ("n", "q", "b", "log_i0", "cos", "sin", "r50"))
            u = dx * cs.to(f32) + dy * sn.to(f32)
            v = dy * cs.to(f32) - dx * sn.to(f32)
            rc2 = u * u * q.to(f32) + v * v / q.to(f32)
            # (rc / r50)^(1/n) = exp((ln rc^2 - 2 ln r50) / (2n))
            ex = torch.exp((torch.log(rc2) - (2 * torch.log(r50)).to(f32)) * (0.5 / n).to(f32))
            total += torch.exp(log_i0.to(f32) - b.to(f32) * ex).sum(dim=1)
        if psf is not None:
            sub = select_psf(psf, psf_index(psf, sel))
            r = torch.sqrt(dx * dx + dy * dy)
            inten = sub.intensity(r.reshape(r.shape[0], -1)).reshape(r.shape)
            total += inten.sum(dim=1).to(f32)
        total *= p * p
        if nodes == S:
            return total
        # Interpolate log(light) (bicubic, Catmull-Rom) from the coarse nodes to every pixel.
        tiny = 1e-37
        interp = _cubic_interp_matrix(nodes, S)  # (S, nodes + 2)
        logw = torch.log(total + tiny)
        fine = interp @ logw @ interp.T
        return torch.exp(fine) - tiny


@lru_cache(maxsize=32)
def _cubic_interp_matrix(nodes: int, size: int) -> Tensor:
    """Matrix (size, nodes + 2) of Catmull-Rom interpolation to every integer position.

    The ``nodes`` points span ``[0, size - 1]`` evenly, with one extra node beyond each end.
    """
    pos = torch.arange(size, dtype=torch.float64) * (nodes - 1) / (size - 1)
    i0 = pos.floor().clamp(max=nodes - 2).long()
    t = pos - i0
    t2, t3 = t * t, t * t * t
    weights = [(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2,
               (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2]
    m = torch.zeros(size, nodes + 2, dtype=torch.float64)
    rows = torch.arange(size)
    for j, w in enumerate(weights):  # node i0 - 1 + j is column i0 + j (ghost offset 1)
        m[rows, i0 + j] += w
    return m.to(torch.float32)


def _psf_outside_box(psf: PSF, half_widths: Tensor, c: int, nphi: int = 32) -> Tensor:
    """Fraction of each circular PSF's light outside squares of half-widths [arcsec]: (W, c)."""
    phi = (torch.arange(nphi, dtype=torch.float64) + 0.5) * (0.5 * math.pi / nphi)
    radius = half_widths[:, None] / torch.maximum(torch.cos(phi), torch.sin(phi))[None, :]
    r = radius.reshape(1, -1).expand(len(psf), -1)
    out = psf.flux_outside(r).reshape(len(psf), half_widths.shape[0], nphi).mean(dim=2).T
    return out.expand(-1, c) if out.shape[1] == 1 else out


def half_extent(size: int, offset: Tensor) -> float:
    """Largest distance [pixels] from a source to the edge of its stamp (any galaxy)."""
    worst = float(offset.abs().max()) if offset.numel() else 0.0
    return size / 2.0 + max(0.0, worst - 0.5)
