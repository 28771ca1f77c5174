"""Measurement: image + catalogue -> one photometry table row per catalogue row.

The path (paper section 6.1): read the image and its metadata, place the catalogue on it, cut
60 x 60 stamps, draw each galaxy's PSF-convolved model profile with the same renderer the
simulator uses, run the network in batches and summarise its flux PDFs. The classical methods
(``aperture``, ``modelfit``, ``weighted``) run through the same path on larger context cutouts
and report their Gaussian error as a one-component mixture, so that every table has the same
columns (:mod:`lumos.measure_table`, whose :data:`OUTPUT_COLUMNS` is re-exported here) and
co-adds treat them alike. Batches of galaxies are measured side by side in threads
(:func:`lumos.chunks.run_row_chunks`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from . import __version__
from .bands import band_index
from .bayes import SharedError, apply_prior, fill_likelihood
from .catalogue import read_catalogue
from .chunks import run_row_chunks
from .classical import ContextCutouts, measure_classical
from .errors import LumosError
from .flags import Flag
from .imageio import DEFAULT_KEYWORDS, ImageMeta, check_image_data, image_metadata, read_image
from .measure_table import (
    FLUX_COLUMNS,
    OUTPUT_COLUMNS,
    empty_output,
    fill_from_mixture,
    fill_gaussian,
    flag_unusable,
)
from .model_io import load_default_model, load_model
from .pixelmaps import bad_pixels, read_pixel_map, variance_from_weight
from .profiles import render_sersic
from .psf import MoffatPSF
from .psfsource import PSFSource, load_psf
from .stamps import STAMP_SIZE, StampBatch, cut_stamps, masked_light_flags, on_image
from .survey import check_model_band
from .tableio import check_output_path, write_table

__all__ = [
    "MEASURE_METHODS",
    "OUTPUT_COLUMNS",
    "CONTEXT_SIZE",
    "measure_image",
    "measure_file",
    "make_stamp_batch",
]

MEASURE_METHODS = ("lumos", "aperture", "modelfit", "weighted")
#: Side of the context cutouts given to the classical methods (annulus 30-45 px).
CONTEXT_SIZE = 100


def _psf(meta: ImageMeta, n: int):
    return MoffatPSF(torch.full((n,), meta.psf_fwhm), torch.full((n,), meta.psf_beta))


def _profiles(catalogue: Table, rows: slice | np.ndarray, offset, meta: ImageMeta, size: int,
              psf: PSFSource | None = None):
    """Model profiles (unit flux, PSF-convolved) drawn at the stamps' sub-pixel offsets.

    With the Moffat of ``meta`` unless a PSF source (PSF image, PSFEx model) is given.
    """
    sub = catalogue[rows]
    n = len(sub)
    psf_batch = _psf(meta, n) if psf is None else psf.at(sub["x"], sub["y"])
    return render_sersic(
        np.asarray(sub["r50"], dtype=np.float32),
        np.asarray(sub["sersic_n"], dtype=np.float32),
        np.asarray(sub["q"], dtype=np.float32),
        np.asarray(sub["pa"], dtype=np.float32),
        psf_batch,
        offset=np.asarray(offset, dtype=np.float32),
        size=size,
        pixel_scale=meta.pixel_scale,
    )


def make_stamp_batch(
    image: np.ndarray, catalogue: Table, meta: ImageMeta,
    rows: slice | np.ndarray | None = None,
    mask: np.ndarray | None = None, psf: PSFSource | None = None,
) -> StampBatch:
    """Cut stamps and draw model profiles for (a slice of) a normalised catalogue.

    Parameters
    ----------
    image : numpy.ndarray
        Image in electrons.
    catalogue : astropy.table.Table
        Catalogue from :func:`lumos.catalogue.read_catalogue`.
    meta : ImageMeta
        Image metadata.
    rows : slice or numpy.ndarray of int, optional
        Rows to process (default all).
    mask : numpy.ndarray of bool, optional
        Bad pixels (image shape): zeroed in the stamps, flagged ``MASKED`` / ``MASKED_CORE``.
    psf : PSFSource, optional
        PSF of the model profiles (default the Moffat of ``meta``).

    Returns
    -------
    StampBatch
        Without truth; flags combine the catalogue's and the cutting's. A missing
        ``i_mag`` stays NaN: the network decides what a missing magnitude means.
    """
    rows = slice(None) if rows is None else rows
    sub = catalogue[rows]
    x = np.asarray(sub["x"], dtype=float)
    y = np.asarray(sub["y"], dtype=float)
    cut = cut_stamps(image, x, y, size=STAMP_SIZE, mask=mask)
    profile = _profiles(catalogue, rows, cut.offset, meta, STAMP_SIZE, psf)
    n = len(sub)
    i_mag = np.asarray(sub["i_mag"], dtype=np.float32)
    flags = np.asarray(sub["flags"], dtype=np.int64) | masked_light_flags(cut, profile)
    return StampBatch(
        pixels=torch.from_numpy(cut.pixels),
        profile=profile.to(torch.float32),
        i_mag=torch.from_numpy(i_mag),
        ccd_xy=torch.from_numpy(np.stack([np.nan_to_num(x), np.nan_to_num(y)], 1)).float(),
        band_idx=torch.full((n,), band_index(meta.band, meta.camera_state), dtype=torch.int64),
        flags=torch.from_numpy(flags),
        offset=torch.from_numpy(cut.offset.astype(np.float32)),
    )


def measure_image(
    image: np.ndarray,
    catalogue: Table,
    meta: ImageMeta,
    method: str = "lumos",
    model=None,
    batch_size: int = 256,
    progress: bool = False,
    mask: np.ndarray | None = None,
    workers: int | None = None,
    prior="auto",
    psf: PSFSource | None = None,
    weight: np.ndarray | None = None,
) -> Table:
    """Measure every catalogue galaxy on one image.

    Parameters
    ----------
    image : numpy.ndarray
        The image in its own units (``meta.gain`` electrons per unit).
    catalogue : astropy.table.Table
        Normalised catalogue (:func:`lumos.catalogue.read_catalogue`).
    meta : ImageMeta
        Image metadata.
    method : {"lumos", "aperture", "modelfit", "weighted"}
        Measurement method.
    model : LumosNet, optional
        Network for ``method="lumos"``; default the shipped model.
    batch_size : int
        Galaxies per batch.
    progress : bool
        Show a progress bar.
    mask : numpy.ndarray, optional
        Bad pixels (non-zero), image shape. Zeroed and flagged ``MASKED`` /
        ``MASKED_CORE`` on every path.
    workers : int, optional
        Chunks measured at the same time, each on its own thread with one torch thread
        (default ``torch.get_num_threads()``, one per core unless set lower). The result
        does not depend on it.
    prior : str, lumos.prior.PriorChoice or lumos.prior.FluxPrior
        Prior of a likelihood model's posterior columns (:func:`lumos.bayes.apply_prior`:
        ``"auto"``, ``"population"``, ``"empirical"``, ``"none"`` or a prior table's
        path, optionally with the learnt prior's form as a ``PriorChoice``); other models
        and methods ignore it.
    psf : PSFSource, optional
        The PSF (:mod:`lumos.psfsource`: PSF image or PSFEx model) used for the model
        profiles of the network and of the classical methods; default the Moffat of
        ``meta``.
    weight : numpy.ndarray, optional
        Inverse-variance map in the image's units (image shape; see
        :mod:`lumos.pixelmaps`): pixels of weight 0 are bad (as if masked) and the classical
        methods take their per-pixel sky noise from it.

    Returns
    -------
    astropy.table.Table
        Exactly one row per catalogue row, in catalogue order, with the columns of
        :data:`OUTPUT_COLUMNS`; units and provenance in ``meta``. Rows whose position is
        off the image are flagged ``OFF_IMAGE`` with NaN fluxes and are neither cut nor
        measured, so the cost follows the galaxies on the image.
    """
    if method not in MEASURE_METHODS:
        raise LumosError(f"unknown method {method!r}; choose one of {', '.join(MEASURE_METHODS)}")
    electrons = np.asarray(image, dtype=np.float32) * np.float32(meta.gain)
    mask = bad_pixels(electrons.shape, mask, weight)
    variance = None if weight is None else variance_from_weight(weight, meta.gain)
    out = empty_output(catalogue, meta)
    on = on_image(catalogue["x"], catalogue["y"], electrons.shape)
    on &= (np.asarray(catalogue["flags"]) & int(Flag.OFF_IMAGE)) == 0
    out["flags"][~on] |= int(Flag.OFF_IMAGE)
    todo = np.flatnonzero(on)
    if method == "lumos":
        if model is None:
            model = load_default_model()
        model.eval()
        run = _lumos_chunk(electrons, catalogue, meta, model, out, mask, psf)
    else:
        run = _classical_chunk(electrons, catalogue, meta, method, out, mask, psf, variance)
    workers = torch.get_num_threads() if workers is None else int(workers)
    if workers < 1:
        raise LumosError(f"workers must be at least 1, got {workers}")
    run_row_chunks(run, todo, batch_size, workers, progress, f"{method} {meta.band.name}")
    likelihood_model = method == "lumos" and _is_likelihood(model)
    if likelihood_model:
        apply_prior(out, prior, meta.exposure_time, meta.gain)
    unit = meta.unit
    for name in ("flux_like", "flux_like_err", "flux_shared_err", "like_mean", "like_sigma"):
        out[name].unit = unit
    for name in FLUX_COLUMNS:
        out[name].unit = unit
    out["pdf_mean"].unit = unit
    out["pdf_sigma"].unit = unit
    out.meta.update(
        {
            "LUMOSVER": __version__,
            "METHOD": method,
            "BAND": meta.band.name,
            "CAMSTATE": meta.camera_state,
            "PSFFWHM": meta.psf_fwhm,
            "PIXSCALE": meta.pixel_scale,
            "FLUXUNIT": unit,
            "EXPTIME": meta.exposure_time if meta.exposure_time else 0.0,
            "GAIN": meta.gain,
            "PSFTYPE": "moffat" if psf is None else psf.kind,
        }
    )
    if not likelihood_model:
        out.meta["PRIOR"] = "implicit" if method == "lumos" else "none"
    return out


def _is_likelihood(model) -> bool:
    """The model predicts a likelihood (``NetworkConfig.likelihood``)."""
    return bool(getattr(getattr(model, "config", None), "likelihood", False))


def _observing_flag(model, meta: ImageMeta) -> int:
    """``Flag.OUT_OF_RANGE`` when the image's PSF or pixel scale is outside the model's
    training range (models that do not record it: 0)."""
    check = getattr(model, "observing_range_flags", None)
    if check is None:
        return 0
    return int(check(meta.psf_fwhm, meta.psf_beta, meta.pixel_scale))


def _lumos_chunk(electrons, catalogue, meta, model, out, mask, psf) -> Callable[[slice], None]:
    image_flag = _observing_flag(model, meta)

    def run(rows: slice | np.ndarray) -> None:
        batch = make_stamp_batch(electrons, catalogue, meta, rows, mask=mask, psf=psf)
        with torch.inference_mode():
            mixture = model(batch)
        if _is_likelihood(model):
            shared = SharedError.of(model.config)
            fill_likelihood(out, rows, mixture, shared, meta.gain, shared.sizes_of(batch.profile))
        else:
            fill_from_mixture(out, rows, mixture, meta.gain)
        extra = model.range_flags(batch) if hasattr(model, "range_flags") else 0
        out["flags"][rows] = batch.flags.numpy() | np.asarray(extra) | image_flag \
            | _flux_range_flag(model, mixture, meta)  # fmt: skip
        flag_unusable(out, rows)

    return run


#: Margin above the largest training flux before a measured flux counts as out of range.
FLUX_RANGE_MARGIN = 1.2


def _flux_range_flag(model, mixture, meta: ImageMeta) -> np.ndarray | int:
    """``OUT_OF_RANGE`` where the measured flux exceeds the model's training fluxes by more
    than :data:`FLUX_RANGE_MARGIN` (the network has not seen galaxies that bright)."""
    rate_max = model.max_flux_rate() if hasattr(model, "max_flux_rate") else None
    if rate_max is None or not meta.exposure_time:
        return 0
    flux = mixture.mean().detach().double().numpy()  # electrons
    too_bright = flux > FLUX_RANGE_MARGIN * rate_max * float(meta.exposure_time)
    return np.where(too_bright, int(Flag.OUT_OF_RANGE), 0)


def _classical_chunk(electrons, catalogue, meta, method, out, mask, psf=None,
                     variance=None) -> Callable[[slice], None]:
    def run(rows: slice | np.ndarray) -> None:
        sub = catalogue[rows]
        cut = cut_stamps(electrons, sub["x"], sub["y"], size=CONTEXT_SIZE, mask=mask)
        profile = _profiles(catalogue, rows, cut.offset, meta, CONTEXT_SIZE, psf).numpy()
        cutouts = ContextCutouts(
            pixels=cut.pixels,
            valid=cut.valid,
            offset=cut.offset,
            r50=np.asarray(sub["r50"], dtype=float),
            n=np.asarray(sub["sersic_n"], dtype=float),
            q=np.asarray(sub["q"], dtype=float),
            pa=np.asarray(sub["pa"], dtype=float),
            profile=profile,
            gain=1.0,
            read_noise=meta.read_noise,
            pixel_scale=meta.pixel_scale,
            variance=_variance_cutouts(variance, sub, mask),
        )
        result = measure_classical(method, cutouts)
        fill_gaussian(out, rows, result["flux"] / meta.gain, result["flux_err"] / meta.gain)
        out["flags"][rows] = (
            np.asarray(sub["flags"], dtype=np.int64) | masked_light_flags(cut, profile)
            | np.asarray(result["flags"])
        )
        flag_unusable(out, rows)

    return run


def _variance_cutouts(variance, sub: Table, mask) -> np.ndarray | None:
    """Context cutouts of the per-pixel variance map (None without a weight map)."""
    if variance is None:
        return None
    return cut_stamps(variance, sub["x"], sub["y"], size=CONTEXT_SIZE, mask=mask).pixels


def measure_file(
    image_path: str | Path,
    catalogue_path: str | Path | Table,
    out_path: str | Path,
    method: str = "lumos",
    model_path: str | Path | None = None,
    overrides: dict | None = None,
    keywords: dict | None = None,
    columns: dict | None = None,
    progress: bool = True,
    batch_size: int = 256,
    workers: int | None = None,
    prior="auto",
    psf_path: str | Path | None = None,
    weight_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    notes: bool = True,
) -> Table:
    """Measure one FITS image for a catalogue file and write the table atomically.

    All inputs are checked (image readable, metadata complete, catalogue valid, model
    loadable, output directory present and extension known) before anything is written;
    on any error no output file is left behind.

    Parameters
    ----------
    image_path : str or Path
        FITS image.
    catalogue_path : str, Path or Table
        Catalogue file (FITS, Parquet, CSV, ECSV) or table.
    out_path : str or Path
        Output table; ``.fits``, ``.parquet`` or ``.ecsv``.
    method : str
        One of :data:`MEASURE_METHODS`.
    model_path : str or Path, optional
        Model file for ``method="lumos"`` (default the shipped model).
    overrides : dict, optional
        Image metadata given explicitly (band, psf_fwhm, psf_beta, pixel_scale, gain,
        camera_state, ...), taking precedence over the header.
    keywords : dict, optional
        FITS header keywords to read the metadata from.
    columns : dict, optional
        Catalogue column-name map.
    progress : bool
        Show a progress bar.
    batch_size : int
        Galaxies per batch.
    workers : int, optional
        Threads measuring batches side by side (see :func:`measure_image`).
    prior : str or lumos.prior.PriorChoice
        Prior of a likelihood model's posterior (see :func:`measure_image`).
    psf_path : str or Path, optional
        PSFEx model or FITS PSF image (see :func:`lumos.psfsource.load_psf`) replacing the
        Moffat of the metadata; the table's ``PSFFWHM`` is then that PSF's FWHM at the image
        centre.
    weight_path : str or Path, optional
        Inverse-variance map in the image's units, same shape as the image.
    mask_path : str or Path, optional
        Bad-pixel mask (non-zero = bad), same shape as the image.
    notes : bool
        Say on standard error when a value falls back to a default (an exposure time
        missing from the header and the options takes the band's nominal one).

    Returns
    -------
    astropy.table.Table
        The table written; ``meta`` records the exposure time used (``EXPTIME``) and where
        it came from (``EXPTSRC``: option, header or band default).
    """
    out_path = check_output_path(out_path)
    image, header, wcs = read_image(image_path)
    check_image_data(image, image_path)
    if psf_path is not None:  # the PSF file gives the FWHM (set below)
        overrides = {**(overrides or {}), "psf_fwhm": 1.0}
    meta = image_metadata(header, overrides, keywords, wcs)
    psf, weight, mask, meta = _pixel_inputs(image.shape, meta, psf_path, weight_path, mask_path)
    if notes and meta.exposure_time_source == "band default":
        key = (keywords or {}).get("exposure_time", DEFAULT_KEYWORDS["exposure_time"])
        print(f"lumos: {Path(image_path).name} has no {key} header keyword; using the "
              f"{meta.band.name} default exposure time of {meta.exposure_time:g} s "
              "(give --exptime to set it)", file=sys.stderr)  # fmt: skip
    catalogue = read_catalogue(
        catalogue_path, columns=columns, wcs=wcs, pixel_scale=meta.pixel_scale
    )
    model = None
    if method == "lumos":
        model = load_model(model_path) if model_path is not None else load_default_model()
        check_model_band(getattr(model, "metadata", None), meta.band)
    result = measure_image(
        image, catalogue, meta, method=method, model=model, progress=progress,
        batch_size=batch_size, workers=workers, psf=psf, weight=weight, mask=mask,
        prior=prior,
    )  # fmt: skip
    for key, path in (("PSFFILE", psf_path), ("WGHTFILE", weight_path), ("MASKFILE", mask_path)):
        if path is not None:
            result.meta[key] = Path(path).name
    result.meta["IMAGE"] = Path(image_path).name
    result.meta["IMGPATH"] = str(Path(image_path).resolve())
    if not isinstance(catalogue_path, Table):
        result.meta["CATPATH"] = str(Path(catalogue_path).resolve())
    result.meta["PSFBETA"] = meta.psf_beta
    result.meta["GAIN"] = meta.gain
    result.meta["EXPTSRC"] = meta.exposure_time_source
    write_table(result, out_path)
    return result


def _pixel_inputs(shape: tuple[int, int], meta: ImageMeta, psf_path, weight_path, mask_path):
    """Read the optional PSF, weight map and mask of an image (checked against its shape).

    Returns ``(psf, weight, mask, meta)``; with a PSF file, ``meta.psf_fwhm`` becomes that
    PSF's FWHM at the image centre.
    """
    psf = None
    if psf_path is not None:
        psf = load_psf(psf_path, shape, meta.pixel_scale)
        meta = replace(meta, psf_fwhm=float(psf.fwhm()))
    weight = None if weight_path is None else read_pixel_map(weight_path, shape, "weight map")
    mask = None if mask_path is None else read_pixel_map(mask_path, shape, "mask")
    return psf, weight, mask, meta
