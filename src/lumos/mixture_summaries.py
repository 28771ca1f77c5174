"""Point summaries of batches of Gaussian mixtures: quantiles and modes by root finding.

The functions here take a float64 CPU :class:`lumos.mixture.GaussianMixture` (any object
with its attributes ``means``, ``sigmas``, ``weights``, ``truncated``, ``n_components``
and its methods ``mean``, ``std``, ``valid_rows``, ``effective_log_weights``,
``float64_cpu`` and row selection) and work on all its rows at once, in row blocks of bounded size:

* :func:`solve_quantiles`: safeguarded Newton iterations on the CDF, in a bracket that
  is bisected where a Newton step would leave it;
* :func:`find_peaks`: a trust-region ascent on the log density from the tallest
  component means, falling back on the EM fixed point where a step lowers the density.

:func:`summarise` gives all the point summaries of a measurement table at once
(:data:`SUMMARY_KEYS`), over row chunks run in parallel threads. Rows with invalid
parameters give NaN.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .chunks import map_chunks
from .stats import P025, P16, P84, P975
from .truncated_normal import log_phi, truncation_log_norm

__all__ = ["SUMMARY_KEYS", "Mixture", "find_peaks", "solve_quantiles", "summarise"]

_SQRT_HALF = math.sqrt(0.5)

#: Keys of :func:`summarise` (and :meth:`GaussianMixture.summaries`), in order (also the
#: PDF co-add's columns).
SUMMARY_KEYS = (
    "flux",
    "flux_err",
    "flux_median",
    "flux_peak",
    "flux_q16",
    "flux_q84",
    "flux_q025",
    "flux_q975",
    "sigma68",
    "sigma95",
    "eta",
)


class Mixture(Protocol):
    """What the summaries use of a :class:`lumos.mixture.GaussianMixture`."""

    means: Tensor
    sigmas: Tensor
    truncated: Tensor | None

    @property
    def weights(self) -> Tensor: ...

    @property
    def n_components(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, rows) -> Mixture: ...

    def mean(self) -> Tensor: ...

    def std(self) -> Tensor: ...

    def valid_rows(self) -> Tensor: ...

    def effective_log_weights(self) -> Tensor: ...

    def float64_cpu(self) -> Mixture: ...


def summarise(mix: Mixture, chunk_size: int, workers: int | None) -> dict[str, np.ndarray]:
    """All point summaries of a mixture batch, float64 NumPy arrays [N] keyed by
    :data:`SUMMARY_KEYS` (see :meth:`lumos.mixture.GaussianMixture.summaries`).

    Chunks of ``chunk_size`` rows run on ``workers`` threads (:func:`lumos.chunks.map_chunks`).
    """
    n = len(mix)
    res = {k: np.empty(n, dtype=np.float64) for k in SUMMARY_KEYS}
    levels = torch.tensor([[P025, P16, 0.5, P84, P975]], dtype=torch.float64)

    def work(lo: int, hi: int) -> None:
        sub = mix[lo:hi].float64_cpu()
        bad = ~sub.valid_rows()
        mean = torch.where(bad, math.nan, sub.mean())
        std = torch.where(bad, math.nan, sub.std())
        q = solve_quantiles(sub, levels.expand(len(sub), -1))
        peak = find_peaks(sub)
        s68 = 0.5 * (q[:, 3] - q[:, 1])
        res["flux"][lo:hi] = mean.numpy()
        res["flux_err"][lo:hi] = std.numpy()
        res["flux_median"][lo:hi] = q[:, 2].numpy()
        res["flux_peak"][lo:hi] = peak.numpy()
        res["flux_q16"][lo:hi] = q[:, 1].numpy()
        res["flux_q84"][lo:hi] = q[:, 3].numpy()
        res["flux_q025"][lo:hi] = q[:, 0].numpy()
        res["flux_q975"][lo:hi] = q[:, 4].numpy()
        res["sigma68"][lo:hi] = s68.numpy()
        res["sigma95"][lo:hi] = (0.5 * (q[:, 4] - q[:, 0])).numpy()
        res["eta"][lo:hi] = (0.5 * (q[:, 4] - q[:, 0]) / s68 - 1.0).numpy()

    map_chunks(work, n, chunk_size, workers)
    return res


# Elements ([rows, points, components]) processed at once by the root finders.
_BLOCK_ELEMENTS = 1_000_000
# Largest number of ascent starts per row in peak finding (the tallest components).
_MAX_STARTS = 12


def solve_quantiles(mix: Mixture, levels: Tensor) -> Tensor:
    """Quantiles [n, P] of a float64 CPU mixture, in row blocks of bounded size."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, levels.shape[1] * mix.n_components))
    if len(mix) <= rows:
        return _solve_quantiles_block(mix, levels)
    return torch.cat(
        [
            _solve_quantiles_block(mix[i : i + rows], levels[i : i + rows])
            for i in range(0, len(mix), rows)
        ]
    )


