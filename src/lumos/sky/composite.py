"""Mixing several background sources."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lumos.sky.base import BackgroundSample, BackgroundSource

__all__ = ["CompositeBackground"]


class CompositeBackground(BackgroundSource):
    """Draw each stamp from one of several background sources, at random.

    :meth:`sample` picks the source of each stamp with the mixing weights; the ``source``
    array of the returned :class:`BackgroundSample` gives the index of that source.

    Parameters
    ----------
    sources : sequence of BackgroundSource
        The sources to mix.
    weights : sequence of float, optional
        Relative probability of each source (default: equal).

    Raises
    ------
    ValueError
        If there are no sources, an object lacks a ``sample`` method, or the weights are
        not one finite non-negative number per source with a positive sum.
    """

    def __init__(
        self, sources: Sequence[BackgroundSource], weights: Sequence[float] | None = None
    ) -> None:
        sources = list(sources)
        if not sources:
            raise ValueError("CompositeBackground needs at least one source")
        for k, s in enumerate(sources):
            if not callable(getattr(s, "sample", None)):
                raise ValueError(
                    f"source {k} ({type(s).__name__}) is not a BackgroundSource: "
                    "it has no sample() method"
                )
        if weights is None:
            p = np.ones(len(sources))
        else:
            p = np.asarray(weights, dtype=float)
            if p.shape != (len(sources),):
                raise ValueError(f"got {p.size} weights for {len(sources)} sources")
            if not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
                raise ValueError(
                    f"weights must be finite, non-negative and not all zero, got {list(p)}"
                )
        self.sources = sources
        self.weights = p / p.sum()

    def _sample(self, n: int, size: int, b: np.ndarray, xy: np.ndarray, t: np.ndarray,
                rng: np.random.Generator) -> BackgroundSample:
        """:meth:`BackgroundSource.sample` on checked arguments: ``n`` stamps of the mix."""
        which = rng.choice(len(self.sources), size=n, p=self.weights)
        pixels = np.empty((n, size, size), dtype=np.float32)
        model = np.empty((n, size, size), dtype=np.float32)
        sigma = np.empty(n, dtype=np.float32)
        artefacts = np.zeros(n, dtype=np.int64)
        for k, src in enumerate(self.sources):
            sel = np.flatnonzero(which == k)
            if sel.size == 0:
                continue
            part = src.sample(sel.size, size, b[sel], xy[sel], t[sel], rng)
            pixels[sel] = part.pixels
            model[sel] = part.sky_model
            sigma[sel] = part.sky_sigma
            artefacts[sel] = part.artefacts
        return BackgroundSample(pixels, model, sigma, artefacts, source=which.astype(np.int64))
