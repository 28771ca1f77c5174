"""The TEAHUPOO galaxy population: shapes, magnitudes, redshifts and narrow-band fluxes.

Shapes and redshifts
    The circularised half-light radius ``r50`` (arcsec), Sersic index ``n``, axis ratio
    ``q`` and redshift ``z`` are drawn from a 3-component Gaussian mixture in
    ``(i_mag, ln r50, ln n, logit q, ln(1 + z))`` fitted to the 500 COSMOS galaxies of
    GalSim's ``real_galaxy_23.5_500_fits.fits`` (single-Sersic fits, ``r50 = 0.03 *
    sersicfit[1] * sqrt(q)`` arcsec as GalSim's ``COSMOSCatalog`` circularises it;
    ``scripts/fit_cosmos_population.py`` does the fit and prints the constants below). The
    mixture is *conditioned* on the i-band magnitude, so size, profile and redshift follow
    magnitude as in COSMOS (brighter galaxies are larger and nearer). Draws are clipped to
    ``n`` in [0.3, 6.2], ``r50`` in [0.05, 5] arcsec, ``q`` in [0.05, 1]; ``z`` is redrawn
    until it falls in the configured range (default 0.01-1.2). The position angle is
    uniform in [0, 180) degrees (counter-clockwise from +x).

Magnitudes
    i-band magnitudes between 17 and 23 with ``dN/dm ~ 10**(mag_slope * m)``. Nature's
    counts rise with a slope of about 0.3-0.4 at these magnitudes; the default
    ``mag_slope = 0.15`` is deliberately flatter so that a training set holds enough
    bright galaxies (14% have i < 19 instead of ~3%). ``mag_slope = 0`` is uniform in
    magnitude.

Spectra and band fluxes (:mod:`lumos.spectra`)
    Each galaxy's spectrum is a mixture of two adjacent CWW templates (E, Sbc, Scd, Im,
    the ``*_ext.sed`` files shipped with GalSim) along a continuous type ``t`` in [0, 3]
    whose mean follows the Sersic index (high ``n`` -> early type), plus nebular emission
    lines ([OII] 3727, H-beta, [OIII] 4959/5007, H-alpha, [NII] 6584) whose rest-frame
    H-alpha equivalent width grows from 0 (E) to 80 Angstrom (Im) with a 0.3 dex
    log-normal scatter. The spectrum is redshifted, normalised so that its AB magnitude in
    a broad i band (flat-topped, 6950-8450 Angstrom) equals ``i_mag``, and integrated
    through each narrow band's response (:func:`lumos.bands.band_response`) as photon
    counts; AB magnitudes become electrons per second with the zero point 24.5
    (``flux = 10**(-0.4 * (m_AB - 24.5))``), clipped to [0, 1000] e-/s. The band-to-i ratios
    are tabulated once on a redshift grid (cached) so sampling is vectorised.

Stars (used as neighbours) have black-body spectra with temperatures 3500-7500 K.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from .rows import Rows
from .spectra import (
    STAR_TEMPERATURE_RANGE,
    TEMPLATE_NAMES,
    Z_MAX,
    ZERO_POINT,
    band_names,
    galaxy_band_fluxes,
    i_band_response,
    mag_to_flux,
    star_band_fluxes,
)

__all__ = [
    "PopulationConfig",
    "GalaxyPopulation",
    "StarPopulation",
    "Population",
    "TEMPLATE_NAMES",
    "POPULATION_R50_RANGE",
    "POPULATION_N_RANGE",
    "POPULATION_Q_RANGE",
    "sample_population",
    "sample_stars",
    "sample_i_mag",
    "sample_shapes",
    "sample_template_weights",
    "sample_spectra",
    "galaxy_band_fluxes",
    "star_band_fluxes",
    "mag_to_flux",
    "i_band_response",
    "ZERO_POINT",
]

# --- COSMOS fit (scripts/fit_cosmos_population.py, k chosen by BIC) -----------------------
# Columns: i_mag, ln r50 [arcsec], ln n, logit q, ln(1 + z).
_SHAPE_GMM_WEIGHTS = np.array([0.416729, 0.303758, 0.279514])
_SHAPE_GMM_MEANS = np.array(
    [
        [22.601408, -1.043227, -0.204627, 0.206433, 0.512563],
        [21.134947, -0.857028, 0.832056, 0.528217, 0.423374],
        [22.996713, -1.387613, 0.689067, 0.311324, 0.543069],
    ]
)
_SHAPE_GMM_COVS = np.array(
    [
        [
            [3.567313e-01, -1.151887e-01, -2.577285e-02, -9.600309e-02, 4.454065e-02],
            [-1.151887e-01, 1.603651e-01, 2.435017e-02, 7.236305e-02, -8.497478e-04],
            [-2.577285e-02, 2.435017e-02, 1.871467e-01, 2.397706e-02, -2.626760e-02],
            [-9.600309e-02, 7.236305e-02, 2.397706e-02, 1.210153e00, 3.818676e-02],
            [4.454065e-02, -8.497478e-04, -2.626760e-02, 3.818676e-02, 3.745611e-02],
        ],
        [
            [1.260711e00, -3.208787e-01, 2.285956e-02, -2.768591e-01, 1.313211e-01],
            [-3.208787e-01, 3.587874e-01, 5.283786e-02, 1.236975e-01, -1.475477e-02],
            [2.285956e-02, 5.283786e-02, 4.462801e-01, 1.858303e-01, 3.987433e-02],
            [-2.768591e-01, 1.236975e-01, 1.858303e-01, 1.313984e00, 1.434699e-02],
            [1.313211e-01, -1.475477e-02, 3.987433e-02, 1.434699e-02, 2.793728e-02],
        ],
        [
            [1.524452e-01, 5.473967e-02, 5.248050e-02, 9.322033e-03, 8.188726e-03],
            [5.473967e-02, 7.964220e-01, -3.205113e-02, 4.855195e-03, 1.696760e-02],
            [5.248050e-02, -3.205113e-02, 6.075913e-01, 2.306977e-01, 7.145943e-02],
            [9.322033e-03, 4.855195e-03, 2.306977e-01, 9.394997e-01, -2.754527e-02],
            [8.188726e-03, 1.696760e-02, 7.145943e-02, -2.754527e-02, 6.160218e-02],
        ],
    ]
)

#: Support of the population's shapes: circularised r50 [arcsec], Sersic index and axis
#: ratio of every drawn galaxy lie in these ranges (the sampled values are clipped).
POPULATION_R50_RANGE = (0.05, 5.0)
POPULATION_N_RANGE = (0.3, 6.2)
POPULATION_Q_RANGE = (0.05, 1.0)

@dataclass(frozen=True)
class PopulationConfig:
    """Settings of the simulated galaxy population.

    Parameters
    ----------
    mag_range : tuple of float
        i-band AB magnitude range.
    mag_slope : float
        Number counts ``dN/dm ~ 10**(mag_slope * m)``; 0 is uniform in magnitude. The
        default 0.15 is flatter than nature (~0.35) to keep enough bright galaxies.
    z_range : tuple of float
        Redshift range (draws outside are redrawn).
    type_scatter : float
        Scatter of the continuous spectral type (0 = E ... 3 = Im) about its mean for the
        galaxy's Sersic index.
    emission_lines : bool
        Add nebular emission lines to the templates.
    line_scatter_dex : float
        Log-normal scatter (dex) of the emission-line strength.
    flux_max : float
        Upper clip of the narrow-band fluxes, e-/s.
    """

    mag_range: tuple[float, float] = (17.0, 23.0)
    mag_slope: float = 0.15
    z_range: tuple[float, float] = (0.01, 1.2)
    type_scatter: float = 0.8
    emission_lines: bool = True
    line_scatter_dex: float = 0.3
    flux_max: float = 1000.0

    def __post_init__(self) -> None:
        lo, hi = self.mag_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"mag_range must be finite and increasing, got {self.mag_range}")
        zlo, zhi = self.z_range
        if not (0.0 <= zlo < zhi <= Z_MAX):
            raise ValueError(f"z_range must satisfy 0 <= zmin < zmax <= {Z_MAX}")
        if self.type_scatter < 0 or self.line_scatter_dex < 0:
            raise ValueError("type_scatter and line_scatter_dex must be non-negative")
        if not self.flux_max > 0:
            raise ValueError(f"flux_max must be positive, got {self.flux_max}")


@dataclass
class GalaxyPopulation(Rows):
    """A sample of simulated galaxies (arrays of length N).

    Attributes
    ----------
    r50 : numpy.ndarray
        Circularised half-light radius, arcsec.
    n : numpy.ndarray
        Sersic index.
    q : numpy.ndarray
        Axis ratio b/a.
    pa : numpy.ndarray
        Position angle, degrees counter-clockwise from +x, in [0, 180).
    i_mag : numpy.ndarray
        i-band AB magnitude.
    z : numpy.ndarray
        Redshift.
    template_weights : numpy.ndarray, shape (N, 4)
        Weights of the CWW templates (:data:`TEMPLATE_NAMES`), normalised to the
        observed i-band continuum; rows sum to 1.
    line_strength : numpy.ndarray
        Multiplier of the templates' emission-line equivalent widths.
    flux_e_per_s : numpy.ndarray, shape (N, B)
        Flux in each band of ``bands``, electrons per second.
    bands : tuple of str
        Band names of the columns of ``flux_e_per_s``.
    """

    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    i_mag: np.ndarray
    z: np.ndarray
    template_weights: np.ndarray
    line_strength: np.ndarray
    flux_e_per_s: np.ndarray
    bands: tuple[str, ...]

    def __getitem__(self, index) -> GalaxyPopulation:
        """Select galaxies with a slice, an integer array or a boolean mask."""
        return GalaxyPopulation(
            **{
                f.name: getattr(self, f.name) if f.name == "bands" else getattr(self, f.name)[index]
                for f in fields(self)
            }
        )


@dataclass
class StarPopulation(Rows):
    """A sample of stars (point sources with black-body spectra).

    Attributes
    ----------
    i_mag : numpy.ndarray
        i-band AB magnitude.
    temperature : numpy.ndarray
        Black-body temperature, Kelvin.
    flux_e_per_s : numpy.ndarray, shape (N, B)
        Flux in each band of ``bands``, electrons per second.
    bands : tuple of str
        Band names.
    """

    i_mag: np.ndarray
    temperature: np.ndarray
    flux_e_per_s: np.ndarray
    bands: tuple[str, ...]


def sample_i_mag(
    n: int, rng: np.random.Generator, mag_range=(17.0, 23.0), mag_slope: float = 0.15
) -> np.ndarray:
    """Draw i-band magnitudes with ``dN/dm ~ 10**(mag_slope * m)`` in ``mag_range``.

    Parameters
    ----------
    n : int
        Number of draws.
    rng : numpy.random.Generator
        Random generator.
    mag_range : tuple of float
        (brightest, faintest) AB magnitude.
    mag_slope : float
        Logarithmic slope of the counts; 0 gives a uniform distribution.

    Returns
    -------
    numpy.ndarray
        Magnitudes, shape (n,).
    """
    lo, hi = float(mag_range[0]), float(mag_range[1])
    u = rng.random(n)
    if abs(mag_slope) < 1e-9:
        return lo + (hi - lo) * u
    k = mag_slope * np.log(10.0)
    # inverse CDF of an exponential density on [lo, hi]
    return lo + np.log1p(u * np.expm1(k * (hi - lo))) / k


@functools.lru_cache(maxsize=1)
def _conditional_gmm():
    """Pre-computed pieces of the mixture conditioned on the magnitude (column 0)."""
    mu, cov = _SHAPE_GMM_MEANS, _SHAPE_GMM_COVS
    var_m = cov[:, 0, 0]
    gain = cov[:, 1:, 0] / var_m[:, None]  # (K, 4)
    cond_cov = cov[:, 1:, 1:] - gain[:, :, None] * cov[:, None, 0, 1:]
    chol = np.linalg.cholesky(cond_cov)
    return mu, var_m, gain, chol


def sample_shapes(
    i_mag: np.ndarray,
    rng: np.random.Generator,
    z_range: tuple[float, float] = (0.01, 1.2),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw r50, n, q and z given the i-band magnitude, from the COSMOS mixture.

    Parameters
    ----------
    i_mag : numpy.ndarray
        i-band magnitudes, shape (N,).
    rng : numpy.random.Generator
        Random generator.
    z_range : tuple of float
        Accepted redshift range; draws outside are redrawn (then clipped after 30 tries).

    Returns
    -------
    r50 : numpy.ndarray
        Circularised half-light radius, arcsec, in [0.05, 5].
    n : numpy.ndarray
        Sersic index in [0.3, 6.2].
    q : numpy.ndarray
        Axis ratio in [0.05, 1].
    z : numpy.ndarray
        Redshift in ``z_range``.
    """
    i_mag = np.asarray(i_mag, dtype=float)
    mu, var_m, gain, chol = _conditional_gmm()
    logw = np.log(_SHAPE_GMM_WEIGHTS)[None, :] - 0.5 * (
        (i_mag[:, None] - mu[None, :, 0]) ** 2 / var_m[None, :] + np.log(var_m)[None, :]
    )
    prob = np.exp(logw - logw.max(axis=1, keepdims=True))
    cdf = np.cumsum(prob, axis=1)
    u = rng.random(i_mag.size)[:, None] * cdf[:, -1:]
    comp = np.minimum((u > cdf).sum(axis=1), len(_SHAPE_GMM_WEIGHTS) - 1)
    mean = mu[comp, 1:] + gain[comp] * (i_mag - mu[comp, 0])[:, None]
    x = mean + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((i_mag.size, 4)))
    lo, hi = np.log1p(z_range[0]), np.log1p(z_range[1])
    for _ in range(30):
        bad = (x[:, 3] < lo) | (x[:, 3] > hi)
        if not bad.any():
            break
        eps = rng.standard_normal((int(bad.sum()), 4))
        x[bad, 3] = mean[bad, 3] + np.einsum("nj,nj->n", chol[comp[bad], 3, :], eps)
    r50 = np.clip(np.exp(x[:, 0]), *POPULATION_R50_RANGE)
    n = np.clip(np.exp(x[:, 1]), *POPULATION_N_RANGE)
    q = np.clip(1.0 / (1.0 + np.exp(-x[:, 2])), *POPULATION_Q_RANGE)
    z = np.clip(np.expm1(x[:, 3]), *z_range)
    return r50, n, q, z