def find_peaks(mix: Mixture) -> Tensor:
    """Modes [n] of a float64 CPU mixture, in row blocks of bounded size."""
    k = mix.n_components
    rows = max(1, _BLOCK_ELEMENTS // (k * min(k, _MAX_STARTS)))
    if len(mix) <= rows:
        return _find_peaks_block(mix)
    return torch.cat([_find_peaks_block(mix[i : i + rows]) for i in range(0, len(mix), rows)])


# Truncated components further than this many sigma below zero are evaluated in log space
# (their normaliser Phi(mu/sigma) would underflow in the fast linear-space evaluation).
_EXTREME = -30.0


class _Evaluator:
    """Fast CDF and density of a float64 mixture at P points per row.

    Linear-space evaluation with ``ndtr`` and ``exp`` (about 3x cheaper than log space);
    truncated components with mu/sigma < -30 (whose normaliser Phi(mu/sigma) would
    underflow) are patched in log space.
    """

    _FIELDS = ("w", "mu", "inv_s", "extreme", "inv_norm", "dcoef", "log_norm", "trunc")

    def __init__(self, mix: Mixture) -> None:
        mu, s = mix.means, mix.sigmas
        trunc = (
            mix.truncated if mix.truncated is not None else torch.zeros(len(mix), dtype=torch.bool)
        )
        inv_s = 1.0 / s
        log_norm = truncation_log_norm(mu, s, trunc)
        extreme = trunc[:, None] & (mu * inv_s < _EXTREME)
        inv_norm = torch.exp(-torch.where(extreme, torch.zeros_like(log_norm), log_norm))
        w = mix.weights
        self.w = w[:, None, :]
        self.mu = mu[:, None, :]
        self.inv_s = inv_s[:, None, :]
        self.extreme = extreme[:, None, :]
        self.inv_norm = inv_norm[:, None, :]
        self.dcoef = (w * inv_norm * inv_s / math.sqrt(2.0 * math.pi))[:, None, :]
        self.log_norm = log_norm[:, None, :]
        self.trunc = trunc[:, None]
        self.any_extreme = bool(extreme.any())

    def take(self, keep: Tensor) -> None:
        """Keep only the rows selected by ``keep``."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[keep])
        self.any_extreme = bool(self.extreme.any())

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """CDF and density at x [m, P]."""
        z = (x[:, :, None] - self.mu) * self.inv_s
        surv = torch.erfc(z * _SQRT_HALF) * self.inv_norm
        dens = torch.exp(-0.5 * z * z) * self.dcoef
        if self.any_extreme:
            e = self.extreme.expand_as(z)
            ze = z[e]
            log_norm = self.log_norm.expand_as(z)[e]
            w = self.w.expand_as(z)[e]
            inv_s = self.inv_s.expand_as(z)[e]
            surv = surv.index_put((e,), 2.0 * torch.exp(torch.special.log_ndtr(-ze) - log_norm))
            dens = dens.index_put((e,), w * inv_s * torch.exp(log_phi(ze) - log_norm))
        cdf = 1.0 - 0.5 * (self.w * surv).sum(dim=2)
        cdf = torch.where(self.trunc & (x < 0), torch.zeros_like(cdf), cdf)
        return cdf, dens.sum(dim=2)


def _valid_part(
    mix: Mixture, shape: tuple[int, ...]
) -> tuple[Tensor, Tensor | None, Mixture | None]:
    """A float64 NaN result of ``shape`` (rows first) and the rows of ``mix`` that hold a
    valid mixture: their indices and the sub-mixture (both None when there are none)."""
    result = torch.full(shape, math.nan, dtype=torch.float64)
    if shape[0] == 0:
        return result, None, None
    rows = torch.nonzero(mix.valid_rows()).squeeze(1)
    if rows.numel() == 0:
        return result, None, None
    return result, rows, mix[rows]


def _solve_quantiles_block(
    mix: Mixture, levels: Tensor, rtol: float = 1e-8
) -> Tensor:
    """Quantiles [n, P] of a float64 CPU mixture at levels [n, P] (all rows at once).

    Safeguarded Newton: a bracket [lo, hi] with CDF(lo) < p <= CDF(hi) is kept for every
    (row, level); a Newton step is taken when it stays inside the bracket and at least
    halves the previous step, else the bracket is bisected. A problem stops when its step
    or bracket is below ``rtol`` times the row's standard deviation; rows whose problems
    have all converged leave the active set.
    """
    n, n_levels = levels.shape
    result, vrows, sub = _valid_part(mix, (n, n_levels))
    if sub is None:
        return result
    ev = _Evaluator(sub)
    p = levels[vrows].clone()
    mean, std = sub.mean()[:, None], sub.std()[:, None]
    mu, s = sub.means, sub.sigmas
    tr = ev.trunc
    lo = torch.where(tr, 0.0, (mu - 12.0 * s).min(dim=1, keepdim=True).values)
    top = torch.where(tr, torch.clamp(mu, min=0.0), mu)
    hi = (top + 12.0 * s).max(dim=1, keepdim=True).values
    lo, hi = lo.expand_as(p).clone(), hi.expand_as(p).clone()
    x = mean + std * torch.special.ndtri(p)
    x = torch.minimum(torch.maximum(x, lo), hi)
    x = torch.where(torch.isfinite(x), x, 0.5 * (lo + hi))
    prev_step = torch.full_like(x, math.inf)
    tol = (rtol * std).expand_as(p)
    done = torch.zeros_like(p, dtype=torch.bool)
    out = torch.empty_like(p)
    active = torch.arange(p.shape[0])
    for _ in range(300):
        cdf, dens = ev(x)
        below = cdf < p
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        newton = x - (cdf - p) / dens
        use_newton = (
            torch.isfinite(newton)
            & (newton >= lo)
            & (newton <= hi)
            & (torch.abs(newton - x) <= 0.5 * torch.abs(prev_step))
        )
        x_new = torch.where(use_newton, newton, 0.5 * (lo + hi))
        step = x_new - x
        now_done = ~done & ((torch.abs(step) <= tol) | ((hi - lo) <= tol))
        x = torch.where(done, x, x_new)
        prev_step = step
        done = done | now_done
        row_done = done.all(dim=1)
        if bool(row_done.any()):
            out[active[row_done]] = x[row_done]
            keep = ~row_done
            active = active[keep]
            if active.numel() == 0:
                break
            ev.take(keep)
            x, prev_step, lo, hi, p, tol, done = (
                t[keep] for t in (x, prev_step, lo, hi, p, tol, done)
            )
    if active.numel():  # not converged within the iteration cap: best estimate
        out[active] = x
    result[vrows] = out
    return result


def _find_peaks_block(mix: Mixture, rtol: float = 1e-8) -> Tensor:
    """Modes [n] of a float64 CPU mixture, ascent started from every component mean.

    A trust-region ascent on log p per start: a Newton step where log p is locally
    concave, else a gradient step of at least half the local width, both limited to a
    radius; if a step lowered the density, the start goes back and takes the EM
    fixed-point step x = sum r_k mu_k/s_k^2 / sum r_k/s_k^2 (which never lowers it) and
    the radius shrinks. The best point of every start is kept; the highest one wins.
    """
    n, k = mix.means.shape
    result, idx, sub = _valid_part(mix, (n,))
    if sub is None:
        return result
    m = idx.numel()
    lw = sub.effective_log_weights() - torch.log(sub.sigmas)  # [m, K]
    if k > _MAX_STARTS:  # start from the tallest components only
        starts = torch.topk(lw, _MAX_STARTS, dim=1).indices
        k = _MAX_STARTS
    else:
        starts = None
    lw = (lw - lw.max(dim=1, keepdim=True).values)[:, None, :]
    mu = sub.means[:, None, :]
    inv_s = (1.0 / sub.sigmas)[:, None, :]
    trunc = (
        sub.truncated if sub.truncated is not None else torch.zeros(m, dtype=torch.bool)
    )
    floor = torch.where(trunc, 0.0, -math.inf)[:, None].to(torch.float64)  # [m, 1]
    tol = rtol * sub.std()[:, None]

    x0 = sub.means if starts is None else torch.gather(sub.means, 1, starts)
    x = torch.maximum(x0.clone(), floor)  # [m, S] starts
    best_x = x.clone()
    best_lp = torch.full_like(x, -math.inf)
    active = torch.arange(m)
    # per active row state
    xa = x
    x_prev = x.clone()
    fp_prev = torch.zeros_like(x)
    lp_prev = torch.full_like(x, -math.inf)
    radius = sub.sigmas.max(dim=1, keepdim=True).values.expand(-1, k).clone()
    lw_a, mu_a, is_a, fl_a, tol_a = lw, mu, inv_s, floor, tol
    for _ in range(200):
        z = (xa[:, :, None] - mu_a) * is_a
        logr = lw_a - 0.5 * z * z
        top = logr.max(dim=2, keepdim=True).values
        e = torch.exp(logr - top)
        tot = e.sum(dim=2)
        lp = top[:, :, 0] + torch.log(tot)
        r = e / tot[:, :, None]
        better = lp > best_lp[active]
        best_x[active] = torch.where(better, xa, best_x[active])
        best_lp[active] = torch.where(better, lp, best_lp[active])
        iv = is_a * is_a
        d = (mu_a - xa[:, :, None]) * iv
        g = (r * d).sum(dim=2)
        prec = (r * iv).sum(dim=2)
        h = (r * d * d).sum(dim=2) - prec - g * g
        fp_step = g / prec
        boosted = torch.sign(g) * torch.maximum(torch.abs(fp_step), 0.5 / torch.sqrt(prec))
        aggressive = torch.where(h < 0, -g / h, boosted)
        aggressive = torch.maximum(torch.minimum(aggressive, radius), -radius)
        aggressive = torch.where(torch.isfinite(aggressive), aggressive, fp_step)
        failed = lp < lp_prev - 1e-12 * (1.0 + torch.abs(lp_prev))
        radius = torch.where(failed, 0.25 * radius, radius)
        x_new = torch.where(failed, x_prev + fp_prev, xa + aggressive)
        x_new = torch.maximum(x_new, fl_a)
        x_prev = torch.where(failed, x_prev, xa)
        fp_prev = torch.where(failed, fp_prev, fp_step)
        lp_prev = torch.where(failed, lp_prev, lp)
        step = torch.abs(x_new - xa).max(dim=1).values
        xa = x_new
        keep = step > tol_a[:, 0]
        if not bool(keep.all()):
            done = active[~keep]
            lp_done = _logp_prepared(xa[~keep], lw_a[~keep], mu_a[~keep], is_a[~keep])
            better = lp_done > best_lp[done]
            best_x[done] = torch.where(better, xa[~keep], best_x[done])
            best_lp[done] = torch.where(better, lp_done, best_lp[done])
            active = active[keep]
            if active.numel() == 0:
                break
            xa, x_prev, fp_prev, lp_prev = xa[keep], x_prev[keep], fp_prev[keep], lp_prev[keep]
            radius = radius[keep]
            lw_a, mu_a, is_a = lw_a[keep], mu_a[keep], is_a[keep]
            fl_a, tol_a = fl_a[keep], tol_a[keep]
    # flux 0 is a candidate on truncated rows (boundary maximum)
    zero = torch.zeros(m, 1, dtype=torch.float64)
    lp0 = torch.where(
        trunc[:, None], _logp_prepared(zero, lw, mu, inv_s), torch.full_like(zero, -math.inf)
    )
    cand_x = torch.cat([best_x, zero], dim=1)
    cand_lp = torch.cat([best_lp, lp0], dim=1)
    cand_lp = torch.where(torch.isnan(cand_lp), torch.full_like(cand_lp, -math.inf), cand_lp)
    best = cand_lp.argmax(dim=1)
    result[idx] = cand_x[torch.arange(m), best]
    return result


def _logp_prepared(xx: Tensor, lw: Tensor, mu: Tensor, inv_s: Tensor) -> Tensor:
    """Unnormalised log density of prepared [m, 1, K] mixture terms at points [m, S]."""
    z = (xx[:, :, None] - mu) * inv_s
    return torch.logsumexp(lw - 0.5 * z * z, dim=2)
