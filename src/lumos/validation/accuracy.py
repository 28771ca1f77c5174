"""Experiments 1 and 2: PDF calibration (paper Fig. 6) and accuracy against magnitude (Fig. 7).

Held-out TEAHUPOO simulations (the training distribution: random band, camera state, PSF,
CCD position, neighbours and the synthetic sky with its artefacts), drawn with a validation
seed, are measured by lumos and by every classical method *on the same galaxies*:

* calibration of the lumos PDFs: the PIT values ``CDF(f_true)`` (their histogram, Fig. 6,
  and their KS distance to a uniform distribution) and the coverage of the central 68% and
  95% intervals, overall and per i-magnitude bin; for reference the same for the Gaussian
  error bars of the classical methods;
* accuracy: bias (median) and sigma68 of ``(f - f_true) / f_true`` in i-magnitude bins for
  every method, and per bin the ratio of lumos' sigma68 to the best classical method's
  (aperture, profile fit, weighted sum, sep AUTO) and to the oracle weighted sum (the linear
  limit: true profile, true background and true flux).

The accuracy table is given for all galaxies and for the *isolated* ones (no neighbour
centred inside the stamp, no close neighbour, no cosmic ray or detector defect in the central
10 x 10 pixels, no saturated star in the cutout), for which the oracle is the linear limit
proper. The lumos point estimate is the PDF mean (the ``flux``
column of ``lumos measure``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..simulate import Simulator
from ..sky.base import Artefact
from ..stats import sigma68
from .measuring import CLASSICAL, measure_all, usable
from .metrics import (
    MAG_BINS,
    binned_accuracy,
    binned_statistic,
    calibration_checks,
    gaussian_pit,
    interval_coverage,
    pit_ks_distance,
)
from .scenes import observation_from_simulation

__all__ = ["AccuracyResult", "run_accuracy", "accuracy_metrics"]

#: Stamps simulated (and measured) at a time: bounds the memory of the context cutouts.
SIM_CHUNK = 1000
#: Background artefacts that disqualify an "isolated" galaxy: a cosmic ray or defect in the
#: central 10 x 10 pixels, or light of a saturated star anywhere in the cutout.
_DISTURBING = int(
    Artefact.COSMIC_RAY_CORE | Artefact.DEFECT_CORE | Artefact.SATURATED_STAR
    | Artefact.SATURATED_CORE
)
#: Classical methods eligible as "best classical" (the oracle is not a practical method).
PRACTICAL = ("aperture", "modelfit", "weighted", "sep_auto")


@dataclass
class AccuracyResult:
    """Measurements of the held-out set.

    Attributes
    ----------
    i_mag, truth : numpy.ndarray
        True i magnitude and true flux (electrons) of every galaxy.
    results : dict
        Method -> ``flux``, ``flux_err``, ``flags`` (and for lumos the quantiles and ``pit``).
    common : numpy.ndarray of bool
        Galaxies every method measured (the comparison set).
    isolated : numpy.ndarray of bool
        Galaxies without neighbours in the stamp or injected artefacts.
    metrics : dict
        JSON-ready metrics (see :func:`accuracy_metrics`).
    """

    i_mag: np.ndarray
    truth: np.ndarray
    results: dict[str, dict[str, np.ndarray]]
    common: np.ndarray
    isolated: np.ndarray
    metrics: dict


def run_accuracy(
    model,
    n: int,
    seed: int,
    methods: Sequence[str] = CLASSICAL,
    config=None,
    progress: Callable[[str], None] | None = None,
) -> AccuracyResult:
    """Simulate ``n`` held-out stamps and measure them with lumos and ``methods``.

    Parameters
    ----------
    model : LumosNet or compatible
        The model under validation.
    n : int
        Number of galaxies.
    seed : int
        The experiment's seed (a validation seed the training never used).
    methods : sequence of str
        Classical methods.
    config : lumos.simulate.SimulationConfig, optional
        Simulator settings (default: the training defaults).
    progress : callable, optional
        Called with one-line progress messages (here one per chunk).

    Returns
    -------
    AccuracyResult
    """
    if n < 1:
        raise ValueError(f"the accuracy experiment needs at least one galaxy, got {n}")
    sim = Simulator(config, seed=seed)
    parts: list[dict] = []
    i_mag, truth, isolated = [], [], []
    done = 0
    while done < n:
        m = min(SIM_CHUNK, n - done)
        batch, extras = sim.sample_with_context(m, context_size=100)
        obs = observation_from_simulation(batch, extras)
        isolated.append(~extras.close_neighbour & (extras.n_neighbours == 0)
                        & ((extras.artefacts & _DISTURBING) == 0))  # fmt: skip
        del batch, extras
        parts.append(measure_all(model, obs, methods))
        i_mag.append(obs.i_mag)
        truth.append(obs.truth)
        done += m
        if progress:
            progress(f"accuracy: {done}/{n} galaxies simulated and measured")
    results = {
        name: {k: np.concatenate([p[name][k] for p in parts]) for k in parts[0][name]}
        for name in parts[0]
    }
    i_mag_a, truth_a = np.concatenate(i_mag), np.concatenate(truth)
    common = np.ones(truth_a.size, dtype=bool)
    for res in results.values():
        common &= usable(res)
    iso = np.concatenate(isolated)
    metrics = accuracy_metrics(i_mag_a, truth_a, results, common, iso)
    return AccuracyResult(i_mag_a, truth_a, results, common, iso, metrics)


def _calibration(lum: dict, truth: np.ndarray, i_mag: np.ndarray, ok: np.ndarray) -> dict:
    pit = lum["pit"][ok]
    ks = pit_ks_distance(pit)
    cov68 = interval_coverage(lum["flux_q16"][ok], lum["flux_q84"][ok], truth[ok])
    cov95 = interval_coverage(lum["flux_q025"][ok], lum["flux_q975"][ok], truth[ok])
    inside68 = (truth >= lum["flux_q16"]) & (truth <= lum["flux_q84"])
    per_bin, count = binned_statistic(i_mag[ok], inside68[ok].astype(float), MAG_BINS, np.mean)
    ks_bin, _ = binned_statistic(i_mag[ok], lum["pit"][ok], MAG_BINS, pit_ks_distance)
    return {
        "n": int(ok.sum()),
        "pit_ks": ks,
        "coverage68": cov68,
        "coverage95": cov95,
        "pit_mean": float(np.mean(pit)) if pit.size else float("nan"),
        "checks": calibration_checks(ks, cov68, cov95),
        "per_bin": {"coverage68": per_bin.tolist(), "pit_ks": ks_bin.tolist(),
                    "n": count.tolist()},  # fmt: skip
    }


def accuracy_metrics(
    i_mag: np.ndarray,
    truth: np.ndarray,
    results: dict,
    common: np.ndarray,
    isolated: np.ndarray | None = None,
) -> dict:
    """Calibration and accuracy metrics of measured fluxes.

    Parameters
    ----------
    i_mag, truth : numpy.ndarray
        True i magnitude and flux.
    results : dict
        Method -> measurement columns (``"lumos"`` with ``pit`` and quantiles).
    common : numpy.ndarray of bool
        The comparison set.
    isolated : numpy.ndarray of bool, optional
        Isolated galaxies (adds ``accuracy_isolated`` and ``table_isolated``).

    Returns
    -------
    dict
        ``calibration`` (lumos: ``pit_ks``, ``coverage68``, ``coverage95``, ``checks``,
        ``per_bin``), ``classical_calibration`` (Gaussian PIT KS and 68% coverage per
        method), ``accuracy`` (``mag_bins``, per method ``bias``/``sigma68``/``n`` per bin
        and overall), ``table`` (per bin: best classical method, ratios of sigma68) and
        ``failures`` (unusable rows per method).
    """
    out: dict = {"n_galaxies": int(truth.size), "n_common": int(common.sum())}
    if "lumos" in results:
        lum = results["lumos"]
        ok = usable(lum) & np.isfinite(lum["pit"])
        out["calibration"] = _calibration(lum, truth, i_mag, ok)
    out["classical_calibration"] = {}
    for name, res in results.items():
        if name == "lumos":
            continue
        ok = usable(res)
        pit = gaussian_pit(res["flux"][ok], res["flux_err"][ok], truth[ok])
        lo, hi = res["flux"] - res["flux_err"], res["flux"] + res["flux_err"]
        out["classical_calibration"][name] = {
            "pit_ks": pit_ks_distance(pit),
            "coverage68": interval_coverage(lo[ok], hi[ok], truth[ok]),
        }
    out["accuracy"] = _binned(i_mag, truth, results, common)
    out["table"] = _ratio_table(out["accuracy"])
    if isolated is not None:
        out["n_isolated"] = int((common & isolated).sum())
        out["accuracy_isolated"] = _binned(i_mag, truth, results, common & isolated)
        out["table_isolated"] = _ratio_table(out["accuracy_isolated"])
    out["failures"] = {name: int((~usable(res)).sum()) for name, res in results.items()}
    return out


def _binned(i_mag, truth, results, sel) -> dict:
    """Bias and sigma68 per magnitude bin and overall for the rows ``sel``."""
    acc = {"mag_bins": MAG_BINS.tolist(), "methods": {}}
    for name, res in results.items():
        t = binned_accuracy(i_mag[sel], res["flux"][sel], truth[sel])
        rel = (res["flux"][sel] - truth[sel]) / truth[sel]
        acc["methods"][name] = {
            "bias": [float(v) for v in t["bias"]],
            "sigma68": [float(v) for v in t["sigma68"]],
            "n": [int(v) for v in t["n"]],
            "bias_all": float(np.median(rel)) if rel.size else float("nan"),
            "sigma68_all": sigma68(rel),
        }
    return acc


def _ratio_table(acc: dict) -> dict:
    """Per bin: the best practical classical method and lumos' sigma68 ratios."""
    methods = acc["methods"]
    nbin = len(acc["mag_bins"]) - 1
    best_name, best_s68, over_best, over_oracle = [], [], [], []
    for k in range(nbin):
        cands = {m: methods[m]["sigma68"][k] for m in PRACTICAL if m in methods}
        cands = {m: v for m, v in cands.items() if np.isfinite(v)}
        if cands:
            name = min(cands, key=cands.get)
            best_name.append(name)
            best_s68.append(cands[name])
        else:
            best_name.append(None)
            best_s68.append(float("nan"))
        lum = methods.get("lumos", {}).get("sigma68", [np.nan] * nbin)[k]
        orc = methods.get("weighted_oracle", {}).get("sigma68", [np.nan] * nbin)[k]
        over_best.append(float(lum / best_s68[-1]) if best_s68[-1] else float("nan"))
        over_oracle.append(float(lum / orc) if orc else float("nan"))
    return {
        "best_classical": best_name,
        "best_classical_sigma68": best_s68,
        "lumos_over_best": over_best,
        "lumos_over_oracle": over_oracle,
    }
