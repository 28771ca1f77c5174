"""Many images at once: a manifest run in parallel through Dask.

A manifest lists the images to measure, one per row. It is either

* a table (CSV, ECSV, FITS or Parquet) with a ``path`` column (``image``, ``file`` or
  ``filename`` are accepted for it) and optionally ``band``, ``psf_fwhm``, ``psf_beta``,
  ``pixel_scale``, ``gain``, ``camera_state``, ``exposure_time``, ``zero_point`` and
  ``catalogue`` (a per-image catalogue; otherwise the one catalogue given is used for every
  image, typically with ra/dec positions placed through each image's WCS); values in the
  manifest override the FITS header; or
* a plain text file (``.txt``, ``.lst``, ``.list`` or any non-FITS text file) naming one image
  per line; blank lines and lines starting with ``#`` are skipped.

The optional file columns ``psf`` (PSFEx model or FITS PSF image), ``weight`` (inverse-variance
map) and ``mask`` (non-zero = bad) give each image's own files, as ``--psf``, ``--weight`` and
``--mask`` do for one image; an empty cell means none. Relative paths are taken from the
manifest's folder.

Each image's table is written to ``<out>.parts/`` as soon as it is done, under a name that
carries a digest of its inputs: the image's and the catalogue's path, size and modification
time, the manifest row's values, the method, the model files (path, size, modification
time), the header keyword and column maps and the lumos version. Running again reuses the
parts whose inputs are unchanged, measures again the images whose inputs changed, and says
which; parts of earlier inputs are removed. An image that fails is reported and skipped, the
others complete. The final table stacks the parts in manifest order with an ``image`` column
holding each image's path as written in the manifest. A run that fails or is interrupted
leaves no empty ``.parts`` folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.table import Table, vstack
from tqdm.auto import tqdm

from . import __version__
from .bayes import PRIOR_CHOICES
from .errors import LumosError
from .imageio import read_image
from .interrupts import RUN_LOG_LEVELS, log_levels, quiet_dask, quiet_worker, sigint_ignored
from .measure import measure_file
from .model_io import default_model_path, model_paths
from .survey import load_survey
from .tableio import TABLE_FORMATS, check_output_path, read_table, write_table

__all__ = ["MANIFEST_COLUMNS", "PATH_COLUMNS", "FILE_COLUMNS", "read_manifest",
           "measure_manifest", "is_manifest"]  # fmt: skip

MANIFEST_COLUMNS = (
    "band", "psf_fwhm", "psf_beta", "pixel_scale", "gain", "camera_state", "exposure_time",
    "zero_point",
)  # fmt: skip
#: Per-image file columns, passed to :func:`lumos.measure.measure_file` as ``<name>_path``.
FILE_COLUMNS = ("psf", "weight", "mask")
#: Names accepted for the column of image paths, in order of preference (any case).
PATH_COLUMNS = ("path", "image", "file", "filename")
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz")
_LIST_SUFFIXES = (".txt", ".lst", ".list")
_NAMES_SHOWN = 5
#: A local scheduler without a dashboard, its HTTP endpoint on a free local port (no warning
#: when the dashboard's port 8787 is taken).
_NO_DASHBOARD = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}


def _is_fits_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(9) == b"SIMPLE  ="


def _is_text_list(path: Path) -> bool:
    """True for a readable non-FITS text file (a plain list of images)."""
    if not path.is_file() or _is_fits_file(path):
        return False
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(65536)
    except (OSError, UnicodeDecodeError):
        return False
    return "\x00" not in head


def is_manifest(path: str | Path) -> bool:
    """True when ``path`` is a manifest (a table or a plain list of images), not an image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_FORMATS and suffix not in _FITS_SUFFIXES:
        return True
    if suffix in _LIST_SUFFIXES:
        return True
    if suffix in _FITS_SUFFIXES and path.is_file():
        try:
            # quiet: a broken file is reported once, by the image reader
            with warnings.catch_warnings(action="ignore"), fits.open(path) as hdul:
                has_image = any(h.is_image and h.data is not None for h in hdul)
                tables = [h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)]
                has_paths = any(
                    any(c.lower() in PATH_COLUMNS for c in h.columns.names) for h in tables
                )
            return has_paths and not has_image
        except Exception:
            return False
    return suffix not in _FITS_SUFFIXES and _is_text_list(path)


@dataclass
class _Job:
    index: int
    image: str
    listed: str
    catalogue: str
    part: str
    overrides: dict
    files: dict | None = None
    survey: str | None = None


def _read_list(path: Path) -> Table:
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise LumosError(f"cannot read manifest {path.name}: {exc}") from None
    names = [line for line in lines if line and not line.startswith("#")]
    return Table({"path": np.array(names, dtype=str)})


