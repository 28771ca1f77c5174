"""Experiment 11: measurements where there is no galaxy (true flux zero).

The galaxies of the TEAHUPOO population are observed as in experiment 1, but with no light
of their own: their stamps hold the sky, its artefacts and the neighbours, and the catalogue
still describes them (a drop-out in the observed band, or a source that is not there). A
measurement centred on the pixels gives a pull ``flux / flux_err`` of median 0 and sigma68 1:
for lumos the pull of its likelihood ``flux_like / flux_like_err`` (a likelihood model; its
posterior, truncated at zero by the prior, cannot be centred there), and of ``flux /
flux_err`` for aperture photometry. Reported overall and per i bin of the catalogue
magnitude (which sets the profile's size), with the fraction of pulls inside +-1 and above 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..backgrounds import SyntheticSky
from ..flags import UNUSABLE
from ..stats import sigma68
from .draws import experiment_targets
from .measuring import observe_and_measure
from .metrics import MAG_BINS, binned_statistic

__all__ = ["run_zero_flux"]


def _summary(i_mag: np.ndarray, pull: np.ndarray) -> dict:
    ok = np.isfinite(pull)
    p = pull[ok]
    per_bin, count = binned_statistic(i_mag, pull, MAG_BINS, np.median)
    width, _ = binned_statistic(i_mag, pull, MAG_BINS)
    nan = float("nan")
    return {
        "n": int(ok.sum()),
        "median_pull": float(np.median(p)) if p.size else nan,
        "sigma68_pull": sigma68(p) if p.size else nan,
        "inside_1": float(np.mean(np.abs(p) <= 1.0)) if p.size else nan,
        "above_3": float(np.mean(p > 3.0)) if p.size else nan,
        "median_pull_per_bin": per_bin.tolist(),
        "sigma68_pull_per_bin": width.tolist(),
        "n_per_bin": count.tolist(),
    }


def run_zero_flux(model, n: int, seed: int, progress: Callable[[str], None] | None = None
                  ) -> dict:
    """Observe ``n`` catalogued galaxies that have no flux; the pulls of lumos and aperture.

    Parameters
    ----------
    model : LumosNet
        The model under validation.
    n : int
        Galaxies.
    seed : int
        Random seed.
    progress : callable, optional
        Receives one line when the galaxies are measured.

    Returns
    -------
    dict
        JSON-ready metrics: per method (``lumos`` from ``flux_like`` for a likelihood
        model, else from its posterior ``flux``; ``aperture``) the median and sigma68 of the
        pull, the fraction inside +-1 and above 3, per i bin too.
    """
    rng, targets, _ = experiment_targets("zero-flux", n, seed)
    blank = replace(targets, flux=np.zeros(len(targets)))
    meas = observe_and_measure(model, blank, SyntheticSky(), rng, ("aperture",))
    if progress:
        progress(f"zero flux: {n} blank galaxies measured")
    likelihood = bool(getattr(model.config, "likelihood", False))
    out: dict = {"n": int(n), "mag_bins": MAG_BINS.tolist(), "likelihood_model": likelihood,
                 "methods": {}}  # fmt: skip
    for name, (f_key, e_key) in (("lumos", ("flux_like", "flux_like_err") if likelihood
                                  else ("flux", "flux_err")),
                                 ("aperture", ("flux", "flux_err"))):  # fmt: skip
        m = meas[name]
        usable = (np.asarray(m["flags"]) & int(UNUSABLE)) == 0
        err = np.asarray(m[e_key], float)
        pull = np.where(usable & (err > 0), np.asarray(m[f_key], float) / err, np.nan)
        out["methods"][name] = _summary(np.asarray(targets.i_mag, float), pull)
    return out
