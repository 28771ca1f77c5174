"""Run a function over row chunks in a thread pool, without gradients.

Many small tensor operations (the summaries of Gaussian mixtures, the grid products of the
co-adds) scale far better over chunks of rows run in parallel threads than within one
operation: :func:`map_chunks` runs the chunks in a thread pool with torch's intra-op
thread count set to 1 meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["CHUNK", "map_chunks"]

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
