"""TEAHUPOO: simulated PAUS-like galaxy stamps with known fluxes, as :class:`StampBatch`.

Each stamp holds one galaxy of the :mod:`lumos.population` at the stamp centre (sub-pixel
offset uniform in [-0.5, 0.5)^2), observed in a random narrow band (uniform over the 40)
and camera state (0/1), with the exposure time of the band's filter tray, at a random
position on the 4096 x 2048 CCD, through a Moffat PSF (FWHM ~ U(0.6, 1.3) arcsec, beta ~
U(2.5, 5)). The galaxy is rendered with exact pixel integration by
:class:`lumos.profiles.SersicRenderer` with a total flux of ``flux_e_per_s[band] *
exposure_time`` electrons (the ``truth``), photon shot noise is added (Poisson, or its
Gaussian approximation: ``SimulationConfig.shot_noise``), and the
result is pasted onto a background stamp of a :class:`BackgroundSource` (sky level,
scattered light, read noise, cosmic rays, ... in electrons, *not* sky-subtracted).

Neighbours make blends: by default 20% of the stamps get a galaxy 4-15 pixels from the
central one, and every stamp gets a Poisson number (mean 0.4 per 60 x 60 pixel area) of
other sources at random positions (up to 6 pixels beyond the edges, so that outside light
enters); 10% of all neighbours are stars (black bodies, drawn as near-point Sersic
profiles). Neighbouring galaxies come from the same population model but with i = 17-24
and near-natural number counts (most are faint); they share the stamp's band, exposure
and PSF. These defaults cost about 0.8 extra renders per stamp.

The model-profile channel is drawn by the same renderer from the *catalogue* parameters
(unit total flux, same PSF and sub-pixel offset). By default the catalogue is exact;
:class:`CatalogueErrors` adds realistic errors to r50, n, q, pa, the PSF FWHM and i_mag
(``CatalogueErrors.realistic()``), off by default so that the network learns the flux, not
the catalogue's mistakes, unless asked to.

Everything is vectorised over stamps and rendered in chunks; the same seed gives identical
batches.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .bands import N_PAUS_BANDS, PAUS_BANDS, get_band
from .bulgedisk import describe_bank, two_component_galaxies
from .flags import Flag
from .instrument import CCD_SIZE, PIXEL_SCALE
from .population import (
    POPULATION_N_RANGE,
    POPULATION_Q_RANGE,
    POPULATION_R50_RANGE,
    PopulationConfig,
    sample_population,
    sample_stars,
)
from .population import ZERO_POINT as POPULATION_ZERO_POINT
from .stamps import StampBatch

__all__ = [
    "CatalogueErrors",
    "apply_catalogue_errors",
    "SimulationConfig",
    "SimulationExtras",
    "Simulator",
    "write_hdf5",
    "read_hdf5",
    "read_extras",
    "read_attrs",
    "FlatSky",
    "default_background",
    "simulate_to_file",
    "HDF5_FORMAT",
    "HDF5_VERSION",
]

HDF5_FORMAT = "lumos-stamps"
HDF5_VERSION = 1
_STAMP_FIELDS = ("pixels", "profile", "i_mag", "ccd_xy", "band_idx", "flags", "offset", "truth")

#: Radius (arcsec) and Sersic index used to draw stars as (near) point sources.
_STAR_R50 = 0.02
_STAR_N = 0.5


@dataclass(frozen=True)
class CatalogueErrors:
    """Errors of the catalogue parameters given to the model-profile channel.

    All zero (the default) means an exact catalogue. Errors are Gaussian and independent.

    Parameters
    ----------
    r50_frac : float
        Fractional error of r50 (log-normal, sigma of ln r50).
    n_frac : float
        Fractional error of the Sersic index (log-normal).
    q_sigma : float
        Absolute error of the axis ratio (result clipped to [0.05, 1]).
    pa_sigma : float
        Error of the position angle, degrees.
    psf_fwhm_frac : float
        Fractional error of the PSF FWHM used for the profile channel (log-normal).
    i_mag_sigma : float
        Error of the catalogue i-band magnitude, magnitudes.
    """

    r50_frac: float = 0.0
    n_frac: float = 0.0
    q_sigma: float = 0.0
    pa_sigma: float = 0.0
    psf_fwhm_frac: float = 0.0
    i_mag_sigma: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"catalogue error {f.name} must be finite and >= 0, got {value}")

    @property
    def enabled(self) -> bool:
        """True when any error is non-zero."""
        return any(getattr(self, f.name) > 0 for f in fields(self))

    @classmethod
    def realistic(cls) -> CatalogueErrors:
        """Errors typical of a deep space-based shape catalogue and a ground-based PSF model:
        10% in r50, 15% in n, 0.05 in q, 5 degrees in pa, 3% in the PSF FWHM, 0.03 mag."""
        return cls(0.10, 0.15, 0.05, 5.0, 0.03, 0.03)


def apply_catalogue_errors(errors: CatalogueErrors, r50, n, q, pa, i_mag, psf_fwhm,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What a catalogue measured with ``errors`` reports for galaxies with these parameters.

    Parameters
    ----------
    errors : CatalogueErrors
        The errors (all zero: the truth is returned and ``rng`` is not used).
    r50, n, q, pa, i_mag, psf_fwhm : numpy.ndarray, shape (N,)
        True half-light radius (arcsec), Sersic index, axis ratio, position angle (deg),
        i magnitude and PSF FWHM (arcsec).
    rng : numpy.random.Generator
        Source of the errors (one (6, N) standard-normal draw).

    Returns
    -------
    dict
        ``r50, n, q, pa, i_mag, psf_fwhm`` as catalogued (clipped to the valid ranges).
    """
    if not errors.enabled:
        return {"r50": r50, "n": n, "q": q, "pa": pa, "i_mag": i_mag, "psf_fwhm": psf_fwhm}
    e = rng.standard_normal((6, len(r50)))
    return {
        "r50": np.clip(r50 * np.exp(errors.r50_frac * e[0]), *POPULATION_R50_RANGE),
        "n": np.clip(n * np.exp(errors.n_frac * e[1]), *POPULATION_N_RANGE),
        "q": np.clip(q + errors.q_sigma * e[2], *POPULATION_Q_RANGE),
        "pa": np.mod(pa + errors.pa_sigma * e[3], 180.0),
        "i_mag": i_mag + errors.i_mag_sigma * e[4],
        "psf_fwhm": psf_fwhm * np.exp(errors.psf_fwhm_frac * e[5]),
    }


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of the TEAHUPOO simulator.

    Parameters
    ----------
    stamp_size : int
        Stamp side in pixels (even).
    pixel_scale : float
        Arcsec per pixel.
    psf_fwhm_range : tuple of float
        Uniform range of the Moffat PSF FWHM, arcsec.
    psf_beta_range : tuple of float
        Uniform range of the Moffat beta.
    bands : tuple of str or None
        Bands to draw from (uniformly); None for the 40 PAUS narrow bands. Bands of another
        survey (registered by :meth:`lumos.survey.Survey.register`) are simulated with
        their own exposure times and zero points; they must all belong to one survey.
    camera_state_prob : float
        Probability of camera state 1 (after the intervention).
    ccd_size : tuple of int
        CCD width and height (x, y) in pixels; positions are uniform over it.
    close_neighbour_fraction : float
        Fraction of stamps with a neighbour at ``close_neighbour_distance`` pixels.
    close_neighbour_distance : tuple of float
        Uniform range of the close neighbour's distance, pixels.
    random_neighbours : float
        Mean number of further sources at random positions per ``stamp_size`` squared area
        (Poisson); larger canvases get proportionally more.
    neighbour_margin : float
        Random neighbours are placed up to this many pixels outside the canvas, so that
        light from outside enters the stamp.
    star_fraction : float
        Fraction of neighbours that are stars.
    star_mag_range : tuple of float
        i-band magnitude range of the stars.
    shot_noise : {"poisson", "gaussian", "none"}
        Photon shot noise of the sources (galaxy and neighbours): exact Poisson draws, or
        the Gaussian approximation ``lambda + sqrt(lambda) * N(0, 1)`` (same mean and
        variance, several times faster; the sky noise of the backgrounds, which dominates
        wherever ``lambda`` is small, uses the same approximation), or none.
    catalogue_errors : CatalogueErrors
        Errors of the profile-channel parameters (default none).
    two_component_fraction : float
        Fraction of central galaxies drawn as a bulge + disk that the catalogue describes
        with its single-Sersic parameters (:func:`lumos.bulgedisk.two_component_galaxies`;
        default 0: every galaxy is the single Sersic profile of its catalogue entry).
    two_component_model : {"matched", "fit"}
        How a bulge + disk galaxy and its catalogue entry are related: ``"matched"``, the
        components are drawn to match the population's single-Sersic parameters (composite
        half-light radius and flux-weighted axis ratio, one position angle); ``"fit"``, the
        components have their own sizes, axis ratios and misaligned position angles and the
        catalogue describes the galaxy by the single Sersic profile that fits its light
        (:mod:`lumos.bulgedisk`), as a catalogue from deeper imaging would.
    flux_prior : {"population", "loguniform"}
        Where the central galaxy's flux in the observed band comes from: its template
        spectrum (``"population"``, the TEAHUPOO colours at its i magnitude), or a draw
        log-uniform in ``flux_range`` independent of its shape, magnitude and band
        (``"loguniform"``, for likelihood models: the training flux distribution is then
        known, ``p(f) = 1 / (f log(hi / lo))``, and can be divided out).
    flux_range : tuple of float
        Range of the band flux for ``flux_prior="loguniform"``, electrons per second.
    population : PopulationConfig
        Population of the central galaxies.
    neighbour_population : PopulationConfig
        Population of neighbouring galaxies: the same model, but with magnitudes 17-24
        following counts closer to nature's (``mag_slope = 0.3``), so that most neighbours
        are faint.
    chunk_size : int
        Stamps rendered per renderer call.
    reference_band : str
        Band of the catalogue magnitude given to the network (the ``i_mag`` field): ``"i"``
        for the population's own i band, else one of ``bands`` (its AB magnitude through
        that band's zero point).
    """

    stamp_size: int = 60
    pixel_scale: float = PIXEL_SCALE
    psf_fwhm_range: tuple[float, float] = (0.6, 1.3)
    psf_beta_range: tuple[float, float] = (2.5, 5.0)
    bands: tuple[str, ...] | None = None
    camera_state_prob: float = 0.5
    ccd_size: tuple[int, int] = CCD_SIZE
    close_neighbour_fraction: float = 0.2
    close_neighbour_distance: tuple[float, float] = (4.0, 15.0)
    random_neighbours: float = 0.4
    neighbour_margin: float = 6.0
    star_fraction: float = 0.1
    star_mag_range: tuple[float, float] = (17.0, 23.0)
    shot_noise: str = "poisson"
    catalogue_errors: CatalogueErrors = field(default_factory=CatalogueErrors)
    two_component_fraction: float = 0.0
    two_component_model: str = "matched"
    flux_prior: str = "population"
    flux_range: tuple[float, float] = (0.2, 1000.0)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    neighbour_population: PopulationConfig = field(
        default_factory=lambda: PopulationConfig(mag_range=(17.0, 24.0), mag_slope=0.3)
    )
    chunk_size: int = 512
    reference_band: str = "i"

    def __post_init__(self) -> None:
        if self.stamp_size < 8 or self.stamp_size % 2:
            raise ValueError(f"stamp_size must be an even number >= 8, got {self.stamp_size}")
        if not self.pixel_scale > 0:
            raise ValueError(f"pixel_scale must be positive, got {self.pixel_scale}")
        for name in ("psf_fwhm_range", "psf_beta_range", "close_neighbour_distance"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and np.isfinite(hi)):
                raise ValueError(f"{name} must be a positive increasing range, got {(lo, hi)}")
        if self.psf_beta_range[0] <= 1.0:
            raise ValueError("Moffat beta must exceed 1")
        for name in ("camera_state_prob", "close_neighbour_fraction", "star_fraction",
                     "two_component_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.random_neighbours < 0 or self.neighbour_margin < 0:
            raise ValueError("random_neighbours and neighbour_margin must be >= 0")
        if self.shot_noise not in _SHOT_NOISE_MODES:
            raise ValueError(
                f"shot_noise must be one of {', '.join(_SHOT_NOISE_MODES)}, got {self.shot_noise!r}"
            )
        if self.two_component_model not in _TWO_COMPONENT_MODELS:
            raise ValueError(f"two_component_model must be one of "
                             f"{', '.join(_TWO_COMPONENT_MODELS)}, got "
                             f"{self.two_component_model!r}")  # fmt: skip
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.flux_prior not in _FLUX_PRIORS:
            raise ValueError(
                f"flux_prior must be one of {', '.join(_FLUX_PRIORS)}, got {self.flux_prior!r}"
            )
        lo, hi = self.flux_range
        if not (0 < lo < hi and np.isfinite(hi)):
            raise ValueError(f"flux_range must be a positive increasing range, got {(lo, hi)}")
        if self.bands is not None:
            surveys = {get_band(b).survey for b in self.bands}
            if len(surveys) > 1:
                raise ValueError(f"simulated bands must belong to one survey, got "
                                 f"{', '.join(sorted(surveys))}")  # fmt: skip
        if self.reference_band != "i" and self.reference_band not in (self.bands or ()):
            raise ValueError(f"reference_band must be 'i' or one of the simulated bands, got "
                             f"{self.reference_band!r}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationConfig:
        """Build a configuration from :meth:`to_dict` output."""
        data = dict(data)
        if "catalogue_errors" in data and isinstance(data["catalogue_errors"], dict):
            data["catalogue_errors"] = CatalogueErrors(**data["catalogue_errors"])
        for key in ("population", "neighbour_population"):
            if key in data and isinstance(data[key], dict):
                pop = {k: tuple(v) if isinstance(v, list) else v for k, v in data[key].items()}
                data[key] = PopulationConfig(**pop)
        for k, v in list(data.items()):
            if isinstance(v, list):
                data[k] = tuple(v)
        return cls(**data)


@dataclass
class SimulationExtras:
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

    def __len__(self) -> int:
        return int(self.true_flux.shape[0])

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


# --- default components -------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _default_renderer_factory(size: int, pixel_scale: float):
    """The shared default renderer of a stamp size (it caches its wavenumber grids)."""
    from .profiles import SersicRenderer  # noqa: PLC0415 - resolved at first use

    return SersicRenderer(size=size, pixel_scale=pixel_scale)


def _default_psf_factory(fwhm: torch.Tensor, beta: torch.Tensor):
    from .psf import MoffatPSF  # noqa: PLC0415

    return MoffatPSF(fwhm, beta)


def _valid_profiles(r50: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    from .profiles import valid_profile_parameters  # noqa: PLC0415

    return valid_profile_parameters(r50, n, q).numpy()


def default_background():
    """The default background source: the synthetic PAUCam-like sky of :mod:`lumos.sky`.

    Falls back to :class:`FlatSky` when that module is not available.
    """
    try:
        from .backgrounds import SyntheticSky  # noqa: PLC0415
    except ImportError:
        try:
            from .sky import SyntheticSky  # noqa: PLC0415
        except ImportError:
            return FlatSky()
    return SyntheticSky()


@dataclass
class _FlatSample:
    pixels: np.ndarray
    sky_model: np.ndarray
    sky_sigma: np.ndarray
    artefacts: np.ndarray


class FlatSky:
    """A flat sky with Gaussian noise: the simplest :class:`BackgroundSource`.

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

    def sample(self, n, size, band_idx, ccd_xy, exposure_time, rng):
        """Draw ``n`` flat background stamps (see :class:`BackgroundSource`)."""
        level = (self.sky_rate * np.broadcast_to(np.asarray(exposure_time, float), (n,))).astype(
            np.float32
        )
        sigma = np.sqrt(level + self.read_noise**2).astype(np.float32)
        noise = rng.standard_normal((n, size, size), dtype=np.float32)
        sky = np.broadcast_to(level[:, None, None], (n, size, size))
        return _FlatSample(
            pixels=sky + sigma[:, None, None] * noise,
            sky_model=np.ascontiguousarray(sky),
            sky_sigma=sigma,
            artefacts=np.zeros(n, dtype=np.int64),
        )


