"""Run a function over chunks of rows in a thread pool, one torch thread per chunk.

Many small tensor operations scale far better over chunks of rows run in parallel threads
than within one operation. :func:`map_chunks` maps a function over the chunks of
``range(n)`` without gradients (the summaries of Gaussian mixtures, the grid products of
the co-adds); :func:`run_row_chunks` runs a function over pieces of a set of row indices
with a progress bar (the measurement of a catalogue); :func:`intra_op_threads` sets torch's
intra-op thread count for a block of code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["CHUNK", "intra_op_threads", "map_chunks", "run_row_chunks"]

#: Default number of rows per chunk.
CHUNK = 20_000


def map_chunks(
    fn: Callable[[int, int], object], n: int, chunk: int = CHUNK, workers: int | None = None
) -> list:
    """``[fn(lo, hi) for each chunk of range(n)]`` without gradients, single intra-op thread.

    Parameters
    ----------
    fn : callable
        Called as ``fn(lo, hi)`` for the rows ``lo:hi`` of every chunk.
    n : int
        Number of rows.
    chunk : int
        Rows per chunk (the last chunk may be shorter).
    workers : int, optional
        Threads of the pool (default ``torch.get_num_threads()``; at most the number of
        chunks and of CPUs). The intra-op thread count is 1 while the chunks run and is
        restored afterwards.

    Returns
    -------
    list
        The results of ``fn``, in chunk order (empty for ``n = 0``).
    """
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if not bounds:
        return []
    prev = torch.get_num_threads()
    workers = max(1, min(workers or prev, len(bounds), os.cpu_count() or 1))
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            if workers == 1:
                return [fn(lo, hi) for lo, hi in bounds]

            def run(b: tuple[int, int]):
                with torch.no_grad():
                    return fn(*b)

            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(run, bounds))
    finally:
        torch.set_num_threads(prev)


def _pieces(rows: np.ndarray, size: int) -> list[slice | np.ndarray]:
    """Consecutive pieces of ``size`` row indices; a contiguous piece becomes a slice."""
    out: list[slice | np.ndarray] = []
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        if part[-1] - part[0] + 1 == len(part):
            out.append(slice(int(part[0]), int(part[-1]) + 1))
        else:
            out.append(part)
    return out


def _piece_length(rows: slice | np.ndarray) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def run_row_chunks(run: Callable[[slice | np.ndarray], None], rows: np.ndarray, size: int,
                workers: int, progress: bool, desc: str) -> None:
    """Call ``run`` on consecutive pieces of ``size`` of the row indices ``rows``, on
    ``workers`` threads, with a progress bar (``desc``, shown if ``progress``) that counts
    these rows only. A contiguous piece is passed as a slice, any other as an index array.

    Each worker thread runs torch with one intra-op thread (a per-thread setting), so that
    two chunks are rendered and inferred side by side instead of one chunk splitting every
    small operation over two threads; the rows of different chunks never overlap.
    """
    pieces = _pieces(np.asarray(rows, dtype=np.int64), size)
    with tqdm(total=len(rows), desc=desc, unit="gal", disable=not progress) as bar:
        if workers <= 1 or len(pieces) <= 1:
            for piece in pieces:
                run(piece)
                bar.update(_piece_length(piece))
            return
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:  # fmt: skip
            futures = {pool.submit(run, piece): piece for piece in pieces}
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(_piece_length(futures[future]))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (no-op for None)."""
    if count is None or count == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
