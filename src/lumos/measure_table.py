"""The measurement table: its columns, and how a method's results fill its rows.

Every method gives the same columns (:data:`OUTPUT_COLUMNS`): the network its posterior
summaries and mixture parameters (:func:`fill_from_mixture`), the classical methods their
Gaussian error as a one-component mixture and as a likelihood (:func:`fill_gaussian`).
Rows that cannot be measured keep NaN fluxes (:func:`flag_unusable`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.special import ndtri

from .flags import Flag
from .imageio import ImageMeta
from .stats import P16, P975

__all__ = ["N_COMPONENTS", "OUTPUT_COLUMNS", "FLUX_COLUMNS", "empty_output", "fill_from_mixture",
           "fill_gaussian", "flag_unusable"]

#: Slots of the mixture columns (``pdf_*``, ``like_*``) per row.
N_COMPONENTS = 5
#: The columns of a measurement table, in order.
OUTPUT_COLUMNS = (
    "id", "x", "y", "band", "flux", "flux_err", "flux_median", "flux_peak", "flux_q16",
    "flux_q84", "sigma68", "sigma95", "eta", "pdf_weight", "pdf_mean", "pdf_sigma",
    "pdf_truncated", "flags", "i_mag", "flux_like", "flux_like_err", "flux_shared_err",
    "like_weight", "like_mean", "like_sigma",
)  # fmt: skip
#: The flux columns in the image's units.
FLUX_COLUMNS = ("flux", "flux_err", "flux_median", "flux_peak", "flux_q16", "flux_q84",
                "sigma68", "sigma95")  # fmt: skip


def empty_output(catalogue: Table, meta: ImageMeta) -> Table:
    """A catalogue's table before measurement: positions, band, flags, ``i_mag``; no fluxes."""
    n = len(catalogue)
    out = Table()
    out["id"] = catalogue["id"]
    out["x"] = np.asarray(catalogue["x"], dtype=float)
    out["y"] = np.asarray(catalogue["y"], dtype=float)
    out["band"] = np.full(n, meta.band.name)
    for name in FLUX_COLUMNS + ("eta",):
        out[name] = np.full(n, np.nan)
    out["pdf_weight"] = np.zeros((n, N_COMPONENTS))
    out["pdf_mean"] = np.full((n, N_COMPONENTS), np.nan)
    out["pdf_sigma"] = np.full((n, N_COMPONENTS), np.nan)
    out["pdf_truncated"] = np.zeros(n, dtype=bool)
    out["flags"] = np.asarray(catalogue["flags"], dtype=np.int64).copy()
    out["i_mag"] = np.asarray(catalogue["i_mag"], dtype=float)
    for name in ("flux_like", "flux_like_err", "flux_shared_err"):
        out[name] = np.full(n, np.nan)
    out["like_weight"] = np.zeros((n, N_COMPONENTS))
    out["like_mean"] = np.full((n, N_COMPONENTS), np.nan)
    out["like_sigma"] = np.full((n, N_COMPONENTS), np.nan)
    return out


def fill_from_mixture(out: Table, rows: slice, mixture, to_image_units: float) -> None:
    """Posterior summaries and mixture parameters of ``rows`` (fluxes / ``to_image_units``)."""
    summary = mixture.summaries()
    for name in FLUX_COLUMNS:
        out[name][rows] = np.asarray(summary[name], dtype=float) / to_image_units
    out["eta"][rows] = np.asarray(summary["eta"], dtype=float)
    arrays = mixture.numpy()
    out["pdf_weight"][rows] = np.asarray(arrays["weight"], dtype=float)
    out["pdf_mean"][rows] = np.asarray(arrays["mean"], dtype=float) / to_image_units
    out["pdf_sigma"][rows] = np.asarray(arrays["sigma"], dtype=float) / to_image_units
    out["pdf_truncated"][rows] = np.asarray(arrays["truncated"], dtype=bool)


def fill_gaussian(out: Table, rows: slice, flux, flux_err) -> None:
    """Classical results as one-component mixtures (the other weights zero)."""
    flux = np.asarray(flux, dtype=float)
    err = np.asarray(flux_err, dtype=float)
    out["flux"][rows] = flux
    out["flux_err"][rows] = err
    out["flux_median"][rows] = flux
    out["flux_peak"][rows] = flux
    z16, z975 = ndtri(P16), ndtri(P975)  # -1 and 1.96: the quantile levels of lumos.stats
    out["flux_q16"][rows] = flux + z16 * err
    out["flux_q84"][rows] = flux - z16 * err
    out["sigma68"][rows] = err
    out["sigma95"][rows] = z975 * err
    out["eta"][rows] = np.where(np.isfinite(err), z975 - 1.0, np.nan)  # Eq. 22
    n = len(flux)
    weight = np.zeros((n, N_COMPONENTS))
    weight[:, 0] = 1.0
    mean = np.full((n, N_COMPONENTS), np.nan)
    sigma = np.full((n, N_COMPONENTS), np.nan)
    mean[:, 0], sigma[:, 0] = flux, err
    out["pdf_weight"][rows], out["pdf_mean"][rows], out["pdf_sigma"][rows] = weight, mean, sigma
    # a classical estimate is a likelihood: no prior, no shared error modelled
    out["flux_like"][rows], out["flux_like_err"][rows] = flux, err
    out["flux_shared_err"][rows] = np.where(np.isfinite(flux), 0.0, np.nan)
    out["like_weight"][rows], out["like_mean"][rows], out["like_sigma"][rows] = weight, mean, sigma


def flag_unusable(out: Table, rows: slice | np.ndarray) -> None:
    """Rows off the image or with nothing to measure (``FAILED``) get NaN fluxes, never a
    made-up number."""
    bad = (np.asarray(out["flags"][rows]) & int(Flag.OFF_IMAGE | Flag.FAILED)) != 0
    if np.any(bad):
        idx = np.arange(len(out))[rows][bad]
        for name in FLUX_COLUMNS + ("eta",):
            out[name][idx] = np.nan
        out["pdf_weight"][idx] = 0.0
        out["pdf_mean"][idx] = np.nan
        out["pdf_sigma"][idx] = np.nan
        for name in ("flux_like", "flux_like_err", "flux_shared_err"):
            out[name][idx] = np.nan
        out["like_weight"][idx] = 0.0
        out["like_mean"][idx] = np.nan
        out["like_sigma"][idx] = np.nan
