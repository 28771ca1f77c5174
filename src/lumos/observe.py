"""One exposure of a scene: PSF, sub-pixel offset, CCD position, background and noise.

The observation step shared by every simulation of lumos (the training
:class:`~lumos.simulate.Simulator`, :func:`~lumos.pairs.simulate_pairs`, the validation
scenes): :class:`Exposure` holds how the objects are observed, :func:`draw_pointing` draws
its CCD position, PSF and sub-pixel offset, :func:`render` draws PSF-convolved Sersic
profiles, :func:`expose` adds photon shot noise and a background, and :func:`stamp_batch`
assembles the network's :class:`~lumos.stamps.StampBatch`. Pixels are in electrons
including the sky; the galaxy sits at ``((C - 1) / 2 + dx, (C - 1) / 2 + dy)`` of a
``C x C`` canvas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch

from .flags import Flag
from .profiles import SersicRenderer, valid_profile_parameters
from .psf import MoffatPSF
from .rows import Rows
from .sky import BackgroundSample, SyntheticSky
from .stamps import StampBatch

__all__ = [
    "STAMP_DTYPES",
    "Exposure",
    "SimulationExtras",
    "default_background",
    "default_renderer",
    "draw_pointing",
    "expose",
    "moffat_psf",
    "profile_flags",
    "render",
    "shot_noise",
    "stamp_batch",
    "sum_by_host",
]

#: dtypes of the :class:`StampBatch` fields other than the images.
STAMP_DTYPES = {
    "i_mag": np.float32,
    "ccd_xy": np.float32,
    "band_idx": np.int64,
    "flags": np.int64,
    "offset": np.float32,
    "truth": np.float32,
    "truth_scale": np.float32,
}


@dataclass(frozen=True)
class Exposure(Rows):
    """How ``m`` objects are observed (arrays of length m).

    Attributes
    ----------
    band : numpy.ndarray, int64
        Flux column of the band (PAUS band number 0..39, or a survey band's column).
    camera_state : numpy.ndarray, int64
        0 before, 1 after the camera intervention.
    band_idx : numpy.ndarray, int64
        The network's band x camera-state index.
    exposure_time : numpy.ndarray
        Seconds.
    ccd_xy : numpy.ndarray, shape (m, 2)
        Stamp centre on the CCD, pixels.
    psf_fwhm, psf_beta : numpy.ndarray
        Moffat PSF (arcsec, -).
    offset : numpy.ndarray, shape (m, 2)
        Sub-pixel offset of the galaxy from the canvas centre, pixels.
    """

    band: np.ndarray
    camera_state: np.ndarray
    band_idx: np.ndarray
    exposure_time: np.ndarray
    ccd_xy: np.ndarray
    psf_fwhm: np.ndarray
    psf_beta: np.ndarray
    offset: np.ndarray


def draw_pointing(m: int, config, rng: np.random.Generator,
                  psf_draw: Callable | None = None) -> tuple[np.ndarray, ...]:
    """CCD position, PSF and sub-pixel offset of ``m`` objects, drawn in that order.

    Parameters
    ----------
    m : int
        Number of objects.
    config : lumos.simconfig.SimulationConfig
        CCD size and PSF ranges.
    rng : numpy.random.Generator
    psf_draw : callable, optional
        ``psf_draw(m, rng) -> (fwhm, beta)`` drawing the PSFs instead of the configured
        uniform ranges (e.g. :meth:`lumos.psf_pool.PSFExPool.draw`).

    Returns
    -------
    ccd_xy, psf_fwhm, psf_beta, offset : numpy.ndarray
        Uniform over the CCD; FWHM and beta uniform in their ranges; offset uniform in
        [-0.5, 0.5)^2.
    """
    ccd_xy = rng.random((m, 2)) * np.asarray(config.ccd_size, dtype=float)
    if psf_draw is None:
        fwhm = rng.uniform(*config.psf_fwhm_range, m)
        beta = rng.uniform(*config.psf_beta_range, m)
    else:
        fwhm, beta = psf_draw(m, rng)
    offset = rng.random((m, 2)) - 0.5
    return ccd_xy, fwhm, beta, offset


@functools.lru_cache(maxsize=8)
def default_renderer(size: int, pixel_scale: float) -> SersicRenderer:
    """The shared :class:`~lumos.profiles.SersicRenderer` of a canvas size (it caches its
    wavenumber grids)."""
    return SersicRenderer(size=size, pixel_scale=pixel_scale)


def moffat_psf(fwhm: torch.Tensor, beta: torch.Tensor) -> MoffatPSF:
    """The default PSF factory: a batch of Moffat profiles."""
    return MoffatPSF(fwhm, beta)


def default_background() -> SyntheticSky:
    """The default background source: the synthetic PAUCam-like sky of :mod:`lumos.sky`."""
    return SyntheticSky()


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)


def render(renderer, psf_factory: Callable, r50, n, q, pa, offset, flux, fwhm,
           beta) -> np.ndarray:
    """PSF-convolved Sersic images of all objects in one renderer call.

    Parameters
    ----------
    renderer : SersicRenderer
        Anything with the :meth:`~lumos.profiles.SersicRenderer.render` signature.
    psf_factory : callable
        ``psf_factory(fwhm, beta)`` -> batched PSF (e.g. :func:`moffat_psf`).
    r50, n, q, pa : array_like, shape (M,)
        Sersic shape (arcsec, -, -, degrees).
    offset : array_like, shape (M, 2)
        Centre relative to the canvas centre, pixels.
    flux : array_like, shape (M,)
        Total flux of each object.
    fwhm, beta : array_like, shape (M,)
        PSF parameters.

    Returns
    -------
    numpy.ndarray
        float32 [M, size, size].
    """
    t = _tensor
    psf = psf_factory(t(fwhm), t(beta))
    images = renderer.render(t(r50), t(n), t(q), t(pa), psf, offset=t(offset), flux=t(flux))
    return images.detach().to(torch.float32).numpy()


def sum_by_host(images: np.ndarray, host: np.ndarray, m: int) -> np.ndarray:
    """Sum images [K, S, S] into [m, S, S] by host index, in rounds of distinct hosts."""
    out = np.zeros((m,) + images.shape[1:], dtype=np.float32)
    if host.size == 0:
        return out
    order = np.argsort(host, kind="stable")
    sorted_host = host[order]
    rank = np.arange(host.size) - np.searchsorted(sorted_host, sorted_host, side="left")
    for r in range(int(rank.max()) + 1):
        sel = order[rank == r]  # at most one image per host in each round
        out[host[sel]] += images[sel]
    return out


def shot_noise(expected: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy source counts (electrons, float32) from expected counts ``expected`` (>= 0).

    ``mode`` is ``"poisson"`` (exact draws), ``"gaussian"`` (``lambda + sqrt(lambda) *
    N(0, 1)`` in float32) or ``"none"`` (``expected`` itself).
    """
    if mode == "poisson":
        return rng.poisson(expected).astype(np.float32)
    if mode == "gaussian":
        noise = rng.standard_normal(expected.shape, dtype=np.float32)
        noise *= np.sqrt(expected)
        noise += expected
        return noise
    return expected


def expose(light: np.ndarray, mode: str, background, exposure: Exposure,
           rng: np.random.Generator) -> tuple[np.ndarray, BackgroundSample]:
    """Shot noise of the source light, then a background stamp of the exposure.

    Parameters
    ----------
    light : numpy.ndarray, float32 [m, C, C]
        Expected source light, electrons (negative values count as 0; may be overwritten).
    mode : {"poisson", "gaussian", "none"}
        Shot-noise model (:func:`shot_noise`).
    background : BackgroundSource
        Source of the background stamps.
    exposure : Exposure
        Band index, CCD position and exposure time of each stamp.
    rng : numpy.random.Generator

    Returns
    -------
    sources : numpy.ndarray, float32 [m, C, C]
        Noisy source light (add ``background.pixels`` for the image).
    background : BackgroundSample
    """
    np.maximum(light, 0.0, out=light)
    sources = shot_noise(light, mode, rng)
    m, size = light.shape[0], light.shape[-1]
    bg = background.sample(m, size, exposure.band_idx, exposure.ccd_xy,
                           exposure.exposure_time, rng)  # fmt: skip
    return sources, bg


def profile_flags(r50, n, q, pa=None) -> np.ndarray:
    """``Flag.BAD_PROFILE`` (int64) where the catalogue profile is not drawn as given."""
    flags = np.zeros(np.shape(r50)[0], dtype=np.int64)
    flags[~valid_profile_parameters(r50, n, q, pa).numpy()] |= int(Flag.BAD_PROFILE)
    return flags


def stamp_batch(pixels: np.ndarray, profile: np.ndarray, **fields) -> StampBatch:
    """A :class:`StampBatch` from NumPy arrays (the small fields cast to their dtypes).

    Parameters
    ----------
    pixels, profile : numpy.ndarray, float32 [N, S, S]
        Image (electrons) and unit-flux model profile.
    **fields
        ``i_mag, ccd_xy, band_idx, flags, offset, truth`` (see :data:`STAMP_DTYPES`).
    """
    small = {k: torch.as_tensor(np.asarray(v, dtype=STAMP_DTYPES[k])) for k, v in fields.items()}
    return StampBatch(pixels=torch.from_numpy(np.ascontiguousarray(pixels, np.float32)),
                      profile=torch.from_numpy(np.ascontiguousarray(profile, np.float32)),
                      **small)  # fmt: skip


@dataclass
class SimulationExtras(Rows):
    """Everything the simulator knows about a batch, for classical methods and diagnostics.

    Images are context cutouts of ``C x C`` pixels centred like the stamps (the 60 x 60
    stamp is the central part, rows and columns ``(C - S) / 2 ..``). All arrays are NumPy,
    leading dimension N.

    Attributes
    ----------
    pixels : float32 [N, C, C]
        Image in electrons, including the sky.
    valid : bool [N, C, C]
        True for usable pixels (finite).
    sky_model : float32 [N, C, C]
        Noiseless background (sky + scattered light), electrons.
    sky_sigma : float32 [N]
        Background noise standard deviation, electrons.
    artefacts : int64 [N]
        Bit mask of injected background artefacts (:mod:`lumos.sky`).
    profile_true : float32 [N, C, C]
        Unit-flux PSF-convolved profile from the true parameters.
    profile_catalogue : float32 [N, C, C]
        Unit-flux profile from the catalogue parameters (the stamps' profile channel).
    galaxy : float32 [N, C, C]
        Noiseless image of the central galaxy, electrons (``true_flux * profile_true``).
    neighbours : float32 [N, C, C]
        Noiseless image of all neighbours, electrons.
    true_flux : float64 [N]
        Total flux of the central galaxy, electrons.
    close_neighbour : bool [N]
        A neighbour lies within ``close_neighbour_distance[1]`` pixels of the galaxy.
    n_neighbours : int64 [N]
        Neighbours whose centres fall inside the stamp.
    psf_fwhm, psf_beta : float64 [N]
        True Moffat PSF parameters (arcsec, -).
    psf_fwhm_catalogue : float64 [N]
        PSF FWHM used for the profile channel, arcsec.
    r50, n, q, pa, i_mag, z : float64 [N]
        True galaxy parameters (arcsec, -, -, degrees, mag, -).
    r50_catalogue, n_catalogue, q_catalogue, pa_catalogue, i_mag_catalogue : float64 [N]
        Catalogue parameters given to the profile channel and the ``i_mag`` field.
    band : int64 [N]
        PAUS band number 0..39.
    camera_state : int64 [N]
        0 before, 1 after the camera intervention.
    exposure_time : float64 [N]
        Seconds.
    """

    pixels: np.ndarray
    valid: np.ndarray
    sky_model: np.ndarray
    sky_sigma: np.ndarray
    artefacts: np.ndarray
    profile_true: np.ndarray
    profile_catalogue: np.ndarray
    galaxy: np.ndarray
    neighbours: np.ndarray
    true_flux: np.ndarray
    close_neighbour: np.ndarray
    n_neighbours: np.ndarray
    psf_fwhm: np.ndarray
    psf_beta: np.ndarray
    psf_fwhm_catalogue: np.ndarray
    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    i_mag: np.ndarray
    z: np.ndarray
    r50_catalogue: np.ndarray
    n_catalogue: np.ndarray
    q_catalogue: np.ndarray
    pa_catalogue: np.ndarray
    i_mag_catalogue: np.ndarray
    band: np.ndarray
    camera_state: np.ndarray
    exposure_time: np.ndarray

    @property
    def context_size(self) -> int:
        """Side C of the context cutouts, pixels."""
        return int(self.pixels.shape[-1])

    def __getitem__(self, index) -> SimulationExtras:
        """Select rows with a slice, an integer array or a boolean mask."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return SimulationExtras(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[SimulationExtras]) -> SimulationExtras:
        """Concatenate along the first axis."""
        if not parts:
            raise ValueError("cannot concatenate an empty list of extras")
        names = [f.name for f in fields(SimulationExtras)]
        return SimulationExtras(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in names}
        )
