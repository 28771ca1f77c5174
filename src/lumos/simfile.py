"""The HDF5 stamp-file format of lumos: stamps, simulation extras and metadata.

Layout: one dataset per :class:`~lumos.stamps.StampBatch` field at the root (``truth`` only
when present), the :class:`~lumos.observe.SimulationExtras` under the group ``extras``; root
attributes ``format`` (``"lumos-stamps"``), ``format_version``, ``lumos_version``,
``pixel_units`` and any further metadata (dicts and lists as JSON strings).
:func:`write_chunks` streams chunks drawn in this process or in worker processes into one
file.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .observe import SimulationExtras
from .stamps import StampBatch

__all__ = [
    "HDF5_FORMAT",
    "HDF5_VERSION",
    "ChunkJob",
    "read_attrs",
    "read_extras",
    "read_hdf5",
    "write_chunks",
    "write_hdf5",
]

HDF5_FORMAT = "lumos-stamps"
HDF5_VERSION = 1
_STAMP_FIELDS = ("pixels", "profile", "i_mag", "ccd_xy", "band_idx", "flags", "offset", "truth",
                 "truth_scale")
_REQUIRED_FIELDS = _STAMP_FIELDS[:-2]


def _h5py():
    try:
        import h5py  # noqa: PLC0415 - only when an HDF5 stamp file is read or written
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError("HDF5 I/O needs h5py (pip install h5py)") from exc
    return h5py


def _batch_arrays(batch: StampBatch) -> dict[str, np.ndarray]:
    out = {}
    for name in _STAMP_FIELDS:
        value = getattr(batch, name)
        if value is not None:
            out[name] = value.detach().cpu().numpy()
    return out


def _extras_arrays(extras: SimulationExtras) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(extras, f.name)) for f in fields(extras)}


def _set_attrs(h5, attrs: dict | None) -> None:
    h5.attrs["format"] = HDF5_FORMAT
    h5.attrs["format_version"] = HDF5_VERSION
    h5.attrs["lumos_version"] = __version__
    h5.attrs["pixel_units"] = "electron"
    for key, value in (attrs or {}).items():
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        elif value is None:
            value = "null"
        h5.attrs[key] = value


def write_hdf5(
    path: str | Path,
    batch: StampBatch,
    extras: SimulationExtras | None = None,
    attrs: dict | None = None,
    compression: str | None = None,
) -> Path:
    """Write a batch (and optionally its extras) to an HDF5 file.

    Layout: one dataset per :class:`StampBatch` field at the root (``truth`` only when
    present), the extras under the group ``extras``; root attributes ``format``
    (``"lumos-stamps"``), ``format_version``, ``lumos_version``, ``pixel_units`` and
    ``attrs`` (dicts and lists stored as JSON strings).

    Parameters
    ----------
    path : str or Path
        Output file (overwritten).
    batch : StampBatch
        Stamps.
    extras : SimulationExtras, optional
        Context and truth, same length as ``batch``.
    attrs : dict, optional
        Extra metadata (seed, configuration, ...).
    compression : {None, "gzip", "lzf"}
        Dataset compression (default none: simulated noise does not compress well).

    Returns
    -------
    Path
    """
    h5py = _h5py()
    path = Path(path)
    if extras is not None and len(extras) != len(batch):
        raise ValueError(f"extras has {len(extras)} rows, batch has {len(batch)}")
    with h5py.File(path, "w") as h5:
        _set_attrs(h5, attrs)
        for name, arr in _batch_arrays(batch).items():
            h5.create_dataset(name, data=arr, compression=compression)
        if extras is not None:
            group = h5.create_group("extras")
            for name, arr in _extras_arrays(extras).items():
                group.create_dataset(name, data=arr, compression=compression)
    return path


def _check_file(h5, path) -> None:
    if h5.attrs.get("format") != HDF5_FORMAT:
        raise ValueError(f"{path} is not a lumos stamp file (format attribute missing)")
    version = int(h5.attrs.get("format_version", 0))
    if version > HDF5_VERSION:
        raise ValueError(
            f"{path} has stamp-file format version {version}; this lumos reads up to "
            f"{HDF5_VERSION}"
        )


def read_hdf5(path: str | Path, start: int = 0, stop: int | None = None) -> StampBatch:
    """Read a :class:`StampBatch` written by :func:`write_hdf5` or :func:`simulate_to_file`.

    Parameters
    ----------
    path : str or Path
        HDF5 file.
    start, stop : int
        Row range to read (default all).

    Returns
    -------
    StampBatch
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"stamp file not found: {path}")
    with h5py.File(path, "r") as h5:
        _check_file(h5, path)
        missing = [n for n in _REQUIRED_FIELDS if n not in h5]
        if missing:
            raise ValueError(f"{path} lacks datasets: {', '.join(missing)}")
        data = {
            name: (torch.from_numpy(h5[name][start:stop]) if name in h5 else None)
            for name in _STAMP_FIELDS
        }
    return StampBatch(**data)