def sample_template_weights(
    sersic_n: np.ndarray, rng: np.random.Generator, type_scatter: float = 0.8
) -> np.ndarray:
    """Draw template mixtures: a continuous type between adjacent CWW templates.

    The type ``t`` (0 = E, 1 = Sbc, 2 = Scd, 3 = Im) is Gaussian about a mean that falls
    from 2 for ``n <= 1`` to about 0.5 at ``n = 4``, clipped to [0, 3]; its weights go to
    templates ``floor(t)`` and ``floor(t) + 1`` linearly.

    Parameters
    ----------
    sersic_n : numpy.ndarray
        Sersic indices, shape (N,).
    rng : numpy.random.Generator
        Random generator.
    type_scatter : float
        Standard deviation of ``t`` about its mean.

    Returns
    -------
    numpy.ndarray, shape (N, 4)
        Template weights (rows sum to 1).
    """
    sersic_n = np.asarray(sersic_n, dtype=float)
    early = np.clip(np.log(sersic_n) / np.log(4.0), 0.0, 1.3)
    t = np.clip(2.0 - 1.5 * early + type_scatter * rng.standard_normal(sersic_n.size), 0.0, 3.0)
    lower = np.minimum(np.floor(t).astype(np.int64), 2)
    frac = t - lower
    w = np.zeros((sersic_n.size, len(TEMPLATE_NAMES)))
    rows = np.arange(sersic_n.size)
    w[rows, lower] = 1.0 - frac
    w[rows, lower + 1] += frac
    return w


