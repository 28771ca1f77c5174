"""Seeds and streams of training data: what batch ``k`` of epoch ``e`` is.

A *stream factory* ``factory(seed, batch_size) -> iterator of StampBatch`` gives the
training batches of one seed; epoch ``e`` of rank ``r`` reads the stream of
``derive_seed(base_seed, r, e, 0)``, so the data of every (epoch, step) are fixed by the
base seed alone. A factory that also has a method ``batch(seed, batch_size, k)`` returning
batch ``k`` of that stream directly is *indexable*: any process can draw any batch, which
lets :mod:`lumos.data_pipeline` simulate ahead in worker processes with the same result
as in one process. :class:`SimulatorStream` is such a factory: batch ``k`` of seed ``s``
is :meth:`lumos.simulate.Simulator.file_chunk` ``(batch_size, k)`` of
``Simulator(config, seed=s)``, the random stream ``SeedSequence(s, spawn_key=(2, k))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from . import simulate
from .stamps import StampBatch

__all__ = [
    "StreamFactory",
    "derive_seed",
    "validation_seed",
    "training_simulation",
    "SimulatorStream",
    "simulator_stream",
    "augment_batch",
    "is_indexable",
]

StreamFactory = Callable[[int, int], Iterator[StampBatch]]


def derive_seed(base_seed: int, *keys: int) -> int:
    """A 63-bit seed determined by a base seed and integer keys (rank, epoch, purpose...).

    Parameters
    ----------
    base_seed : int
        Non-negative base seed.
    *keys : int
        Non-negative integers.

    Returns
    -------
    int
    """
    ss = np.random.SeedSequence([int(base_seed), *[int(k) for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def validation_seed(base_seed: int) -> int:
    """Seed for a held-out validation set, distinct from every training stream seed.

    Training streams use ``derive_seed(base_seed, rank, epoch, purpose)`` (four entropy
    words); this uses a different key layout, so the two never coincide in practice.
    """
    return derive_seed(base_seed, 0x7FFFFFFF, 0x56414C49, 0x44415445, 0x5345)


def training_simulation(model):
    """The simulation settings a model was trained on, from its metadata.

    Models record them as ``metadata["simulation_config"]``
    (:meth:`lumos.simulate.SimulationConfig.to_dict`); models that do not were trained on
    the default settings.

    Parameters
    ----------
    model : LumosNet
        A model (typically from :func:`lumos.model_io.load_model`).

    Returns
    -------
    lumos.simulate.SimulationConfig
    """
    data = (getattr(model, "metadata", None) or {}).get("simulation_config")
    return simulate.SimulationConfig.from_dict(data) if data else simulate.SimulationConfig()


def is_indexable(factory: Any) -> bool:
    """Whether a stream factory gives batch ``k`` directly (``factory.batch(seed, n, k)``)."""
    return callable(getattr(factory, "batch", None))


class SimulatorStream:
    """An indexable stream factory of fresh :class:`lumos.simulate.Simulator` batches.

    Parameters
    ----------
    sim_config : lumos.simulate.SimulationConfig, optional
        Simulation settings.
    **simulator_kwargs
        Passed to :class:`lumos.simulate.Simulator` (background, renderer_factory, ...).

    Notes
    -----
    ``stream(seed, batch_size)`` yields ``batch(seed, batch_size, 0)``,
    ``batch(seed, batch_size, 1)``, ...; the simulator of the last seed is kept, so the
    batches of one epoch share its renderers.
    """

    def __init__(self, sim_config=None, **simulator_kwargs) -> None:
        self.sim_config = sim_config
        self.simulator_kwargs = simulator_kwargs
        self._seed: int | None = None
        self._sim = None

    def simulator(self, seed: int):
        """The :class:`lumos.simulate.Simulator` of a stream seed."""
        if self._sim is None or self._seed != int(seed):
            self._sim = simulate.Simulator(self.sim_config, seed=int(seed), **self.simulator_kwargs)
            self._seed = int(seed)
        return self._sim

    def batch(self, seed: int, batch_size: int, k: int) -> StampBatch:
        """Batch ``k`` of the stream of ``seed``: ``batch_size`` stamps with truth."""
        return self.simulator(seed).file_chunk(int(batch_size), int(k))[0]

    def __call__(self, seed: int, batch_size: int) -> Iterator[StampBatch]:
        k = 0
        while True:
            yield self.batch(seed, batch_size, k)
            k += 1


def simulator_stream(sim_config=None, **simulator_kwargs) -> SimulatorStream:
    """A stream factory drawing fresh :class:`lumos.simulate.Simulator` batches.

    Parameters
    ----------
    sim_config, **simulator_kwargs
        As in :class:`SimulatorStream`.

    Returns
    -------
    SimulatorStream
        ``factory(seed, batch_size)`` -> infinite iterator of StampBatch with truth, and
        ``factory.batch(seed, batch_size, k)`` -> batch ``k`` of it.
    """
    return SimulatorStream(sim_config, **simulator_kwargs)


def augment_batch(batch: StampBatch, generator: torch.Generator | None = None) -> StampBatch:
    """Apply a random flip/90-degree rotation (one of 8) to every stamp.

    The same transformation is applied to the stamp, its profile and its sub-pixel
    offset, so the galaxy and its model profile stay aligned; the flux is unchanged
    (pixels are only permuted).

    Parameters
    ----------
    batch : StampBatch
    generator : torch.Generator, optional
        Source of randomness (CPU generator).

    Returns
    -------
    StampBatch
        A new batch; the other fields are shared with the input.
    """
    n = len(batch)
    code = torch.randint(0, 8, (n,), generator=generator).to(batch.pixels.device)
    pixels = batch.pixels.clone()
    profile = batch.profile.clone()
    offset = batch.offset.clone()
    for c in range(1, 8):
        idx = torch.nonzero(code == c).flatten()
        if idx.numel() == 0:
            continue
        p, q, o = batch.pixels[idx], batch.profile[idx], batch.offset[idx].clone()
        if c & 4:  # transpose: x <-> y
            p, q = p.transpose(-1, -2), q.transpose(-1, -2)
            o = o.flip(-1)
        if c & 1:  # mirror x (columns)
            p, q = p.flip(-1), q.flip(-1)
            o[:, 0] = -o[:, 0]
        if c & 2:  # mirror y (rows)
            p, q = p.flip(-2), q.flip(-2)
            o[:, 1] = -o[:, 1]
        pixels[idx] = p
        profile[idx] = q
        offset[idx] = o
    return batch.replace(pixels=pixels, profile=profile, offset=offset)
