"""The synthetic sky of a survey: a flat sky at each band's typical level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .bands import N_BAND_INDEX

__all__ = ["SurveySky"]


@dataclass
class _Sample:
    pixels: np.ndarray
    sky_model: np.ndarray
    sky_sigma: np.ndarray
    artefacts: np.ndarray
    source: np.ndarray | None = None


class SurveySky:
    """A flat sky at each band's typical level, with Gaussian sky and read noise.

    The background source of a survey's simulations when no real images are given:
    ``sky * exposure_time`` electrons per pixel, noise ``sqrt(sky * t + read_noise**2)``.

    Parameters
    ----------
    survey : lumos.survey_description.Survey
        Gives each band's ``sky`` (e-/s/pixel) and the read noise (not imported here:
        the survey module imports this one).
    """

    def __init__(self, survey: Any) -> None:
        rates = np.zeros(N_BAND_INDEX)
        for state in range(len(survey.camera_states)):
            for b in survey.bands:
                rates[survey.band_index(b.name, state)] = b.sky
        self.rates = rates
        self.read_noise = float(survey.read_noise)

    def sample(self, n, size, band_idx, ccd_xy, exposure_time, rng) -> _Sample:
        """Draw ``n`` background stamps (see :class:`lumos.sky.BackgroundSource`)."""
        t = np.broadcast_to(np.asarray(exposure_time, dtype=float), (n,))
        level = (self.rates[np.asarray(band_idx, dtype=np.int64)] * t).astype(np.float32)
        sigma = np.sqrt(level + self.read_noise**2).astype(np.float32)
        noise = rng.standard_normal((n, size, size), dtype=np.float32)
        sky = np.broadcast_to(level[:, None, None], (n, size, size))
        return _Sample(pixels=sky + sigma[:, None, None] * noise,
                       sky_model=np.ascontiguousarray(sky), sky_sigma=sigma,
                       artefacts=np.zeros(n, dtype=np.int64))  # fmt: skip