def sample_spectra(
    sersic_n: np.ndarray, rng: np.random.Generator, config: PopulationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the spectra of galaxies: template weights and emission-line strengths.

    Parameters
    ----------
    sersic_n : numpy.ndarray
        Sersic indices, shape (N,) (the spectral type correlates with the profile).
    rng : numpy.random.Generator
        Random generator.
    config : PopulationConfig, optional
        Population settings (``type_scatter``, ``emission_lines``, ``line_scatter_dex``).

    Returns
    -------
    weights : numpy.ndarray, shape (N, 4)
        Template weights (:func:`sample_template_weights`).
    line_strength : numpy.ndarray, shape (N,)
        Emission-line strength multipliers (zeros without emission lines).
    """
    cfg = config or PopulationConfig()
    sersic_n = np.asarray(sersic_n, dtype=float)
    weights = sample_template_weights(sersic_n, rng, cfg.type_scatter)
    if cfg.emission_lines:
        strength = 10.0 ** (cfg.line_scatter_dex * rng.standard_normal(sersic_n.size))
    else:
        strength = np.zeros(sersic_n.size)
    return weights, strength


def sample_population(
    n: int,
    rng: np.random.Generator,
    bands=None,
    config: PopulationConfig | None = None,
) -> GalaxyPopulation:
    """Draw ``n`` galaxies from the TEAHUPOO population.

    Parameters
    ----------
    n : int
        Number of galaxies (>= 0).
    rng : numpy.random.Generator
        Random generator; the result is a deterministic function of its state.
    bands : sequence of str, optional
        Bands for ``flux_e_per_s`` (default the 40 PAUS narrow bands, in order).
    config : PopulationConfig, optional
        Population settings.

    Returns
    -------
    GalaxyPopulation
    """
    if int(n) < 0:
        raise ValueError(f"number of galaxies must be non-negative, got {n}")
    n = int(n)
    cfg = config or PopulationConfig()
    names = band_names(bands)
    i_mag = sample_i_mag(n, rng, cfg.mag_range, cfg.mag_slope)
    r50, sersic_n, q, z = sample_shapes(i_mag, rng, cfg.z_range)
    pa = rng.uniform(0.0, 180.0, n)
    weights, strength = sample_spectra(sersic_n, rng, cfg)
    flux = galaxy_band_fluxes(i_mag, z, weights, strength, names, cfg.flux_max)
    return GalaxyPopulation(
        r50=r50,
        n=sersic_n,
        q=q,
        pa=pa,
        i_mag=i_mag,
        z=z,
        template_weights=weights,
        line_strength=strength,
        flux_e_per_s=flux,
        bands=names,
    )


def sample_stars(
    n: int,
    rng: np.random.Generator,
    bands=None,
    mag_range: tuple[float, float] = (17.0, 23.0),
    temperature_range: tuple[float, float] = (3500.0, 7500.0),
    flux_max: float = 1000.0,
) -> StarPopulation:
    """Draw ``n`` stars: magnitudes uniform in ``mag_range``, black-body temperatures uniform.

    Parameters
    ----------
    n : int
        Number of stars.
    rng : numpy.random.Generator
        Random generator.
    bands : sequence of str, optional
        Bands (default the 40 PAUS narrow bands).
    mag_range : tuple of float
        i-band AB magnitude range.
    temperature_range : tuple of float
        Temperature range, Kelvin (within 3000-12000).
    flux_max : float
        Upper clip of the fluxes, e-/s.

    Returns
    -------
    StarPopulation
    """
    names = band_names(bands)
    lo, hi = temperature_range
    if not (STAR_TEMPERATURE_RANGE[0] <= lo <= hi <= STAR_TEMPERATURE_RANGE[1]):
        raise ValueError(f"temperature_range must lie within 3000-12000 K, got {temperature_range}")
    i_mag = rng.uniform(mag_range[0], mag_range[1], int(n))
    temperature = rng.uniform(lo, hi, int(n))
    flux = star_band_fluxes(i_mag, temperature, names, flux_max)
    return StarPopulation(i_mag=i_mag, temperature=temperature, flux_e_per_s=flux, bands=names)


class Population:
    """A seeded source of galaxies: ``Population(seed).sample(n)``.

    Parameters
    ----------
    seed : int or None
        Seed of the private random generator (None: fresh entropy).
    config : PopulationConfig, optional
        Population settings.
    bands : sequence of str, optional
        Bands of ``flux_e_per_s`` (default the 40 PAUS narrow bands).
    """

    def __init__(
        self, seed: int | None = None, config: PopulationConfig | None = None, bands=None
    ) -> None:
        self.config = config or PopulationConfig()
        self.bands = band_names(bands)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> GalaxyPopulation:
        """Draw the next ``n`` galaxies."""
        return sample_population(n, self.rng, self.bands, self.config)
