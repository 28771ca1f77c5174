"""Co-adds of several exposures' measurements, per galaxy and band.

Two co-adds are made from the per-exposure rows of one or more measurement tables
(the output of ``lumos measure``):

* the inverse-variance co-add of the point estimates (Eq. 21 of Cabayol et al.)::

      flux_ivar = sum_i f_i / e_i^2 / sum_i 1 / e_i^2,   flux_ivar_err = (sum_i 1 / e_i^2)^-1/2

* the PDF-level co-add: the normalised product of the (calibrated) per-exposure Gaussian
  mixtures, p(f) ~ prod_i p_i(f), summarised by :func:`lumos.grid_product.product_summaries`
  (re-exported here) with the conventions of :mod:`lumos.mixture`.

Zero points (optional) are multiplicative calibrations applied to every exposure before
co-adding, with :meth:`GaussianMixture.calibrate` for the PDFs and the same propagation for
the point estimates: f' = zp f, e'^2 = zp^2 e^2 + (f zp_err)^2.
"""

from __future__ import annotations

import numpy as np
import torch
from astropy.table import Table

from . import flags as flagbits
from .errors import LumosError
from .grid_product import product_summaries
from .mixture import SUMMARY_KEYS, GaussianMixture, truncate_mask

__all__ = ["coadd_tables", "check_exposures", "product_summaries", "COADD_METHODS"]

COADD_METHODS = ("both", "ivar", "pdf")

_PDF_KEYS = SUMMARY_KEYS


def _column(tables: list[Table], name: str, dtype=None) -> np.ndarray:
    """One column of all tables, concatenated; masked float entries become NaN."""
    parts = []
    for t in tables:
        col = t[name]
        if hasattr(col, "filled"):
            col = col.filled(np.nan) if col.dtype.kind == "f" else col.filled()
        parts.append(np.asarray(col, dtype=dtype))
    return np.concatenate(parts, axis=0)


def _flux_unit(tables: list[Table]):
    """The common unit of the flux columns (None if there is none); mixed units are an error."""
    units = {
        t[name].unit.to_string()
        for t in tables
        for name in ("flux", "flux_err", "pdf_mean", "pdf_sigma")
        if name in t.colnames and t[name].unit is not None
    }
    if len(units) > 1:
        raise LumosError(
            f"the measurement tables mix flux units ({', '.join(sorted(units))}): convert them "
            "to one unit before co-adding"
        )
    return units.pop() if units else None


def zero_point_rows(
    zero_points: Table, tables: list[Table]
) -> tuple[str, np.ndarray, np.ndarray]:
    """Zero point and its error for every exposure row (NaN where there is none).

    Parameters
    ----------
    zero_points : astropy Table
        ``zp``, optional ``zp_err``, and the join key ``image`` (when every measurement
        table has it) or ``band``.
    tables : list of astropy Table

    Returns
    -------
    key : str
        The join key used.
    zp, zp_err : numpy.ndarray
        Per row of the stacked tables.
    """
    if "zp" not in zero_points.colnames:
        raise LumosError("the zero-point table needs a 'zp' column")
    if "image" in zero_points.colnames and all("image" in t.colnames for t in tables):
        key = "image"
    elif "band" in zero_points.colnames:
        key = "band"
    else:
        raise LumosError(
            "the zero-point table needs an 'image' column (also present in every "
            "measurement table) or a 'band' column"
        )
    keys = np.asarray(zero_points[key]).astype(str)
    if len(np.unique(keys)) != len(keys):
        raise LumosError(f"the zero-point table has duplicate '{key}' values")
    zp = np.asarray(zero_points["zp"], dtype=float)
    err = (
        np.asarray(zero_points["zp_err"], dtype=float)
        if "zp_err" in zero_points.colnames
        else np.zeros(len(zp))
    )
    rows = _column(tables, key).astype(str)
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], rows)
    pos = np.clip(pos, 0, len(keys) - 1)
    found = keys[order][pos] == rows if len(keys) else np.zeros(len(rows), bool)
    zp_rows = np.where(found, zp[order][pos] if len(keys) else np.nan, np.nan)
    err_rows = np.where(found, err[order][pos] if len(keys) else np.nan, np.nan)
    return key, zp_rows, err_rows


