"""Experiment 7: signal-to-noise per band (paper Fig. 13) and narrow-band colours (Fig. 10).

Each galaxy of the TEAHUPOO population is observed in two adjacent narrow bands ``b`` and
``b + 1`` (``b`` uniform in NB455..NB835), as two exposures with their own exposure time,
PSF, CCD position, sub-pixel offset and noise on the synthetic sky (with artefacts), both in
the same camera state. For lumos and aperture photometry:

* SNR = flux / flux_err of every exposure; its median in i-magnitude bins per filter tray
  (8 adjacent bands each) and over all bands, and the ratio of the lumos to the aperture
  median SNR per bin;
* the narrow-band colour ``-2.5 log10(f_b / f_{b+1})`` minus the true colour; the width
  (sigma68) of its histogram per method, overall and per i bin (galaxies with both fluxes
  positive for that method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..bands import N_PAUS_BANDS, PAUS_BANDS
from ..stats import sigma68
from .draws import experiment_rng
from .metrics import MAG_BINS, binned_statistic, colour_error
from .repeats import observe_twice
from .scenes import draw_targets, exposure_times

__all__ = ["SnrColourResult", "run_snr_colours", "TRAYS"]

_NAMES = list(PAUS_BANDS)
#: Filter trays: 8 adjacent bands each (name of the first and last band).
TRAYS = tuple((_NAMES[k], _NAMES[k + 7]) for k in range(0, N_PAUS_BANDS, 8))


@dataclass
class SnrColourResult:
    """SNR and colour errors.

    Attributes
    ----------
    i_mag : numpy.ndarray, shape (N,)
        i magnitude of each galaxy.
    band : numpy.ndarray, shape (N, 2)
        Band numbers of the two exposures.
    snr : dict of str to numpy.ndarray
        Method -> SNR, shape (N, 2).
    colour_error : dict of str to numpy.ndarray
        Method -> measured minus true colour, magnitudes, shape (N,).
    metrics : dict
        JSON-ready summary.
    """

    i_mag: np.ndarray
    band: np.ndarray
    snr: dict[str, np.ndarray]
    colour_error: dict[str, np.ndarray]
    metrics: dict


def run_snr_colours(
    model,
    n: int,
    seed: int,
    methods: tuple[str, ...] = ("aperture",),
    progress: Callable[[str], None] | None = None,
) -> SnrColourResult:
    """Observe ``n`` galaxies in two adjacent bands and measure them.

    Parameters
    ----------
    model, seed, methods, progress
        As in :func:`~lumos.validation.accuracy.run_accuracy`.
    n : int
        Number of galaxies (each observed in two bands).

    Returns
    -------
    SnrColourResult
    """
    rng = experiment_rng("SNR/colour", n, seed)
    b1 = rng.integers(0, N_PAUS_BANDS - 1, n)
    first, gal = draw_targets(n, rng, band=b1)
    b2 = b1 + 1
    second, meas = observe_twice(
        model, first, rng, methods, progress, "snr/colours: band",
        band=b2, flux=gal.flux_e_per_s[np.arange(n), b2] * exposure_times(b2),
    )  # fmt: skip
    snr, dcol = {}, {}
    for name in meas[0]:
        with np.errstate(divide="ignore", invalid="ignore"):
            snr[name] = np.column_stack([m[name]["flux"] / m[name]["flux_err"] for m in meas])
        dcol[name] = colour_error(meas[0][name]["flux"], meas[1][name]["flux"],
                                  first.flux, second.flux)  # fmt: skip
    band = np.column_stack([b1, b2])
    return SnrColourResult(first.i_mag, band, snr, dcol, _metrics(first.i_mag, band, snr, dcol))


def _median(x: np.ndarray) -> float:
    return float(np.median(x))


def _metrics(i_mag, band, snr, dcol) -> dict:
    mag2 = np.repeat(i_mag, 2)
    band2 = band.reshape(-1)
    out: dict = {"n": int(i_mag.size), "mag_bins": MAG_BINS.tolist(),
                 "trays": [f"{a}-{b}" for a, b in TRAYS], "snr": {}, "colour": {}}  # fmt: skip
    for name, s in snr.items():
        s2 = s.reshape(-1)
        all_bins, count = binned_statistic(mag2, s2, MAG_BINS, _median)
        trays = []
        for k in range(len(TRAYS)):
            sel = (band2 // 8) == k
            trays.append(binned_statistic(mag2[sel], s2[sel], MAG_BINS, _median)[0].tolist())
        per_band = [float(np.nanmedian(s2[band2 == b])) if np.isfinite(s2[band2 == b]).any()
                    else float("nan") for b in range(N_PAUS_BANDS)]  # fmt: skip
        out["snr"][name] = {"median_per_bin": all_bins.tolist(), "n_per_bin": count.tolist(),
                            "median_per_tray_bin": trays, "median_per_band": per_band}  # fmt: skip
    if "lumos" in snr:
        for name in snr:
            if name == "lumos":
                continue
            a = np.asarray(out["snr"]["lumos"]["median_per_bin"])
            b = np.asarray(out["snr"][name]["median_per_bin"])
            out["snr"][f"lumos_over_{name}"] = (a / b).tolist()
            ta = np.asarray(out["snr"]["lumos"]["median_per_tray_bin"])
            tb = np.asarray(out["snr"][name]["median_per_tray_bin"])
            out["snr"][f"lumos_over_{name}_per_tray_bin"] = (ta / tb).tolist()
    for name, d in dcol.items():
        per_bin, count = binned_statistic(i_mag, d, MAG_BINS)
        ok = np.isfinite(d)
        out["colour"][name] = {
            "sigma68": sigma68(d),
            "median": float(np.median(d[ok])) if ok.any() else float("nan"),
            "sigma68_per_bin": per_bin.tolist(),
            "n_per_bin": count.tolist(),
            "fraction_measured": float(ok.mean()),
        }
    return out