def read_extras(path: str | Path, start: int = 0, stop: int | None = None) -> SimulationExtras:
    """Read the :class:`SimulationExtras` of a stamp file (ValueError if it has none)."""
    h5py = _h5py()
    path = Path(path)
    with h5py.File(path, "r") as h5:
        _check_file(h5, path)
        if "extras" not in h5:
            raise ValueError(f"{path} holds no simulation extras (written without context)")
        group = h5["extras"]
        return SimulationExtras(
            **{f.name: group[f.name][start:stop] for f in fields(SimulationExtras)}
        )


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a stamp file (JSON strings decoded where possible)."""
    h5py = _h5py()
    out = {}
    with h5py.File(Path(path), "r") as h5:
        for key, value in h5.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
    return out


class ChunkJob:
    """Chunk ``k`` of a stamp file: ``make()`` builds the simulator once per process, and
    ``simulator.file_chunk(m, k, context_size)`` draws the chunk from its own random stream,
    so that the file does not depend on how many processes drew it.

    Parameters
    ----------
    make : callable
        Picklable ``make() -> simulator`` (e.g. a :func:`functools.partial` of
        :class:`lumos.simulate.Simulator`).
    context_size : int or None
        Side of the context cutouts of the extras (None: no extras).
    """

    def __init__(self, make: Callable, context_size: int | None) -> None:
        self.make = make
        self.context_size = context_size
        self._sim = None

    def __call__(self, item: tuple[int, int]):
        k, m = item
        if self._sim is None:
            self._sim = self.make()
        return self._sim.file_chunk(m, k, self.context_size)


_WORKER_JOB: ChunkJob | None = None


def _init_worker(job: ChunkJob) -> None:
    global _WORKER_JOB
    torch.set_num_threads(1)
    _WORKER_JOB = job


def _run_worker(item: tuple[int, int]):
    return _WORKER_JOB(item)


@contextmanager
def _chunk_pool(workers: int, job: ChunkJob) -> Iterator[Callable]:
    """``map(item -> (batch, extras))`` in order: in this process, or in ``workers``
    processes of one torch thread each (one per core draws ~1000 stamps/s)."""
    if workers == 1:
        yield lambda items: map(job, items)
        return

    # fork where the platform has it (the workers start at once with the parent's imports;
    # no torch thread pool has started in the parent yet), else spawn
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield lambda items: pool.imap(_run_worker, items)


def write_chunks(out: Path, n: int, sizes: Iterable[int], job: ChunkJob, attrs: dict,
                 workers: int = 1, compression: str | None = None,
                 progress: bool = True) -> Path:
    """Draw chunks with ``job`` and write them, in order, into one stamp file.

    Parameters
    ----------
    out : Path
        Output HDF5 file (overwritten).
    n : int
        Total number of stamps (the sum of ``sizes``).
    sizes : iterable of int
        Stamps of each chunk; chunk ``k`` is ``job((k, sizes[k]))``.
    job : ChunkJob
        Draws a chunk: ``(StampBatch, SimulationExtras or None)``.
    attrs : dict
        Metadata stored as root attributes.
    workers : int
        Processes drawing chunks side by side (1: this process).
    compression : {None, "gzip", "lzf"}
        Dataset compression.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Path
    """
    h5py = _h5py()
    done = 0
    with h5py.File(out, "w") as h5, tqdm(
        total=int(n), unit="stamp", desc="simulate", disable=not progress
    ) as bar, _chunk_pool(workers, job) as pool:
        _set_attrs(h5, attrs)
        datasets: dict[str, Any] = {}
        for batch, extras in pool(enumerate(sizes)):
            m = len(batch)
            arrays = {("", k): v for k, v in _batch_arrays(batch).items()}
            if extras is not None:
                arrays.update({("extras", k): v for k, v in _extras_arrays(extras).items()})
            for (group, name), arr in arrays.items():
                key = f"{group}/{name}" if group else name
                if key not in datasets:
                    datasets[key] = h5.create_dataset(
                        key,
                        shape=(n,) + arr.shape[1:],
                        dtype=arr.dtype,
                        chunks=(min(256, n),) + arr.shape[1:],
                        compression=compression,
                    )
                datasets[key][done : done + m] = arr
            done += m
            bar.update(m)
    return out
