"""Experiment 9: co-adds of repeated exposures and the leakage of the catalogue magnitude.

Each galaxy of the TEAHUPOO population is observed ``n_exposures`` times in one band (the
same true flux; a new PSF, CCD position, offset, sky and noise each time, as in experiment 5).

* **Co-add.** Aperture photometry is co-added by inverse variance (Eq. 21); a likelihood
  model's exposures with :func:`lumos.bayes.coadd_likelihoods` (likelihoods multiplied,
  shared error and population prior once); a posterior model's with the product of its PDFs
  (:func:`lumos.coadd.coadd_tables`, each exposure's prior counted once per exposure). For
  each: 68% coverage of the truth, median bias and sigma68 of (f - f_true) / f_true per i
  bin, and sigma68 of D (Eq. 19) between the first two exposures (from ``flux_like`` for a
  likelihood model).
* **Leakage.** The first exposure is measured again with every catalogue i magnitude
  shifted by -0.5 and +0.5 mag (the pixels unchanged): the median absolute relative change
  of ``flux_like`` (the likelihood: no change expected) and of the posterior ``flux``
  (population prior) per i bin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from astropy.table import Table

from ..backgrounds import SyntheticSky
from ..bands import PAUS_BANDS, get_band
from ..bayes import coadd_likelihoods, default_population_prior
from ..coadd import coadd_tables, inverse_variance_coadd
from ..flags import UNUSABLE
from ..stats import pair_pull, sigma68
from .draws import experiment_targets
from .measuring import measure_all, measure_lumos
from .metrics import MAG_BINS, binned_statistic
from .scenes import another_exposure, observe

__all__ = ["run_coadds"]

_BAND_NAMES = tuple(PAUS_BANDS)  # band number -> name

_K = 5


def _lumos_table(res: dict, ids: np.ndarray, band: np.ndarray, i_mag: np.ndarray) -> Table:
    t = Table()
    t["id"] = ids
    t["band"] = np.asarray([_BAND_NAMES[int(b)] for b in band])
    t["i_mag"] = i_mag
    t["flags"] = res["flags"]
    for k in ("flux_like", "flux_like_err", "flux_shared_err", "like_weight", "like_mean",
              "like_sigma"):  # fmt: skip
        t[k] = res[k]
    return t


def _binned(i_mag, values, fn) -> list[float]:
    """``fn`` of the finite ``values`` per i bin of :data:`MAG_BINS` (NaN for an empty bin)."""
    return binned_statistic(i_mag, values, MAG_BINS, fn, min_count=1)[0].tolist()


def _accuracy(i_mag, flux, q16, q84, truth) -> dict:
    rel = (flux - truth) / truth
    inside = ((q16 <= truth) & (truth <= q84)).astype(float)
    inside[~np.isfinite(flux)] = np.nan
    return {
        "coverage68": float(np.nanmean(inside)),
        "coverage68_per_bin": _binned(i_mag, inside, np.mean),
        "bias_per_bin": _binned(i_mag, rel, np.median),
        "sigma68_per_bin": _binned(i_mag, rel, sigma68),
        "sigma68": sigma68(rel[np.isfinite(rel)]),
    }


def run_coadds(model, n: int, seed: int, n_exposures: int = 4,
               progress: Callable[[str], None] | None = None) -> dict:
    """Observe ``n`` galaxies ``n_exposures`` times; co-add and measure the leakage.

    Parameters
    ----------
    model : LumosNet
        The model under validation.
    n : int
        Galaxies.
    seed : int
        Random seed.
    n_exposures : int
        Exposures per galaxy (at least 2).
    progress : callable, optional
        Receives one line per measured exposure.

    Returns
    -------
    dict
        JSON-ready metrics (see the module docstring).
    """
    if n_exposures < 2:
        raise ValueError(f"n_exposures must be at least 2, got {n_exposures}")
    rng, first, _ = experiment_targets("coadd", n, seed)
    sky = SyntheticSky()
    ids = np.arange(n)
    likelihood = bool(getattr(model.config, "likelihood", False))
    meas, first_obs = [], None
    for k in range(n_exposures):
        t = first if k == 0 else another_exposure(first, rng)
        obs = observe(t, sky, rng)
        if k == 0:
            first_obs = obs
        meas.append(measure_all(model, obs, ("aperture",)))
        if progress:
            progress(f"co-adds: exposure {k + 1}/{n_exposures} measured ({n} galaxies)")
    truth, i_mag = first.flux, first.i_mag
    out: dict = {"n": int(n), "n_exposures": int(n_exposures), "mag_bins": MAG_BINS.tolist(),
                 "likelihood_model": likelihood, "methods": {}}  # fmt: skip
    # aperture: inverse-variance co-add
    ap = [m["aperture"] for m in meas]
    f = np.array([a["flux"] for a in ap])
    e = np.array([a["flux_err"] for a in ap])
    ok = np.array([(a["flags"] & int(UNUSABLE)) == 0 for a in ap]) & np.isfinite(f) \
        & np.isfinite(e) & (e > 0)  # fmt: skip
    group = np.broadcast_to(np.arange(n), f.shape).ravel()
    fc, ec = inverse_variance_coadd(group, f.ravel(), e.ravel(), ok.ravel(), n)
    acc = _accuracy(i_mag, fc, fc - ec, fc + ec, truth)
    acc["sigma68_D"] = sigma68(pair_pull(f[0], e[0], f[1], e[1]))
    out["methods"]["aperture"] = acc
    # lumos
    lum = [m["lumos"] for m in meas]
    if likelihood:
        band = first.band
        tables = [_lumos_table(r, ids, band, i_mag) for r in lum]
        for tab in tables:
            tab.meta.update({"EXPTIME": 0.0, "GAIN": 1.0})
        exptime = np.asarray([_exposure_time(int(b)) for b in band])
        # the population prior is in e-/s: give each galaxy its band's exposure time
        co = coadd_likelihoods(_with_exposure(tables, exptime), prior=default_population_prior())
        co.sort("id")
        t_co = exptime[np.asarray(co["id"], int)]  # back to electrons
        acc = _accuracy(i_mag, np.asarray(co["flux"], float) * t_co,
                        np.asarray(co["flux_q16"], float) * t_co,
                        np.asarray(co["flux_q84"], float) * t_co, truth)  # fmt: skip
        acc["sigma68_D"] = sigma68(pair_pull(lum[0]["flux_like"], lum[0]["flux_like_err"],
                                             lum[1]["flux_like"], lum[1]["flux_like_err"]))
        out["methods"]["lumos"] = acc
    else:
        tabs = []
        for r in lum:
            tab = Table()
            tab["id"], tab["band"], tab["flags"] = ids, np.asarray(first.band).astype(str), \
                r["flags"]
            tab["flux"], tab["flux_err"] = r["flux"], r["flux_err"]
            tabs.append(tab)
        co = coadd_tables(tabs, method="ivar")
        co.sort("id")
        acc = _accuracy(i_mag, np.asarray(co["flux_ivar"], float),
                        np.asarray(co["flux_ivar"] - co["flux_ivar_err"], float),
                        np.asarray(co["flux_ivar"] + co["flux_ivar_err"], float), truth)
        acc["sigma68_D"] = sigma68(pair_pull(lum[0]["flux"], lum[0]["flux_err"],
                                             lum[1]["flux"], lum[1]["flux_err"]))
        out["methods"]["lumos"] = acc
    # leakage of the catalogue magnitude: the same pixels, shifted i magnitudes
    base = lum[0]
    leak = {}
    for shift in (-0.5, 0.5):
        obs = replace(first_obs, batch=first_obs.batch.replace(
            i_mag=first_obs.batch.i_mag + torch.tensor(shift, dtype=first_obs.batch.i_mag.dtype)))
        res = measure_lumos(model, obs)
        entry = {}
        for key in ("flux_like", "flux") if likelihood else ("flux",):
            rel = np.asarray(res[key], float) / np.asarray(base[key], float) - 1.0
            entry[key] = _binned(i_mag, np.abs(rel), np.median)
        leak[f"{shift:+.1f}"] = entry
    out["leakage"] = leak
    _, count = binned_statistic(i_mag, truth, MAG_BINS)
    out["n_per_bin"] = count.tolist()
    return out


def _exposure_time(band_number: int) -> float:
    return float(get_band(_BAND_NAMES[band_number]).exposure_time)


def _with_exposure(tables: list[Table], exptime: np.ndarray) -> list[Table]:
    """Likelihood tables in electrons per second (so that one population-prior unit fits)."""
    out = []
    for t in tables:
        t = t.copy()
        for k in ("flux_like", "flux_like_err", "flux_shared_err"):
            t[k] = np.asarray(t[k], float) / exptime
        for k in ("like_mean", "like_sigma"):
            t[k] = np.asarray(t[k], float) / exptime[:, None]
        out.append(t)
    return out
