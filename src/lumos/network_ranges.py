"""The input ranges a :class:`~lumos.network.LumosNet` was trained on, and their flags.

Per galaxy: the i-band magnitude range and the band x camera-state indices of the
:class:`~lumos.network_config.NetworkConfig`. Per image: the PSF and pixel-scale ranges and
the largest flux of the training simulations, read from the model's
``metadata["simulation_config"]`` (the :class:`~lumos.simulate.SimulationConfig` saved in
the model file); a model without that record checks only the per-galaxy inputs.
"""

from __future__ import annotations

from typing import Any

import torch

from .flags import Flag
from .network_config import NetworkConfig
from .stamps import StampBatch

__all__ = ["PIXEL_SCALE_TOLERANCE", "input_range_flags", "training_simulation_record",
           "max_flux_rate", "observing_ranges", "observing_range_flags"]

#: Relative tolerance around the training pixel scale before ``OUT_OF_RANGE`` is set.
PIXEL_SCALE_TOLERANCE = 0.05


def input_range_flags(config: NetworkConfig, batch: StampBatch) -> torch.Tensor:
    """Per-galaxy flags for inputs the network was not trained on.

    ``Flag.BAD_MAGNITUDE`` where the i-band magnitude is missing or infinite;
    ``Flag.OUT_OF_RANGE`` where it lies outside ``config.i_mag_range``, or the band x
    camera-state index is outside the embedding or not among ``config.band_indices``.

    Parameters
    ----------
    config : NetworkConfig
    batch : StampBatch

    Returns
    -------
    torch.Tensor, int64, shape (N,)
        Bits of :class:`~lumos.flags.Flag` per galaxy.
    """
    i_mag = batch.i_mag.double()
    lo, hi = config.i_mag_range
    missing = ~torch.isfinite(i_mag)
    out = ~missing & ((i_mag < lo) | (i_mag > hi))
    band = batch.band_idx.long()
    out |= (band < 0) | (band >= config.n_band_index)
    if config.band_indices is not None:
        allowed = torch.tensor(sorted(set(int(b) for b in config.band_indices)),
                               dtype=torch.long, device=band.device)  # fmt: skip
        out |= ~torch.isin(band, allowed)
    return out.long() * int(Flag.OUT_OF_RANGE) | missing.long() * int(Flag.BAD_MAGNITUDE)


def training_simulation_record(metadata: dict[str, Any] | None) -> dict | None:
    """``metadata["simulation_config"]`` of a model file (None if it has none)."""
    sim = (metadata or {}).get("simulation_config")
    return sim if isinstance(sim, dict) else None


def max_flux_rate(metadata: dict[str, Any] | None) -> float | None:
    """Largest band flux of the training simulations, electrons per second.

    ``flux_range[1]`` of a log-uniform or asinh-uniform training flux distribution, else
    the population's ``flux_max``; None for a model that does not record it.
    """
    sim = training_simulation_record(metadata)
    if sim is None:
        return None
    if sim.get("flux_prior") in ("loguniform", "asinh") and isinstance(sim.get("flux_range"),
                                                                         list | tuple):
        return float(sim["flux_range"][1])
    pop = sim.get("population")
    if isinstance(pop, dict) and isinstance(pop.get("flux_max"), int | float):
        return float(pop["flux_max"])
    return None


def observing_ranges(metadata: dict[str, Any] | None) -> dict[str, tuple[float, float]]:
    """PSF and pixel-scale ranges of the training simulations.

    The PSF FWHM range (arcsec), the Moffat beta range and the pixel scale, widened by
    :data:`PIXEL_SCALE_TOLERANCE` on either side (the simulations use one scale).

    Returns
    -------
    dict
        ``{"psf_fwhm": (lo, hi), "psf_beta": (lo, hi), "pixel_scale": (lo, hi)}``, only
        the items the model records (empty for a model without that metadata).
    """
    sim = training_simulation_record(metadata)
    if sim is None:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for item in ("psf_fwhm", "psf_beta"):
        value = sim.get(f"{item}_range")
        if isinstance(value, list | tuple) and len(value) == 2:
            out[item] = (float(value[0]), float(value[1]))
    scale = sim.get("pixel_scale")
    if isinstance(scale, int | float):
        t = PIXEL_SCALE_TOLERANCE
        out["pixel_scale"] = (float(scale) * (1.0 - t), float(scale) * (1.0 + t))
    return out


def observing_range_flags(metadata: dict[str, Any] | None, psf_fwhm: float, psf_beta: float,
                          pixel_scale: float) -> int:
    """``Flag.OUT_OF_RANGE`` when an image's PSF or pixel scale lies outside
    :func:`observing_ranges` (0 for a model that records no ranges).

    Parameters
    ----------
    metadata : dict or None
        The model's metadata.
    psf_fwhm : float
        Moffat PSF FWHM, arcsec.
    psf_beta : float
        Moffat beta.
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    int
        ``int(Flag.OUT_OF_RANGE)`` or 0, for every galaxy of the image.
    """
    values = {"psf_fwhm": psf_fwhm, "psf_beta": psf_beta, "pixel_scale": pixel_scale}
    for item, (lo, hi) in observing_ranges(metadata).items():
        if not lo <= float(values[item]) <= hi:
            return int(Flag.OUT_OF_RANGE)
    return 0
