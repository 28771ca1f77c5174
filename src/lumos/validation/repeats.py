"""Experiment 5: repeated observations (paper Eq. 19, Figs. 11 and 12).

Each galaxy of the TEAHUPOO population is observed twice in the same band and camera state
(the same true flux) with everything else independent: the PSF (FWHM and beta drawn anew),
the CCD position (so the scattered light differs), the sub-pixel offset, the sky noise, the
shot noise and the artefacts of the synthetic sky. For lumos and aperture photometry

    D = (f1 - f2) / sqrt(s1^2 + s2^2)

with ``s`` each method's flux error has unit width (sigma68 = 1) for calibrated errors;
its width against magnitude (Fig. 11) and its distribution on a log scale (Fig. 12, the
tails) are reported. For a likelihood model D is also computed from ``flux_like`` and
``flux_like_err`` (method ``lumos_like``), which share neither the prior nor the shared error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backgrounds import SyntheticSky
from ..stats import pair_pull, sigma68
from .draws import experiment_targets
from .measuring import observe_and_measure
from .metrics import MAG_BINS, binned_statistic
from .scenes import another_exposure

__all__ = ["RepeatResult", "observe_twice", "run_repeats"]


@dataclass
class RepeatResult:
    """D values of repeated observations.

    Attributes
    ----------
    i_mag : numpy.ndarray
        i magnitude of each galaxy.
    pull : dict of str to numpy.ndarray
        Method -> D per galaxy.
    metrics : dict
        JSON-ready summary.
    """

    i_mag: np.ndarray
    pull: dict[str, np.ndarray]
    metrics: dict


def run_repeats(
    model,
    n: int,
    seed: int,
    methods: tuple[str, ...] = ("aperture",),
    progress: Callable[[str], None] | None = None,
) -> RepeatResult:
    """Observe ``n`` galaxies twice and compare the two measurements.

    Parameters
    ----------
    model, seed, methods, progress
        As in :func:`~lumos.validation.accuracy.run_accuracy`.
    n : int
        Number of galaxies (pairs of exposures).

    Returns
    -------
    RepeatResult
    """
    rng, first, _ = experiment_targets("repeated-observation", n, seed)
    _, meas = observe_twice(model, first, rng, methods, progress, "repeats: exposure")
    pull = {
        name: pair_pull(meas[0][name]["flux"], meas[0][name]["flux_err"],
                        meas[1][name]["flux"], meas[1][name]["flux_err"])  # fmt: skip
        for name in meas[0]
    }
    if "flux_like" in meas[0].get("lumos", {}):  # a likelihood model: D of the likelihoods
        a, b = meas[0]["lumos"], meas[1]["lumos"]
        pull["lumos_like"] = pair_pull(a["flux_like"], a["flux_like_err"], b["flux_like"],
                                       b["flux_like_err"])  # fmt: skip
    return RepeatResult(first.i_mag, pull, _metrics(first.i_mag, pull))


def observe_twice(model, first, rng: np.random.Generator, methods, progress, label: str,
                  **changes):
    """Observe the targets ``first`` and a second exposure of them; measure both.

    The second exposure has the ``changes`` and a new PSF, sub-pixel offset and CCD position
    (:func:`~lumos.validation.scenes.another_exposure`); both are observed on the synthetic
    sky.

    Parameters
    ----------
    model, methods
        As in :func:`~lumos.validation.measuring.observe_and_measure`.
    first : lumos.validation.scenes.Targets
        The galaxies and their first exposure.
    rng : numpy.random.Generator
    progress : callable or None
        Gets ``"{label} k/2 measured (N galaxies)"``.
    label : str
        Prefix of the progress messages.
    **changes
        Fields of the second exposure's targets that differ (e.g. ``band``, ``flux``).

    Returns
    -------
    second : lumos.validation.scenes.Targets
        The second exposure's targets.
    measurements : list of dict
        The two measurements (:func:`~lumos.validation.measuring.observe_and_measure`).
    """
    n = len(first)
    second = another_exposure(first, rng, **changes)
    sky = SyntheticSky()
    meas = []
    for k, t in enumerate((first, second)):
        meas.append(observe_and_measure(model, t, sky, rng, methods))
        if progress:
            progress(f"{label} {k + 1}/2 measured ({n} galaxies)")
    return second, meas


def _metrics(i_mag: np.ndarray, pull: dict[str, np.ndarray]) -> dict:
    out: dict = {"n": int(i_mag.size), "mag_bins": MAG_BINS.tolist(), "methods": {}}
    for name, d in pull.items():
        ok = np.isfinite(d)
        per_bin, count = binned_statistic(i_mag, d, MAG_BINS)
        out["methods"][name] = {
            "sigma68_D": sigma68(d),
            "median_D": float(np.median(d[ok])) if ok.any() else float("nan"),
            "frac_abs_D_gt_3": float(np.mean(np.abs(d[ok]) > 3)) if ok.any() else float("nan"),
            "frac_abs_D_gt_5": float(np.mean(np.abs(d[ok]) > 5)) if ok.any() else float("nan"),
            "sigma68_D_per_bin": per_bin.tolist(),
            "n_per_bin": count.tolist(),
            "failed": int((~ok).sum()),
        }
    return out
