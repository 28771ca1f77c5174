"""The Sersic profile as the renderer knows it: parameter ranges, ``b_n`` and its transform.

One rule says which profile parameters are drawn as given (:func:`valid_profile_parameters`,
with the ranges :data:`SERSIC_N_RANGE`, :data:`RENDER_R50_RANGE`, :data:`Q_RANGE`); callers
flag the others. :func:`sersic_table` loads the packaged radial Fourier transform of a
unit-flux, unit-half-light-radius Sersic profile (``data/sersic_ktable.npz``, made by
``scripts/make_sersic_table.py``), upsampled in ``ln kappa`` and with the wavenumbers beyond
which it is negligible; :func:`sersic_lookup` gives the table rows and the quadratic form of
a chunk of galaxies for the renderer; :func:`sersic_b` gives the ``b_n`` of the exponent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from scipy.special import gammaincinv
from torch import Tensor

from .psf_base import as_tensor_1d, broadcast_named, cubic_rows

__all__ = ["SERSIC_N_RANGE", "RENDER_R50_RANGE", "Q_RANGE", "K_THRESHOLD", "SersicTable",
           "parameter_checks", "sersic_b", "sersic_lookup", "sersic_table",
           "valid_profile_parameters"]

#: Sersic indices the renderer supports (GalSim's range).
SERSIC_N_RANGE = (0.3, 6.2)
#: Circularised half-light radii [arcsec] the renderer draws as given; others are clamped
#: into it (the population's own, narrower support is ``lumos.population.POPULATION_R50_RANGE``).
RENDER_R50_RANGE = (1e-3, 20.0)
#: Axis ratios drawn as given; others are clamped into it.
Q_RANGE = (0.05, 1.0)

_TABLE_FILE = "sersic_ktable.npz"
_UPSAMPLE = 2  # fine ln(kappa) grid = table grid / _UPSAMPLE
#: Transform value below which wavenumbers are dropped.
K_THRESHOLD = 1e-6


@dataclass(frozen=True)
class SersicTable:
    """Sersic transform table: rows over n (with ghost rows), columns over ln(kappa)."""

    table: Tensor  # (R + 2, T) float32, fine grid in ln kappa
    kappa_cut: Tensor  # (R, 7) float64, kappa beyond which |F| < K_THRESHOLD * 10^-j
    n_min: float
    n_step: float
    lnk_min: float
    lnk_step: float


def _upsample_cubic(values: np.ndarray, factor: int) -> np.ndarray:
    """Catmull-Rom upsampling along the last axis by an integer factor."""
    if factor == 1:
        return values
    v = np.concatenate([2 * values[:, :1] - values[:, 1:2], values,
                        2 * values[:, -1:] - values[:, -2:-1]], axis=1)
    n = values.shape[1]
    t = np.arange(factor) / factor
    p0, p1, p2, p3 = v[:, :-3], v[:, 1:-2], v[:, 2:-1], v[:, 3:]
    t = t[None, None, :]
    p0, p1, p2, p3 = (a[..., None] for a in (p0, p1, p2, p3))
    out = 0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
    out = out.reshape(values.shape[0], (n - 1) * factor)
    return np.concatenate([out, values[:, -1:]], axis=1)


@lru_cache(maxsize=1)
def sersic_table() -> SersicTable:
    """Load (once per process) the packaged Sersic transform table."""
    with resources.files("lumos").joinpath("data", _TABLE_FILE).open("rb") as fh:
        data = np.load(fh)
        coarse = data["table"].astype(np.float64)
        n_min, n_step = float(data["n_min"]), float(data["n_step"])
        lnk_min, lnk_step = float(data["lnk_min"]), float(data["lnk_step"])
    fine = _upsample_cubic(coarse, _UPSAMPLE)
    env = np.maximum.accumulate(np.abs(fine)[:, ::-1], axis=1)[:, ::-1]
    levels = K_THRESHOLD * 10.0 ** -np.arange(7)
    kappa_cut = np.exp(lnk_min + lnk_step / _UPSAMPLE
                       * (env[:, :, None] >= levels[None, None, :]).sum(axis=1))
    fine = np.concatenate([2 * fine[:1] - fine[1:2], fine, 2 * fine[-1:] - fine[-2:-1]])
    return SersicTable(
        table=torch.as_tensor(fine, dtype=torch.float32),
        kappa_cut=torch.as_tensor(kappa_cut, dtype=torch.float64),
        n_min=n_min,
        n_step=n_step,
        lnk_min=lnk_min,
        lnk_step=lnk_step / _UPSAMPLE,
    )


def sersic_b(n: Tensor) -> Tensor:
    """The Sersic ``b_n`` with ``gamma(2n, b_n) = Gamma(2n) / 2`` (float64, shape of ``n``)."""
    return torch.as_tensor(gammaincinv(2.0 * n.double().numpy(), 0.5), dtype=torch.float64)


def valid_profile_parameters(r50, n, q, pa=None) -> Tensor:
    """Which galaxies have profile parameters the renderer draws as given.

    Parameters
    ----------
    r50 : array-like, shape (N,)
        Circularised half-light radius [arcsec]; valid in ``(0, 20]``.
    n : array-like, shape (N,)
        Sersic index; valid in ``[0.3, 6.2]``.
    q : array-like, shape (N,)
        Axis ratio b/a; valid in ``[0.05, 1]``.
    pa : array-like, shape (N,), optional
        Position angle [degrees]; valid if finite.

    Returns
    -------
    torch.Tensor, bool, shape (N,)
        False where a parameter is NaN or outside its range (callers set
        ``Flag.BAD_PROFILE``); such galaxies are drawn with clamped parameters.
    """
    t = {"r50": as_tensor_1d(r50, "r50"), "n": as_tensor_1d(n, "n"), "q": as_tensor_1d(q, "q")}
    if pa is not None:
        t["pa"] = as_tensor_1d(pa, "pa")
    checks = parameter_checks(broadcast_named(t))
    ok = checks.pop("r50")
    for mask in checks.values():
        ok &= mask
    return ok


def parameter_checks(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-parameter masks of the rule of :func:`valid_profile_parameters` (NaN: False)."""
    out = {
        "r50": (t["r50"] > 0) & (t["r50"] <= RENDER_R50_RANGE[1]),
        "n": (t["n"] >= SERSIC_N_RANGE[0] - 1e-9) & (t["n"] <= SERSIC_N_RANGE[1] + 1e-9),
        "q": (t["q"] >= Q_RANGE[0]) & (t["q"] <= Q_RANGE[1] + 1e-6),
    }
    if "pa" in t:
        out["pa"] = torch.isfinite(t["pa"])
    return out


