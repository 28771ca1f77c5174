"""The simulated sky: central galaxies, their neighbours and stars, drawn once.

A scene is what is on the sky, independent of any exposure: galaxies with their fluxes in
every simulated band, the catalogue's description of them, and neighbours (galaxies and
stars) placed around them. :mod:`lumos.observe` turns a scene into stamps through an
exposure (PSF, sub-pixel offset, CCD position, background, noise); observing one scene twice
gives pairs of exposures of the same galaxies (:func:`lumos.pairs.simulate_pairs`).

:class:`SimulatedBands` is the band bookkeeping of a simulation: the 40 PAUS narrow bands,
or the bands of another survey (their flux columns, zero points, exposure times and network
slots).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .bands import N_PAUS_BANDS, PAUS_BANDS, band_from_index, get_band
from .bulgedisk import describe_bank, two_component_galaxies
from .population import ZERO_POINT as POPULATION_ZERO_POINT
from .population import GalaxyPopulation, PopulationConfig, sample_population, sample_stars
from .rows import Rows

__all__ = ["STAR_R50", "STAR_N", "SimulatedBands", "Neighbours", "Components", "Scene",
           "draw_neighbours", "fitted_bulge_disks", "galaxy_components"]

#: Radius (arcsec) and Sersic index used to draw stars as (near) point sources.
STAR_R50 = 0.02
STAR_N = 0.5


class SimulatedBands:
    """The bands a simulation observes in, and what each band means for the fluxes.

    PAUS bands: the population's flux columns are the 40 PAUS bands, indexed by band
    number. Bands of another survey (registered by :meth:`lumos.survey.Survey.register`):
    the columns are those bands, in the order given, with fluxes through their zero points.

    Parameters
    ----------
    names : tuple of str or None
        Band names (None: the 40 PAUS narrow bands); all of one survey.
    reference_band : str
        Band of the catalogue magnitude (``"i"``: the population's own i band, else one of
        ``names``).

    Attributes
    ----------
    numbers : numpy.ndarray
        Flux-column number of each simulated band (what :meth:`draw` returns).
    flux_bands : tuple of str or None
        Band names of the flux columns (None for PAUS: the population's default columns).
    """

    def __init__(self, names: tuple[str, ...] | None = None, reference_band: str = "i") -> None:
        bands = [get_band(b) for b in (names or tuple(PAUS_BANDS))]
        self.flux_bands: tuple[str, ...] | None = None
        self._flux_scale: np.ndarray | None = None
        self._ref_column: int | None = None
        if all(b.name in PAUS_BANDS for b in bands):
            self.numbers = np.array([b.number for b in bands], dtype=np.int64)
            self._exptime = np.array([b.exposure_time for b in PAUS_BANDS.values()])
            self._slot = np.arange(N_PAUS_BANDS, dtype=np.int64)
            self._n_slots = N_PAUS_BANDS
        else:
            self.flux_bands = tuple(b.name for b in bands)
            self.numbers = np.arange(len(bands), dtype=np.int64)
            self._exptime = np.array([b.exposure_time for b in bands])
            self._slot = np.array([b.number for b in bands], dtype=np.int64)
            self._n_slots = bands[0].slots
            self._flux_scale = 10.0 ** (0.4 * (np.array([b.zero_point for b in bands])
                                              - POPULATION_ZERO_POINT))  # fmt: skip
            if reference_band != "i":
                self._ref_column = self.flux_bands.index(reference_band)

    def draw(self, m: int, camera_state_prob: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A uniform random band (flux-column number) and camera state (0/1) per object."""
        band = self.numbers[rng.integers(0, self.numbers.size, m)]
        state = (rng.random(m) < camera_state_prob).astype(np.int64)
        return band, state

    def band_index(self, band: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The network's band x camera-state index of flux columns ``band``."""
        return self._slot[band] + self._n_slots * state

    def exposure_time(self, band: np.ndarray) -> np.ndarray:
        """Exposure time (s) of flux columns ``band``."""
        return self._exptime[band]

    def names(self, band: np.ndarray) -> np.ndarray:
        """Band names of flux columns ``band``."""
        if self.flux_bands is None:
            return np.array([band_from_index(int(b))[0].name for b in band])
        return np.array(self.flux_bands)[np.asarray(band, dtype=np.int64)]

    def galaxies(self, m: int, rng: np.random.Generator,
                 population: PopulationConfig) -> GalaxyPopulation:
        """``m`` galaxies of ``population`` with fluxes in these bands."""
        gal = sample_population(m, rng, bands=self.flux_bands, config=population)
        if self._flux_scale is None:
            return gal
        changes = {"flux_e_per_s": gal.flux_e_per_s * self._flux_scale}
        if self._ref_column is not None:
            ref = np.maximum(gal.flux_e_per_s[:, self._ref_column], 1e-6)
            changes["i_mag"] = POPULATION_ZERO_POINT - 2.5 * np.log10(ref)
        return dataclasses.replace(gal, **changes)

    def star_fluxes(self, m: int, rng: np.random.Generator,
                    mag_range: tuple[float, float]) -> np.ndarray:
        """Fluxes (e-/s, shape (m, B)) of ``m`` stars with i magnitudes in ``mag_range``."""
        stars = sample_stars(m, rng, bands=self.flux_bands, mag_range=mag_range)
        if self._flux_scale is None:
            return stars.flux_e_per_s
        return stars.flux_e_per_s * self._flux_scale


@dataclass(frozen=True)
class Neighbours(Rows):
    """Sources around the central galaxies (arrays of length K, one row per neighbour).

    Attributes
    ----------
    host : numpy.ndarray, int64
        Row of the central galaxy whose stamp holds the neighbour.
    position : numpy.ndarray, shape (K, 2)
        Position (dx, dy) in pixels: relative to the host galaxy where ``on_galaxy``, else
        relative to the canvas centre.
    on_galaxy : numpy.ndarray, bool
        The position is relative to the host galaxy (it moves with the galaxy's sub-pixel
        offset, as a neighbour fixed on the sky does).
    is_star : numpy.ndarray, bool
        A star (drawn as a near-point Sersic profile) rather than a galaxy.
    r50, n, q, pa : numpy.ndarray
        Sersic shape (arcsec, -, -, degrees).
    flux_e_per_s : numpy.ndarray, shape (K, B)
        Flux in every simulated band, electrons per second.
    """

    host: np.ndarray
    position: np.ndarray
    on_galaxy: np.ndarray
    is_star: np.ndarray
    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    flux_e_per_s: np.ndarray

    def canvas_position(self, offset: np.ndarray) -> np.ndarray:
        """Positions relative to the canvas centre when the galaxies sit at ``offset``."""
        return np.where(self.on_galaxy[:, None], self.position + offset[self.host],
                        self.position)  # fmt: skip

    def flux(self, band: np.ndarray, exposure_time: np.ndarray) -> np.ndarray:
        """Total flux (electrons) when host ``i`` is observed in flux column ``band[i]`` for
        ``exposure_time[i]`` seconds."""
        rate = self.flux_e_per_s[np.arange(len(self)), band[self.host]]
        return rate * exposure_time[self.host]


def draw_neighbours(config, m: int, size: int, bands: SimulatedBands,
                    rng: np.random.Generator, on_sky: bool = False) -> Neighbours:
    """Neighbours of ``m`` central galaxies on canvases of ``size`` pixels.

    A fraction ``config.close_neighbour_fraction`` of the galaxies get a neighbour at a
    distance uniform in ``config.close_neighbour_distance`` (pixels, uniform direction);
    every canvas gets a Poisson number (mean ``config.random_neighbours`` per stamp area) of
    further sources uniform over the canvas and ``config.neighbour_margin`` pixels beyond
    it. A fraction ``config.star_fraction`` of all neighbours are stars; the galaxies come
    from ``config.neighbour_population``.

    Parameters
    ----------
    config : lumos.simconfig.SimulationConfig
        Settings.
    m, size : int
        Number of central galaxies and canvas side, pixels.
    bands : SimulatedBands
        The simulated bands (flux columns).
    rng : numpy.random.Generator
        Source of all draws.
    on_sky : bool
        Place the random neighbours relative to their galaxy (fixed on the sky, for scenes
        observed more than once) instead of relative to the canvas centre.

    Returns
    -------
    Neighbours
    """
    rows = np.arange(m)
    close = rng.random(m) < config.close_neighbour_fraction
    n_close = int(close.sum())
    dist = rng.uniform(*config.close_neighbour_distance, n_close)
    angle = rng.uniform(0.0, 2.0 * np.pi, n_close)
    close_pos = np.column_stack([dist * np.cos(angle), dist * np.sin(angle)])
    half = size / 2.0 + config.neighbour_margin
    mean_random = config.random_neighbours * (2.0 * half / config.stamp_size) ** 2
    n_random = rng.poisson(mean_random, m)
    random_host = np.repeat(rows, n_random)
    random_pos = rng.uniform(-half, half, (random_host.size, 2))
    host = np.concatenate([rows[close], random_host]).astype(np.int64)
    k = host.size
    on_galaxy = np.concatenate([np.ones(n_close, bool), np.full(random_host.size, on_sky)])
    is_star = rng.random(k) < config.star_fraction
    n_star = int(is_star.sum())
    gal = bands.galaxies(k - n_star, rng, config.neighbour_population)
    star_flux = bands.star_fluxes(n_star, rng, config.star_mag_range)
    r50, n, q, pa = np.full(k, STAR_R50), np.full(k, STAR_N), np.ones(k), np.zeros(k)
    flux = np.empty((k, gal.flux_e_per_s.shape[1]))
    g = ~is_star
    r50[g], n[g], q[g], pa[g] = gal.r50, gal.n, gal.q, gal.pa
    flux[g] = gal.flux_e_per_s
    flux[is_star] = star_flux
    return Neighbours(host=host, position=np.concatenate([close_pos, random_pos]),
                      on_galaxy=on_galaxy, is_star=is_star, r50=r50, n=n, q=q, pa=pa,
                      flux_e_per_s=flux)  # fmt: skip


@dataclass(frozen=True)
class Components:
    """How the central galaxies are drawn: one Sersic profile, or a bulge + disk.

    Attributes
    ----------
    two : numpy.ndarray of bool, shape (M,)
        The galaxies drawn as a bulge + disk.
    r50, n, q, pa, flux : numpy.ndarray, shape (M,)
        The first component of every galaxy: the galaxy itself (flux 1), or its disk
        (n = 1, flux ``1 - B/T``).
    bulge_r50, bulge_q, bulge_pa, bulge_flux : numpy.ndarray, shape (two.sum(),)
        The bulges (n = 4) of the bulge + disk galaxies, flux ``B/T``.
    """

    two: np.ndarray
    r50: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    flux: np.ndarray
    bulge_r50: np.ndarray
    bulge_q: np.ndarray
    bulge_pa: np.ndarray
    bulge_flux: np.ndarray

    @property
    def n_two(self) -> int:
        """Number of bulge + disk galaxies."""
        return int(self.two.sum())


def _two_components(config, m: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``m`` galaxies are a bulge + disk (``config.two_component_fraction``; no
    draw when it is 0, so that such streams do not change)."""
    if config.two_component_fraction > 0:
        return rng.random(m) < config.two_component_fraction
    return np.zeros(m, dtype=bool)


def fitted_bulge_disks(config, galaxies: GalaxyPopulation, rng: np.random.Generator
                       ) -> tuple[GalaxyPopulation, tuple[np.ndarray, dict] | None]:
    """For ``two_component_model="fit"``: choose the bulge + disk galaxies and their shapes
    (for ``"matched"``: the galaxies unchanged and None, without a draw).

    A fraction ``config.two_component_fraction`` of the galaxies becomes a bulge + disk from
    the bank of fitted shapes (:func:`lumos.bulgedisk.describe_bank`) placed behind the
    population's (r50, pa); their Sersic index and axis ratio become those of the fit, so
    that the catalogue drawn afterwards describes the light by its single-Sersic fit.

    Returns
    -------
    galaxies : GalaxyPopulation
        With ``n`` and ``q`` of the fitted galaxies replaced.
    fitted : tuple or None
        ``(two, components)`` for :func:`galaxy_components`.
    """
    if config.two_component_model != "fit":
        return galaxies, None
    two = _two_components(config, len(galaxies), rng)
    g = galaxies
    comp = describe_bank(g.r50[two], g.n[two], g.q[two], g.pa[two], rng)
    n, q = g.n.copy(), g.q.copy()
    n[two], q[two] = comp["n"], comp["q"]
    return dataclasses.replace(g, n=n, q=q), (two, comp)


def galaxy_components(config, galaxies: GalaxyPopulation, rng: np.random.Generator,
                      fitted: tuple[np.ndarray, dict] | None = None) -> Components:
    """The components of the central galaxies.

    Without ``fitted`` (``two_component_model="matched"``), a fraction
    ``config.two_component_fraction`` is drawn as a bulge + disk matched to the galaxy's
    single-Sersic parameters (:func:`lumos.bulgedisk.two_component_galaxies`, one position
    angle); with ``fitted`` (from :func:`fitted_bulge_disks`) those galaxies and shapes.
    """
    g, m = galaxies, len(galaxies)
    if fitted is None:
        two = _two_components(config, m, rng)
        comp = two_component_galaxies(g.r50[two], g.n[two], g.q[two], rng)
        comp["pa_bulge"] = comp["pa_disk"] = g.pa[two]
    else:
        two, comp = fitted
    r50, n, q, pa, flux = g.r50.copy(), g.n.copy(), g.q.copy(), g.pa.copy(), np.ones(m)
    r50[two], n[two], q[two], pa[two] = comp["r50_disk"], 1.0, comp["q_disk"], comp["pa_disk"]
    flux[two] = 1.0 - comp["bulge_fraction"]
    return Components(two=two, r50=r50, n=n, q=q, pa=pa, flux=flux,
                      bulge_r50=comp["r50_bulge"], bulge_q=comp["q_bulge"],
                      bulge_pa=comp["pa_bulge"], bulge_flux=comp["bulge_fraction"])  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """Central galaxies on the sky with their neighbours and catalogue entries.

    Attributes
    ----------
    galaxies : lumos.population.GalaxyPopulation
        The central galaxies (true parameters, fluxes in every simulated band).
    neighbours : Neighbours
        Sources around them.
    catalogue : dict of str to numpy.ndarray
        What the catalogue reports: ``r50, n, q, pa, i_mag`` and ``psf_fwhm`` (as
        :func:`lumos.simconfig.apply_catalogue_errors` returns them).
    components : Components
        How each central galaxy's light is drawn (None: the single Sersic profile of its
        true parameters).
    """

    galaxies: GalaxyPopulation
    neighbours: Neighbours
    catalogue: dict
    components: Components | None = None

    def __len__(self) -> int:
        return len(self.galaxies)
