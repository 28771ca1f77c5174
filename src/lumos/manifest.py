"""Many images at once: a manifest table run in parallel through Dask.

A manifest has one row per image: ``path`` (required; relative paths are taken from the
manifest's folder) and optionally ``band``, ``psf_fwhm``, ``psf_beta``, ``pixel_scale``,
``gain``, ``camera_state``, ``exposure_time``, ``zero_point`` and ``catalogue`` (a per-image
catalogue; otherwise the one catalogue given is used for every image, typically with ra/dec
positions placed through each image's WCS). Values in the manifest override the FITS header.
The optional file columns ``psf`` (PSFEx model or FITS PSF image), ``weight`` (inverse-variance
map) and ``mask`` (non-zero = bad) give each image's own files, as ``--psf``, ``--weight`` and
``--mask`` do for one image; relative paths are taken from the manifest's folder and an empty
cell means none.

Each image's table is written to ``<out>.parts/`` as soon as it is done, so running again skips
images already measured; an image that fails is reported and skipped, the others complete. The
final table stacks the parts in manifest order with an ``image`` column holding each image's
path as written in the manifest.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from .errors import LumosError
from .tableio import check_output_path, read_table, write_table

__all__ = ["MANIFEST_COLUMNS", "FILE_COLUMNS", "read_manifest", "measure_manifest", "is_manifest"]

MANIFEST_COLUMNS = (
    "band", "psf_fwhm", "psf_beta", "pixel_scale", "gain", "camera_state", "exposure_time",
    "zero_point",
)  # fmt: skip
#: Per-image file columns, passed to :func:`lumos.measure.measure_file` as ``<name>_path``.
FILE_COLUMNS = ("psf", "weight", "mask")


def is_manifest(path: str | Path) -> bool:
    """True when ``path`` is a table (manifest) rather than a FITS image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".ecsv", ".parquet", ".pq"):
        return True
    if suffix in (".fits", ".fit", ".fts") and path.is_file():
        from astropy.io import fits

        try:
            # quiet: a broken file is reported once, by the image reader
            with warnings.catch_warnings(action="ignore"), fits.open(path) as hdul:
                has_image = any(h.is_image and h.data is not None for h in hdul)
                tables = [h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)]
                has_paths = any("path" in [c.lower() for c in h.columns.names] for h in tables)
            return has_paths and not has_image
        except Exception:
            return False
    return False


@dataclass
class _Job:
    index: int
    image: str
    listed: str
    catalogue: str
    part: str
    overrides: dict
    files: dict | None = None


def read_manifest(path: str | Path) -> Table:
    """Read and check a manifest table (clear error for a missing ``path`` column)."""
    table = read_table(path, "manifest")
    if "path" not in table.colnames:
        raise LumosError(
            f"manifest {Path(path).name} needs a 'path' column; it has: {', '.join(table.colnames)}"
        )
    if len(table) == 0:
        raise LumosError(f"manifest {Path(path).name} lists no images")
    return table


def _jobs(manifest: Table, base: Path, catalogue: str | None, parts: Path) -> list[_Job]:
    jobs = []
    for index, row in enumerate(manifest):
        listed = str(row["path"]).strip()
        image = Path(listed)
        image = image if image.is_absolute() else base / image
        cat = catalogue
        if "catalogue" in manifest.colnames and str(row["catalogue"]).strip():
            cat_path = Path(str(row["catalogue"]).strip())
            cat = str(cat_path if cat_path.is_absolute() else base / cat_path)
        if cat is None:
            raise LumosError(f"no catalogue for image {image.name}: give one or a catalogue column")
        overrides = {}
        for name in MANIFEST_COLUMNS:
            if name in manifest.colnames:
                value = row[name]
                if np.ma.is_masked(value) or (isinstance(value, float) and not np.isfinite(value)):
                    continue
                overrides[name] = value.item() if hasattr(value, "item") else value
        part = parts / f"{index:05d}-{image.stem}.parquet"
        files = _file_columns(manifest, row, base)
        jobs.append(_Job(index, str(image), listed, cat, str(part), overrides, files))
    return jobs


