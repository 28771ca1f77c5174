"""Pairs of observations of the same galaxies: :class:`PairSet` and simulated pairs.

A :class:`PairSet` holds two aligned stamp batches (row ``i`` of both is one galaxy in one band
on two exposures) with the zero points that calibrate them. :func:`simulate_pairs` observes
simulated galaxies twice (the scene fixed on the sky, each exposure with its own PSF, offset,
CCD position, background and noise), for transfer learning, calibration and benchmarks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .observe import (
    Exposure,
    default_background,
    default_renderer,
    draw_pointing,
    expose,
    moffat_psf,
    profile_flags,
    render,
    stamp_batch,
    sum_by_host,
)
from .psf import MoffatPSF
from .scene import Scene, SimulatedBands, draw_neighbours, fitted_bulge_disks, galaxy_components
from .simconfig import SimulationConfig, apply_catalogue_errors, catalogued_offset
from .stamps import StampBatch

__all__ = ["PairSet", "PairSimulation", "simulate_pairs", "PAIRINGS"]

#: Ways of pairing the observations of one galaxy in one band.
PAIRINGS = ("consecutive", "all")

# =======================================================================================
# pairs


def _as_float64(value, n: int, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if t.ndim == 0:
        t = t.expand(n, 2).clone()
    if t.shape != (n, 2):
        raise ValueError(f"{name} must be a scalar or have shape [{n}, 2], got {tuple(t.shape)}")
    return t


@dataclass
class PairSet:
    """Pairs of observations of the same galaxies: two aligned stamp batches.

    Row ``i`` of :attr:`first` and row ``i`` of :attr:`second` are the same galaxy in the
    same band on two different images (exposures).

    Attributes
    ----------
    first, second : StampBatch
        The two observations (pixels in electrons). For simulated pairs both carry the
        same ``truth`` (true flux, electrons).
    zero_point, zero_point_err : torch.Tensor, float64, shape (N, 2)
        Multiplicative calibration of each observation and its 1-sigma error: the
        compared fluxes are ``zero_point * flux`` (see
        :meth:`lumos.mixture.GaussianMixture.calibrate`). Default 1 and 0. For real data
        this is the image's zero point divided by its gain (the stamps are in electrons,
        zero points apply to image units).
    ids : numpy.ndarray or None
        Galaxy id of each pair (pairs of one galaxy are kept together when splitting).
    bands : numpy.ndarray or None
        Band name of each pair.
    images : numpy.ndarray or None
        Image names of the two observations, shape (N, 2).
    source : dict
        JSON-ready description of where the pairs come from (stored with the model).
    """

    first: StampBatch
    second: StampBatch
    zero_point: Tensor | None = None
    zero_point_err: Tensor | None = None
    ids: np.ndarray | None = None
    bands: np.ndarray | None = None
    images: np.ndarray | None = None
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.first)
        if len(self.second) != n:
            raise ValueError(
                f"the two observations must have equal rows, got {n} and {len(self.second)}"
            )
        if self.first.pixels.shape[1:] != self.second.pixels.shape[1:]:
            raise ValueError("the two observations must have stamps of the same size")
        self.zero_point = _as_float64(1.0 if self.zero_point is None else self.zero_point, n,
                                      "zero_point")
        self.zero_point_err = _as_float64(
            0.0 if self.zero_point_err is None else self.zero_point_err, n, "zero_point_err")
        if not bool(torch.all(torch.isfinite(self.zero_point) & (self.zero_point > 0))):
            raise ValueError("zero points must be finite and positive")
        if not bool(torch.all(torch.isfinite(self.zero_point_err)
                              & (self.zero_point_err >= 0))):
            raise ValueError("zero-point errors must be finite and >= 0")
        for name in ("ids", "bands"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value)
                if value.shape != (n,):
                    raise ValueError(f"{name} must have shape [{n}], got {value.shape}")
                setattr(self, name, value)
        if self.images is not None:
            self.images = np.asarray(self.images)
            if self.images.shape != (n, 2):
                raise ValueError(f"images must have shape [{n}, 2], got {self.images.shape}")

    def __len__(self) -> int:
        return len(self.first)

    @property
    def truth(self) -> Tensor | None:
        """True flux of each pair (electrons), or None for real data."""
        return self.first.truth

    def __getitem__(self, index) -> PairSet:
        """Select pairs with a slice, an integer array or a boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        if not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index))
            if index.dtype == torch.bool:
                index = torch.nonzero(index).flatten()
            index = index.long()
        np_index = index if isinstance(index, slice) else index.numpy()

        def pick(a):
            return None if a is None else a[np_index]

        return PairSet(
            first=self.first[index],
            second=self.second[index],
            zero_point=self.zero_point[index],
            zero_point_err=self.zero_point_err[index],
            ids=pick(self.ids),
            bands=pick(self.bands),
            images=pick(self.images),
            source=dict(self.source),
        )

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[PairSet, PairSet]:
        """Split into (training, held-out) pairs, keeping all pairs of a galaxy together.

        Parameters
        ----------
        holdout_fraction : float
            Fraction of pairs held out, in [0, 1).
        seed : int
            Seed of the random choice of held-out galaxies.

        Returns
        -------
        (PairSet, PairSet)
            Training and held-out pairs (the held-out set may be empty for fraction 0).
        """
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        train_idx, held_idx = _split_indices(self, holdout_fraction, seed)
        return self[train_idx], self[held_idx]

    def fingerprint(self) -> str:
        """A short SHA-256 of the pixels, profiles and zero points (detects a changed set)."""
        h = hashlib.sha256()
        for t in (self.first.pixels, self.second.pixels, self.first.profile,
                  self.second.profile, self.zero_point):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _split_indices(pairs: PairSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(pairs)
    if fraction == 0.0 or n < 2:
        return np.arange(n), np.arange(0)
    if pairs.ids is not None:
        keys = np.array([str(v) for v in pairs.ids])
        _, group = np.unique(keys, return_inverse=True)
    else:
        group = np.arange(n)
    n_groups = int(group.max()) + 1
    if n_groups < 2:  # one galaxy: nothing can be held out without leaking it
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x484F4C44]))
    order = rng.permutation(n_groups)
    sizes = np.bincount(group, minlength=n_groups)
    target = max(1, int(round(fraction * n)))
    cumulative = np.cumsum(sizes[order])
    n_held_groups = int(np.searchsorted(cumulative, target) + 1)
    n_held_groups = min(n_held_groups, n_groups - 1)  # keep something to train on
    held_groups = np.zeros(n_groups, dtype=bool)
    held_groups[order[:n_held_groups]] = True
    held = held_groups[group]
    return np.flatnonzero(~held), np.flatnonzero(held)