def sersic_lookup(par: dict[str, Tensor], half: int, dk: float):
    """Per-chunk Sersic lookup: quadratic-form coefficients and table rows.

    ``par`` holds the galaxies' ``n``, ``q``, ``r50`` [arcsec] and ``pa`` [degrees] (shape
    (c,)); ``half`` is the largest frequency index of the chunk's grid and ``dk`` its
    wavenumber step [radians/arcsec].

    Returns ``coef`` (c, 3) = (cyy, cxx, cxy) with ``kappa^2 = cyy b^2 + cxx a^2 + cxy a b``
    in frequency-index units, the rows (value, slope) over the ln(kappa) columns the chunk
    needs (column 0 holds kappa = 0, value 1) and the column offset of ``u``.
    """
    tab = sersic_table()
    n, q, r50 = par["n"], par["q"], par["r50"]
    theta = torch.deg2rad(par["pa"])
    cs, sn = torch.cos(theta), torch.sin(theta)
    s2 = (r50 * dk) ** 2
    coef = torch.stack([s2 * (sn * sn / q + cs * cs * q), s2 * (cs * cs / q + sn * sn * q),
                        s2 * (2 * cs * sn * (1 / q - q))], dim=1).to(torch.float32)
    # columns needed: from below the smallest non-zero kappa to above the largest
    kap_min = float((dk * r50 * torch.sqrt(q)).min())
    kap_max = float((half * dk * math.sqrt(2.0) * r50 / torch.sqrt(q)).max())
    ncol = tab.table.shape[1]
    j_lo = int(math.floor((math.log(kap_min) - tab.lnk_min) / tab.lnk_step)) - 1
    j_hi = int(math.ceil((math.log(kap_max) - tab.lnk_min) / tab.lnk_step)) + 2
    j_lo = min(max(j_lo, 0), ncol - 2)
    j_hi = min(max(j_hi, j_lo + 2), ncol)
    rows = cubic_rows(tab.table[:, j_lo:j_hi], (n - tab.n_min) / tab.n_step)
    val = torch.cat([torch.ones(rows.shape[0], 1), rows], dim=1)
    slope = torch.zeros_like(val)
    slope[:, :-1] = val[:, 1:] - val[:, :-1]
    u_off = -tab.lnk_min / tab.lnk_step - j_lo + 1.0
    return coef, val.contiguous(), slope, u_off