def check_exposures(
    tables: list[Table],
    exposures: list | None = None,
    names: list[str] | None = None,
) -> None:
    """Refuse measurement tables that would count an exposure twice or mix methods.

    Parameters
    ----------
    tables : list of astropy Table
        Per-exposure measurement tables.
    exposures : list, optional
        For each table, the exposure of its rows: one value (str) or one per row. Default:
        the ``image`` column when every table has one, else no duplicate check.
    names : list of str, optional
        Table names for the messages (default ``table 0``, ``table 1``, ...).

    Raises
    ------
    LumosError
        When a galaxy appears twice for one exposure and band (the same table given twice,
        or the same image measured twice), or when the tables' ``METHOD`` metadata differ (e.g.
        aperture and lumos measurements).
    """
    names = [f"table {i}" for i in range(len(tables))] if names is None else list(names)
    methods = {}
    for name, t in zip(names, tables, strict=True):
        if "METHOD" in t.meta:
            methods.setdefault(str(t.meta["METHOD"]), name)
    if len(methods) > 1:
        listed = ", ".join(f"{m} ({name})" for m, name in sorted(methods.items()))
        raise LumosError(f"the tables mix measurement methods: {listed}; co-add one method at "
                         "a time")  # fmt: skip
    if exposures is None:
        if not all("image" in t.colnames for t in tables):
            return
        exposures = [t["image"] for t in tables]
    per_row = [np.broadcast_to(np.asarray(e).astype(str), (len(t),))
               for e, t in zip(exposures, tables, strict=True)]  # fmt: skip
    which = np.concatenate([np.full(len(t), i) for i, t in enumerate(tables)]) if tables else []
    ids = _column(tables, "id") if tables else np.zeros(0)
    if len(ids) < 2:
        return
    _, id_code = np.unique(ids, return_inverse=True)
    _, band_code = np.unique(_column(tables, "band").astype(str), return_inverse=True)
    _, exp_code = np.unique(np.concatenate(per_row), return_inverse=True)
    n_band, n_exp = int(band_code.max()) + 1, int(exp_code.max()) + 1
    key = (id_code.astype(np.int64) * n_band + band_code) * n_exp + exp_code
    order = np.argsort(key, kind="stable")
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(same):
        first, second = order[same[0]], order[same[0] + 1]
        exposure = np.concatenate(per_row)[first]
        where = (f"in {names[which[first]]}" if which[first] == which[second]
                 else f"in {names[which[first]]} and {names[which[second]]}")  # fmt: skip
        raise LumosError(f"galaxy id {ids[first]} appears twice for exposure {exposure} "
                         f"({where}): is a table given twice?")  # fmt: skip


