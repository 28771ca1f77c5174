"""Settings of the simulator: :class:`SimulationConfig` and the catalogue's errors.

:class:`SimulationConfig` describes the scenes (central galaxies, neighbours, stars) and the
exposures (bands, PSF ranges, CCD, shot noise) that :class:`lumos.simulate.Simulator` and
:func:`lumos.pairs.simulate_pairs` draw; :class:`CatalogueErrors` and
:func:`apply_catalogue_errors` turn true galaxy parameters into what a catalogue reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .bands import get_band
from .instrument import CCD_SIZE, PIXEL_SCALE
from .population import (
    POPULATION_N_RANGE,
    POPULATION_Q_RANGE,
    POPULATION_R50_RANGE,
    PopulationConfig,
)

__all__ = [
    "CatalogueErrors",
    "apply_catalogue_errors",
    "catalogued_offset",
    "SimulationConfig",
    "SHOT_NOISE_MODES",
    "FLUX_PRIORS",
    "TWO_COMPONENT_MODELS",
    "draw_training_flux",
]

#: Photon shot-noise models of the sources (see ``SimulationConfig.shot_noise``).
SHOT_NOISE_MODES = ("poisson", "gaussian", "none")
#: Where the central galaxy's band flux comes from (see ``SimulationConfig.flux_prior``).
FLUX_PRIORS = ("population", "loguniform", "asinh")
#: How bulge + disk galaxies relate to their catalogue entries.
TWO_COMPONENT_MODELS = ("matched", "fit")


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
    position_sigma : float
        Error of the catalogue position on the image, pixels, in each of x and y: the
        catalogue's astrometry and the exposure's WCS together. The profile channel and the
        classical methods are centred where the catalogue says; the light sits at the
        truth.
    """

    r50_frac: float = 0.0
    n_frac: float = 0.0
    q_sigma: float = 0.0
    pa_sigma: float = 0.0
    psf_fwhm_frac: float = 0.0
    i_mag_sigma: float = 0.0
    position_sigma: float = 0.0

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
        10% in r50, 15% in n, 0.05 in q, 5 degrees in pa, 3% in the PSF FWHM, 0.03 mag;
        exact positions (add them with ``dataclasses.replace(errors, position_sigma=...)``,
        ``lumos train --position-error``)."""
        return cls(0.10, 0.15, 0.05, 5.0, 0.03, 0.03)

    @classmethod
    def named(cls, name: str) -> CatalogueErrors:
        """The errors the command line names: ``"none"`` (an exact catalogue) or
        ``"realistic"`` (:meth:`realistic`)."""
        if name == "none":
            return cls()
        if name == "realistic":
            return cls.realistic()
        raise ValueError(f"catalogue errors must be 'none' or 'realistic', got {name!r}")


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
        Source of the errors (one (6, N) standard-normal draw, then one (N, 2) draw when
        ``position_sigma`` is not zero).

    Returns
    -------
    dict
        ``r50, n, q, pa, i_mag, psf_fwhm`` as catalogued (clipped to the valid ranges),
        and ``position_error``, shape (N, 2): catalogued minus true (x, y), pixels.
    """
    none = np.zeros((len(r50), 2))
    if not errors.enabled:
        return {"r50": r50, "n": n, "q": q, "pa": pa, "i_mag": i_mag, "psf_fwhm": psf_fwhm,
                "position_error": none}  # fmt: skip
    e = rng.standard_normal((6, len(r50)))
    position = (errors.position_sigma * rng.standard_normal((len(r50), 2))
                if errors.position_sigma > 0 else none)  # fmt: skip
    return {
        "position_error": position,
        "r50": np.clip(r50 * np.exp(errors.r50_frac * e[0]), *POPULATION_R50_RANGE),
        "n": np.clip(n * np.exp(errors.n_frac * e[1]), *POPULATION_N_RANGE),
        "q": np.clip(q + errors.q_sigma * e[2], *POPULATION_Q_RANGE),
        "pa": np.mod(pa + errors.pa_sigma * e[3], 180.0),
        "i_mag": i_mag + errors.i_mag_sigma * e[4],
        "psf_fwhm": psf_fwhm * np.exp(errors.psf_fwhm_frac * e[5]),
    }


