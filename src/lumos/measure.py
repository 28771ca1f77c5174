"""Measurement: image + catalogue -> one photometry table row per catalogue row.

The path (paper section 6.1): read the image and its metadata, place the catalogue on it, cut
60 x 60 stamps, draw each galaxy's PSF-convolved model profile with the same renderer the
simulator uses, run the network in batches and summarise its flux PDFs. The classical methods
(``aperture``, ``modelfit``, ``weighted``) run through the same path on larger context cutouts
and report their Gaussian error as a one-component mixture, so that every table has the same
columns and co-adds treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from . import __version__
from .bands import band_index
from .catalogue import read_catalogue
from .errors import LumosError
from .flags import Flag
from .imageio import ImageMeta, image_metadata, read_image
from .stamps import STAMP_SIZE, StampBatch, cut_stamps
from .stats import P16, P975
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
N_COMPONENTS = 5
OUTPUT_COLUMNS = (
    "id", "x", "y", "band", "flux", "flux_err", "flux_median", "flux_peak", "flux_q16",
    "flux_q84", "sigma68", "sigma95", "eta", "pdf_weight", "pdf_mean", "pdf_sigma",
    "pdf_truncated", "flags",
)  # fmt: skip
_FLUX_COLUMNS = ("flux", "flux_err", "flux_median", "flux_peak", "flux_q16", "flux_q84",
                 "sigma68", "sigma95")  # fmt: skip


def _run_chunks(run: Callable[[slice], None], n: int, size: int, workers: int, progress: bool,
                desc: str) -> None:
    """Call ``run`` on consecutive row slices of ``size``, on ``workers`` threads.

    Each worker thread runs torch with one intra-op thread (a per-thread setting), so that
    two chunks are rendered and inferred side by side instead of one chunk splitting every
    small operation over two threads; the rows of different chunks never overlap.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    chunks = [slice(start, min(n, start + size)) for start in range(0, n, size)]
    with tqdm(total=n, desc=desc, unit="gal", disable=not progress) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for rows in chunks:
                run(rows)
                bar.update(rows.stop - rows.start)
            return
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:  # fmt: skip
            futures = {pool.submit(run, rows): rows for rows in chunks}
            try:
                for future in as_completed(futures):
                    future.result()
                    rows = futures[future]
                    bar.update(rows.stop - rows.start)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _psf(meta: ImageMeta, n: int):
    from .psf import MoffatPSF

    return MoffatPSF(torch.full((n,), meta.psf_fwhm), torch.full((n,), meta.psf_beta))


def _profiles(catalogue: Table, rows: slice | np.ndarray, offset, meta: ImageMeta, size: int):
    """Model profiles (unit flux, PSF-convolved) drawn at the stamps' sub-pixel offsets."""
    from .profiles import render_sersic

    sub = catalogue[rows]
    n = len(sub)
    return render_sersic(
        np.asarray(sub["r50"], dtype=np.float32),
        np.asarray(sub["sersic_n"], dtype=np.float32),
        np.asarray(sub["q"], dtype=np.float32),
        np.asarray(sub["pa"], dtype=np.float32),
        _psf(meta, n),
        offset=np.asarray(offset, dtype=np.float32),
        size=size,
        pixel_scale=meta.pixel_scale,
    )


