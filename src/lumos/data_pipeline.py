"""Training batches of one rank, simulated ahead in worker processes.

Three kinds of source (see :mod:`lumos.streams`):

* an **indexable** stream factory (``factory.batch(seed, batch_size, k)``, e.g.
  :class:`lumos.streams.SimulatorStream`): batch ``k`` of epoch ``e`` is
  ``factory.batch(epoch_seed(e), batch_size, k)``. With ``workers`` > 0 those batches are
  drawn in worker processes (one torch thread each), up to ``prefetch`` batches ahead of
  the training and across epoch boundaries, so the network trains while the next batches
  and the next epoch's are simulated. The batches do not depend on ``workers``: a run
  with workers equals the same run without them, bit for bit;
* a plain stream factory ``factory(seed, batch_size)``: one fresh iterator per epoch,
  read in this process;
* an iterable of batches: read in order, fast-forwarded on resume (exact only if the
  iterable is recreated identically).
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import time
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from .stamps import StampBatch
from .streams import derive_seed, is_indexable

__all__ = ["TrainingBatches"]

_SOURCE: Any = None


def _init_worker(source) -> None:
    global _SOURCE
    torch.set_num_threads(1)
    _SOURCE = source


def _draw(seed: int, batch_size: int, k: int) -> dict[str, np.ndarray | None]:
    """Batch ``k`` of a stream, as arrays (cheap to send between processes)."""
    batch = _SOURCE.batch(seed, batch_size, k)
    return {f.name: (None if (t := getattr(batch, f.name)) is None else t.numpy())
            for f in fields(StampBatch)}


def _from_arrays(arrays: dict[str, np.ndarray | None]) -> StampBatch:
    return StampBatch(**{k: (None if v is None else torch.from_numpy(v))
                         for k, v in arrays.items()})


class TrainingBatches:
    """The training batches of one rank, epoch by epoch.

    Parameters
    ----------
    source : stream factory or iterable
        See the module docstring.
    batch_size : int
        Stamps per batch.
    seed : int
        Base seed; epoch ``e`` reads the stream of ``derive_seed(seed, rank, e, 0)``.
    rank : int
        Rank of this process (distributed training).
    steps_per_epoch : int
        Batches per epoch.
    n_epochs : int
        Last epoch (exclusive bound of the epochs drawn ahead).
    workers : int
        Worker processes for an indexable factory (0: draw in this process).
    prefetch : int, optional
        Batches drawn ahead (default ``2 * workers``, at least 2).
    """

    def __init__(self, source, batch_size: int, seed: int, rank: int, steps_per_epoch: int,
                 n_epochs: int, workers: int = 0, prefetch: int | None = None) -> None:
        is_factory = callable(source) and not hasattr(source, "__next__")
        self.factory = source if is_factory else None
        self.iterable: Iterable[StampBatch] | None = None if is_factory else source
        self.indexable = is_factory and is_indexable(source)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.steps_per_epoch = int(steps_per_epoch)
        self.n_epochs = int(n_epochs)
        self.workers = int(workers) if self.indexable else 0
        self.prefetch = max(2, 2 * self.workers) if prefetch is None else max(1, int(prefetch))
        self.consumed = 0
        #: Seconds :meth:`next` spent waiting for (or drawing) batches.
        self.wait_seconds = 0.0
        self._iter: Iterator[StampBatch] | None = None
        self._epoch = 0
        self._k = 0
        self._pool = None
        self._pending: collections.deque = collections.deque()  # ((epoch, k), result)
        self._plan: Iterator[tuple[int, int]] | None = None

    @property
    def resumable(self) -> bool:
        """Whether every epoch's data are fixed by the seed (a factory)."""
        return self.factory is not None

    def epoch_seed(self, epoch: int) -> int:
        """Stream seed of an epoch."""
        return derive_seed(self.seed, self.rank, epoch, 0)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for checkpoints and model files."""
        return {
            "kind": "factory" if self.resumable else "iterable",
            "base_seed": self.seed,
            "epoch_seed": "derive_seed(base_seed, rank, epoch, 0)",
            "batch": "factory.batch(epoch_seed, batch_size, k)" if self.indexable
            else "batch k of factory(epoch_seed, batch_size)",
            "batches_consumed_rank0": self.consumed,
        }

    # -- epochs -----------------------------------------------------------------------
    def start_epoch(self, epoch: int, consumed_before: int) -> None:
        """Get ready to read epoch ``epoch`` from its first batch.

        Parameters
        ----------
        epoch : int
            The epoch (0-based).
        consumed_before : int
            Batches read in the earlier epochs (fast-forwards a recreated iterable).
        """
        self._epoch, self._k = int(epoch), 0
        if self.factory is not None:
            self.consumed = consumed_before
            if self.workers > 0:
                if not (self._pending and self._pending[0][0] == (self._epoch, 0)):
                    self._restart(self._epoch)
            elif not self.indexable:
                self._iter = iter(self.factory(self.epoch_seed(epoch), self.batch_size))
            return
        if self._iter is None:
            self._iter = iter(self.iterable)
            for _ in range(consumed_before):  # fast-forward a recreated iterable
                next(self._iter)
            self.consumed = consumed_before

    def next(self) -> StampBatch:
        """The next batch of the current epoch."""
        t0 = time.perf_counter()
        batch = self._next()
        self.wait_seconds += time.perf_counter() - t0
        self._k += 1
        self.consumed += 1
        return batch

    def _next(self) -> StampBatch:
        if self.workers > 0:
            batch = self._next_from_workers()
        elif self.indexable:
            batch = self.factory.batch(self.epoch_seed(self._epoch), self.batch_size, self._k)
        else:
            try:
                batch = next(self._iter)
            except StopIteration:
                raise ValueError(
                    "the training stream ended; give an infinite stream or a stream factory"
                ) from None
        return batch

    def close(self) -> None:
        """Stop the worker processes (batches drawn ahead are dropped)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._pending.clear()

    def __enter__(self) -> TrainingBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- workers ----------------------------------------------------------------------
    def _restart(self, epoch: int, k: int = 0) -> None:
        """Drop what was drawn ahead and draw from batch ``k`` of ``epoch`` on."""
        self._pending.clear()
        if self._pool is None:
            # fork where the platform has it (workers start at once with this process's
            # imports), else spawn (the source must then be picklable)
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self._pool = mp.get_context(method).Pool(
                self.workers, initializer=_init_worker, initargs=(self.factory,))
        last = max(self.n_epochs, epoch + 1)
        self._plan = ((e, j) for e in range(epoch, last) for j in range(self.steps_per_epoch)
                      if e > epoch or j >= k)
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self.prefetch:
            item = next(self._plan, None)
            if item is None:
                return
            e, k = item
            result = self._pool.apply_async(_draw, (self.epoch_seed(e), self.batch_size, k))
            self._pending.append((item, result))

    def _next_from_workers(self) -> StampBatch:
        want = (self._epoch, self._k)
        if not self._pending or self._pending[0][0] != want:
            self._restart(*want)
        _, result = self._pending.popleft()
        self._fill()
        return _from_arrays(result.get())
