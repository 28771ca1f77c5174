"""A flat sky with Gaussian noise: the simplest background source."""

from __future__ import annotations

import numpy as np

from lumos.sky.base import BackgroundSample

__all__ = ["FlatSky"]


class FlatSky:
    """A flat sky with Gaussian noise: the simplest :class:`~lumos.sky.base.BackgroundSource`.

    Sky level ``sky_rate * exposure_time`` electrons per pixel and noise
    ``sqrt(sky + read_noise**2)`` (Gaussian approximation of Poisson sky noise).

    Parameters
    ----------
    sky_rate : float
        Sky electrons per pixel per second (default 1.9: ~170 e- in 90 s).
    read_noise : float
        Read noise, electrons.
    """

    def __init__(self, sky_rate: float = 1.9, read_noise: float = 5.0) -> None:
        if sky_rate < 0 or read_noise < 0:
            raise ValueError("sky_rate and read_noise must be >= 0")
        self.sky_rate = float(sky_rate)
        self.read_noise = float(read_noise)

    def sample(self, n, size, band_idx, ccd_xy, exposure_time, rng) -> BackgroundSample:
        """Draw ``n`` flat background stamps (see :class:`~lumos.sky.base.BackgroundSource`)."""
        level = (self.sky_rate * np.broadcast_to(np.asarray(exposure_time, float), (n,))).astype(
            np.float32
        )
        sigma = np.sqrt(level + self.read_noise**2).astype(np.float32)
        noise = rng.standard_normal((n, size, size), dtype=np.float32)
        sky = np.broadcast_to(level[:, None, None], (n, size, size))
        return BackgroundSample(
            pixels=sky + sigma[:, None, None] * noise,
            sky_model=np.ascontiguousarray(sky),
            sky_sigma=sigma,
            artefacts=np.zeros(n, dtype=np.int64),
        )