def make_stamp_batch(
    image: np.ndarray, catalogue: Table, meta: ImageMeta, rows: slice | None = None
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
    rows : slice, optional
        Rows to process (default all).

    Returns
    -------
    StampBatch
        Without truth; flags combine the catalogue's and the cutting's.
    """
    rows = slice(None) if rows is None else rows
    sub = catalogue[rows]
    x = np.asarray(sub["x"], dtype=float)
    y = np.asarray(sub["y"], dtype=float)
    cut = cut_stamps(image, x, y, size=STAMP_SIZE)
    profile = _profiles(catalogue, rows, cut.offset, meta, STAMP_SIZE)
    n = len(sub)
    i_mag = np.asarray(sub["i_mag"], dtype=np.float32)
    flags = np.asarray(sub["flags"], dtype=np.int64) | cut.flags
    return StampBatch(
        pixels=torch.from_numpy(cut.pixels),
        profile=profile.to(torch.float32),
        i_mag=torch.from_numpy(np.nan_to_num(i_mag, nan=99.0)),
        ccd_xy=torch.from_numpy(np.stack([np.nan_to_num(x), np.nan_to_num(y)], 1)).float(),
        band_idx=torch.full((n,), band_index(meta.band, meta.camera_state), dtype=torch.int64),
        flags=torch.from_numpy(flags),
        offset=torch.from_numpy(cut.offset.astype(np.float32)),
    )


def _empty_output(catalogue: Table, meta: ImageMeta) -> Table:
    n = len(catalogue)
    out = Table()
    out["id"] = catalogue["id"]
    out["x"] = np.asarray(catalogue["x"], dtype=float)
    out["y"] = np.asarray(catalogue["y"], dtype=float)
    out["band"] = np.full(n, meta.band.name)
    for name in _FLUX_COLUMNS + ("eta",):
        out[name] = np.full(n, np.nan)
    out["pdf_weight"] = np.zeros((n, N_COMPONENTS))
    out["pdf_mean"] = np.full((n, N_COMPONENTS), np.nan)
    out["pdf_sigma"] = np.full((n, N_COMPONENTS), np.nan)
    out["pdf_truncated"] = np.zeros(n, dtype=bool)
    out["flags"] = np.asarray(catalogue["flags"], dtype=np.int64).copy()
    return out


def _fill_from_mixture(out: Table, rows: slice, mixture, to_image_units: float) -> None:
    summary = mixture.summaries()
    for name in _FLUX_COLUMNS:
        out[name][rows] = np.asarray(summary[name], dtype=float) / to_image_units
    out["eta"][rows] = np.asarray(summary["eta"], dtype=float)
    arrays = mixture.numpy()
    out["pdf_weight"][rows] = np.asarray(arrays["weight"], dtype=float)
    out["pdf_mean"][rows] = np.asarray(arrays["mean"], dtype=float) / to_image_units
    out["pdf_sigma"][rows] = np.asarray(arrays["sigma"], dtype=float) / to_image_units
    out["pdf_truncated"][rows] = np.asarray(arrays["truncated"], dtype=bool)


def _fill_gaussian(out: Table, rows: slice, flux, flux_err) -> None:
    """Classical results as one-component mixtures (the other weights zero)."""
    from scipy.special import ndtri

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
    out["eta"][rows] = np.where(np.isfinite(err), 1.0, np.nan)
    n = len(flux)
    weight = np.zeros((n, N_COMPONENTS))
    weight[:, 0] = 1.0
    mean = np.full((n, N_COMPONENTS), np.nan)
    sigma = np.full((n, N_COMPONENTS), np.nan)
    mean[:, 0], sigma[:, 0] = flux, err
    out["pdf_weight"][rows], out["pdf_mean"][rows], out["pdf_sigma"][rows] = weight, mean, sigma


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
    mask : numpy.ndarray of bool, optional
        Bad pixels.
    workers : int, optional
        Chunks measured at the same time, each on its own thread with one torch thread
        (default ``torch.get_num_threads()``, one per core unless set lower). The result
        does not depend on it.

    Returns
    -------
    astropy.table.Table
        Exactly one row per catalogue row, in catalogue order, with the columns of
        :data:`OUTPUT_COLUMNS`; units and provenance in ``meta``.
    """
    if method not in MEASURE_METHODS:
        raise LumosError(f"unknown method {method!r}; choose one of {', '.join(MEASURE_METHODS)}")
    electrons = np.asarray(image, dtype=np.float32) * np.float32(meta.gain)
    out = _empty_output(catalogue, meta)
    n = len(catalogue)
    if method == "lumos":
        if model is None:
            from .model_io import load_default_model

            model = load_default_model()
        model.eval()
        run = _lumos_chunk(electrons, catalogue, meta, model, out, mask)
    else:
        run = _classical_chunk(electrons, catalogue, meta, method, out, mask)
    workers = torch.get_num_threads() if workers is None else int(workers)
    if workers < 1:
        raise LumosError(f"workers must be at least 1, got {workers}")
    _run_chunks(run, n, batch_size, workers, progress, f"{method} {meta.band.name}")
    unit = meta.unit
    for name in _FLUX_COLUMNS:
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
        }
    )
    return out


