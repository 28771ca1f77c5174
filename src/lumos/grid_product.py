"""The normalised product of several Gaussian-mixture PDFs per group, summarised on a grid.

The product of n K-component mixtures is exactly a mixture of K^n Gaussians; rather than
enumerate them, :func:`product_summaries` evaluates the product density exactly on an
adaptive grid (a coarse grid over the span of all components, zoomed three times onto the
region within e^-40 of the maximum, then a fine grid of ``grid_points`` nodes), which costs
O(n K grid_points) per group, and gives its summaries (mean, std, median, peak, quantiles,
sigma68, sigma95, eta) with the conventions of :mod:`lumos.mixture`. Accuracy against a
brute-force grid product: ~1e-4 of the product's sigma or better (``tests/test_coadd.py``).
Blocks of groups run in parallel threads (:func:`lumos.chunks.map_chunks`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .chunks import map_chunks
from .mixture import SUMMARY_KEYS
from .stats import P025, P16, P84, P975

__all__ = ["product_summaries"]

_PDF_KEYS = SUMMARY_KEYS
_LEVELS = (P025, P16, 0.5, P84, P975)
_ZOOM_POINTS = 128
_ZOOM_STEPS = 3
_LOG_WINDOW = 40.0
_BLOCK_ELEMENTS = 2_000_000


def _log_density_terms(w, mu, sg, trunc):
    """Per-component log(w / (Phi(mu/sigma) sigma sqrt(2 pi))) for the grid evaluation."""
    lw = torch.log(w) - torch.log(sg) - 0.5 * math.log(2.0 * math.pi)
    norm = torch.special.log_ndtr(mu / sg)
    return lw - torch.where(trunc[..., None], norm, torch.zeros_like(norm))


def _eval_log_product(x, lw, mu, inv_s, use):
    """log prod_i p_i(x) (unnormalised) on grids x [G, P]; factors [G, n, K], use [G, n]."""
    z = (x[:, :, None, None] - mu[:, None, :, :]) * inv_s[:, None, :, :]
    per_factor = torch.logsumexp(lw[:, None, :, :] - 0.5 * z * z, dim=3)  # [G, P, n]
    per_factor = torch.where(use[:, None, :], per_factor, torch.zeros_like(per_factor))
    return per_factor.sum(dim=2)


def _grid(lo, hi, n_points):
    t = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)
    return lo[:, None] + (hi - lo)[:, None] * t[None, :]


def _cells(f: Tensor) -> Tensor:
    """Integrals of f over the grid cells, in units of the spacing h ([G, P] -> [G, P-1]).

    4-point rule (-f[j-1] + 13 f[j] + 13 f[j+1] - f[j+2]) / 24 inside; one-sided 3-point
    rules (5 f[0] + 8 f[1] - f[2]) / 12 in the end cells (the first node is flux 0 of a
    truncated PDF, where the density can be large). Both are exact for cubics.
    """
    cell = torch.empty_like(f[:, 1:])
    cell[:, 1:-1] = (13.0 * (f[:, 1:-2] + f[:, 2:-1]) - f[:, :-3] - f[:, 3:]) / 24.0
    cell[:, 0] = (5.0 * f[:, 0] + 8.0 * f[:, 1] - f[:, 2]) / 12.0
    cell[:, -1] = (5.0 * f[:, -1] + 8.0 * f[:, -2] - f[:, -3]) / 12.0
    return cell


def _polish_peak(x, lo, hi, lw, mu, inv_s, use, steps: int = 3):
    """Newton iterations on the exact log product density, kept within [lo, hi]."""
    iv = inv_s * inv_s
    for _ in range(steps):
        z = (x[:, None, None] - mu) * inv_s
        logr = lw - 0.5 * z * z
        r = torch.softmax(logr, dim=2)  # [G, n, K]
        d = (mu - x[:, None, None]) * iv
        g1 = (r * d).sum(dim=2)
        g2 = (r * (d * d - iv)).sum(dim=2) - g1 * g1
        g1 = torch.where(use, g1, torch.zeros_like(g1)).sum(dim=1)
        g2 = torch.where(use, g2, torch.zeros_like(g2)).sum(dim=1)
        new = x - g1 / g2
        ok = (g2 < 0) & torch.isfinite(new) & (new >= lo) & (new <= hi)
        x = torch.where(ok, new, x)
    return x


def _block_summaries(w, mu, sg, trunc, use, grid_points):
    """Summaries of the normalised product of the mixtures of each group (one block)."""
    g = w.shape[0]
    inv_s = 1.0 / sg
    lw = _log_density_terms(w, mu, sg, trunc)
    comp_use = use[:, :, None] & (w > 0)
    big = torch.tensor(math.inf, dtype=torch.float64)
    lo = torch.where(comp_use, mu - 12.0 * sg, big).amin(dim=(1, 2))
    hi = torch.where(comp_use, mu + 12.0 * sg, -big).amax(dim=(1, 2))
    any_trunc = (trunc & use).any(dim=1)
    s_max = torch.where(comp_use, sg, -big).amax(dim=(1, 2))
    lo = torch.where(any_trunc, torch.zeros_like(lo), lo)
    hi = torch.where(any_trunc, torch.maximum(hi, 12.0 * s_max), hi)
    # zoom onto the region holding the product's mass
    for _ in range(_ZOOM_STEPS):
        x = _grid(lo, hi, _ZOOM_POINTS)
        lp = _eval_log_product(x, lw, mu, inv_s, use)
        keep = lp >= lp.amax(dim=1, keepdim=True) - _LOG_WINDOW
        idx = torch.arange(_ZOOM_POINTS)
        first = torch.where(keep, idx, _ZOOM_POINTS).amin(dim=1)
        last = torch.where(keep, idx, -1).amax(dim=1)
        rows = torch.arange(g)
        new_lo = x[rows, torch.clamp(first - 1, min=0)]
        new_hi = x[rows, torch.clamp(last + 1, max=_ZOOM_POINTS - 1)]
        shrunk = bool(((new_hi - new_lo) < 0.7 * (hi - lo)).any())
        lo, hi = new_lo, new_hi
        if not shrunk:  # no row zoomed in appreciably: the window is found
            break
    x = _grid(lo, hi, grid_points)
    lp = _eval_log_product(x, lw, mu, inv_s, use)
    top = lp.amax(dim=1, keepdim=True)
    p = torch.exp(lp - top)
    h = (hi - lo) / (grid_points - 1)
    cum = torch.zeros_like(p)
    cum[:, 1:] = torch.cumsum(torch.clamp(_cells(p), min=0.0), dim=1) * h[:, None]
    norm = cum[:, -1:]
    cdf = cum / norm
    pn = p / norm
    mean = _cells(x * pn).sum(dim=1) * h
    var = _cells((x - mean[:, None]) ** 2 * pn).sum(dim=1) * h
    # quantiles: invert the cumulative trapezoid exactly within a cell (p linear there)
    levels = torch.tensor(_LEVELS, dtype=torch.float64).expand(g, -1).contiguous()
    j = torch.searchsorted(cdf, levels, right=False).clamp(1, grid_points - 1) - 1
    c0 = torch.gather(cdf, 1, j)
    p0 = torch.gather(pn, 1, j)
    p1 = torch.gather(pn, 1, j + 1)
    x0 = torch.gather(x, 1, j)
    need = levels - c0
    slope = (p1 - p0) / h[:, None]
    # solve p0 t + slope t^2 / 2 = need for t in [0, h]
    disc = torch.clamp(p0 * p0 + 2.0 * slope * need, min=0.0)
    root = 2.0 * need / (p0 + torch.sqrt(disc))
    t = torch.where(root.isfinite(), root, 0.5 * h[:, None])
    q = x0 + torch.minimum(torch.maximum(t, torch.zeros_like(t)), h[:, None])
    # peak: grid maximum refined by a parabola through log p at its neighbours
    i = lp.argmax(dim=1).clamp(1, grid_points - 2)
    rows = torch.arange(g)
    ym, y0, yp = lp[rows, i - 1], lp[rows, i], lp[rows, i + 1]
    curv = ym - 2.0 * y0 + yp
    shift = torch.where(curv < 0, 0.5 * (ym - yp) / curv, torch.zeros_like(curv))
    shift = shift.clamp(-1.0, 1.0)
    peak = x[rows, i] + shift * h
    peak = _polish_peak(peak, x[rows, i - 1], x[rows, i + 1], lw, mu, inv_s, use)
    at_edge = lp.argmax(dim=1)
    peak = torch.where(at_edge == 0, x[:, 0], peak)
    peak = torch.where(at_edge == grid_points - 1, x[:, -1], peak)
    std = torch.sqrt(var)
    s68 = 0.5 * (q[:, 3] - q[:, 1])
    return {
        "flux": mean,
        "flux_err": std,
        "flux_median": q[:, 2],
        "flux_peak": peak,
        "flux_q16": q[:, 1],
        "flux_q84": q[:, 3],
        "flux_q025": q[:, 0],
        "flux_q975": q[:, 4],
        "sigma68": s68,
        "sigma95": 0.5 * (q[:, 4] - q[:, 0]),
        "eta": 0.5 * (q[:, 4] - q[:, 0]) / s68 - 1.0,  # Eq. 22
    }


def product_summaries(
    weight: np.ndarray,
    mean: np.ndarray,
    sigma: np.ndarray,
    use: np.ndarray | None = None,
    truncated: np.ndarray | None = None,
    grid_points: int = 768,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Summaries of the normalised product of several mixtures per group, on a grid.

    Parameters
    ----------
    weight, mean, sigma : array_like, shape [G, n, K]
        For each of G groups, n mixtures (factors) of K components: weights (per factor,
        normalised here), means and sigmas in flux units.
    use : array_like of bool, shape [G, n], optional
        Factors that take part (padding slots False). Default: all. Groups with no factor
        give NaN.
    truncated : array_like of bool, shape [G, n], optional
        Factors whose components are truncated at flux 0 (the product then lives on f >= 0).
    grid_points : int
        Nodes of the final grid over the region within e^-40 of the product's maximum
        (768: summaries within ~1e-4 of the product's sigma of the exact values).
    workers : int, optional
        Blocks of groups processed in parallel threads (default
        ``torch.get_num_threads()``).

    Returns
    -------
    dict of numpy arrays [G]
        ``flux`` (mean), ``flux_err`` (std), ``flux_median``, ``flux_peak``, ``flux_q16``,
        ``flux_q84``, ``flux_q025``, ``flux_q975``, ``sigma68``, ``sigma95``, ``eta``, with
        the conventions of :meth:`GaussianMixture.summaries`.
    """
    w = np.asarray(weight, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sg = np.asarray(sigma, dtype=np.float64)
    if w.ndim != 3 or mu.shape != w.shape or sg.shape != w.shape:
        raise ValueError(
            f"weight, mean and sigma must have equal shapes [G, n, K], got {w.shape}, "
            f"{mu.shape}, {sg.shape}"
        )
    if grid_points < 16:
        raise ValueError("grid_points must be >= 16")
    n_groups, n_fac, k = w.shape
    use = np.ones((n_groups, n_fac), bool) if use is None else np.asarray(use, dtype=bool)
    trunc = (
        np.zeros((n_groups, n_fac), bool) if truncated is None else np.asarray(truncated, bool)
    )
    if use.shape != (n_groups, n_fac) or trunc.shape != (n_groups, n_fac):
        raise ValueError(f"use and truncated must have shape [G, n] = [{n_groups}, {n_fac}]")
    # unusable factors and zero-weight components become harmless placeholders
    with np.errstate(invalid="ignore", divide="ignore"):
        wsum = w.sum(axis=2, keepdims=True)
        wn = w / wsum
    comp_bad = ~(np.isfinite(mu) & np.isfinite(sg) & (sg > 0)) & (w > 0)
    fac_ok = use & ~comp_bad.any(axis=2) & np.isfinite(wn).all(axis=2) & (wsum[..., 0] > 0)
    fac_ok &= (wn >= 0).all(axis=2)
    placeholder = ~fac_ok[..., None] | (wn <= 0)
    wn = np.where(~fac_ok[..., None], 1.0 / k, np.where(wn > 0, wn, 0.0))
    mu = np.where(placeholder, 0.0, mu)
    sg = np.where(placeholder, 1.0, sg)
    out = {key: np.full(n_groups, np.nan) for key in _PDF_KEYS}
    has = fac_ok.any(axis=1)
    idx = np.flatnonzero(has)
    block = max(1, _BLOCK_ELEMENTS // (max(grid_points, _ZOOM_POINTS) * n_fac * k))

    def work(start: int, stop: int) -> None:
        sel = idx[start:stop]
        res = _block_summaries(
            torch.from_numpy(wn[sel]),
            torch.from_numpy(mu[sel]),
            torch.from_numpy(sg[sel]),
            torch.from_numpy(trunc[sel] & fac_ok[sel]),
            torch.from_numpy(fac_ok[sel]),
            grid_points,
        )
        for key in _PDF_KEYS:
            out[key][sel] = res[key].numpy()

    map_chunks(work, idx.size, block, workers)
    return out