# =======================================================================================
# simulated pairs


@dataclass(frozen=True)
class PairSimulation:
    """How :func:`simulate_pairs` observes a galaxy twice.

    Parameters
    ----------
    simulation : lumos.simulate.SimulationConfig
        Population, bands, neighbours, shot noise and the range of the *true* PSF (FWHM
        and Moffat beta are drawn independently for each exposure).
    profile_psf_beta : float or None
        Moffat beta of the PSF used for the model-profile channel (the catalogue's nominal
        PSF model). None: the true beta (a perfect PSF model).
    profile_psf_fwhm_error : float
        Log-normal fractional error of the FWHM given to the model-profile channel.
    """

    simulation: Any = None
    profile_psf_beta: float | None = None
    profile_psf_fwhm_error: float = 0.0

    def __post_init__(self) -> None:
        if self.simulation is None:
            object.__setattr__(self, "simulation", SimulationConfig())
        if self.profile_psf_beta is not None and not self.profile_psf_beta > 1.0:
            raise ValueError(f"profile_psf_beta must be > 1, got {self.profile_psf_beta}")
        if not (math.isfinite(self.profile_psf_fwhm_error) and self.profile_psf_fwhm_error >= 0):
            raise ValueError("profile_psf_fwhm_error must be finite and >= 0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "simulation": self.simulation.to_dict(),
            "profile_psf_beta": self.profile_psf_beta,
            "profile_psf_fwhm_error": self.profile_psf_fwhm_error,
        }