def _lumos_chunk(electrons, catalogue, meta, model, out, mask) -> Callable[[slice], None]:
    def run(rows: slice) -> None:
        batch = make_stamp_batch(electrons, catalogue, meta, rows)
        if mask is not None:
            cut = cut_stamps(mask.astype(np.float32), catalogue["x"][rows], catalogue["y"][rows])
            batch.flags |= torch.from_numpy(
                np.where((cut.pixels > 0).any(axis=(1, 2)), int(Flag.MASKED), 0)
            )
        with torch.inference_mode():
            mixture = model(batch)
        _fill_from_mixture(out, rows, mixture, meta.gain)
        extra = model.range_flags(batch) if hasattr(model, "range_flags") else 0
        out["flags"][rows] = batch.flags.numpy() | np.asarray(extra)
        _flag_unusable(out, rows)

    return run


def _classical_chunk(electrons, catalogue, meta, method, out, mask) -> Callable[[slice], None]:
    from .classical import ContextCutouts, measure_classical

    def run(rows: slice) -> None:
        sub = catalogue[rows]
        cut = cut_stamps(electrons, sub["x"], sub["y"], size=CONTEXT_SIZE, mask=mask)
        profile = _profiles(catalogue, rows, cut.offset, meta, CONTEXT_SIZE).numpy()
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
        )
        result = measure_classical(method, cutouts)
        _fill_gaussian(out, rows, result["flux"] / meta.gain, result["flux_err"] / meta.gain)
        out["flags"][rows] = (
            np.asarray(sub["flags"], dtype=np.int64) | cut.flags | np.asarray(result["flags"])
        )
        _flag_unusable(out, rows)

    return run


def _flag_unusable(out: Table, rows: slice) -> None:
    """Rows whose position is off the image get NaN fluxes (never a made-up number)."""
    bad = (np.asarray(out["flags"][rows]) & int(Flag.OFF_IMAGE)) != 0
    if np.any(bad):
        idx = np.arange(len(out))[rows][bad]
        for name in _FLUX_COLUMNS + ("eta",):
            out[name][idx] = np.nan
        out["pdf_mean"][idx] = np.nan
        out["pdf_sigma"][idx] = np.nan


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

    Returns
    -------
    astropy.table.Table
        The table written.
    """
    out_path = check_output_path(out_path)
    image, header, wcs = read_image(image_path)
    meta = image_metadata(header, overrides, keywords, wcs)
    catalogue = read_catalogue(
        catalogue_path, columns=columns, wcs=wcs, pixel_scale=meta.pixel_scale
    )
    model = None
    if method == "lumos":
        from .model_io import load_default_model, load_model

        model = load_model(model_path) if model_path is not None else load_default_model()
    result = measure_image(
        image, catalogue, meta, method=method, model=model, progress=progress,
        batch_size=batch_size, workers=workers,
    )  # fmt: skip
    result.meta["IMAGE"] = Path(image_path).name
    result.meta["IMGPATH"] = str(Path(image_path).resolve())
    if not isinstance(catalogue_path, Table):
        result.meta["CATPATH"] = str(Path(catalogue_path).resolve())
    result.meta["PSFBETA"] = meta.psf_beta
    result.meta["GAIN"] = meta.gain
    write_table(result, out_path)
    return result
