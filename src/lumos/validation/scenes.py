"""Controlled simulated observations for the validation experiments.

The TEAHUPOO :class:`~lumos.simulate.Simulator` draws a random galaxy per stamp; several
experiments of the paper need more control: the *same* galaxy observed twice (repeated
observations) or in two bands (colours), a neighbour placed at a chosen distance
(deblending), or the same image measured with perturbed catalogue parameters (sensitivity).
This module draws such observations with the simulator's observation step
(:mod:`lumos.observe`: the shared renderer, Moffat PSFs, shot noise, a background source and
the stamp assembly) and its settings (:class:`lumos.simconfig.SimulationConfig`: PSF ranges,
CCD size): images in electrons *including the sky*, Poisson shot noise of the sources, the
galaxy at ``((C - 1) / 2 + dx, (C - 1) / 2 + dy)`` of a ``C x C`` context canvas, and the
60 x 60 network stamp the central cut of the canvas.

Every observation is returned as an :class:`Observation`: the network's
:class:`~lumos.stamps.StampBatch` and the classical methods'
:class:`~lumos.classical.ContextCutouts` of the same pixels, with the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ..backgrounds import SyntheticSky
from ..bands import N_PAUS_BANDS
from ..classical import ContextCutouts
from ..instrument import PIXEL_SCALE
from ..observe import (
    Exposure,
    default_renderer,
    expose,
    moffat_psf,
    profile_flags,
    render,
    stamp_batch,
)
from ..population import sample_population
from ..rows import Rows
from ..scene import SimulatedBands
from ..simconfig import SimulationConfig
from ..stamps import STAMP_SIZE, StampBatch

__all__ = [
    "CONTEXT",
    "Observation",
    "Targets",
    "clean_sky",
    "crop",
    "draw_targets",
    "another_exposure",
    "exposure_times",
    "observation_from_simulation",
    "observe",
    "render_profiles",
    "make_observation",
]

#: Side of the context canvas, pixels (room for the 30-45 pixel background annulus).
CONTEXT = 100
_RENDER_CHUNK = 512
#: The simulator's settings: PSF ranges and CCD size of the observations.
_SIMULATION = SimulationConfig()
_PAUS = SimulatedBands()


def exposure_times(band: np.ndarray) -> np.ndarray:
    """Exposure time (s) of PAUS band numbers 0..39 (the filter tray's)."""
    return _PAUS.exposure_time(np.asarray(band, dtype=np.int64))


def clean_sky() -> SyntheticSky:
    """The synthetic PAUCam-like sky without detector artefacts (no cosmic rays, hot pixels,
    bad columns or saturated stars): sky level, scattered-light pattern and noise only."""
    return SyntheticSky(
        cosmic_rate=0.0,
        hot_pixel_fraction=0.0,
        bad_columns_per_ccd=0.0,
        saturated_stars_per_ccd=0.0,
    )


def crop(images: np.ndarray, size: int = STAMP_SIZE) -> np.ndarray:
    """The central ``size x size`` cut of ``[N, C, C]`` images (C - size even)."""
    c = images.shape[-1]
    if c < size or (c - size) % 2:
        raise ValueError(f"cannot cut a centred {size}-pixel stamp from {c} pixels")
    lo = (c - size) // 2
    return images[..., lo : lo + size, lo : lo + size]


def render_profiles(
    r50, n, q, pa, psf_fwhm, psf_beta, offset, flux=None, size: int = CONTEXT
) -> np.ndarray:
    """PSF-convolved Sersic images drawn by the project renderer, float32 ``[N, size, size]``.

    Parameters
    ----------
    r50, n, q, pa : array_like, shape (N,)
        Sersic shape as in :class:`Targets`.
    psf_fwhm, psf_beta : array_like, shape (N,)
        Moffat FWHM (arcsec) and beta.
    offset : array_like, shape (N, 2)
        Position (dx, dy) of the centre relative to the canvas centre, pixels (any size:
        neighbours may sit far from the centre).
    flux : array_like, shape (N,), optional
        Total flux (default 1: unit-flux profiles).
    size : int
        Canvas side, pixels.
    """
    r50 = np.atleast_1d(np.asarray(r50, dtype=float))
    m = r50.size
    out = np.empty((m, size, size), dtype=np.float32)

    def t(a, shape=(m,)):
        return np.broadcast_to(np.asarray(a, dtype=float), shape).copy()

    args = [t(r50), t(n), t(q), t(pa), t(psf_fwhm), t(psf_beta), t(offset, (m, 2)),
            t(1.0 if flux is None else flux)]  # fmt: skip
    rend = default_renderer(size, PIXEL_SCALE)
    for lo in range(0, m, _RENDER_CHUNK):
        s = slice(lo, lo + _RENDER_CHUNK)
        r, sn, q_, pa_, fwhm, beta, off, f = (x[s] for x in args)
        out[s] = render(rend, moffat_psf, r, sn, q_, pa_, off, f, fwhm, beta)
    return out


@dataclass
class Targets(Rows):
    """The galaxies to observe and how (arrays of length N).

    Attributes
    ----------
    r50, n, q, pa : numpy.ndarray
        True shape: arcsec, Sersic index, b/a, degrees CCW from +x.
    flux : numpy.ndarray
        True total flux in this observation, electrons.
    i_mag : numpy.ndarray
        Catalogue i-band magnitude.
    band : numpy.ndarray
        PAUS band number 0..39.
    camera_state : numpy.ndarray
        0 before, 1 after the camera intervention.
    psf_fwhm, psf_beta : numpy.ndarray
        Moffat PSF of the exposure (arcsec, -).
    offset : numpy.ndarray, shape (N, 2)
        Sub-pixel offset of the galaxy from the stamp centre, pixels.
    ccd_xy : numpy.ndarray, shape (N, 2)
        Position on the CCD, pixels.
    """

    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    flux: np.ndarray
    i_mag: np.ndarray
    band: np.ndarray
    camera_state: np.ndarray
    psf_fwhm: np.ndarray
    psf_beta: np.ndarray
    offset: np.ndarray
    ccd_xy: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.r50).shape[0]
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            want = (n, 2) if f.name in ("offset", "ccd_xy") else (n,)
            if value.shape != want:
                raise ValueError(f"Targets.{f.name} must have shape {want}, got {value.shape}")
            dtype = np.int64 if f.name in ("band", "camera_state") else float
            setattr(self, f.name, value.astype(dtype))

    def __getitem__(self, index) -> Targets:
        """Select rows with a slice, an integer array or a boolean mask."""
        return Targets(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def replace(self, **changes) -> Targets:
        """A copy with some fields replaced."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Targets(**values)

    @property
    def band_idx(self) -> np.ndarray:
        """Band x camera-state index 0..79."""
        return self.band + N_PAUS_BANDS * self.camera_state

    @property
    def exposure_time(self) -> np.ndarray:
        """Exposure time of each observation, seconds."""
        return exposure_times(self.band)

    def exposure(self) -> Exposure:
        """The observation of each galaxy as an :class:`lumos.observe.Exposure`."""
        return Exposure(band=self.band, camera_state=self.camera_state,
                        band_idx=self.band_idx, exposure_time=self.exposure_time,
                        ccd_xy=self.ccd_xy, psf_fwhm=self.psf_fwhm, psf_beta=self.psf_beta,
                        offset=self.offset)  # fmt: skip


@dataclass
class Observation(Rows):
    """Simulated observations of N galaxies, as the network and the classical methods see them.

    Attributes
    ----------
    batch : StampBatch
        60 x 60 stamps (electrons, sky included) with the catalogue model profile and the
        truth.
    cutouts : ContextCutouts
        ``C x C`` context cutouts of the same pixels with the catalogue profile, ``truth``
        and ``true_background`` (the noiseless sky model).
    profile_true : numpy.ndarray, float32 [N, C, C]
        Unit-flux profile of the true parameters (for the oracle weighted sum).
    truth : numpy.ndarray
        True flux, electrons.
    i_mag : numpy.ndarray
        Catalogue i-band magnitude.
    band : numpy.ndarray
        PAUS band number 0..39.
    artefacts : numpy.ndarray
        Artefact bits of the background (:class:`lumos.backgrounds.Artefact`).
    """

    batch: StampBatch
    cutouts: ContextCutouts
    profile_true: np.ndarray
    truth: np.ndarray
    i_mag: np.ndarray
    band: np.ndarray
    artefacts: np.ndarray

    def __getitem__(self, index) -> Observation:
        """Select rows with a slice, an integer array or a boolean mask."""
        if isinstance(index, np.ndarray) and index.dtype == bool:
            index = np.flatnonzero(index)
        tindex = torch.as_tensor(index) if isinstance(index, np.ndarray) else index
        return Observation(
            batch=self.batch[tindex],
            cutouts=self.cutouts[index],
            profile_true=self.profile_true[index],
            truth=self.truth[index],
            i_mag=self.i_mag[index],
            band=self.band[index],
            artefacts=self.artefacts[index],
        )

    def with_pixels(self, pixels: np.ndarray, sky_model: np.ndarray | None = None) -> Observation:
        """The same observation with other context pixels (and optionally another true sky).

        Parameters
        ----------
        pixels : numpy.ndarray, float32 [N, C, C]
            New context pixels, electrons; the stamps are their central cut.
        sky_model : numpy.ndarray, optional
            New true background for the oracle.
        """
        c = self.cutouts
        cut = ContextCutouts(
            pixels=pixels, valid=np.isfinite(pixels), offset=c.offset, r50=c.r50, n=c.n,
            q=c.q, pa=c.pa, profile=c.profile, gain=c.gain, read_noise=c.read_noise,
            pixel_scale=c.pixel_scale, flags=c.flags, truth=c.truth,
            true_background=c.true_background if sky_model is None else sky_model,
        )  # fmt: skip
        stamp = np.ascontiguousarray(crop(pixels, self.batch.pixels.shape[-1]), np.float32)
        b = self.batch
        batch = StampBatch(
            pixels=torch.from_numpy(stamp), profile=b.profile, i_mag=b.i_mag, ccd_xy=b.ccd_xy,
            band_idx=b.band_idx, flags=b.flags, offset=b.offset, truth=b.truth,
        )  # fmt: skip
        return Observation(batch, cut, self.profile_true, self.truth, self.i_mag, self.band,
                           self.artefacts)  # fmt: skip

    def with_profile(self, profile: np.ndarray, r50=None, n=None, q=None) -> Observation:
        """The same pixels measured with another catalogue model profile.

        Parameters
        ----------
        profile : numpy.ndarray, float32 [N, C, C]
            Unit-flux model profile on the context canvas (the stamps get its central cut).
        r50, n, q : numpy.ndarray, optional
            Catalogue shape given to the classical methods with it.
        """
        c = self.cutouts
        cut = ContextCutouts(
            pixels=c.pixels, valid=c.valid, offset=c.offset,
            r50=c.r50 if r50 is None else r50, n=c.n if n is None else n,
            q=c.q if q is None else q, pa=c.pa, profile=profile, gain=c.gain,
            read_noise=c.read_noise, pixel_scale=c.pixel_scale, flags=c.flags, truth=c.truth,
            true_background=c.true_background,
        )  # fmt: skip
        b = self.batch
        stamp = np.ascontiguousarray(crop(profile, b.pixels.shape[-1]), np.float32)
        batch = StampBatch(
            pixels=b.pixels, profile=torch.from_numpy(stamp), i_mag=b.i_mag, ccd_xy=b.ccd_xy,
            band_idx=b.band_idx, flags=b.flags, offset=b.offset, truth=b.truth,
        )  # fmt: skip
        return Observation(batch, cut, self.profile_true, self.truth, self.i_mag, self.band,
                           self.artefacts)  # fmt: skip


def draw_targets(
    n: int,
    rng: np.random.Generator,
    population=None,
    band: np.ndarray | None = None,
    psf_fwhm_range: tuple[float, float] = _SIMULATION.psf_fwhm_range,
    psf_beta_range: tuple[float, float] = _SIMULATION.psf_beta_range,
) -> tuple[Targets, object]:
    """Random galaxies observed as the simulator observes them.

    Shapes, magnitudes and narrow-band fluxes from :func:`lumos.population.sample_population`;
    a uniform random band (unless given) and camera state, the band's exposure time, a
    Moffat PSF with FWHM and beta uniform in the given ranges, a uniform CCD position and a
    uniform sub-pixel offset.

    Parameters
    ----------
    n : int
        Number of galaxies.
    rng : numpy.random.Generator
    population : lumos.population.PopulationConfig, optional
        Population settings.
    band : numpy.ndarray, optional
        PAUS band numbers 0..39 (default uniform).
    psf_fwhm_range, psf_beta_range : tuple of float
        PSF FWHM (arcsec) and beta ranges (default the simulator's).

    Returns
    -------
    targets : Targets
    galaxies : lumos.population.GalaxyPopulation
        The drawn population (band fluxes of every band, for further observations).
    """
    gal = sample_population(n, rng, config=population)
    if band is None:
        band = rng.integers(0, N_PAUS_BANDS, n)
    band = np.asarray(band, dtype=np.int64)
    targets = Targets(
        r50=gal.r50, n=gal.n, q=gal.q, pa=gal.pa,
        flux=gal.flux_e_per_s[np.arange(n), band] * exposure_times(band),
        i_mag=gal.i_mag, band=band, camera_state=rng.integers(0, 2, n),
        psf_fwhm=rng.uniform(*psf_fwhm_range, n), psf_beta=rng.uniform(*psf_beta_range, n),
        offset=rng.random((n, 2)) - 0.5,
        ccd_xy=rng.random((n, 2)) * np.asarray(_SIMULATION.ccd_size, dtype=float),
    )  # fmt: skip
    return targets, gal


def another_exposure(targets: Targets, rng: np.random.Generator, **changes) -> Targets:
    """The same galaxies on another exposure: a new PSF, sub-pixel offset and CCD position.

    FWHM and beta are uniform in the simulator's ranges, the offset uniform in
    [-0.5, 0.5)^2, the CCD position uniform; drawn from ``rng`` in that order.

    Parameters
    ----------
    targets : Targets
        The galaxies and their first exposure.
    rng : numpy.random.Generator
    **changes
        Further fields that differ on the new exposure (e.g. ``band``, ``flux``).
    """
    n = len(targets)
    return targets.replace(
        **changes,
        psf_fwhm=rng.uniform(*_SIMULATION.psf_fwhm_range, n),
        psf_beta=rng.uniform(*_SIMULATION.psf_beta_range, n),
        offset=rng.random((n, 2)) - 0.5,
        ccd_xy=rng.random((n, 2)) * np.asarray(_SIMULATION.ccd_size, dtype=float),
    )


def make_observation(
    targets: Targets,
    sources: np.ndarray,
    profile_true: np.ndarray,
    profile_catalogue: np.ndarray,
    background,
    rng: np.random.Generator,
    catalogue: dict[str, np.ndarray] | None = None,
    shot_noise: bool = True,
) -> Observation:
    """Add shot noise and a background to noiseless source images.

    Parameters
    ----------
    targets : Targets
        The galaxies and their exposures.
    sources : numpy.ndarray, float32 [N, C, C]
        Expected source light (galaxy and neighbours), electrons.
    profile_true, profile_catalogue : numpy.ndarray, float32 [N, C, C]
        Unit-flux profiles of the true and the catalogue parameters.
    background : BackgroundSource
        E.g. :func:`clean_sky` or :class:`lumos.backgrounds.SyntheticSky`.
    rng : numpy.random.Generator
    catalogue : dict, optional
        Catalogue ``r50, n, q, pa`` given to the classical methods (default the truth).
    shot_noise : bool
        Poisson noise of the source light.

    Returns
    -------
    Observation
    """
    exposure = targets.exposure()
    light, bg = expose(np.maximum(sources, 0.0), "poisson" if shot_noise else "none",
                       background, exposure, rng)  # fmt: skip
    pixels = np.asarray(bg.pixels, dtype=np.float32) + light
    sky_model = np.asarray(bg.sky_model, dtype=np.float32)
    cat = catalogue or {"r50": targets.r50, "n": targets.n, "q": targets.q, "pa": targets.pa}
    flags = profile_flags(cat["r50"], cat["n"], cat["q"], cat["pa"])
    cutouts = ContextCutouts(
        pixels=pixels, valid=np.isfinite(pixels), offset=targets.offset, r50=cat["r50"],
        n=cat["n"], q=cat["q"], pa=cat["pa"], profile=profile_catalogue, gain=1.0,
        read_noise=float(getattr(background, "read_noise", 5.0)), pixel_scale=PIXEL_SCALE,
        flags=flags, truth=targets.flux, true_background=sky_model,
    )  # fmt: skip
    batch = stamp_batch(crop(pixels), crop(profile_catalogue), i_mag=targets.i_mag,
                        ccd_xy=targets.ccd_xy, band_idx=targets.band_idx, flags=flags.copy(),
                        offset=targets.offset, truth=targets.flux)  # fmt: skip
    return Observation(
        batch=batch,
        cutouts=cutouts,
        profile_true=profile_true,
        truth=np.asarray(targets.flux, dtype=float),
        i_mag=np.asarray(targets.i_mag, dtype=float),
        band=np.asarray(targets.band, dtype=np.int64),
        artefacts=np.asarray(bg.artefacts, dtype=np.int64),
    )


def observe(
    targets: Targets,
    background,
    rng: np.random.Generator,
    catalogue: dict[str, np.ndarray] | None = None,
    extra_light: np.ndarray | None = None,
    size: int = CONTEXT,
) -> Observation:
    """Render and observe galaxies: profile, shot noise, background.

    Parameters
    ----------
    targets : Targets
        Galaxies and exposures.
    background : BackgroundSource
        Background source.
    rng : numpy.random.Generator
    catalogue : dict, optional
        Catalogue ``r50, n, q, pa`` (and optionally ``psf_fwhm``) for the model profile;
        default the truth.
    extra_light : numpy.ndarray, float32 [N, size, size], optional
        Further noiseless light (neighbours), electrons.
    size : int
        Context canvas side, pixels.

    Returns
    -------
    Observation
    """
    t = targets
    true = render_profiles(t.r50, t.n, t.q, t.pa, t.psf_fwhm, t.psf_beta, t.offset, size=size)
    if catalogue is None:
        cat_profile = true
    else:
        cat_profile = render_profiles(
            catalogue["r50"], catalogue["n"], catalogue["q"], catalogue["pa"],
            catalogue.get("psf_fwhm", t.psf_fwhm), t.psf_beta, t.offset, size=size,
        )  # fmt: skip
    sources = true * t.flux.astype(np.float32)[:, None, None]
    if extra_light is not None:
        sources = sources + extra_light
    return make_observation(t, sources, true, cat_profile, background, rng, catalogue)


def observation_from_simulation(batch: StampBatch, extras) -> Observation:
    """An :class:`Observation` from :meth:`lumos.simulate.Simulator.sample_with_context`.

    Parameters
    ----------
    batch : StampBatch
        The simulator's stamps.
    extras : lumos.simulate.SimulationExtras
        Their context cutouts and truth.
    """
    cutouts = ContextCutouts(
        pixels=extras.pixels, valid=extras.valid, offset=batch.offset.numpy(),
        r50=extras.r50_catalogue, n=extras.n_catalogue, q=extras.q_catalogue,
        pa=extras.pa_catalogue, profile=extras.profile_catalogue, gain=1.0, read_noise=5.0,
        pixel_scale=PIXEL_SCALE, flags=batch.flags.numpy(), truth=extras.true_flux,
        true_background=extras.sky_model,
    )  # fmt: skip
    return Observation(
        batch=batch,
        cutouts=cutouts,
        profile_true=extras.profile_true,
        truth=np.asarray(extras.true_flux, dtype=float),
        i_mag=np.asarray(extras.i_mag, dtype=float),
        band=np.asarray(extras.band, dtype=np.int64),
        artefacts=np.asarray(extras.artefacts, dtype=np.int64),
    )