def simulate_pairs(
    n: int,
    seed: int = 0,
    config: PairSimulation | None = None,
    background=None,
    psf_factory: Callable | None = None,
    renderer_factory: Callable | None = None,
) -> PairSet:
    """Simulate ``n`` galaxies each observed twice in the same band.

    Every galaxy (and its neighbours, which are fixed on the sky) is observed on two
    independent exposures: each has its own PSF (FWHM and beta drawn from the simulation
    ranges), sub-pixel position, CCD position, background stamp and noise. The galaxy is
    rendered through ``psf_factory(fwhm, beta)`` (the true PSF); the model-profile channel
    is drawn with the catalogue's nominal PSF, a Moffat of beta
    ``config.profile_psf_beta`` (see :class:`PairSimulation`), so a PSF the training never
    saw can be simulated with an imperfect PSF model, as in real data. When
    ``config.simulation.catalogue_errors`` are set, the profile channel and the i magnitude
    come from one catalogue with those errors, shared by both exposures, and the PSF FWHM of
    each exposure's profile channel has its own error.

    Parameters
    ----------
    n : int
        Number of pairs.
    seed : int
        Seed; the same seed gives identical pairs.
    config : PairSimulation, optional
        Settings (default: the training simulation, a perfect PSF model).
    background : BackgroundSource, optional
        Background stamps (default :func:`lumos.observe.default_background`).
    psf_factory : callable, optional
        ``psf_factory(fwhm, beta)`` -> batched PSF of the galaxy and its neighbours
        (default :class:`lumos.psf.MoffatPSF`).
    renderer_factory : callable, optional
        ``renderer_factory(size, pixel_scale)`` (default the shared
        :func:`lumos.observe.default_renderer`).

    Returns
    -------
    PairSet
        With ``truth`` (true flux in electrons, equal for both observations), ids
        0..n-1, band names, and image names ``"sim-1"``/``"sim-2"``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of pairs must be a positive integer, got {n!r}")
    config = PairSimulation() if config is None else config
    cfg = config.simulation
    background = default_background() if background is None else background
    psf_factory = psf_factory or MoffatPSF
    s = cfg.stamp_size
    renderer = (renderer_factory or default_renderer)(s, cfg.pixel_scale)
    bands = SimulatedBands(cfg.bands, cfg.reference_band)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x50414952,)))
    sides: list[list[StampBatch]] = [[], []]
    band_all = []
    for start in range(0, int(n), cfg.chunk_size):
        m = min(cfg.chunk_size, int(n) - start)
        scene, band, state, truth = _draw_scene(cfg, m, bands, rng)
        band_all.append(band)
        for side in range(2):
            ccd_xy, fwhm, beta, offset = draw_pointing(m, cfg, rng)
            exposure = Exposure(band=band, camera_state=state,
                                band_idx=bands.band_index(band, state),
                                exposure_time=bands.exposure_time(band), ccd_xy=ccd_xy,
                                psf_fwhm=fwhm, psf_beta=beta, offset=offset)  # fmt: skip
            sides[side].append(_observe_scene(scene, exposure, truth, config, renderer,
                                              psf_factory, background, rng))  # fmt: skip
    return PairSet(
        first=StampBatch.concat(sides[0]),
        second=StampBatch.concat(sides[1]),
        ids=np.arange(int(n)),
        bands=bands.names(np.concatenate(band_all)),
        images=np.tile(np.array(["sim-1", "sim-2"]), (int(n), 1)),
        source={
            "kind": "simulation",
            "n_pairs": int(n),
            "seed": int(seed),
            "config": config.to_dict(),
            "background": type(background).__name__,
            "psf": getattr(psf_factory, "__name__", type(psf_factory).__name__),
        },
    )


def _draw_scene(cfg, m: int, bands: SimulatedBands, rng: np.random.Generator):
    """``m`` galaxies fixed on the sky with their neighbours and one catalogue (shared by
    both exposures, exact unless the settings carry catalogue errors), and the band and
    camera state they are observed in. Returns ``(scene, band, state, truth)``."""
    gal = bands.galaxies(m, rng, cfg.population)
    band, state = bands.draw(m, cfg.camera_state_prob, rng)
    truth = gal.flux_e_per_s[np.arange(m), band] * bands.exposure_time(band)
    nb = draw_neighbours(cfg, m, cfg.stamp_size, bands, rng, on_sky=True)
    gal, fitted = fitted_bulge_disks(cfg, gal, rng)
    cat = apply_catalogue_errors(cfg.catalogue_errors, gal.r50, gal.n, gal.q, gal.pa,
                                 gal.i_mag, np.ones(m), rng)  # fmt: skip
    return Scene(gal, nb, cat, galaxy_components(cfg, gal, rng, fitted)), band, state, truth


def _observe_scene(scene: Scene, exposure: Exposure, truth: np.ndarray,
                   config: PairSimulation, renderer, psf_factory: Callable, background,
                   rng: np.random.Generator) -> StampBatch:
    """One exposure of a scene: the galaxies and neighbours through the true PSF, the
    profile channel through the catalogue's PSF model, shot noise and a background."""
    cfg = config.simulation
    gal, nb, cat = scene.galaxies, scene.neighbours, scene.catalogue
    m, host = len(gal), nb.host
    fwhm, beta, offset = exposure.psf_fwhm, exposure.psf_beta, exposure.offset
    c = scene.components
    two, k = c.two, len(nb)
    fwhm_err = rng.standard_normal(m)
    images = render(renderer, psf_factory, np.concatenate([c.r50, nb.r50, c.bulge_r50]),
                    np.concatenate([c.n, nb.n, np.full(c.n_two, 4.0)]),
                    np.concatenate([c.q, nb.q, c.bulge_q]),
                    np.concatenate([c.pa, nb.pa, c.bulge_pa]),
                    np.concatenate([offset, nb.canvas_position(offset), offset[two]]),
                    np.concatenate([c.flux, nb.flux(exposure.band, exposure.exposure_time),
                                    c.bulge_flux]),
                    np.concatenate([fwhm, fwhm[host], fwhm[two]]),
                    np.concatenate([beta, beta[host], beta[two]]))  # fmt: skip
    profile_true = images[:m]
    profile_true[two] += images[m + k :]
    neighbours = sum_by_host(images[m : m + k], host, m)
    mismatch = (config.profile_psf_beta is not None or config.profile_psf_fwhm_error > 0
                or psf_factory not in (moffat_psf, MoffatPSF) or cfg.catalogue_errors.enabled
                or c.n_two > 0)
    at = catalogued_offset(offset, cat)
    if mismatch:
        p_beta = beta if config.profile_psf_beta is None else np.full(m, config.profile_psf_beta)
        fwhm_sigma = math.hypot(config.profile_psf_fwhm_error, cfg.catalogue_errors.psf_fwhm_frac)
        p_fwhm = fwhm * np.exp(fwhm_sigma * fwhm_err)
        profile = render(renderer, moffat_psf, cat["r50"], cat["n"], cat["q"], cat["pa"], at,
                         np.ones(m), p_fwhm, p_beta)  # fmt: skip
    else:
        profile = profile_true
    light = profile_true * truth.astype(np.float32)[:, None, None] + neighbours
    sources, bg = expose(light, cfg.shot_noise, background, exposure, rng)
    pixels = np.asarray(bg.pixels, dtype=np.float32) + sources
    return stamp_batch(pixels, profile, i_mag=cat["i_mag"], ccd_xy=exposure.ccd_xy,
                       band_idx=exposure.band_idx,
                       flags=profile_flags(cat["r50"], cat["n"], cat["q"]),
                       offset=at,
                       truth=truth)  # fmt: skip

