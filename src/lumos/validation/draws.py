"""The random generator of each validation experiment and the galaxies it draws first."""

from __future__ import annotations

import numpy as np

from ..population import GalaxyPopulation
from .scenes import Targets, draw_targets

__all__ = ["experiment_rng", "experiment_targets"]


def experiment_rng(experiment: str, n: int, seed: int) -> np.random.Generator:
    """The random generator of an experiment on ``n`` galaxies, from ``seed``.

    Raises
    ------
    ValueError
        If ``n`` is below 1 (the message names ``experiment``).
    """
    if n < 1:
        raise ValueError(f"the {experiment} experiment needs at least one galaxy, got {n}")
    return np.random.default_rng(np.random.SeedSequence(seed))


def experiment_targets(experiment: str, n: int, seed: int,
                       **draw) -> tuple[np.random.Generator, Targets, GalaxyPopulation]:
    """The random generator of an experiment on ``n`` galaxies and the galaxies it draws first.

    Parameters
    ----------
    experiment, n, seed
        As in :func:`experiment_rng`.
    **draw
        Further arguments of :func:`draw_targets`.

    Returns
    -------
    rng : numpy.random.Generator
        The generator, after drawing the galaxies.
    targets, galaxies
        As returned by :func:`draw_targets`.
    """
    rng = experiment_rng(experiment, n, seed)
    targets, galaxies = draw_targets(n, rng, **draw)
    return rng, targets, galaxies