def catalogued_offset(offset: np.ndarray, catalogue: dict) -> np.ndarray:
    """Where the catalogue puts each galaxy: its true sub-pixel ``offset`` (shape (N, 2),
    pixels) plus the catalogue's ``position_error`` (:func:`apply_catalogue_errors`), in
    ``offset``'s dtype. The profile channel is drawn, and the stamp's offset recorded, here."""
    return offset + np.asarray(catalogue["position_error"]).astype(offset.dtype)


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
        known, ``p(f) = 1 / (f log(hi / lo))``, and can be divided out), or a draw
        ``f = s sinh(u)`` with ``u`` uniform in ``[asinh(lo / s), asinh(hi / s)]``
        (``"asinh"``, ``s = flux_softening``): density ``p(f) ~ 1 / sqrt(f^2 + s^2)``,
        log-uniform for ``|f| >> s`` and flat near zero, down to a negative ``lo``, so that
        a likelihood model sees galaxies at, around and below zero flux (a negative flux
        removes its profile's light from the stamp; see :mod:`lumos.simulate`).
    flux_range : tuple of float
        Range ``(lo, hi)`` of the band flux for ``flux_prior="loguniform"`` (``0 < lo``) or
        ``"asinh"`` (``lo`` may be zero or negative), electrons per second.
    flux_softening : float
        ``s`` of ``flux_prior="asinh"``, electrons per second (> 0 there, else unused):
        about the flux error of a faint galaxy, where the density turns from log-uniform to
        flat.
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
    flux_softening: float = 0.0
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
        if self.shot_noise not in SHOT_NOISE_MODES:
            raise ValueError(
                f"shot_noise must be one of {', '.join(SHOT_NOISE_MODES)}, got {self.shot_noise!r}"
            )
        if self.two_component_model not in TWO_COMPONENT_MODELS:
            raise ValueError(f"two_component_model must be one of "
                             f"{', '.join(TWO_COMPONENT_MODELS)}, got "
                             f"{self.two_component_model!r}")  # fmt: skip
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.flux_prior not in FLUX_PRIORS:
            raise ValueError(
                f"flux_prior must be one of {', '.join(FLUX_PRIORS)}, got {self.flux_prior!r}"
            )
        lo, hi = self.flux_range
        if self.flux_prior == "asinh":
            if not (self.flux_softening > 0 and np.isfinite(self.flux_softening)):
                raise ValueError(f"flux_prior 'asinh' needs flux_softening > 0, got "
                                 f"{self.flux_softening}")  # fmt: skip
            if not (np.isfinite(lo) and lo < hi and hi > 0 and np.isfinite(hi)):
                raise ValueError(f"flux_range must be an increasing range with a positive "
                                 f"upper end, got {(lo, hi)}")  # fmt: skip
        elif self.flux_prior == "loguniform" and not (0 < lo < hi and np.isfinite(hi)):
            raise ValueError(f"flux_range must be a positive increasing range, got {(lo, hi)}")
        elif not (np.isfinite(lo) and lo < hi and np.isfinite(hi)):
            raise ValueError(f"flux_range must be an increasing range, got {(lo, hi)}")
        elif self.flux_softening < 0:
            raise ValueError(f"flux_softening must be >= 0, got {self.flux_softening}")
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


def draw_training_flux(config: SimulationConfig, population_flux: np.ndarray,
                       exposure_time: np.ndarray, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The central galaxies' true fluxes under ``config.flux_prior``, and its softening.

    Parameters
    ----------
    config : SimulationConfig
    population_flux : numpy.ndarray, shape (m,)
        The galaxies' band fluxes from their spectra, electrons per second (used by
        ``flux_prior="population"``).
    exposure_time : numpy.ndarray, shape (m,)
        Seconds.
    rng : numpy.random.Generator
        One ``uniform`` draw of ``m`` values for ``"loguniform"`` and ``"asinh"``, none
        for ``"population"``.

    Returns
    -------
    truth : numpy.ndarray, shape (m,)
        True fluxes, electrons.
    truth_scale : numpy.ndarray, float32, shape (m,)
        ``s * exposure_time`` (electrons) for ``"asinh"``, whose density is then
        ``p(truth) ~ 1 / sqrt(truth^2 + truth_scale^2)``; 0 otherwise (for
        ``"loguniform"``, ``p(truth) ~ 1 / truth``).
    """
    m = len(exposure_time)
    lo, hi = config.flux_range
    if config.flux_prior == "loguniform":
        rate = np.exp(rng.uniform(np.log(lo), np.log(hi), m))
        return rate * exposure_time, np.zeros(m, np.float32)
    if config.flux_prior == "asinh":
        soft = config.flux_softening
        rate = soft * np.sinh(rng.uniform(np.arcsinh(lo / soft), np.arcsinh(hi / soft), m))
        return rate * exposure_time, (soft * exposure_time).astype(np.float32)
    return population_flux * exposure_time, np.zeros(m, np.float32)