def read_manifest(path: str | Path) -> Table:
    """Read and check a manifest: a table or a plain list of images (see the module).

    Returns
    -------
    astropy.table.Table
        One row per image, the image paths in a column named ``path``.

    Raises
    ------
    LumosError
        With a one-line message saying what a manifest must hold.
    """
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"manifest file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in _LIST_SUFFIXES or (suffix not in TABLE_FORMATS and _is_text_list(path)):
        table = _read_list(path)
    else:
        table = read_table(path, "manifest")
        by_lower = {name.lower(): name for name in table.colnames}
        found = next((by_lower[c] for c in PATH_COLUMNS if c in by_lower), None)
        if found is None and len(table.colnames) == 1 and suffix in (".csv", ".ecsv"):
            only = table.colnames[0]
            if Path(only).suffix.lower() in _FITS_SUFFIXES:  # a list of files, no header
                names = [only] + [str(v).strip() for v in table[only]]
                table = Table({"path": np.array(names, dtype=str)})
                found = "path"
        if found is None:
            raise LumosError(
                f"manifest {path.name} needs a 'path' column (or 'image') naming one FITS image "
                f"per row, or one image per line in a text file; it has the columns: "
                f"{', '.join(table.colnames)}"
            )
        if found != "path":
            if "path" in table.colnames:
                table.remove_column("path")
            table.rename_column(found, "path")
    if len(table) == 0:
        raise LumosError(f"manifest {path.name} lists no images")
    return table


def _jobs(manifest: Table, base: Path, catalogue: str | None) -> list[_Job]:
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
        files = _file_columns(manifest, row, base)
        jobs.append(_Job(index, str(image), listed, cat, "", overrides, files))
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


