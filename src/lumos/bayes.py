"""Likelihoods, shared errors and priors in measurement tables; co-adds of likelihoods.

A likelihood model (``NetworkConfig(likelihood=True)``) gives, for every galaxy and exposure,
a Gaussian mixture ``L(f)`` of the flux from the pixels and the model profile alone. Its
width holds two kinds of error:

* what differs between exposures (photon and sky noise, cosmic rays, the PSF), and
* what every exposure of the galaxy shares: the catalogue's profile and its errors, which
  move every exposure's flux the same way. It is modelled as a relative error
  ``sigma_shared = c |f|``, with ``c`` one number or a curve of the exposure's relative
  likelihood width (:class:`SharedError`, fitted by :mod:`lumos.calibration`).

Measurement tables keep them apart (columns of :data:`LIKELIHOOD_COLUMNS`):

* ``like_weight``, ``like_mean``, ``like_sigma``: the per-exposure likelihood, the mixture
  with the shared variance taken out of every component
  (``s_k'^2 = max(s_k^2 - sigma_shared^2, (SHARED_FLOOR s_k)^2)``);
* ``flux_like``, ``flux_like_err``: its mean and standard deviation, so that
  ``D = (f1 - f2) / sqrt(e1^2 + e2^2)`` (Eq. 19) on two exposures is N(0, 1);
* ``flux_shared_err``: ``sigma_shared``.

The posterior columns (``flux``, ``flux_err``, ``pdf_*``) are
``[L_exposure * N(0, sigma_shared^2)](f) * p(f | i, band)``, truncated at zero flux: the
likelihood with its shared error, times the prior (:mod:`lumos.prior`) applied once. A
co-add (:func:`coadd_likelihoods`) multiplies the per-exposure likelihoods of a galaxy,
adds the shared variance once, and applies the prior once.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from astropy.table import Table, vstack

from .bands import band_from_index
from .coadd import group_by_id_and_band, group_slots, inverse_variance_coadd, zero_point_rows
from .errors import LumosError
from .flags import UNUSABLE
from .mixture import GaussianMixture, product
from .prior import EMPIRICAL_FORM, FluxPrior, PriorChoice, choose_prior, posterior
from .shared_error import SharedError, relative_width

__all__ = [
    "LIKELIHOOD_COLUMNS",
    "SHARED_FLOOR",
    "PRIOR_CHOICES",
    "SharedError",
    "relative_width",
    "split_shared",
    "fill_likelihood",
    "default_population_prior",
    "apply_prior",
    "coadd_likelihoods",
    "predict_posterior",
]

LIKELIHOOD_COLUMNS = ("flux_like", "flux_like_err", "flux_shared_err", "like_weight",
                      "like_mean", "like_sigma")  # fmt: skip
#: Smallest fraction of a component's sigma kept when the shared variance is removed.
SHARED_FLOOR = 0.3
PRIOR_CHOICES = ("auto", "population", "empirical", "none")
_POSTERIOR_COMPONENTS = 5
_SUMMARY_FLUX = ("flux", "flux_err", "flux_median", "flux_peak", "flux_q16", "flux_q84",
                 "sigma68", "sigma95")  # fmt: skip


def split_shared(mixture: GaussianMixture, shared_error: float | SharedError,
                 size=None) -> tuple[GaussianMixture, torch.Tensor]:
    """Remove the shared relative error from a likelihood mixture.

    Parameters
    ----------
    mixture : GaussianMixture
        Likelihood mixtures (untruncated), N rows.
    shared_error : float or SharedError
        Relative shared error ``c`` (0 leaves the mixture unchanged), one number or a
        :class:`SharedError`.
    size : array_like, shape (N,), optional
        The rows' profile half-light radii (pixels), for a size-dependent shared error.

    Returns
    -------
    per_exposure : GaussianMixture
        Components with ``s_k'^2 = max(s_k^2 - (c |mean|)^2, (SHARED_FLOOR s_k)^2)``.
    sigma_shared : torch.Tensor, shape (N,)
        ``c |mean|`` of each row.
    """
    if not isinstance(shared_error, SharedError):
        shared_error = SharedError(float(shared_error))
    mean = mixture.mean()
    c = shared_error.relative(mixture, size).to(mean.dtype)
    shared = c * mean.abs()
    s2 = mixture.sigmas**2 - shared[:, None] ** 2
    sig = torch.sqrt(torch.maximum(s2, (SHARED_FLOOR * mixture.sigmas) ** 2))
    return GaussianMixture(mixture.log_weights, mixture.means, sig, None), shared


def fill_likelihood(out: Table, rows, like: GaussianMixture, shared_error: float | SharedError,
                    to_image_units: float, size=None) -> None:
    """Write the likelihood columns of ``rows`` of a measurement table.

    Parameters
    ----------
    out : astropy Table
        With the :data:`LIKELIHOOD_COLUMNS` (vector columns of length K).
    rows : slice
    like : GaussianMixture
        The model's likelihood mixtures (electrons).
    shared_error : float or SharedError
        The model's shared error (:meth:`SharedError.of` its configuration).
    to_image_units : float
        Electrons per image unit (the gain).
    size : array_like, optional
        The rows' profile half-light radii (pixels), for a size-dependent shared error.
    """
    per, shared = split_shared(like.to(torch.float64), shared_error, size)
    g = float(to_image_units)
    out["flux_like"][rows] = per.mean().numpy() / g
    out["flux_like_err"][rows] = per.std().numpy() / g
    out["flux_shared_err"][rows] = shared.numpy() / g
    arrays = per.numpy()
    out["like_weight"][rows] = arrays["weight"]
    out["like_mean"][rows] = arrays["mean"] / g
    out["like_sigma"][rows] = arrays["sigma"] / g


@lru_cache(maxsize=1)
def default_population_prior() -> FluxPrior:
    """The shipped TEAHUPOO population prior (``lumos/data/prior/population.ecsv``, written by
    ``lumos prior --out population.ecsv``: 100,000 galaxies, seed 0)."""
    path = resources.files("lumos") / "data" / "prior" / "population.ecsv"
    with resources.as_file(path) as p:
        prior = FluxPrior.read(p)
    return FluxPrior("population", prior.bands, prior.i_edges, prior.weight, prior.mean,
                     prior.sigma, per_second=True)  # fmt: skip


def _mixture_columns(table: Table, prefix: str) -> GaussianMixture:
    w = np.asarray(table[f"{prefix}_weight"], float)
    mu = np.asarray(table[f"{prefix}_mean"], float)
    sg = np.asarray(table[f"{prefix}_sigma"], float)
    used = w > 0
    return GaussianMixture.from_arrays(np.where(used, w, 0.0), np.where(used, mu, 0.0),
                                       np.where(used, sg, 1.0))  # fmt: skip


def _with_shared(mix: GaussianMixture, shared: np.ndarray) -> GaussianMixture:
    s = torch.from_numpy(np.nan_to_num(np.asarray(shared, float)))
    sig = torch.sqrt(mix.sigmas**2 + s[:, None] ** 2)
    return GaussianMixture(mix.log_weights, mix.means, sig, None)


def _usable(table: Table) -> np.ndarray:
    flags = np.asarray(table["flags"], dtype=np.int64)
    ok = (flags & int(UNUSABLE)) == 0
    for name in ("flux_like", "flux_like_err"):
        ok &= np.isfinite(np.asarray(table[name], float))
    return ok


def _prior_for(table_like: dict, prior, unit) -> tuple[GaussianMixture | None, np.ndarray, str]:
    """Prior mixtures for rows with ``band``, ``i_mag`` (and the likelihoods for learning)."""
    if isinstance(prior, FluxPrior):
        chosen = prior
    else:
        choice = prior if isinstance(prior, PriorChoice) else str(prior)
        chosen = choose_prior(choice, table_like, population=default_population_prior())
    if chosen is None:
        return None, np.zeros(len(table_like["i_mag"]), bool), "none"
    scale = unit if chosen.per_second else 1.0
    mix, known = chosen.mixture(table_like["band"], table_like["i_mag"], scale)
    kind = chosen.kind
    if isinstance(prior, PriorChoice) and kind == "empirical" and prior.form != EMPIRICAL_FORM:
        kind = f"{kind} ({prior.form})"
    return mix, known, kind


def _posterior_columns(out: Table) -> None:
    """Add the posterior columns a table lacks (NaN; PDFs of ``_POSTERIOR_COMPONENTS``)."""
    n = len(out)
    for name in _SUMMARY_FLUX + ("eta",):
        if name not in out.colnames:
            out[name] = np.full(n, np.nan)
    for name, fill in (("pdf_weight", 0.0), ("pdf_mean", np.nan), ("pdf_sigma", np.nan)):
        if name not in out.colnames:
            out[name] = np.full((n, _POSTERIOR_COMPONENTS), fill)


def _write_posterior(out: Table, rows: np.ndarray, post: GaussianMixture) -> None:
    summary = post.summaries()
    for name in _SUMMARY_FLUX:
        out[name][rows] = summary[name]
    out["eta"][rows] = summary["eta"]
    arrays = post.numpy()
    k = out["pdf_weight"].shape[1]
    kk = arrays["weight"].shape[1]
    w = np.zeros((rows.size, k))
    mu = np.full((rows.size, k), np.nan)
    sg = np.full((rows.size, k), np.nan)
    w[:, :kk], mu[:, :kk], sg[:, :kk] = arrays["weight"], arrays["mean"], arrays["sigma"]
    out["pdf_weight"][rows], out["pdf_mean"][rows], out["pdf_sigma"][rows] = w, mu, sg
    if "pdf_truncated" in out.colnames:
        out["pdf_truncated"][rows] = True


def apply_prior(table: Table, prior="auto", exposure_time: float | None = None,
                gain: float = 1.0) -> Table:
    """Fill a measurement table's posterior columns from its likelihood columns.

    Parameters
    ----------
    table : astropy Table
        With ``band``, ``i_mag``, ``flags`` and :data:`LIKELIHOOD_COLUMNS`; changed in
        place (posterior columns it lacks are added).
    prior : str, PriorChoice or FluxPrior
        A :data:`PRIOR_CHOICES` name, the path of a prior table, a
        :class:`~lumos.prior.PriorChoice` (a name and the learnt prior's form), or a prior.
    exposure_time : float, optional
        Seconds (for a prior in electrons per second; default 1).
    gain : float
        Electrons per image unit.

    Returns
    -------
    astropy Table
        ``table``, with ``meta["PRIOR"]`` naming the prior used.
    """
    _posterior_columns(table)
    rows = np.flatnonzero(_usable(table))
    i_mag = np.asarray(table["i_mag"], float)[rows]
    sub = {"flux": np.where(np.isfinite(i_mag), np.asarray(table["flux_like"], float)[rows],
                            np.nan),
           "flux_err": np.hypot(np.asarray(table["flux_like_err"], float)[rows],
                                np.nan_to_num(np.asarray(table["flux_shared_err"], float)[rows])),
           "i_mag": i_mag,
           "band": np.asarray(table["band"]).astype(str)[rows]}  # fmt: skip
    unit = (exposure_time or 1.0) / float(gain)
    prior_mix, known, kind = _prior_for(sub, prior, unit) if rows.size \
        else (None, np.zeros(0, bool), str(prior))  # fmt: skip
    if rows.size:
        full = _with_shared(_mixture_columns(table[rows], "like"),
                            np.asarray(table["flux_shared_err"], float)[rows])  # fmt: skip
        post = posterior(full, prior_mix, known, max_components=_POSTERIOR_COMPONENTS)
        _write_posterior(table, rows, post)
    table.meta["PRIOR"] = kind
    return table


def coadd_likelihoods(tables: list[Table] | Table, prior="auto",
                      unusable: int = UNUSABLE, zero_points: Table | None = None) -> Table:
    """Co-add per (id, band): the product of the exposures' likelihoods, the shared error
    and the prior once.

    For each galaxy and band the per-exposure likelihoods (``like_*``) are multiplied
    (:func:`lumos.mixture.product`, reduced to 5 components), the shared variance
    ``(c |f|)^2``, with ``c`` the mean of the exposures' ``flux_shared_err / |flux_like|``
    weighted by ``1 / flux_like_err^2`` (the weights of the co-add), is added once, and
    the prior is applied once (learnt from the co-added likelihoods with ``prior="auto"``
    where a band has enough galaxies). The inverse-variance co-add
    (Eq. 21) of ``flux_like`` with ``flux_like_err`` is given beside it.

    Parameters
    ----------
    tables : astropy Table or list of Tables
        Measurement tables of a likelihood model (with ``i_mag``).
    prior : str, PriorChoice or FluxPrior
        As in :func:`apply_prior`. A prior in electrons per second needs ``EXPTIME``
        and ``GAIN`` in the tables' meta.
    unusable : int
        Flag bits that exclude an exposure.
    zero_points : astropy Table, optional
        Multiplicative calibrations (:func:`lumos.coadd.zero_point_rows`): each exposure's
        likelihood is multiplied by ``zp`` and its components widened by ``flux * zp_err``
        (the calibration error differs between exposures) before the product; exposures
        without a zero point are left out.

    Returns
    -------
    astropy Table
        One row per (id, band): ``id``, ``band``, ``i_mag``, ``n_exposures``,
        ``flux_like``, ``flux_like_err`` (likelihood co-add without the shared error),
        ``flux_shared_err``, ``flux_ivar``, ``flux_ivar_err`` (Eq. 21 of ``flux_like``),
        then the posterior's ``flux``, ``flux_err``, ``flux_median``, ``flux_peak``,
        ``flux_q16``, ``flux_q84``, ``sigma68``, ``sigma95``, ``eta``.
    """
    if isinstance(tables, Table):
        tables = [tables]
    need = ("id", "band", "flags", "i_mag") + LIKELIHOOD_COLUMNS
    for i, t in enumerate(tables):
        missing = [c for c in need if c not in t.colnames]
        if missing:
            raise LumosError(f"measurement table {i} lacks likelihood column(s): "
                             f"{', '.join(missing)} (measure with a likelihood model)")
    units = []
    for t in tables:
        exp = t.meta.get("EXPTIME")
        gain = float(t.meta.get("GAIN", 1.0) or 1.0)
        units.append(np.full(len(t), (float(exp) if exp else 1.0) / gain))

    allt = vstack([t[list(need)] for t in tables], metadata_conflicts="silent")
    unit_row = np.concatenate(units) if units else np.zeros(0)
    flags = np.asarray(allt["flags"], np.int64)
    use = ((flags & int(unusable)) == 0) & np.isfinite(np.asarray(allt["flux_like"], float)) \
        & np.isfinite(np.asarray(allt["flux_like_err"], float))  # fmt: skip
    if zero_points is not None:
        allt, good = _calibrated(allt, tables, zero_points)
        use &= good
        unit_row = unit_row * np.asarray(allt["zp_applied"], float)
    ids = np.asarray(allt["id"])
    bands = np.asarray(allt["band"]).astype(str)
    group, first = group_by_id_and_band(ids, bands)
    g = len(first)
    out = Table()
    out["id"] = ids[first]
    out["band"] = bands[first]
    out["i_mag"] = np.asarray(allt["i_mag"], float)[first]
    n_used = np.bincount(group, weights=use, minlength=g).astype(np.int64)
    out["n_exposures"] = n_used
    for name in ("flux_like", "flux_like_err", "flux_shared_err", "flux_ivar",
                 "flux_ivar_err") + _SUMMARY_FLUX + ("eta",):
        out[name] = np.full(g, np.nan)
    # inverse-variance co-add of the likelihood estimates
    f = np.asarray(allt["flux_like"], float)
    out["flux_ivar"], out["flux_ivar_err"] = inverse_variance_coadd(
        group, f, np.asarray(allt["flux_like_err"], float), use, g)
    if not use.any():
        out.meta["PRIOR"] = str(prior)
        return out
    # product of the likelihood mixtures, exposures padded with a flat factor
    mix = _mixture_columns(allt, "like")
    # the shared relative error of the co-add: the exposures' own, averaged with the weights
    # the co-add gives them (inverse variance of their per-exposure likelihoods), as for an
    # error common to all of them
    rel = np.asarray(allt["flux_shared_err"], float) / np.maximum(np.abs(f), 1e-300)
    err = np.asarray(allt["flux_like_err"], float)
    ok = use & np.isfinite(rel) & np.isfinite(err) & (err > 0)
    c_group = np.nan_to_num(inverse_variance_coadd(group, rel, err, ok, g)[0], nan=0.0)
    rows = np.flatnonzero(use)
    order, slot, counts = group_slots(group[rows], g)
    order = rows[order]
    k = mix.n_components
    has = np.flatnonzero(counts > 0)
    factors = []
    for s in range(int(counts.max())):
        lw = torch.zeros(g, k, dtype=torch.float64)
        lw[:, 1:] = -math.inf
        mu = torch.zeros(g, k, dtype=torch.float64)
        sg = torch.full((g, k), 1e30, dtype=torch.float64)
        pick = order[slot == s]
        gi = torch.from_numpy(group[pick])
        lw[gi], mu[gi], sg[gi] = mix.log_weights[pick], mix.means[pick], mix.sigmas[pick]
        factors.append(GaussianMixture(lw[has], mu[has], sg[has]))
    like = product(factors, max_components=_POSTERIOR_COMPONENTS)
    like_mean = like.mean().numpy()
    out["flux_like"][has] = like_mean
    out["flux_like_err"][has] = like.std().numpy()
    shared = c_group[has] * np.abs(like_mean)
    out["flux_shared_err"][has] = shared
    full = _with_shared(like, shared)
    unit_group = np.ones(g)
    unit_group[group[order]] = unit_row[order]
    lk = {"flux": like_mean, "flux_err": np.hypot(like.std().numpy(), shared),
          "i_mag": np.asarray(out["i_mag"], float)[has],
          "band": np.asarray(out["band"]).astype(str)[has]}  # fmt: skip
    prior_mix, known, kind = _prior_for(lk, prior, unit_group[has])
    post = posterior(full, prior_mix, known, max_components=_POSTERIOR_COMPONENTS)
    summary = post.summaries()
    for name in _SUMMARY_FLUX + ("eta",):
        out[name][has] = summary[name]
    out.meta["PRIOR"] = kind
    out.meta["COADD"] = "likelihood"
    return out


def predict_posterior(model, batch, prior: FluxPrior | None = None,
                      likelihood: GaussianMixture | None = None) -> GaussianMixture:
    """Posterior flux PDFs of a simulated batch (electrons) from a likelihood model.

    The band and exposure time of each row come from its band x camera-state index; the
    prior defaults to the shipped population prior (what the simulations draw from).

    Parameters
    ----------
    model : LumosNet
        With ``config.likelihood``; other models' own output is returned unchanged.
    batch : StampBatch
    prior : FluxPrior, optional
    likelihood : GaussianMixture, optional
        The model's output for ``batch`` if already computed.

    Returns
    -------
    GaussianMixture
    """
    like = (model.predict(batch) if likelihood is None else likelihood).to(torch.float64)
    if not getattr(model.config, "likelihood", False):
        return like
    prior = default_population_prior() if prior is None else prior
    codes = batch.band_idx.cpu().numpy()
    names, exptime = np.empty(len(codes), dtype=object), np.ones(len(codes))
    for code in np.unique(codes):
        band, _ = band_from_index(int(code))
        names[codes == code] = band.name
        exptime[codes == code] = band.exposure_time
    mix, known = prior.mixture(names.astype(str), batch.i_mag.cpu().numpy(),
                               exptime if prior.per_second else 1.0)  # fmt: skip
    return posterior(like, mix, known, max_components=_POSTERIOR_COMPONENTS)


def _calibrated(allt: Table, tables: list[Table], zero_points: Table) -> tuple[Table, np.ndarray]:
    """Likelihood columns times each exposure's zero point, widened by its error."""
    _, zp, zp_err = zero_point_rows(zero_points, tables)
    good = np.isfinite(zp) & (zp > 0) & np.isfinite(zp_err) & (zp_err >= 0)
    zp = np.where(good, zp, 1.0)
    zp_err = np.where(good, zp_err, 0.0)
    out = allt.copy()
    mix = _mixture_columns(allt, "like").calibrate(torch.from_numpy(zp), torch.from_numpy(zp_err))
    used = np.asarray(allt["like_weight"], float) > 0
    out["like_mean"] = np.where(used, mix.means.numpy(), np.nan)
    out["like_sigma"] = np.where(used, mix.sigmas.numpy(), np.nan)
    flux = np.asarray(allt["flux_like"], float)
    out["flux_like"] = flux * zp
    out["flux_like_err"] = np.hypot(np.asarray(allt["flux_like_err"], float) * zp, flux * zp_err)
    out["flux_shared_err"] = np.asarray(allt["flux_shared_err"], float) * zp
    out["zp_applied"] = zp
    return out, good