def _file_columns(manifest: Table, row, base: Path) -> dict:
    """The ``psf``, ``weight`` and ``mask`` files of a manifest row (``<name>_path`` keys)."""
    files = {}
    for name in FILE_COLUMNS:
        if name not in manifest.colnames or np.ma.is_masked(row[name]):
            continue
        value = str(row[name]).strip()
        if value:
            path = Path(value)
            files[f"{name}_path"] = str(path if path.is_absolute() else base / path)
    return files


def _run_job(job: _Job, method: str, model_path: str | None, keywords, columns) -> str | None:
    """Measure one image into its part file; returns an error message or None."""
    import torch

    from .measure import measure_file

    torch.set_num_threads(1)
    try:
        measure_file(
            job.image, job.catalogue, job.part, method=method, model_path=model_path,
            overrides=job.overrides, keywords=keywords, columns=columns, progress=False,
            **(job.files or {}),
        )  # fmt: skip
    except LumosError as exc:
        return str(exc)
    except Exception as exc:  # one broken image must not stop the others
        return f"{type(exc).__name__}: {exc}"
    return None


def measure_manifest(
    manifest_path: str | Path,
    catalogue: str | Path | None,
    out_path: str | Path,
    method: str = "lumos",
    model_path: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    keywords: dict | None = None,
    columns: dict | None = None,
    progress: bool = True,
) -> Table:
    """Measure every image of a manifest in parallel and write one table.

    Parameters
    ----------
    manifest_path : str or Path
        Manifest table (see module docstring).
    catalogue : str, Path or None
        Catalogue for every image (unless the manifest has a ``catalogue`` column).
    out_path : str or Path
        Output table; parts are kept in ``<out_path>.parts/``.
    method : str
        Measurement method.
    model_path : str or Path, optional
        Model file (default the shipped model).
    scheduler : str, optional
        Address of a running Dask scheduler; default a local cluster of processes.
    n_workers : int, optional
        Local cluster size (default: the number of CPU cores, at most the image count).
    keywords, columns : dict, optional
        FITS header keywords and catalogue column map, as in :func:`lumos.measure.measure_file`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    astropy.table.Table
        Rows of all images that succeeded, with an ``image`` column; ``meta["FAILED"]`` lists
        the images that failed.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    out_path = check_output_path(out_path)
    manifest = read_manifest(manifest_path)
    parts = out_path.with_name(out_path.name + ".parts")
    parts.mkdir(exist_ok=True)
    cat = None if catalogue is None else str(catalogue)
    jobs = _jobs(manifest, Path(manifest_path).parent, cat, parts)
    todo = [job for job in jobs if not Path(job.part).exists()]
    failures: dict[str, str] = {}  # manifest path -> reason
    if todo:
        import os

        workers = n_workers or min(len(todo), os.cpu_count() or 1)
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(scheduler or cluster)
        try:
            futures = {
                client.submit(
                    _run_job, job, method, None if model_path is None else str(model_path),
                    keywords, columns, pure=False,
                ): job  # fmt: skip
                for job in todo
            }
            with tqdm(total=len(todo), desc="images", unit="img", disable=not progress) as bar:
                for future in as_completed(futures):
                    job = futures[future]
                    try:
                        error = future.result()
                    except Exception as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    if error:
                        failures[job.listed] = error
                        print(f"lumos measure: skipped {Path(job.image).name}: {error}",
                              file=sys.stderr)  # fmt: skip
                    bar.update(1)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    tables = []
    for job in jobs:
        if Path(job.part).exists():
            part = read_table(job.part, "partial table")
            part.meta.clear()
            part.add_column(np.full(len(part), job.listed), name="image", index=0)
            tables.append(part)
    if not tables:
        raise LumosError("every image of the manifest failed; nothing written")
    result = vstack(tables, metadata_conflicts="silent")
    result.meta["METHOD"] = method
    result.meta["NIMAGES"] = len(tables)
    result.meta["FAILED"] = ",".join(failures)
    write_table(result, out_path)
    return result