def _file_state(path: str | Path) -> list:
    """Path, size and modification time (ns) of a file; None values when it is missing."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p), None, None]
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _prior_state(method: str, prior) -> list | None:
    """What of the prior decides a part's rows: its name and form, a prior table's state."""
    if method != "lumos":
        return None
    name, form = str(prior), getattr(prior, "form", None)
    return [name if name in PRIOR_CHOICES else _file_state(name), form]


def _model_state(method: str, model_path: str | None) -> list | None:
    if method != "lumos":
        return None

    stem = model_path if model_path is not None else default_model_path()
    return [_file_state(p) for p in model_paths(stem)]


def _part_name(job: _Job, common: dict) -> str:
    """``<image stem>-<digest of the job's inputs>.parquet``."""
    inputs = {
        **common,
        "image": _file_state(job.image),
        "catalogue": _file_state(job.catalogue),
        "overrides": job.overrides,
        "files": {k: _file_state(v) for k, v in sorted((job.files or {}).items())},
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{Path(job.image).stem}-{digest}.parquet"


def _names(jobs: list[_Job]) -> str:
    names = [Path(job.listed).name for job in jobs]
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _say(message: str) -> None:
    print(f"lumos measure: {message}", file=sys.stderr)


def _tidy_parts(parts: Path, keep: set[str], settle: float = 1.0) -> None:
    """Remove temporary files and parts of earlier inputs; remove the folder when empty.

    A worker of an interrupted run may still be checking that it can write there (a
    short-lived probe file): for up to ``settle`` seconds the folder is tidied again until
    only the kept parts are left.
    """
    deadline = time.monotonic() + settle
    while parts.is_dir():
        for p in parts.iterdir():
            if p.is_file() and p.name not in keep:
                p.unlink(missing_ok=True)
        try:
            parts.rmdir()  # only when empty
            return
        except OSError:
            left = [p.name for p in parts.iterdir()]
            if (left and all(name in keep for name in left)) or time.monotonic() > deadline:
                return  # kept parts only (or no more time); an emptied folder is tried again
            time.sleep(0.05)


def _survey_overrides(job: _Job, keywords) -> dict:
    """The job's overrides completed by its survey file (none: as they are).

    Loading the survey registers its bands in this process (a Dask worker does not share
    the registrations of the process that started it); the survey then gives the image's
    band from its header and the gain, read noise and pixel scale it lacks
    (:meth:`lumos.survey.Survey.image_overrides`).
    """
    if job.survey is None:
        return job.overrides

    survey = load_survey(job.survey)
    _, header, wcs = read_image(job.image)
    return survey.image_overrides(header, wcs is not None, job.overrides, keywords)


def _run_job(job: _Job, method: str, model_path: str | None, keywords, columns,
             prior="auto") -> str | None:
    """Measure one image into its part file (in a worker process); returns an error
    message or None."""
    quiet_worker()
    torch.set_num_threads(1)
    try:
        overrides = _survey_overrides(job, keywords)
        measure_file(
            job.image, job.catalogue, job.part, method=method, model_path=model_path,
            overrides=overrides, keywords=keywords, columns=columns, progress=False,
            **(job.files or {}),
            notes=False, prior=prior,
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
    survey: str | Path | None = None,
    prior="auto",
) -> Table:
    """Measure every image of a manifest in parallel and write one table.

    Parameters
    ----------
    manifest_path : str or Path
        Manifest: a table or a plain list of images (see the module docstring).
    catalogue : str, Path or None
        Catalogue for every image (unless the manifest has a ``catalogue`` column).
    out_path : str or Path
        Output table; the per-image parts are kept in ``<out_path>.parts/`` and reused by
        a later run while their inputs are unchanged.
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
    survey : str or Path, optional
        Survey file (TOML) of the images, as ``--survey`` for one image: every worker
        loads it (registering its bands) and completes each image's metadata from it; a
        manifest ``band`` must be one of its bands.
    prior : str or lumos.prior.PriorChoice
        Prior of a likelihood model's posterior columns, applied to each image's rows as
        :func:`lumos.measure.measure_file` applies it (``"auto"`` learns it from that
        image's galaxies).

    Returns
    -------
    astropy.table.Table
        Rows of all images that succeeded, with an ``image`` column; ``meta["FAILED"]`` lists
        the images that failed and ``meta["EXPDFLT"]`` those whose exposure time is the
        band's default (none in the header or the manifest).
    """
    out_path = check_output_path(out_path)
    manifest = read_manifest(manifest_path)
    parts = out_path.with_name(out_path.name + ".parts")
    cat = None if catalogue is None else str(catalogue)
    model = None if model_path is None else str(model_path)
    jobs = _jobs(manifest, Path(manifest_path).parent, cat)
    if survey is not None:
        load_survey(survey)  # a bad survey file is one error here, not one per image
        for job in jobs:
            job.survey = str(survey)
    common = {
        "lumos": __version__,
        "method": method,
        "model": _model_state(method, model),
        "keywords": keywords or {},
        "columns": columns or {},
        "prior": _prior_state(method, prior),
    }
    if survey is not None:
        common["survey"] = _file_state(survey)
    for job in jobs:
        job.part = str(parts / _part_name(job, common))
    keep = {Path(job.part).name for job in jobs}
    earlier = {p.name for p in parts.glob("*.parquet")} if parts.is_dir() else set()
    todo, seen = [], set()
    for job in jobs:
        if not Path(job.part).exists() and job.part not in seen:
            todo.append(job)
            seen.add(job.part)
    reused = [job for job in jobs if Path(job.part).exists()]
    stale_stems = {name.rsplit("-", 1)[0] for name in earlier - keep}
    changed = [job for job in todo if Path(job.image).stem in stale_stems]
    if reused:
        _say(f"reusing the results of {len(reused)} image(s) whose inputs are unchanged, "
             f"from {parts}: {_names(reused)}")  # fmt: skip
    if changed:
        _say(f"measuring again {len(changed)} image(s) whose image, catalogue, options or "
             f"model changed since the last run: {_names(changed)}")  # fmt: skip
    failures: dict[str, str] = {}  # manifest path -> reason
    try:
        if todo:
            parts.mkdir(exist_ok=True)
            _run_jobs(todo, failures, method, model, scheduler, n_workers, keywords, columns,
                      progress, prior)  # fmt: skip
        tables, defaults = [], []
        for job in jobs:
            if Path(job.part).exists():
                part = read_table(job.part, "partial table")
                if part.meta.get("EXPTSRC") == "band default":
                    defaults.append(job)
                part.meta.clear()
                part.add_column(np.full(len(part), job.listed), name="image", index=0)
                tables.append(part)
        if not tables:
            raise LumosError("every image of the manifest failed; nothing written")
        if defaults:
            _say(f"{len(defaults)} image(s) have no exposure time in the header or the "
                 f"manifest; used the band's default: {_names(defaults)}")  # fmt: skip
        result = vstack(tables, metadata_conflicts="silent")
        result.meta["METHOD"] = method
        result.meta["NIMAGES"] = len(tables)
        result.meta["FAILED"] = ",".join(failures)
        result.meta["EXPDFLT"] = ",".join(job.listed for job in defaults)
        write_table(result, out_path)
    finally:
        _tidy_parts(parts, keep)
    return result


def _run_jobs(todo: list[_Job], failures: dict[str, str], method: str, model: str | None,
              scheduler: str | None, n_workers: int | None, keywords, columns,
              progress: bool, prior="auto") -> None:
    """Measure the jobs on a Dask cluster; failures by manifest path into ``failures``.

    A local cluster's workers ignore SIGINT: on Ctrl-C this process stops the cluster
    quietly (on a cluster given by ``scheduler`` it cancels the work), then raises
    KeyboardInterrupt.
    """
    # dask.distributed adds about 0.3 s to an import; only measuring a manifest needs it
    from dask.distributed import Client, LocalCluster, as_completed

    workers = n_workers or min(len(todo), os.cpu_count() or 1)
    cluster = None
    if scheduler is None:
        with sigint_ignored():
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, scheduler_kwargs=_NO_DASHBOARD,
            )  # fmt: skip
    interrupted = False
    client, futures = None, {}
    with log_levels(RUN_LOG_LEVELS):
        try:
            client = Client(scheduler or cluster)
            if cluster is not None:
                client.run(quiet_worker)
            futures = {
                client.submit(_run_job, job, method, model, keywords, columns, prior,
                              pure=False): job
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
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            with quiet_dask() if interrupted else nullcontext():
                if client is not None:
                    if interrupted and cluster is None:
                        client.cancel(list(futures))
                    client.close()
                if cluster is not None:
                    cluster.close()