def group_by_id_and_band(ids: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of rows with one (id, band), numbered in the order of id, then band.

    Parameters
    ----------
    ids, bands : numpy.ndarray, shape (N,)

    Returns
    -------
    group : numpy.ndarray of int, shape (N,)
        Group number of each row.
    first : numpy.ndarray of int, shape (G,)
        A row of each group (its ``id`` and ``band`` label the group).
    """
    uid, id_inv = np.unique(ids, return_inverse=True)
    uband, band_inv = np.unique(bands, return_inverse=True)
    code = id_inv.astype(np.int64) * max(len(uband), 1) + band_inv
    _, first, group = np.unique(code, return_index=True, return_inverse=True)
    return group.reshape(-1), first


def group_slots(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows sorted by group and each row's position within its group.

    Returns
    -------
    order : numpy.ndarray of int
        Row indices, grouped (stable within a group).
    slot : numpy.ndarray of int
        Position of row ``order[i]`` in its group, 0 .. count - 1.
    counts : numpy.ndarray of int, shape (n_groups,)
        Rows per group.
    """
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    counts = np.bincount(g_sorted, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, np.arange(g_sorted.size) - starts[g_sorted], counts


def inverse_variance_coadd(group: np.ndarray, flux: np.ndarray, err: np.ndarray,
                           use: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 21 per group: ``sum(f / s^2) / sum(1 / s^2)`` and its error ``sum(1 / s^2)^-1/2``.

    Parameters
    ----------
    group : numpy.ndarray of int, shape (N,)
        Group (galaxy and band) of each measurement, 0 .. n_groups - 1.
    flux, err : numpy.ndarray, shape (N,)
        Measurements and their errors.
    use : numpy.ndarray of bool, shape (N,)
        Measurements to include (their flux and error finite, error > 0).
    n_groups : int

    Returns
    -------
    flux, err : numpy.ndarray, shape (n_groups,)
        NaN for groups without a used measurement.
    """
    inv = np.where(use, 1.0 / np.where(use, err, 1.0) ** 2, 0.0)
    sw = np.bincount(group, weights=inv, minlength=n_groups)
    swf = np.bincount(group, weights=np.where(use, flux, 0.0) * inv, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw > 0, swf / sw, np.nan), np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)


def coadd_tables(
    tables: list[Table] | Table,
    zero_points: Table | None = None,
    method: str = "both",
    unusable: int = flagbits.UNUSABLE,
    *,
    grid_points: int = 768,
    truncate_threshold: float = 20.5,
    exposures: list | None = None,
) -> Table:
    """Co-add several exposures' measurements per (id, band).

    Parameters
    ----------
    tables : astropy Table or list of Tables
        Per-exposure measurement rows with columns ``id``, ``band``, ``flags`` and, for the
        inverse-variance co-add, ``flux``, ``flux_err``; for the PDF co-add ``pdf_weight``,
        ``pdf_mean``, ``pdf_sigma`` (vector columns of length K, flux units; components of
        zero weight are ignored). Optional: ``image`` (zero-point join key),
        ``pdf_truncated`` (bool: the PDF is truncated at zero flux), else ``i_mag`` (PDFs
        of galaxies with i_mag > ``truncate_threshold`` are taken as truncated, as the
        network does), else no truncation.
    zero_points : astropy Table, optional
        Multiplicative calibrations with columns ``zp``, optional ``zp_err`` (default 0) and
        the join key: ``image`` if that column is present both here and in every
        measurement table, else ``band``. Exposures without a zero point are rejected.
    method : {"both", "ivar", "pdf"}
        Which co-adds to compute.
    unusable : int
        Flag bits that exclude an exposure (default :data:`lumos.flags.UNUSABLE`).
    grid_points : int
        Nodes of the final grid of the PDF co-add.
    truncate_threshold : float
        i-band magnitude beyond which PDFs are truncated when only ``i_mag`` is given.
    exposures : list, optional
        The exposure of each table's rows, for the duplicate check of
        :func:`check_exposures` (default the ``image`` column).

    Returns
    -------
    astropy Table
        One row per (id, band) present in the input, sorted by id then band, never
        dropping a galaxy: ``id``, ``band``, ``n_exposures`` (exposures used),
        ``n_rejected`` (left out: flags & unusable, no zero point, NaN/invalid PDF or
        flux), then for "ivar"/"both" ``flux_ivar``, ``flux_ivar_err`` and for
        "pdf"/"both" ``flux`` (mean), ``flux_err`` (std), ``flux_median``, ``flux_peak``,
        ``flux_q16``, ``flux_q84``, ``flux_q025``, ``flux_q975``, ``sigma68``, ``sigma95``,
        ``eta`` of the product PDF. Rows without a usable exposure hold NaN. Flux columns
        carry the input flux unit; ``meta`` records the method and the zero-point key.

    Raises
    ------
    LumosError
        (a ValueError) for a bad method, missing columns or inconsistent tables: a galaxy
        twice for one exposure, or tables of different measurement methods
        (:func:`check_exposures`).
    """
    if method not in COADD_METHODS:
        raise LumosError(f"unknown co-add method {method!r}: use one of {', '.join(COADD_METHODS)}")
    if isinstance(tables, Table):
        tables = [tables]
    tables = [t for t in tables]
    if not tables or not all(isinstance(t, Table) for t in tables):
        raise LumosError("coadd_tables needs an astropy Table or a non-empty list of Tables")
    need = ["id", "band", "flags"]
    if method in ("both", "ivar"):
        need += ["flux", "flux_err"]
    if method in ("both", "pdf"):
        need += ["pdf_weight", "pdf_mean", "pdf_sigma"]
    for i, t in enumerate(tables):
        missing = [c for c in need if c not in t.colnames]
        if missing:
            raise LumosError(f"measurement table {i} lacks column(s): {', '.join(missing)}")
    unit = _flux_unit(tables)
    check_exposures(tables, exposures)
    ids = _column(tables, "id")
    bands = _column(tables, "band").astype(str)
    fl = _column(tables, "flags")
    n_rows = len(ids)
    try:
        fl = np.where(np.isfinite(fl.astype(float)), fl, 0).astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise LumosError("the flags column must hold integers") from exc
    ok = (fl & int(unusable)) == 0

    zp = np.ones(n_rows)
    zp_err = np.zeros(n_rows)
    zp_key = None
    if zero_points is not None:
        zp_key, zp, zp_err = zero_point_rows(zero_points, tables)
        ok &= np.isfinite(zp) & (zp > 0) & np.isfinite(zp_err) & (zp_err >= 0)
        zp = np.where(ok, zp, 1.0)
        zp_err = np.where(ok, zp_err, 0.0)

    do_ivar = method in ("both", "ivar")
    do_pdf = method in ("both", "pdf")
    if do_ivar:
        flux = _column(tables, "flux", float) * zp
        err = np.sqrt((_column(tables, "flux_err", float) * zp) ** 2 + (flux / zp * zp_err) ** 2)
        ivar_ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if do_pdf:
        shapes = {t["pdf_weight"].shape[1:] for t in tables if len(t)}
        shapes |= {t["pdf_mean"].shape[1:] for t in tables if len(t)}
        shapes |= {t["pdf_sigma"].shape[1:] for t in tables if len(t)}
        if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
            raise LumosError(
                "pdf_weight, pdf_mean and pdf_sigma must be vector columns of one length K"
            )
        w = _column(tables, "pdf_weight", float)
        mu = _column(tables, "pdf_mean", float)
        sg = _column(tables, "pdf_sigma", float)
        if n_rows == 0:
            k = next(iter(shapes))[0] if shapes else 1
            w, mu, sg = (np.zeros((0, k)) for _ in range(3))
        if all("pdf_truncated" in t.colnames for t in tables):
            trunc = _column(tables, "pdf_truncated").astype(bool)
        elif all("i_mag" in t.colnames for t in tables):
            trunc = truncate_mask(_column(tables, "i_mag", float), truncate_threshold).numpy()
        else:
            trunc = np.zeros(n_rows, bool)
        used = w > 0
        pdf_ok = (
            np.isfinite(w).all(axis=1)
            & (w >= 0).all(axis=1)
            & used.any(axis=1)
            & (~used | (np.isfinite(mu) & np.isfinite(sg) & (sg > 0))).all(axis=1)
        )
        # calibrate the PDFs: mu' = zp mu, sigma'^2 = zp^2 sigma^2 + (mu zp_err)^2
        if zero_points is not None:
            mix = GaussianMixture.from_arrays(np.where(used, w, 0.0), mu, sg, trunc)
            cal = mix.calibrate(torch.from_numpy(zp), torch.from_numpy(zp_err))
            mu = np.where(used, cal.means.numpy(), mu)
            sg = np.where(used, cal.sigmas.numpy(), sg)
        usable = ok & pdf_ok
    else:
        usable = ok & ivar_ok

    group, first = group_by_id_and_band(ids, bands)
    n_groups = len(first)
    out = Table()
    out["id"] = ids[first]
    out["band"] = bands[first]
    n_used = np.bincount(group, weights=usable, minlength=n_groups).astype(np.int64)
    out["n_exposures"] = n_used
    out["n_rejected"] = np.bincount(group, minlength=n_groups).astype(np.int64) - n_used

    if do_ivar:
        out["flux_ivar"], out["flux_ivar_err"] = inverse_variance_coadd(
            group, flux, err, usable & ivar_ok, n_groups)
        for name in ("flux_ivar", "flux_ivar_err"):
            out[name].unit = unit

    if do_pdf:
        res = _pdf_coadd(group[usable], n_groups, w[usable], mu[usable], sg[usable],
                         trunc[usable], grid_points)  # fmt: skip
        for key in _PDF_KEYS:
            out[key] = res[key]
            if key != "eta":
                out[key].unit = unit
    out.meta["COADD"] = method
    out.meta["ZPKEY"] = zp_key or "none"
    out.meta["UNUSABLE"] = int(unusable)
    return out


def _pdf_coadd(group, n_groups, w, mu, sg, trunc, grid_points):
    """Pad the usable exposures into [G, n_max, K] arrays and co-add them on a grid."""
    k = w.shape[1] if w.ndim == 2 else 1
    if group.size == 0:
        return {key: np.full(n_groups, np.nan) for key in _PDF_KEYS}
    order, slot, counts = group_slots(group, n_groups)
    g_sorted = group[order]
    n_max = int(counts.max())
    shape = (n_groups, n_max, k)
    W = np.zeros(shape)
    MU = np.zeros(shape)
    SG = np.ones(shape)
    use = np.zeros((n_groups, n_max), bool)
    tr = np.zeros((n_groups, n_max), bool)
    wz = np.where(w > 0, w, 0.0)
    W[g_sorted, slot] = wz[order]
    MU[g_sorted, slot] = np.where(w > 0, mu, 0.0)[order]
    SG[g_sorted, slot] = np.where(w > 0, sg, 1.0)[order]
    use[g_sorted, slot] = True
    tr[g_sorted, slot] = trunc[order]
    return product_summaries(W, MU, SG, use, tr, grid_points)