def _sum_by_host(images: np.ndarray, host: np.ndarray, m: int) -> np.ndarray:
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


_SHOT_NOISE_MODES = ("poisson", "gaussian", "none")
_FLUX_PRIORS = ("population", "loguniform")
_TWO_COMPONENT_MODELS = ("matched", "fit")
_FIELD_DTYPES = {
    "i_mag": np.float32,
    "ccd_xy": np.float32,
    "band_idx": np.int64,
    "flags": np.int64,
    "offset": np.float32,
    "truth": np.float32,
}


def _shot_noise(expected: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy source counts (electrons, float32) from expected counts ``expected`` (>= 0)."""
    if mode == "poisson":
        return rng.poisson(expected).astype(np.float32)
    if mode == "gaussian":
        noise = rng.standard_normal(expected.shape, dtype=np.float32)
        noise *= np.sqrt(expected)
        noise += expected
        return noise
    return expected


# --- the simulator ------------------------------------------------------------------------


class Simulator:
    """Generator of simulated :class:`StampBatch` with truth.

    Parameters
    ----------
    config : SimulationConfig, optional
        Settings (default :class:`SimulationConfig()`).
    seed : int
        Seed; the same seed gives identical batches.
    background : BackgroundSource, optional
        Source of background stamps (default :func:`default_background`).
    renderer_factory : callable, optional
        ``renderer_factory(size, pixel_scale)`` returning an object with the
        :meth:`lumos.profiles.SersicRenderer.render` signature (default SersicRenderer).
    psf_factory : callable, optional
        ``psf_factory(fwhm, beta)`` building the PSF passed to the renderer (default
        :class:`lumos.psf.MoffatPSF`). A factory with a ``draw(m, rng)`` method returning
        ``(fwhm, beta)`` arrays draws the stamps' PSF parameters itself instead of the
        configured ranges (e.g. :class:`lumos.psf_pool.PSFExPool`).

    Examples
    --------
    >>> sim = Simulator(SimulationConfig(), seed=1)
    >>> batch = sim.sample(256)               # doctest: +SKIP
    >>> for batch in sim.stream(128): ...     # doctest: +SKIP
    """

    def __init__(
        self,
        config: SimulationConfig | None = None,
        seed: int = 0,
        background=None,
        renderer_factory: Callable | None = None,
        psf_factory: Callable | None = None,
    ) -> None:
        self.config = config or SimulationConfig()
        self.seed = int(seed)
        self.background = background if background is not None else default_background()
        self._renderer_factory = renderer_factory or _default_renderer_factory
        self._psf_factory = psf_factory or _default_psf_factory
        self._renderers: dict[int, Any] = {}
        self.rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        names = self.config.bands or tuple(PAUS_BANDS)
        bands = [get_band(b) for b in names]
        # PAUS: population columns are the 40 PAUS bands, indexed by band number; another
        # survey: columns are its bands, in the order of ``names``
        self._flux_bands: tuple[str, ...] | None = None
        self._flux_scale: np.ndarray | None = None
        self._ref_column: int | None = None
        if all(b.name in PAUS_BANDS for b in bands):
            self._band_numbers = np.array([b.number for b in bands], dtype=np.int64)
            self._exptime = np.array([b.exposure_time for b in PAUS_BANDS.values()])
            self._slot = np.arange(N_PAUS_BANDS, dtype=np.int64)
            self._n_slots = N_PAUS_BANDS
        else:
            self._flux_bands = tuple(b.name for b in bands)
            self._band_numbers = np.arange(len(bands), dtype=np.int64)
            self._exptime = np.array([b.exposure_time for b in bands])
            self._slot = np.array([b.number for b in bands], dtype=np.int64)
            self._n_slots = bands[0].slots
            self._flux_scale = 10.0 ** (0.4 * (np.array([b.zero_point for b in bands])
                                              - POPULATION_ZERO_POINT))  # fmt: skip
            if self.config.reference_band != "i":
                self._ref_column = self._flux_bands.index(self.config.reference_band)

    # -- public API --

    def sample(self, n: int) -> StampBatch:
        """Simulate ``n`` stamps (advances the simulator's random state).

        Parameters
        ----------
        n : int
            Number of stamps (>= 1).

        Returns
        -------
        StampBatch
            With ``truth`` the true total flux in electrons.
        """
        return self._batch(self._check_n(n), self.rng)

    def sample_with_context(
        self, n: int, context_size: int = 100
    ) -> tuple[StampBatch, SimulationExtras]:
        """Simulate ``n`` stamps together with larger context cutouts and all truth.

        Parameters
        ----------
        n : int
            Number of stamps.
        context_size : int
            Side of the context cutouts in pixels (>= stamp size, same parity); 100 leaves
            room for a 30-45 pixel background annulus.

        Returns
        -------
        batch : StampBatch
            The central ``stamp_size`` cut of each context image.
        extras : SimulationExtras
        """
        n = self._check_n(n)
        size = int(context_size)
        s = self.config.stamp_size
        if size < s or (size - s) % 2:
            raise ValueError(
                f"context_size must be >= the stamp size {s} and differ from it by an even "
                f"number of pixels, got {context_size}"
            )
        out = [self._simulate(m, size, self.rng, None, True) for m in self._chunks(n)]
        if len(out) == 1:
            return out[0]
        return (
            StampBatch.concat([b for b, _ in out]),
            SimulationExtras.concat([e for _, e in out]),
        )

    def stream(self, batch_size: int) -> Iterator[StampBatch]:
        """An infinite iterator of fresh batches, reproducible for the simulator's seed.

        Batch ``k`` depends only on the seed and ``k`` (not on other calls).

        Parameters
        ----------
        batch_size : int
            Stamps per batch.
        """
        batch_size = self._check_n(batch_size)
        k = 0
        while True:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, k)))
            yield self._batch(batch_size, rng)
            k += 1

    def file_chunk(self, n: int, k: int, context_size: int | None = None):
        """Chunk ``k`` of :func:`simulate_to_file`: ``n`` stamps from the random stream
        ``SeedSequence(seed, spawn_key=(2, k))`` (independent of other chunks and calls).

        Returns
        -------
        tuple
            ``(StampBatch, SimulationExtras or None)``; extras with context cutouts of
            ``context_size`` when it is given.
        """
        n = self._check_n(n)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2, int(k))))
        if context_size is None:
            return self._batch(n, rng), None
        saved, self.rng = self.rng, rng
        try:
            return self.sample_with_context(n, context_size)
        finally:
            self.rng = saved

    # -- internals --

    @staticmethod
    def _check_n(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"number of stamps must be a positive integer, got {n!r}")
        return int(n)

    def _chunks(self, n: int) -> list[int]:
        c = self.config.chunk_size
        return [min(c, n - i) for i in range(0, n, c)]

    def _batch(self, n: int, rng: np.random.Generator) -> StampBatch:
        """Simulate ``n`` stamps chunk by chunk into preallocated arrays."""
        s = self.config.stamp_size
        out = {
            "pixels": np.empty((n, s, s), dtype=np.float32),
            "profile": np.empty((n, s, s), dtype=np.float32),
            "i_mag": np.empty(n, dtype=np.float32),
            "ccd_xy": np.empty((n, 2), dtype=np.float32),
            "band_idx": np.empty(n, dtype=np.int64),
            "flags": np.empty(n, dtype=np.int64),
            "offset": np.empty((n, 2), dtype=np.float32),
            "truth": np.empty(n, dtype=np.float32),
        }
        start = 0
        for m in self._chunks(n):
            view = {k: v[start : start + m] for k, v in out.items()}
            self._simulate(m, s, rng, view)
            start += m
        return StampBatch(**{k: torch.from_numpy(v) for k, v in out.items()})

    def _renderer(self, size: int):
        if size not in self._renderers:
            self._renderers[size] = self._renderer_factory(size, self.config.pixel_scale)
        return self._renderers[size]

    def _simulate(
        self,
        m: int,
        size: int,
        rng: np.random.Generator,
        out: dict[str, np.ndarray] | None = None,
        with_extras: bool = False,
    ) -> tuple[StampBatch | None, SimulationExtras | None]:
        """Simulate ``m`` stamps on a ``size`` canvas.

        With ``out`` (arrays of the StampBatch fields, length ``m``), the stamps are written
        there and None is returned for the batch; otherwise a new batch is returned.
        """
        cfg = self.config
        err = cfg.catalogue_errors
        s = cfg.stamp_size

        # the central galaxies and their observations
        gal = sample_population(m, rng, bands=self._flux_bands, config=cfg.population)
        gal = self._in_survey_units(gal)
        band = self._band_numbers[rng.integers(0, self._band_numbers.size, m)]
        state = (rng.random(m) < cfg.camera_state_prob).astype(np.int64)
        band_idx = self._slot[band] + self._n_slots * state
        exptime = self._exptime[band]
        ccd_xy = rng.random((m, 2)) * np.asarray(cfg.ccd_size, dtype=float)
        draw_psf = getattr(self._psf_factory, "draw", None)
        if draw_psf is None:
            fwhm = rng.uniform(*cfg.psf_fwhm_range, m)
            beta = rng.uniform(*cfg.psf_beta_range, m)
        else:  # a PSF factory that draws its own PSFs (lumos.psf_pool.PSFExPool)
            fwhm, beta = draw_psf(m, rng)
        offset = rng.random((m, 2)) - 0.5
        rows = np.arange(m)
        if cfg.flux_prior == "loguniform":
            lo, hi = np.log(cfg.flux_range)
            truth = np.exp(rng.uniform(lo, hi, m)) * exptime
        else:
            truth = gal.flux_e_per_s[rows, band] * exptime

        # neighbours: a close one for some stamps, random ones everywhere
        close = rng.random(m) < cfg.close_neighbour_fraction
        n_close = int(close.sum())
        dist = rng.uniform(*cfg.close_neighbour_distance, n_close)
        angle = rng.uniform(0.0, 2.0 * np.pi, n_close)
        close_pos = offset[close] + np.column_stack([dist * np.cos(angle), dist * np.sin(angle)])
        half = size / 2.0 + cfg.neighbour_margin
        mean_random = cfg.random_neighbours * (2.0 * half / s) ** 2
        n_random = rng.poisson(mean_random, m)
        random_host = np.repeat(rows, n_random)
        random_pos = rng.uniform(-half, half, (random_host.size, 2))
        host = np.concatenate([rows[close], random_host])
        nb_pos = np.concatenate([close_pos, random_pos])  # relative to the canvas centre
        k = host.size
        is_star = rng.random(k) < cfg.star_fraction
        n_star = int(is_star.sum())
        nb_gal = sample_population(k - n_star, rng, bands=self._flux_bands,
                                   config=cfg.neighbour_population)  # fmt: skip
        nb_gal = self._in_survey_units(nb_gal)
        stars = sample_stars(n_star, rng, bands=self._flux_bands, mag_range=cfg.star_mag_range)
        if self._flux_scale is not None:
            stars.flux_e_per_s = stars.flux_e_per_s * self._flux_scale
        nb_r50 = np.full(k, _STAR_R50)
        nb_n = np.full(k, _STAR_N)
        nb_q = np.ones(k)
        nb_pa = np.zeros(k)
        nb_rate = np.empty(k)
        g = ~is_star
        nb_r50[g], nb_n[g], nb_q[g], nb_pa[g] = nb_gal.r50, nb_gal.n, nb_gal.q, nb_gal.pa
        nb_rate[g] = nb_gal.flux_e_per_s[np.arange(k - n_star), band[host[g]]]
        nb_rate[is_star] = stars.flux_e_per_s[np.arange(n_star), band[host[is_star]]]
        nb_flux = nb_rate * exptime[host]

        # galaxies that are a bulge + disk, described by the catalogue as one Sersic profile
        gal, cat, two, comp = self._bulge_disk(gal, fwhm, rng)
        n_two = int(two.sum())
        render_cat = err.enabled or n_two > 0

        # one renderer call for everything
        c_r50, c_n, c_q, c_flux = gal.r50.copy(), gal.n.copy(), gal.q.copy(), np.ones(m)
        c_pa = gal.pa.copy()
        c_r50[two], c_n[two], c_q[two] = comp["r50_disk"], 1.0, comp["q_disk"]
        c_pa[two] = comp["pa_disk"]
        c_flux[two] = 1.0 - comp["bulge_fraction"]
        r50 = [c_r50, nb_r50, comp["r50_bulge"]]
        sersic = [c_n, nb_n, np.full(n_two, 4.0)]
        q = [c_q, nb_q, comp["q_bulge"]]
        pa = [c_pa, nb_pa, comp["pa_bulge"]]
        pos = [offset, nb_pos, offset[two]]
        flux = [c_flux, nb_flux, comp["bulge_fraction"]]
        psf_f = [fwhm, fwhm[host], fwhm[two]]
        psf_b = [beta, beta[host], beta[two]]
        if render_cat:
            r50.append(cat["r50"])
            sersic.append(cat["n"])
            q.append(cat["q"])
            pa.append(cat["pa"])
            pos.append(offset)
            flux.append(np.ones(m))
            psf_f.append(cat["psf_fwhm"])
            psf_b.append(beta)
        images = self._render(
            size,
            *(np.concatenate(a) for a in (r50, sersic, q, pa)),
            np.concatenate(pos),
            np.concatenate(flux),
            np.concatenate(psf_f),
            np.concatenate(psf_b),
        )
        profile_true = images[:m]
        profile_true[two] += images[m + k : m + k + n_two]
        neighbours = _sum_by_host(images[m : m + k], host, m)
        profile_cat = images[m + k + n_two :] if render_cat else profile_true

        # noise and background
        galaxy = profile_true * truth.astype(np.float32)[:, None, None]
        expected = galaxy + neighbours
        np.maximum(expected, 0.0, out=expected)
        sources = _shot_noise(expected, cfg.shot_noise, rng)
        bg = self.background.sample(m, size, band_idx, ccd_xy, exptime, rng)

        flags = np.zeros(m, dtype=np.int64)
        flags[~_valid_profiles(cat["r50"], cat["n"], cat["q"])] |= int(Flag.BAD_PROFILE)
        lo = (size - s) // 2
        crop = (slice(None), slice(lo, lo + s), slice(lo, lo + s))
        fresh = out is None
        if fresh:
            out = {
                "pixels": np.empty((m, s, s), dtype=np.float32),
                "profile": np.empty((m, s, s), dtype=np.float32),
            }
        np.add(np.asarray(bg.pixels, dtype=np.float32)[crop], sources[crop], out=out["pixels"])
        out["profile"][...] = profile_cat[crop]
        small = {
            "i_mag": cat["i_mag"],
            "ccd_xy": ccd_xy,
            "band_idx": band_idx,
            "flags": flags,
            "offset": offset,
            "truth": truth,
        }
        for name, value in small.items():
            if fresh:
                out[name] = np.asarray(value, dtype=_FIELD_DTYPES[name])
            else:
                out[name][...] = value
        batch = StampBatch(**{k: torch.from_numpy(v) for k, v in out.items()}) if fresh else None
        if not with_extras:
            return batch, None
        pixels = np.asarray(bg.pixels, dtype=np.float32) + sources

        dxy = nb_pos - offset[host]
        near = np.hypot(dxy[:, 0], dxy[:, 1]) <= cfg.close_neighbour_distance[1]
        inside = np.all(np.abs(nb_pos) < s / 2.0, axis=1)
        extras = SimulationExtras(
            pixels=pixels,
            valid=np.isfinite(pixels),
            sky_model=np.asarray(bg.sky_model, dtype=np.float32),
            sky_sigma=np.asarray(bg.sky_sigma, dtype=np.float32),
            artefacts=np.asarray(bg.artefacts, dtype=np.int64),
            profile_true=profile_true.copy(),
            profile_catalogue=profile_cat.copy() if render_cat else profile_true.copy(),
            galaxy=galaxy,
            neighbours=neighbours,
            true_flux=truth,
            close_neighbour=np.bincount(host[near], minlength=m) > 0,
            n_neighbours=np.bincount(host[inside], minlength=m).astype(np.int64),
            psf_fwhm=fwhm,
            psf_beta=beta,
            psf_fwhm_catalogue=cat["psf_fwhm"],
            r50=gal.r50,
            n=gal.n,
            q=gal.q,
            pa=gal.pa,
            i_mag=gal.i_mag,
            z=gal.z,
            r50_catalogue=cat["r50"],
            n_catalogue=cat["n"],
            q_catalogue=cat["q"],
            pa_catalogue=cat["pa"],
            i_mag_catalogue=cat["i_mag"],
            band=band,
            camera_state=state,
            exposure_time=exptime,
        )
        return batch, extras

    def _in_survey_units(self, gal):
        """Another survey's galaxies: fluxes through its zero points, the catalogue
        magnitude in its reference band (PAUS galaxies are returned unchanged)."""
        if self._flux_scale is None:
            return gal
        changes = {"flux_e_per_s": gal.flux_e_per_s * self._flux_scale}
        if self._ref_column is not None:
            ref = np.maximum(gal.flux_e_per_s[:, self._ref_column], 1e-6)
            changes["i_mag"] = POPULATION_ZERO_POINT - 2.5 * np.log10(ref)
        return dataclasses.replace(gal, **changes)

    def _bulge_disk(self, gal, fwhm: np.ndarray, rng: np.random.Generator):
        """The catalogue, and which galaxies are a bulge + disk with which components.

        ``"matched"``: the catalogue is drawn first and the components are matched to the
        population's single-Sersic parameters (:func:`lumos.bulgedisk.two_component_galaxies`).
        ``"fit"``: the components come from the bank of fitted shapes
        (:func:`lumos.bulgedisk.describe_bank`), the galaxy's single-Sersic parameters become
        their fit, and the catalogue (with its errors) is drawn from that fit.
        """
        cfg = self.config
        m = gal.r50.size
        two = np.zeros(m, dtype=bool)
        if cfg.two_component_model == "matched":
            cat = self._catalogue(gal, fwhm, rng)
            if cfg.two_component_fraction > 0:
                two = rng.random(m) < cfg.two_component_fraction
            comp = two_component_galaxies(gal.r50[two], gal.n[two], gal.q[two], rng)
            comp["pa_bulge"] = comp["pa_disk"] = gal.pa[two]
            return gal, cat, two, comp
        if cfg.two_component_fraction > 0:
            two = rng.random(m) < cfg.two_component_fraction
        comp = describe_bank(gal.r50[two], gal.n[two], gal.q[two], gal.pa[two], rng)
        n, q = gal.n.copy(), gal.q.copy()
        n[two], q[two] = comp["n"], comp["q"]
        gal = replace(gal, n=n, q=q)
        return gal, self._catalogue(gal, fwhm, rng), two, comp

    def _catalogue(self, gal, fwhm: np.ndarray, rng: np.random.Generator) -> dict:
        """Catalogue parameters: the truth, or the truth with errors."""
        return apply_catalogue_errors(self.config.catalogue_errors, gal.r50, gal.n, gal.q,
                                      gal.pa, gal.i_mag, fwhm, rng)  # fmt: skip

    def _render(self, size, r50, n, q, pa, offset, flux, fwhm, beta) -> np.ndarray:
        """Render all objects in one call; returns float32 [M, size, size]."""
        def t(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)

        psf = self._psf_factory(t(fwhm), t(beta))
        images = self._renderer(size).render(
            t(r50), t(n), t(q), t(pa), psf, offset=t(offset), flux=t(flux)
        )
        return images.detach().to(torch.float32).numpy()


# --- HDF5 I/O -------------------------------------------------------------------------------


def _h5py():
    try:
        import h5py  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError("HDF5 I/O needs h5py (pip install h5py)") from exc
    return h5py


def _batch_arrays(batch: StampBatch) -> dict[str, np.ndarray]:
    out = {}
    for name in _STAMP_FIELDS:
        value = getattr(batch, name)
        if value is not None:
            out[name] = value.detach().cpu().numpy()
    return out


def _extras_arrays(extras: SimulationExtras) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(extras, f.name)) for f in fields(extras)}


def _set_attrs(h5, attrs: dict | None) -> None:
    h5.attrs["format"] = HDF5_FORMAT
    h5.attrs["format_version"] = HDF5_VERSION
    h5.attrs["lumos_version"] = __version__
    h5.attrs["pixel_units"] = "electron"
    for key, value in (attrs or {}).items():
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        elif value is None:
            value = "null"
        h5.attrs[key] = value


def write_hdf5(
    path: str | Path,
    batch: StampBatch,
    extras: SimulationExtras | None = None,
    attrs: dict | None = None,
    compression: str | None = None,
) -> Path:
    """Write a batch (and optionally its extras) to an HDF5 file.

    Layout: one dataset per :class:`StampBatch` field at the root (``truth`` only when
    present), the extras under the group ``extras``; root attributes ``format``
    (``"lumos-stamps"``), ``format_version``, ``lumos_version``, ``pixel_units`` and
    ``attrs`` (dicts and lists stored as JSON strings).

    Parameters
    ----------
    path : str or Path
        Output file (overwritten).
    batch : StampBatch
        Stamps.
    extras : SimulationExtras, optional
        Context and truth, same length as ``batch``.
    attrs : dict, optional
        Extra metadata (seed, configuration, ...).
    compression : {None, "gzip", "lzf"}
        Dataset compression (default none: simulated noise does not compress well).

    Returns
    -------
    Path
    """
    h5py = _h5py()
    path = Path(path)
    if extras is not None and len(extras) != len(batch):
        raise ValueError(f"extras has {len(extras)} rows, batch has {len(batch)}")
    with h5py.File(path, "w") as h5:
        _set_attrs(h5, attrs)
        for name, arr in _batch_arrays(batch).items():
            h5.create_dataset(name, data=arr, compression=compression)
        if extras is not None:
            group = h5.create_group("extras")
            for name, arr in _extras_arrays(extras).items():
                group.create_dataset(name, data=arr, compression=compression)
    return path


def _check_file(h5, path) -> None:
    if h5.attrs.get("format") != HDF5_FORMAT:
        raise ValueError(f"{path} is not a lumos stamp file (format attribute missing)")
    version = int(h5.attrs.get("format_version", 0))
    if version > HDF5_VERSION:
        raise ValueError(
            f"{path} has stamp-file format version {version}; this lumos reads up to "
            f"{HDF5_VERSION}"
        )


def read_hdf5(path: str | Path, start: int = 0, stop: int | None = None) -> StampBatch:
    """Read a :class:`StampBatch` written by :func:`write_hdf5` or :func:`simulate_to_file`.

    Parameters
    ----------
    path : str or Path
        HDF5 file.
    start, stop : int
        Row range to read (default all).

    Returns
    -------
    StampBatch
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"stamp file not found: {path}")
    with h5py.File(path, "r") as h5:
        _check_file(h5, path)
        missing = [n for n in _STAMP_FIELDS[:-1] if n not in h5]
        if missing:
            raise ValueError(f"{path} lacks datasets: {', '.join(missing)}")
        data = {
            name: (torch.from_numpy(h5[name][start:stop]) if name in h5 else None)
            for name in _STAMP_FIELDS
        }
    return StampBatch(**data)


def read_extras(path: str | Path, start: int = 0, stop: int | None = None) -> SimulationExtras:
    """Read the :class:`SimulationExtras` of a stamp file (ValueError if it has none)."""
    h5py = _h5py()
    path = Path(path)
    with h5py.File(path, "r") as h5:
        _check_file(h5, path)
        if "extras" not in h5:
            raise ValueError(f"{path} holds no simulation extras (written without context)")
        group = h5["extras"]
        return SimulationExtras(
            **{f.name: group[f.name][start:stop] for f in fields(SimulationExtras)}
        )


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a stamp file (JSON strings decoded where possible)."""
    h5py = _h5py()
    out = {}
    with h5py.File(Path(path), "r") as h5:
        for key, value in h5.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
    return out


def simulate_to_file(
    n: int,
    out: str | Path,
    seed: int = 0,
    config: SimulationConfig | None = None,
    context_size: int | None = None,
    chunk_size: int = 1024,
    compression: str | None = None,
    progress: bool = True,
    background=None,
    psf_factory=None,
    workers: int | None = None,
) -> Path:
    """Simulate ``n`` stamps into an HDF5 file, chunk by chunk (bounded memory).

    This is what ``lumos simulate --n N --out FILE.h5 --seed S`` runs. The file is readable
    with :func:`read_hdf5` (and :func:`read_extras` when ``context_size`` is given); its
    attributes record the seed and the configuration.

    Parameters
    ----------
    n : int
        Number of stamps.
    out : str or Path
        Output HDF5 file (overwritten).
    seed : int
        Random seed.
    config : SimulationConfig, optional
        Simulator settings.
    context_size : int, optional
        Also store :class:`SimulationExtras` with context cutouts of this size.
    chunk_size : int
        Stamps simulated and written at a time.
    compression : {None, "gzip", "lzf"}
        Dataset compression.
    progress : bool
        Show a tqdm progress bar.
    background : BackgroundSource, optional
        Background source (default :func:`default_background`).
    psf_factory : callable, optional
        PSF factory of the :class:`Simulator` (default Moffat profiles).
    workers : int, optional
        Processes drawing chunks side by side, one torch thread each (default one per
        core; 1 draws in this process). Chunk ``k`` has its own random stream
        (:meth:`Simulator.file_chunk`), so the file is the same whatever ``workers`` is.

    Returns
    -------
    Path
        The output file.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    h5py = _h5py()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"--n must be a positive integer, got {n!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = Path(out)
    if not out.parent.exists():
        raise ValueError(f"output directory does not exist: {out.parent}")
    cfg = config or SimulationConfig()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    attrs = {"seed": int(seed), "n": int(n), "config": cfg.to_dict(), "chunk_size": chunk_size}
    if context_size is not None:
        attrs["context_size"] = int(context_size)
    sizes = [min(chunk_size, n - start) for start in range(0, n, chunk_size)]
    job = _FileChunks(cfg, int(seed), background, psf_factory, context_size)
    done = 0
    with h5py.File(out, "w") as h5, tqdm(
        total=int(n), unit="stamp", desc="simulate", disable=not progress
    ) as bar, _chunk_pool(workers, job) as pool:
        _set_attrs(h5, attrs)
        datasets: dict[str, Any] = {}
        for batch, extras in pool(enumerate(sizes)):
            m = len(batch)
            arrays = {("", k): v for k, v in _batch_arrays(batch).items()}
            if extras is not None:
                arrays.update({("extras", k): v for k, v in _extras_arrays(extras).items()})
            for (group, name), arr in arrays.items():
                key = f"{group}/{name}" if group else name
                if key not in datasets:
                    datasets[key] = h5.create_dataset(
                        key,
                        shape=(n,) + arr.shape[1:],
                        dtype=arr.dtype,
                        chunks=(min(256, n),) + arr.shape[1:],
                        compression=compression,
                    )
                datasets[key][done : done + m] = arr
            done += m
            bar.update(m)
    return out


class _FileChunks:
    """Chunk ``k`` of a simulated file: its own random stream, ``SeedSequence(seed, (2, k))``,
    so that the file does not depend on how many processes drew it."""

    def __init__(self, config, seed, background, psf_factory, context_size) -> None:
        self.args = (config, seed, background, psf_factory)
        self.context_size = context_size
        self._sim = None

    def __call__(self, item: tuple[int, int]):
        k, m = item
        if self._sim is None:
            config, seed, background, psf_factory = self.args
            self._sim = Simulator(config, seed=seed, background=background,
                                  psf_factory=psf_factory)  # fmt: skip
        return self._sim.file_chunk(m, k, self.context_size)


_WORKER_JOB: _FileChunks | None = None


def _init_worker(job: _FileChunks) -> None:
    global _WORKER_JOB
    import torch

    torch.set_num_threads(1)
    _WORKER_JOB = job


def _run_worker(item: tuple[int, int]):
    return _WORKER_JOB(item)


@contextmanager
def _chunk_pool(workers: int, job: _FileChunks):
    """``map(item -> (batch, extras))`` in order: in this process, or in ``workers``
    processes of one torch thread each (one per core draws ~1000 stamps/s)."""
    if workers == 1:
        yield lambda items: map(job, items)
        return
    import multiprocessing as mp

    # fork where the platform has it (the workers start at once with the parent's imports;
    # no torch thread pool has started in the parent yet), else spawn
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield lambda items: pool.imap(_run_worker, items)
