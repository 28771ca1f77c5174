"""Unsupervised transfer learning on pairs of observations (Cabayol et al., section 4.3).

A network trained on simulations meets real images whose PSF, background and artefacts
differ from the simulated ones. Real data have no true fluxes, but they do have *repeated
observations*: the same galaxy observed in the same band on two different exposures must
get agreeing flux PDFs. Transfer learning fine-tunes the network with

    loss = mean_pairs pair_nll(p1, p2)  +  mean_sim NLL(truth | p)                  (Eq. 11)

where ``pair_nll`` (:func:`lumos.mixture.pair_nll`) is minus the log of the overlap
integral of the two (calibrated) mixtures, truncated at zero flux for galaxies fainter
than the model's ``truncate_threshold`` (i = 20.5), and the second term is the supervised
loss of :mod:`lumos.training` on a fresh simulated batch. The second term keeps the flux
scale, which pairs cannot fix: scaling both PDFs of a pair by ``c`` changes the pair loss
by ``+log c`` (it is a density of the flux difference), so on its own the pair term would
even pull every flux down a little; with equal weights the balance costs a small bias
(about 1-2% in ``bench/bench_transfer.py``; lower ``pair_weight`` to reduce it). Both
terms are evaluated on the flux relative to a detached per-row reference flux, so their
values are O(1) and independent of the image units (the gradients are those of the
flux-space losses).

Only the **last linear layer** (``model.head``) is trained; every other parameter,
including the band embedding, is frozen. Because the frozen body is deterministic (the
model runs in ``eval()`` mode: no dropout), the input of the head is computed once per
stamp and cached, so an epoch over the pairs costs a few small matrix products; the
simulated batches go through the frozen body without gradients.

Optimiser: Adam, learning rate 1e-5 divided by 10 every 50 epochs (configurable); an
epoch is one pass over the training pairs. A fraction of the pairs (grouped by galaxy) is
held out; after every epoch :func:`pair_consistency` is reported on them: the width
``sigma68`` of ``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` (paper Eq. 19; ``f`` the mixture mean,
``s`` its standard deviation), 1 for calibrated PDFs. Checkpoints (one per epoch, written
with the helpers of :mod:`lumos.training`) make the run resumable, bit for bit.

Pairs come from simulations (:func:`simulate_pairs`, for tests and benchmarks, optionally
with a PSF and background the training never saw) or from real measurement tables
(:func:`pairs_from_measurements`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from itertools import combinations
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from astropy.table import Table
from torch import Tensor, nn

from . import __version__
from .bands import band_from_index
from .errors import LumosError
from .flags import UNUSABLE, Flag
from .mixture import GaussianMixture, mixture_nll, pair_nll
from .network import LumosNet, RawOutput
from .stamps import StampBatch
from .stats import pair_pull, sigma68
from .training import augment_batch, derive_seed

__all__ = [
    "PairSet",
    "PairSimulation",
    "simulate_pairs",
    "pairs_from_measurements",
    "pair_consistency",
    "d_reference",
    "DReference",
    "TransferConfig",
    "transfer",
    "PAIRINGS",
]

#: Ways of pairing the observations of one galaxy in one band.
PAIRINGS = ("consecutive", "all")
_log = logging.getLogger("lumos.transfer")


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
            from .simulate import SimulationConfig

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


_STAR_R50, _STAR_N = 0.02, 0.5  # stars drawn as near-point Sersic profiles (as the simulator)


def _neighbours(cfg, m: int, band: np.ndarray, exptime: np.ndarray, rng: np.random.Generator,
                bands=None):
    """Neighbours of ``m`` galaxies, fixed on the sky: host, relative position, shape, flux.

    ``bands`` is the :class:`lumos.simulate.Simulator` whose bands (PAUS or a survey's)
    give the neighbours' fluxes; ``band`` indexes its flux columns.
    """
    from .population import sample_population, sample_stars

    s = cfg.stamp_size
    rows = np.arange(m)
    close = rng.random(m) < cfg.close_neighbour_fraction
    n_close = int(close.sum())
    dist = rng.uniform(*cfg.close_neighbour_distance, n_close)
    angle = rng.uniform(0.0, 2.0 * np.pi, n_close)
    close_pos = np.column_stack([dist * np.cos(angle), dist * np.sin(angle)])
    half = s / 2.0 + cfg.neighbour_margin
    n_random = rng.poisson(cfg.random_neighbours * (2.0 * half / s) ** 2, m)
    random_host = np.repeat(rows, n_random)
    random_pos = rng.uniform(-half, half, (random_host.size, 2))
    host = np.concatenate([rows[close], random_host]).astype(np.int64)
    rel = np.concatenate([close_pos, random_pos])
    k = host.size
    star = rng.random(k) < cfg.star_fraction
    n_star = int(star.sum())
    flux_bands = None if bands is None else bands._flux_bands
    gal = sample_population(k - n_star, rng, bands=flux_bands, config=cfg.neighbour_population)
    stars = sample_stars(n_star, rng, bands=flux_bands, mag_range=cfg.star_mag_range)
    if bands is not None:
        gal = bands._in_survey_units(gal)
        if bands._flux_scale is not None:
            stars.flux_e_per_s = stars.flux_e_per_s * bands._flux_scale
    r50, n, q, pa = np.full(k, _STAR_R50), np.full(k, _STAR_N), np.ones(k), np.zeros(k)
    rate = np.empty(k)
    g = ~star
    r50[g], n[g], q[g], pa[g] = gal.r50, gal.n, gal.q, gal.pa
    rate[g] = gal.flux_e_per_s[np.arange(k - n_star), band[host[g]]]
    rate[star] = stars.flux_e_per_s[np.arange(n_star), band[host[star]]]
    return host, rel, r50, n, q, pa, rate * exptime[host]


def _shot_noise(expected: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    if mode == "poisson":
        return rng.poisson(expected).astype(np.float32)
    if mode == "gaussian":
        return (expected + np.sqrt(expected) * rng.standard_normal(expected.shape)).astype(
            np.float32)
    return expected.astype(np.float32)


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
        Background stamps (default :func:`lumos.simulate.default_background`).
    psf_factory : callable, optional
        ``psf_factory(fwhm, beta)`` -> batched PSF of the galaxy and its neighbours
        (default :class:`lumos.psf.MoffatPSF`).
    renderer_factory : callable, optional
        ``renderer_factory(size, pixel_scale)`` (default
        :class:`lumos.profiles.SersicRenderer`).

    Returns
    -------
    PairSet
        With ``truth`` (true flux in electrons, equal for both observations), ids
        0..n-1, band names, and image names ``"sim-1"``/``"sim-2"``.
    """
    from .population import sample_population
    from .profiles import SersicRenderer, valid_profile_parameters
    from .psf import MoffatPSF
    from .simulate import Simulator, apply_catalogue_errors, default_background

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of pairs must be a positive integer, got {n!r}")
    config = PairSimulation() if config is None else config
    cfg = config.simulation
    background = default_background() if background is None else background
    psf_factory = psf_factory or MoffatPSF
    renderer = (renderer_factory or SersicRenderer)(cfg.stamp_size, cfg.pixel_scale)
    # the simulator's band bookkeeping: PAUS bands, or a survey's (its flux columns,
    # zero points, exposure times and network slots)
    bands = Simulator(cfg, background=background)
    numbers = bands._band_numbers
    s = cfg.stamp_size
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x50414952,)))
    sides: list[list[StampBatch]] = [[], []]
    band_all = []
    for start in range(0, int(n), cfg.chunk_size):
        m = min(cfg.chunk_size, int(n) - start)
        gal = bands._in_survey_units(sample_population(m, rng, bands=bands._flux_bands,
                                                       config=cfg.population))
        band = numbers[rng.integers(0, numbers.size, m)]
        state = (rng.random(m) < cfg.camera_state_prob).astype(np.int64)
        band_idx = bands._slot[band] + bands._n_slots * state
        exptime = bands._exptime[band]
        truth = gal.flux_e_per_s[np.arange(m), band] * exptime
        host, rel, nb_r50, nb_n, nb_q, nb_pa, nb_flux = _neighbours(cfg, m, band, exptime, rng,
                                                                    bands)  # fmt: skip
        # one catalogue per galaxy, shared by both exposures (exact unless the simulation
        # settings carry catalogue errors)
        cat = apply_catalogue_errors(cfg.catalogue_errors, gal.r50, gal.n, gal.q, gal.pa,
                                     gal.i_mag, np.ones(m), rng)  # fmt: skip
        ok = valid_profile_parameters(torch.as_tensor(cat["r50"]), torch.as_tensor(cat["n"]),
                                      torch.as_tensor(cat["q"]))
        flags = np.where(np.asarray(ok), 0, int(Flag.BAD_PROFILE)).astype(np.int64)
        band_all.append(band)
        for side in range(2):
            ccd_xy = rng.random((m, 2)) * np.asarray(cfg.ccd_size, dtype=float)
            fwhm = rng.uniform(*cfg.psf_fwhm_range, m)
            beta = rng.uniform(*cfg.psf_beta_range, m)
            offset = rng.random((m, 2)) - 0.5
            fwhm_err = rng.standard_normal(m)

            def t(a):
                return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)

            images = renderer.render(
                t(np.concatenate([gal.r50, nb_r50])), t(np.concatenate([gal.n, nb_n])),
                t(np.concatenate([gal.q, nb_q])), t(np.concatenate([gal.pa, nb_pa])),
                psf_factory(t(np.concatenate([fwhm, fwhm[host]])),
                            t(np.concatenate([beta, beta[host]]))),
                offset=t(np.concatenate([offset, rel + offset[host]])),
                flux=t(np.concatenate([np.ones(m), nb_flux])),
            ).detach().to(torch.float32)
            profile_true = images[:m]
            neighbours = torch.zeros(m, s, s).index_add_(0, torch.as_tensor(host), images[m:])
            mismatch = (config.profile_psf_beta is not None or config.profile_psf_fwhm_error > 0
                        or psf_factory is not MoffatPSF or cfg.catalogue_errors.enabled)
            if mismatch:
                p_beta = beta if config.profile_psf_beta is None else np.full(
                    m, config.profile_psf_beta)
                fwhm_sigma = math.hypot(config.profile_psf_fwhm_error,
                                        cfg.catalogue_errors.psf_fwhm_frac)
                p_fwhm = fwhm * np.exp(fwhm_sigma * fwhm_err)
                profile = renderer.render(t(cat["r50"]), t(cat["n"]), t(cat["q"]), t(cat["pa"]),
                                          MoffatPSF(t(p_fwhm), t(p_beta)),
                                          offset=t(offset)).detach().to(torch.float32)
            else:
                profile = profile_true
            expected = (profile_true * torch.as_tensor(truth, dtype=torch.float32)[:, None, None]
                        + neighbours).clamp_min(0.0).numpy()
            sources = _shot_noise(expected, cfg.shot_noise, rng)
            bg = background.sample(m, s, band_idx, ccd_xy, exptime, rng)
            pixels = np.asarray(bg.pixels, dtype=np.float32) + sources
            sides[side].append(StampBatch(
                pixels=torch.from_numpy(pixels),
                profile=profile.contiguous(),
                i_mag=torch.as_tensor(cat["i_mag"], dtype=torch.float32),
                ccd_xy=torch.as_tensor(ccd_xy, dtype=torch.float32),
                band_idx=torch.as_tensor(band_idx, dtype=torch.int64),
                flags=torch.as_tensor(flags),
                offset=torch.as_tensor(offset, dtype=torch.float32),
                truth=torch.as_tensor(truth, dtype=torch.float32),
            ))
    if bands._flux_bands is None:  # PAUS: band numbers
        band_names = np.array([band_from_index(int(b))[0].name
                               for b in np.concatenate(band_all)])  # fmt: skip
    else:  # a survey: columns of its bands
        band_names = np.array(bands._flux_bands)[np.concatenate(band_all)]
    return PairSet(
        first=StampBatch.concat(sides[0]),
        second=StampBatch.concat(sides[1]),
        ids=np.arange(int(n)),
        bands=band_names,
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


# =======================================================================================
# pairs from measurement tables

_REQUIRED_COLUMNS = ("id", "band", "flags", "x", "y")
_TABLE_META_OVERRIDES = {  # table metadata key -> image_metadata item
    "BAND": "band",
    "PSFFWHM": "psf_fwhm",
    "PSFBETA": "psf_beta",
    "PIXSCALE": "pixel_scale",
    "CAMSTATE": "camera_state",
    "GAIN": "gain",
}
_IMAGE_META_KEYS = ("IMGPATH", "IMAGE")
_CATALOGUE_META_KEYS = ("CATPATH", "CATALOG", "CATALOGUE")


@dataclass
class _ImageRef:
    """Where an image is and how to read it."""

    path: Path
    catalogue: Any = None
    overrides: dict = field(default_factory=dict)


@dataclass
class _Observation:
    table: int
    row: int
    image: Path
    id_key: str
    id_value: Any
    band: str


def _filled(column, fill) -> np.ndarray:
    """A column as a plain array, masked entries replaced by ``fill``."""
    if hasattr(column, "filled") and np.ma.is_masked(column):
        return np.asarray(column.filled(fill))
    return np.asarray(column)


def _meta_get(meta: Mapping, keys: Sequence[str]):
    lower = {str(k).lower(): v for k, v in meta.items()}
    for k in keys:
        if k.lower() in lower and str(lower[k.lower()]).strip():
            return lower[k.lower()]
    return None


def _load_tables(tables) -> list[tuple[Table, str, Path | None]]:
    from .tableio import read_table

    if isinstance(tables, (str, os.PathLike, Table)):
        tables = [tables]
    out = []
    for k, item in enumerate(tables):
        if isinstance(item, Table):
            table, label, folder = item, f"table {k}", None
        else:
            path = Path(item)
            table = read_table(path, "measurement table")
            label, folder = path.name, path.parent
        missing = [c for c in _REQUIRED_COLUMNS if c not in table.colnames]
        if missing:
            raise LumosError(
                f"{label} is not a lumos measurement table (missing column"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)})"
            )
        out.append((table, label, folder))
    if not out:
        raise LumosError("no measurement tables given")
    return out


def _image_registry(images, base: Path | None = None) -> dict[str, _ImageRef]:
    """Known images by name and by path: from a manifest (file or table) or a mapping."""
    from .manifest import MANIFEST_COLUMNS, read_manifest

    if images is None:
        return {}
    registry: dict[str, _ImageRef] = {}
    if isinstance(images, Mapping):
        for key, value in images.items():
            ref = _ImageRef(Path(value))
            registry[str(key)] = ref
            registry.setdefault(Path(value).name, ref)
        return registry
    if isinstance(images, Table):
        manifest, folder = images, base or Path(".")
        if "path" not in manifest.colnames:
            raise LumosError("the images manifest needs a 'path' column")
    else:
        manifest, folder = read_manifest(images), Path(images).parent
    for row in manifest:
        raw = str(row["path"]).strip()
        path = Path(raw) if Path(raw).is_absolute() else folder / raw
        cat = None
        if "catalogue" in manifest.colnames and str(row["catalogue"]).strip() not in ("", "--"):
            c = Path(str(row["catalogue"]).strip())
            cat = c if c.is_absolute() else folder / c
        overrides = {}
        for name in MANIFEST_COLUMNS:
            if name in manifest.colnames and name != "zero_point":
                value = row[name]
                if np.ma.is_masked(value):
                    continue
                value = value.item() if hasattr(value, "item") else value
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                overrides[name] = value
        ref = _ImageRef(path, cat, overrides)
        registry[raw] = ref
        registry.setdefault(path.name, ref)
    return registry


def _resolve_image(key: str, registry: dict[str, _ImageRef], folder: Path | None,
                   label: str) -> _ImageRef:
    key = str(key).strip()
    if key in registry:
        return registry[key]
    if Path(key).name in registry:
        return registry[Path(key).name]
    candidates = [Path(key)] if Path(key).is_absolute() else (
        ([folder / key] if folder is not None else []) + [Path(key)])
    for c in candidates:
        if c.is_file():
            return _ImageRef(c)
    where = f" (looked next to {label})" if folder is not None else ""
    raise LumosError(
        f"image {key!r} measured in {label} not found{where}; list the images in a "
        "manifest (--images)"
    )


def _zero_point_rows(zero_points, image_names: np.ndarray, bands: np.ndarray):
    """Zero point and error per observation from a table keyed by image or band."""
    from .tableio import read_table

    n = len(image_names)
    if zero_points is None:
        return np.ones(n), np.zeros(n)
    table = zero_points if isinstance(zero_points, Table) else read_table(zero_points,
                                                                           "zero points")
    if "zp" not in table.colnames:
        raise LumosError("the zero-point table needs a 'zp' column")
    if "image" in table.colnames:
        keys = [Path(str(v).strip()).name for v in table["image"]]
        wanted = [Path(str(v)).name for v in image_names]
    elif "band" in table.colnames:
        keys = [str(v).strip() for v in table["band"]]
        wanted = [str(v) for v in bands]
    else:
        raise LumosError("the zero-point table needs an 'image' or a 'band' column")
    zp = np.asarray(table["zp"], dtype=float)
    err = np.asarray(table["zp_err"], dtype=float) if "zp_err" in table.colnames else np.zeros(
        len(zp))
    lookup = {k: i for i, k in enumerate(keys)}
    missing = sorted({w for w in wanted if w not in lookup})
    if missing:
        raise LumosError(f"no zero point for {missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    idx = np.array([lookup[w] for w in wanted], dtype=np.int64)
    if not (np.all(np.isfinite(zp[idx]) & (zp[idx] > 0)) and np.all(err[idx] >= 0)):
        raise LumosError("zero points must be positive and their errors >= 0")
    return zp[idx], err[idx]


def _pair_observations(obs: list[_Observation], pairing: str,
                       max_pairs: int | None) -> list[tuple[int, int]]:
    """Pairs of observation indices: per (id, band), distinct images only."""
    groups: dict[tuple[str, str], list[int]] = {}
    for k, o in enumerate(obs):
        groups.setdefault((o.id_key, o.band), []).append(k)
    pairs = []
    for members in groups.values():
        seen, distinct = set(), []
        for k in members:  # first observation per image, in table order
            if obs[k].image not in seen:
                seen.add(obs[k].image)
                distinct.append(k)
        if len(distinct) < 2:
            continue
        if pairing == "consecutive":
            found = list(zip(distinct[:-1], distinct[1:], strict=True))
        else:
            found = list(combinations(distinct, 2))
        pairs.extend(found[:max_pairs] if max_pairs is not None else found)
    return pairs


def pairs_from_measurements(
    tables,
    images=None,
    catalogue=None,
    *,
    pairing: str = "consecutive",
    max_pairs: int | None = 4,
    zero_points=None,
    overrides: Mapping | None = None,
    keywords: Mapping | None = None,
    columns: Mapping | None = None,
    progress: bool = False,
) -> PairSet:
    """Pairs of observations of the same galaxy and band from measurement tables.

    Every (id, band) measured on two or more different images gives pairs; rows flagged
    with any of :data:`lumos.flags.UNUSABLE` (or without finite x, y) are skipped. The
    stamps and model profiles are cut again from the images with
    :func:`lumos.measure.make_stamp_batch`, exactly as ``lumos measure`` does.

    Which image a row was measured on: the table's ``image`` column (tables measured
    from a manifest), else its metadata ``IMGPATH`` or ``IMAGE`` (``lumos measure``
    writes the image's file name). The name is looked up in ``images`` (a manifest or
    a mapping), else next to the table file, else as a path. The catalogue of an image:
    the manifest's ``catalogue`` column, else ``catalogue``, else the table metadata
    ``CATPATH``/``CATALOG``. Image metadata: the FITS header, overridden by the table's
    metadata (BAND, PSFFWHM, PSFBETA, PIXSCALE, CAMSTATE, GAIN, as written by ``lumos
    measure``) and band column, then by the manifest row, then by ``overrides``.

    Parameters
    ----------
    tables : path, Table or sequence of them
        Measurement tables (output of ``lumos measure``): columns ``id, band, flags, x,
        y`` (and optionally ``image``).
    images : path, Table or mapping, optional
        A manifest (table with a ``path`` column, as for ``lumos measure``; relative paths
        from its folder) or a mapping from image name to path.
    catalogue : path or Table, optional
        Catalogue for images that have no other.
    pairing : {"consecutive", "all"}
        Pair consecutive observations (in table order) or all combinations.
    max_pairs : int or None
        At most this many pairs per galaxy and band (None: no limit).
    zero_points : path or Table, optional
        Table with ``zp`` (and ``zp_err``) per ``image`` (name) or per ``band``; the
        calibration of image-unit fluxes (default 1).
    overrides, keywords, columns : mapping, optional
        Image metadata, FITS keywords and catalogue column names, as for
        :func:`lumos.measure.measure_file`.
    progress : bool
        Progress bar over the images.

    Returns
    -------
    PairSet
        Zero points are ``zp / gain`` (stamps are in electrons).

    Raises
    ------
    LumosError
        For a table without the needed columns, an image or catalogue that cannot be
        found, ids missing from a catalogue, or no pairs at all.
    """
    from tqdm.auto import tqdm

    from .catalogue import read_catalogue
    from .imageio import image_metadata, read_image
    from .measure import make_stamp_batch

    if pairing not in PAIRINGS:
        raise LumosError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if max_pairs is not None and int(max_pairs) < 1:
        raise LumosError(f"max_pairs must be a positive integer, got {max_pairs}")
    loaded = _load_tables(tables)
    registry = _image_registry(images)

    refs: dict[Path, _ImageRef] = {}
    table_meta: dict[Path, dict] = {}
    obs: list[_Observation] = []
    n_rows = n_unusable = 0
    for t_index, (table, label, folder) in enumerate(loaded):
        n_rows += len(table)
        if len(table) == 0:
            continue
        if "image" in table.colnames:
            keys = np.array([str(v).strip() for v in table["image"]])
            meta_over: dict = {}
        else:
            key = _meta_get(table.meta, _IMAGE_META_KEYS)
            if key is None:
                raise LumosError(
                    f"{label}: cannot tell which image it was measured on (no 'image' column "
                    "and no IMAGE in its metadata)"
                )
            keys = np.full(len(table), str(key).strip())
            meta_over = {item: table.meta[k] for k in table.meta
                         for mk, item in _TABLE_META_OVERRIDES.items() if str(k).upper() == mk}
            cat = _meta_get(table.meta, _CATALOGUE_META_KEYS)
            if cat is not None:
                cat = Path(str(cat).strip())
                if not cat.is_absolute() and folder is not None:
                    cat = folder / cat
                meta_over["__catalogue__"] = cat
        flags = _filled(table["flags"], int(Flag.FAILED)).astype(np.int64)
        x = _filled(table["x"], np.nan).astype(float)
        y = _filled(table["y"], np.nan).astype(float)
        usable = ((flags & int(UNUSABLE)) == 0) & np.isfinite(x) & np.isfinite(y)
        n_unusable += int((~usable).sum())
        ids = np.asarray(table["id"])
        bands = np.array([str(b).strip() for b in table["band"]])
        resolved: dict[str, _ImageRef] = {}
        for row in np.flatnonzero(usable):
            key = keys[row]
            if key not in resolved:
                resolved[key] = _resolve_image(key, registry, folder, label)
            ref = resolved[key]
            image_path = ref.path.resolve()
            refs.setdefault(image_path, ref)
            tm = table_meta.setdefault(image_path, {})
            for k, v in meta_over.items():
                tm.setdefault(k, v)
            tm.setdefault("band", bands[row])
            obs.append(_Observation(t_index, int(row), image_path, str(ids[row]), ids[row],
                                    bands[row]))
    pair_idx = _pair_observations(obs, pairing, None if max_pairs is None else int(max_pairs))
    if not pair_idx:
        raise LumosError(
            f"no pairs found: no galaxy was measured on two different images in the same "
            f"band ({n_rows} rows in {len(loaded)} table(s), {n_unusable} unusable)"
        )

    # cut the stamps of every needed observation, image by image
    needed = sorted({k for p in pair_idx for k in p})
    by_image: dict[Path, list[int]] = {}
    for k in needed:
        by_image.setdefault(obs[k].image, []).append(k)
    batches, position, gains, names = [], {}, {}, {}
    offset = 0
    for image_path, members in tqdm(by_image.items(), desc="images", unit="img",
                                    disable=not progress):
        ref = refs[image_path]
        tm = table_meta.get(image_path, {})
        over = {k: v for k, v in tm.items() if k != "__catalogue__"}
        over.update(ref.overrides)
        over.update({k: v for k, v in (overrides or {}).items() if v is not None})
        data, header, wcs = read_image(image_path)
        meta = image_metadata(header, over, keywords, wcs)
        cat_source = ref.catalogue or catalogue or tm.get("__catalogue__")
        if cat_source is None:
            raise LumosError(
                f"no catalogue for image {image_path.name}: give --catalogue, a 'catalogue' "
                "column in the images manifest, or CATALOG in the table metadata"
            )
        cat = read_catalogue(cat_source, columns=columns, wcs=wcs, pixel_scale=meta.pixel_scale)
        lookup = {str(v): i for i, v in enumerate(np.asarray(cat["id"]))}
        missing = [obs[k].id_key for k in members if obs[k].id_key not in lookup]
        if missing:
            raise LumosError(
                f"catalogue for {image_path.name} has no row for id {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": is it the catalogue the image was measured with?"
            )
        wrong = [obs[k].band for k in members if obs[k].band != meta.band.name]
        if wrong:
            raise LumosError(f"{image_path.name}: the image's band {meta.band.name} differs from "
                             f"the table's {wrong[0]}")
        rows = np.array([lookup[obs[k].id_key] for k in members], dtype=np.int64)
        electrons = np.asarray(data, dtype=np.float32) * np.float32(meta.gain)
        batch = make_stamp_batch(electrons, cat[rows], meta)
        batches.append(batch)
        for j, k in enumerate(members):
            position[k] = offset + j
        offset += len(members)
        gains[image_path] = float(meta.gain)
        names[image_path] = image_path.name
    everything = StampBatch.concat(batches)
    i1 = np.array([position[a] for a, _ in pair_idx], dtype=np.int64)
    i2 = np.array([position[b] for _, b in pair_idx], dtype=np.int64)
    cut_flags = everything.flags.numpy()
    keep = ((cut_flags[i1] | cut_flags[i2]) & int(UNUSABLE)) == 0
    if not keep.any():
        raise LumosError("no pairs found: every paired stamp is unusable (off the image or "
                         "masked in the core)")
    pair_idx = [p for p, k in zip(pair_idx, keep, strict=True) if k]
    i1, i2 = i1[keep], i2[keep]
    image_names = np.array([[names[obs[a].image], names[obs[b].image]] for a, b in pair_idx])
    bands = np.array([obs[a].band for a, _ in pair_idx])
    gain = np.array([[gains[obs[a].image], gains[obs[b].image]] for a, b in pair_idx])
    zp1, e1 = _zero_point_rows(zero_points, image_names[:, 0], bands)
    zp2, e2 = _zero_point_rows(zero_points, image_names[:, 1], bands)
    zp = np.stack([zp1, zp2], axis=1) / gain
    zp_err = np.stack([e1, e2], axis=1) / gain
    ids = np.array([obs[a].id_value for a, _ in pair_idx])
    return PairSet(
        first=everything[torch.from_numpy(i1)],
        second=everything[torch.from_numpy(i2)],
        zero_point=zp,
        zero_point_err=zp_err,
        ids=ids,
        bands=bands,
        images=image_names,
        source={
            "kind": "measurements",
            "tables": [label for _, label, _ in loaded],
            "images": sorted(names.values()),
            "n_pairs": len(pair_idx),
            "pairing": pairing,
            "max_pairs": max_pairs,
            "zero_points": None if zero_points is None else (
                "table" if isinstance(zero_points, Table) else str(zero_points)),
        },
    )


# =======================================================================================
# the frozen body and the trainable head


class _HeadInputs(NamedTuple):
    """What the head needs, computed once by the frozen body (rows of a batch)."""

    hidden: Tensor  # [N, H] input of model.head
    base: Tensor  # [N] optimal estimate / reference
    unit: Tensor  # [N] relative scale of the head's offsets
    reference: Tensor  # [N] reference flux (image units)
    truncated: Tensor  # [N] bool

    def take(self, index) -> _HeadInputs:
        return _HeadInputs(*(t[index] for t in self))

    @staticmethod
    def concat(parts: list[_HeadInputs]) -> _HeadInputs:
        return _HeadInputs(*(torch.cat(ts) for ts in zip(*parts, strict=True)))


@torch.no_grad()
def _head_inputs(model: LumosNet, batch: StampBatch, chunk_size: int = 1024) -> _HeadInputs:
    """Run the frozen body and keep the head's input (the model must be in eval mode)."""
    captured: list[Tensor] = []
    hook = model.head.register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].detach()))
    parts = []
    dev = next(model.parameters()).device
    try:
        for i in range(0, max(len(batch), 1), chunk_size):
            part = batch[i : i + chunk_size].to(dev)
            captured.clear()
            raw = model.forward_raw(part)
            pre = model.preprocess(part)
            parts.append(_HeadInputs(captured[0], pre.base, pre.unit, raw.reference,
                                     raw.truncated))
    finally:
        hook.remove()
    return _HeadInputs.concat(parts)


def _raw_from_head(model: LumosNet, inputs: _HeadInputs) -> RawOutput:
    """The mixture parameters from cached head inputs (the last lines of forward_raw)."""
    log_weights, means, sigmas = model.mixture_head(inputs.hidden, inputs.base, inputs.unit)
    return RawOutput(log_weights, means, sigmas, inputs.reference, inputs.truncated)


def _check_head_replay(model: LumosNet, batch: StampBatch) -> None:
    """Fail loudly if the cached-head shortcut no longer matches ``forward_raw``."""
    with torch.no_grad():
        want = model.forward_raw(batch)
        got = _raw_from_head(model, _head_inputs(model, batch))
    for name in ("log_weights", "means", "sigmas"):
        a, b = getattr(want, name), getattr(got, name)
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                f"transfer: replaying the network head does not reproduce forward_raw "
                f"({name} differs); lumos.network changed, update lumos.transfer"
            )


def _flux_mixture(raw: RawOutput, factor: Tensor | None = None) -> GaussianMixture:
    """Mixture in flux units (times ``factor``) from raw output."""
    mix = GaussianMixture(raw.log_weights, raw.means, raw.sigmas, truncated=raw.truncated)
    scale = raw.reference if factor is None else raw.reference * factor.to(raw.reference)
    return mix.scale(scale)


def _pair_losses(raw1: RawOutput, raw2: RawOutput, zp: Tensor, zp_err: Tensor,
                 width: Tensor | None = None) -> Tensor:
    """Per-pair loss, in units of log(relative flux): flux-space pair_nll + log R."""
    zp, zp_err = zp.to(raw1.means), zp_err.to(raw1.means)  # dtype and device
    norm = torch.sqrt(raw1.reference * zp[:, 0] * raw2.reference * zp[:, 1]).detach()
    m1 = _flux_mixture(raw1).calibrate(zp[:, 0], zp_err[:, 0]).scale(1.0 / norm)
    m2 = _flux_mixture(raw2).calibrate(zp[:, 1], zp_err[:, 1]).scale(1.0 / norm)
    return pair_nll(m1, m2, raw1.truncated | raw2.truncated, width)


def _pair_widths(reference: DReference | None, pairs: PairSet, device) -> Tensor | None:
    """Training-domain width of D for each pair (None without a reference)."""
    if reference is None:
        return None
    w = reference(pairs.first.i_mag.double().cpu().numpy())
    return torch.as_tensor(w, dtype=torch.float64, device=device)


def _supervised_losses(raw: RawOutput, truth: Tensor) -> Tensor:
    """The training loss per row: NLL of truth / reference (as :mod:`lumos.training`)."""
    target = truth.to(raw.means.dtype) / raw.reference
    target = torch.where(raw.truncated, target.clamp_min(0.0), target)
    mix = GaussianMixture(raw.log_weights, raw.means, raw.sigmas, truncated=raw.truncated)
    return mixture_nll(mix, target, raw.truncated)


def _finite_mean(values: Tensor) -> Tensor:
    good = torch.isfinite(values)
    if not bool(good.any()):
        return torch.zeros((), dtype=values.dtype, device=values.device, requires_grad=True)
    return values[good].mean()


# =======================================================================================
# the consistency metric


#: Default i-band magnitude bins of :func:`d_reference`.
D_REFERENCE_EDGES = (17.0, 18.5, 19.5, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0)


@dataclass(frozen=True)
class DReference:
    """Width of ``D`` (Eq. 19) that a calibrated model shows on pairs of its training domain.

    ``D`` is N(0, 1) only when the two flux errors are independent and Gaussian. The two
    observations of a galaxy share information that is not in the pixels of either: the
    catalogue magnitude (an input; at the faint end it carries most of the information, so
    both PDFs lean on the same prior), the catalogue profile parameters, neighbours fixed on
    the sky, and the truncation at zero flux. All of these make ``D`` narrower than N(0, 1)
    for a model that is calibrated against the truth. The width measured on simulated pairs
    of the training domain (where the model is known to be calibrated) is the value a
    calibrated model should reproduce in a new domain; ``D / width(i)`` is then ~1 wide
    whatever the magnitude and whether or not the PDFs are truncated.

    Attributes
    ----------
    edges : tuple of float
        i-band magnitude bin edges (B + 1).
    width : tuple of float
        sigma68 of D in each bin (B).
    n_pairs : tuple of int
        Pairs behind each width.
    """

    edges: tuple[float, ...]
    width: tuple[float, ...]
    n_pairs: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.edges) != len(self.width) + 1 or len(self.width) != len(self.n_pairs):
            raise ValueError("DReference needs B + 1 edges, B widths and B pair counts")
        if not all(np.isfinite(self.width)) or min(self.width, default=1.0) <= 0:
            raise ValueError(f"DReference widths must be finite and positive: {self.width}")

    def __call__(self, i_mag) -> np.ndarray:
        """Reference width for each i-band magnitude (the nearest bin outside the range)."""
        i_mag = np.asarray(i_mag, dtype=float)
        index = np.clip(np.searchsorted(self.edges, i_mag, side="right") - 1, 0,
                        len(self.width) - 1)  # fmt: skip
        return np.asarray(self.width)[index]

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form."""
        return {"edges": list(self.edges), "width": list(self.width),
                "n_pairs": list(self.n_pairs)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence]) -> DReference:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(float(v) for v in data["edges"]), tuple(float(v) for v in data["width"]),
                   tuple(int(v) for v in data["n_pairs"]))  # fmt: skip


def _d_statistic(m1: GaussianMixture, m2: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """D of Eq. 19 from the mixtures' means and standard deviations, and the truncated rows."""
    f1, f2 = m1.mean().double(), m2.mean().double()
    s1, s2 = m1.std().double(), m2.std().double()
    d = pair_pull(f1.cpu().numpy(), s1.cpu().numpy(), f2.cpu().numpy(), s2.cpu().numpy())
    trunc = torch.zeros(len(d), dtype=torch.bool)
    for m in (m1, m2):
        if m.truncated is not None:
            trunc = trunc | m.truncated.cpu()
    return d, trunc.numpy()


def _calibrated_mixtures(model, pairs: PairSet, chunk_size: int):
    m1 = model.predict(pairs.first, chunk_size).calibrate(pairs.zero_point[:, 0],
                                                          pairs.zero_point_err[:, 0])
    m2 = model.predict(pairs.second, chunk_size).calibrate(pairs.zero_point[:, 1],
                                                           pairs.zero_point_err[:, 1])
    return m1, m2


@torch.no_grad()
def d_reference(model, pairs: PairSet, edges: Sequence[float] = D_REFERENCE_EDGES,
                chunk_size: int = 2048, min_pairs: int = 20) -> DReference:
    """Measure :class:`DReference`: the width of D by i magnitude on training-domain pairs.

    Parameters
    ----------
    model : LumosNet
        A model calibrated on the domain of ``pairs`` (typically the model before transfer
        and pairs from :func:`simulate_pairs` with the training simulation settings).
    pairs : PairSet
        Pairs of the training domain (not the held-out pairs being judged).
    edges : sequence of float
        i-band magnitude bin edges.
    chunk_size : int
        Rows per forward pass.
    min_pairs : int
        Bins with fewer pairs take the width of the nearest well-populated bin.

    Returns
    -------
    DReference
    """
    edges = tuple(float(e) for e in edges)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=False)):
        raise ValueError(f"edges must increase and have at least two values, got {edges}")
    m1, m2 = _calibrated_mixtures(model, pairs, chunk_size)
    d, _ = _d_statistic(m1, m2)
    i_mag = pairs.first.i_mag.double().cpu().numpy()
    ok = np.isfinite(d)
    width, count = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = ok & (i_mag >= lo) & (i_mag < hi)
        count.append(int(sel.sum()))
        width.append(sigma68(d[sel]) if sel.sum() >= min_pairs else float("nan"))
    width_arr = np.asarray(width)
    good = np.flatnonzero(np.isfinite(width_arr) & (width_arr > 0))
    if good.size == 0:
        raise ValueError(f"d_reference: no magnitude bin has {min_pairs} pairs with a finite D")
    for b in np.flatnonzero(~np.isin(np.arange(len(width)), good)):
        width_arr[b] = width_arr[good[np.argmin(np.abs(good - b))]]
    return DReference(edges, tuple(float(w) for w in width_arr), tuple(count))


def _consistency(m1: GaussianMixture, m2: GaussianMixture, truth: Tensor | None,
                 zp: Tensor, i_mag: Tensor | None = None,
                 reference: DReference | None = None) -> dict[str, float]:
    d, trunc = _d_statistic(m1, m2)
    f1, f2 = m1.mean().double(), m2.mean().double()
    ok = np.isfinite(d)
    out = {
        "n_pairs": int(ok.sum()),
        "sigma68_D": sigma68(d[ok]),
        "median_D": float(np.median(d[ok])) if ok.any() else float("nan"),
        "mean_abs_D": float(np.mean(np.abs(d[ok]))) if ok.any() else float("nan"),
    }
    for name, sel in (("untruncated", ok & ~trunc), ("truncated", ok & trunc)):
        out[f"n_pairs_{name}"] = int(sel.sum())
        out[f"sigma68_D_{name}"] = sigma68(d[sel])
        out[f"median_D_{name}"] = float(np.median(d[sel])) if sel.any() else float("nan")
    if reference is not None and i_mag is not None:
        d_ref = d / reference(i_mag.double().cpu().numpy())
        out["sigma68_Dref"] = sigma68(d_ref[ok])
        for name, sel in (("untruncated", ok & ~trunc), ("truncated", ok & trunc)):
            out[f"sigma68_Dref_{name}"] = sigma68(d_ref[sel])
    if truth is not None:
        true1 = (truth.double().cpu() * zp[:, 0].double().cpu()).numpy()
        true2 = (truth.double().cpu() * zp[:, 1].double().cpu()).numpy()
        rel = np.concatenate([(f1.cpu().numpy() - true1) / true1,
                              (f2.cpu().numpy() - true2) / true2])
        good = np.isfinite(rel) & (np.concatenate([true1, true2]) > 0)
        out["bias"] = float(np.median(rel[good])) if good.any() else float("nan")
        out["sigma68_rel"] = sigma68(rel[good])
    return out


@torch.no_grad()
def pair_consistency(model, pairs: PairSet, chunk_size: int = 2048,
                     reference: DReference | None = None) -> dict[str, float]:
    """Agreement of a model's flux PDFs between the two observations of every pair.

    With ``f`` the mixture mean and ``s`` its standard deviation (after the zero-point
    calibration), ``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` (paper Eq. 19) is N(0, 1) for
    calibrated, unbiased Gaussian-like PDFs with independent errors. What the two
    observations share (the catalogue magnitude the network uses as a prior, the
    catalogue profile, neighbours, the truncation at zero for faint galaxies) makes D
    narrower than that even for a calibrated model; give a :class:`DReference` measured on
    training-domain pairs (:func:`d_reference`) to also get ``D / width(i)``, whose width
    is 1 for a model as well calibrated as in its training domain.

    Parameters
    ----------
    model : LumosNet
        Anything with ``predict(batch) -> GaussianMixture`` (flux units of the stamps).
    pairs : PairSet
    chunk_size : int
        Rows per forward pass.
    reference : DReference, optional
        Training-domain widths of D by magnitude.

    Returns
    -------
    dict
        ``n_pairs`` (pairs with a finite D), ``sigma68_D`` (:func:`lumos.stats.sigma68`
        of D), ``median_D``, ``mean_abs_D``; ``n_pairs_*``, ``sigma68_D_*`` and
        ``median_D_*`` for the ``untruncated`` and ``truncated`` (i > the model's
        ``truncate_threshold``) pairs separately; with ``reference`` also ``sigma68_Dref``,
        ``sigma68_Dref_untruncated`` and ``sigma68_Dref_truncated`` (widths of
        ``D / width(i)``); for simulated pairs (with truth) also ``bias`` (median of
        (f - f_true) / f_true over both observations) and ``sigma68_rel`` (its sigma68).
    """
    if len(pairs) == 0:
        raise ValueError("pair_consistency needs at least one pair")
    m1, m2 = _calibrated_mixtures(model, pairs, chunk_size)
    return _consistency(m1, m2, pairs.truth, pairs.zero_point, pairs.first.i_mag, reference)


# =======================================================================================
# transfer


@dataclass
class TransferConfig:
    """Settings of :func:`transfer`.

    Parameters
    ----------
    n_epochs : int
        Epochs (passes over the training pairs); a resumed run continues up to this number.
    batch_size : int
        Pairs per optimiser step.
    sim_batch_size : int or None
        Simulated stamps per step for the supervised term (None: ``batch_size``).
    sim_pool : int or None
        None (default): a fresh simulated batch every step, drawn from the stream factory
        with a per-epoch seed (as in training). An integer: draw that many simulated
        stamps once and cycle through them (much faster; the head input of every stamp
        is cached).
    learning_rate : float
        Adam learning rate at the start (paper: 1e-5).
    lr_decay : float
        Factor applied every ``lr_step_epochs`` epochs (paper: 0.1).
    lr_step_epochs : int
        Epochs between decays (paper: 50).
    pair_weight, sim_weight : float
        Weights of the pair and supervised terms (equal by default).
    holdout_fraction : float
        Fraction of the pairs (grouped by galaxy) held out to report
        :func:`pair_consistency` after every epoch.
    max_grad_norm : float or None
        Gradient-norm clipping (None: none).
    augment : bool
        Random flips / 90-degree rotations of the simulated stamps.
    seed : int
        Base seed (pair order, simulated streams, hold-out choice).
    keep_checkpoints : int
        Most recent epoch checkpoints kept.
    max_time_s : float or None
        Stop at the end of the first epoch after this many seconds of this call.
    num_threads : int or None
        Torch CPU threads (None: leave torch's setting alone).
    """

    n_epochs: int = 100
    batch_size: int = 256
    sim_batch_size: int | None = None
    sim_pool: int | None = None
    learning_rate: float = 1e-5
    lr_decay: float = 0.1
    lr_step_epochs: int = 50
    pair_weight: float = 1.0
    sim_weight: float = 1.0
    holdout_fraction: float = 0.2
    max_grad_norm: float | None = 10.0
    augment: bool = True
    seed: int = 1
    keep_checkpoints: int = 2
    max_time_s: float | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_epochs", "batch_size", "lr_step_epochs", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TransferConfig.{name} must be a positive integer, got {value!r}")
        for name in ("sim_batch_size", "sim_pool"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"TransferConfig.{name} must be a positive integer or None")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not (self.pair_weight >= 0 and self.sim_weight >= 0
                and self.pair_weight + self.sim_weight > 0):
            raise ValueError("pair_weight and sim_weight must be >= 0 and not both 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown transfer configuration keys: {', '.join(unknown)}")
        return cls(**data)


def _frozen_digest(model: LumosNet) -> str:
    """SHA-256 of every parameter and buffer except the head (the frozen body)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not name.startswith("head."):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _SimSource:
    """Supervised batches: fresh per step (per-epoch seeded) or a cached pool."""

    def __init__(self, factory, model: LumosNet, config: TransferConfig) -> None:
        if not callable(factory):
            raise ValueError("sim_stream_factory must be a callable factory(seed, batch_size)")
        self.factory = factory
        self.model = model
        self.config = config
        self.batch_size = int(config.sim_batch_size or config.batch_size)
        self.pool: tuple[_HeadInputs, Tensor] | None = None
        self.iterator: Iterator[StampBatch] | None = None
        self.generator: torch.Generator | None = None

    def _prepare(self, batch: StampBatch, generator: torch.Generator) -> StampBatch:
        if batch.truth is None:
            raise ValueError("the simulated stream must give batches with truth")
        return augment_batch(batch, generator) if self.config.augment else batch

    def start_epoch(self, epoch: int) -> None:
        seed = self.config.seed
        if self.config.sim_pool is not None:
            if self.pool is None:
                gen = torch.Generator().manual_seed(derive_seed(seed, 0x504F4F4C, 1))
                stream = iter(self.factory(derive_seed(seed, 0x504F4F4C, 0), self.batch_size))
                parts, truths, have = [], [], 0
                while have < self.config.sim_pool:
                    batch = self._prepare(next(stream), gen)
                    parts.append(_head_inputs(self.model, batch))
                    truths.append(batch.truth)
                    have += len(batch)
                inputs = _HeadInputs.concat(parts).take(slice(0, self.config.sim_pool))
                self.pool = (inputs, torch.cat(truths)[: self.config.sim_pool])
            return
        self.iterator = iter(self.factory(derive_seed(seed, 0, epoch, 0), self.batch_size))
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0, epoch, 1))

    def next(self, global_step: int) -> tuple[_HeadInputs, Tensor]:
        if self.pool is not None:
            inputs, truth = self.pool
            n = len(truth)
            start = (global_step * self.batch_size) % n
            idx = torch.arange(start, start + self.batch_size) % n
            return inputs.take(idx), truth[idx]
        try:
            batch = self._prepare(next(self.iterator), self.generator)
        except StopIteration:
            raise ValueError("the simulated stream ended; give an infinite stream factory") \
                from None
        return _head_inputs(self.model, batch), batch.truth


def _holdout_metrics(model: LumosNet, held: _HeadInputs, held2: _HeadInputs,
                     pairs: PairSet, reference: DReference | None = None) -> dict[str, float]:
    with torch.no_grad():
        raw1, raw2 = _raw_from_head(model, held), _raw_from_head(model, held2)
        loss = _finite_mean(_pair_losses(raw1, raw2, pairs.zero_point, pairs.zero_point_err,
                                         _pair_widths(reference, pairs, raw1.means.device)))
        m1 = _flux_mixture(raw1).calibrate(pairs.zero_point[:, 0], pairs.zero_point_err[:, 0])
        m2 = _flux_mixture(raw2).calibrate(pairs.zero_point[:, 1], pairs.zero_point_err[:, 1])
        metrics = _consistency(m1, m2, pairs.truth, pairs.zero_point, pairs.first.i_mag,
                               reference)  # fmt: skip
    return {"val_pair_loss": float(loss), **{f"val_{k}": v for k, v in metrics.items()}}


def transfer(
    model: LumosNet,
    pairs: PairSet,
    sim_stream_factory: Callable[[int, int], Iterator[StampBatch]],
    config: TransferConfig | None = None,
    checkpoint_dir: str | os.PathLike = "transfer-checkpoints",
    progress: bool = True,
    resume: bool = True,
    out: str | os.PathLike | None = None,
    reference: DReference | None = None,
) -> tuple[LumosNet, list[dict[str, Any]]]:
    """Fine-tune the last layer of a model on pairs of observations (unsupervised).

    Parameters
    ----------
    model : LumosNet
        The model trained on simulations; its head is trained in place, everything else
        stays bit-identical.
    pairs : PairSet
        Pairs of observations; ``config.holdout_fraction`` of them (grouped by galaxy) are
        held out for the per-epoch metric.
    sim_stream_factory : callable
        ``factory(seed, batch_size)`` -> iterator of simulated StampBatch with truth
        (e.g. :func:`lumos.training.simulator_stream`), for the supervised term.
    config : TransferConfig, optional
        Settings (default: Adam 1e-5, /10 every 50 epochs, 100 epochs).
    checkpoint_dir : str or path-like
        Folder of the per-epoch checkpoints and ``history.jsonl``.
    progress : bool
        Show a progress bar and one line per epoch.
    resume : bool
        Continue from the latest checkpoint in ``checkpoint_dir`` when there is one.
    out : str or path-like, optional
        Where to write the transferred model (:func:`lumos.model_io.save_model`);
        default ``checkpoint_dir / "transferred"``.
    reference : DReference, optional
        Training-domain widths of D (:func:`d_reference`). The pair loss then asks the two
        PDFs to agree as well as they do in the training domain, not as if the two
        observations shared nothing (Eq. 11 assumes independent errors; the catalogue
        magnitude and profile are shared), and the held-out metrics also include
        ``val_sigma68_Dref`` (1 when as calibrated as in the training domain).

    Returns
    -------
    (LumosNet, list of dict)
        The model (``eval()`` mode, with ``metadata["transfer"]``) and the history: one
        entry per epoch with ``epoch, step, lr, loss, pair_loss, sim_loss,
        val_pair_loss, val_sigma68_D, val_median_D, ...`` (``val_bias``,
        ``val_sigma68_rel`` for simulated pairs). Entry 0 (epoch 0) is the model before
        transfer.
    """
    from tqdm.auto import tqdm

    from .model_io import save_model
    from .training import configure_threads, latest_checkpoint

    config = TransferConfig() if config is None else config
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise ValueError("transfer needs a LumosNet whose last layer `head` is nn.Linear")
    if len(pairs) < 1:
        raise ValueError("transfer needs at least one pair")
    if config.num_threads is not None:
        configure_threads(config.num_threads)
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    train_pairs, held_pairs = pairs.split(config.holdout_fraction, config.seed)
    if len(train_pairs) == 0:
        raise ValueError("no training pairs left after the hold-out split")
    dev = next(model.parameters()).device
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    head_params = list(model.head.parameters())
    try:
        _check_head_replay(model, train_pairs.first[: min(8, len(train_pairs))])
        frozen = _frozen_digest(model)
        optimizer = torch.optim.Adam(head_params, lr=config.learning_rate)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay)
        start_epoch, global_step, history = 0, 0, []
        fingerprint = pairs.fingerprint()
        ckpt = latest_checkpoint(directory) if resume else None
        if ckpt is not None:
            start_epoch, global_step, history = _resume(
                ckpt, model, optimizer, scheduler, frozen, fingerprint, config)

        # the frozen body, once: head inputs of every pair stamp
        h1 = _head_inputs(model, train_pairs.first)
        h2 = _head_inputs(model, train_pairs.second)
        held1 = held2 = None
        if len(held_pairs):
            held1 = _head_inputs(model, held_pairs.first)
            held2 = _head_inputs(model, held_pairs.second)
        sims = _SimSource(sim_stream_factory, model, config)
        zp_train = train_pairs.zero_point.to(dev)
        zp_err_train = train_pairs.zero_point_err.to(dev)
        width_train = _pair_widths(reference, train_pairs, dev)
        n_train = len(train_pairs)
        steps = math.ceil(n_train / config.batch_size)

        if not history:  # the starting point
            entry = {"epoch": 0, "step": 0, "lr": config.learning_rate}
            if held1 is not None:
                entry.update(_holdout_metrics(model, held1, held2, held_pairs, reference))
            history.append(entry)
            _append_history(directory, entry)

        bar = tqdm(total=config.n_epochs, initial=start_epoch, desc="transfer", unit="epoch",
                   disable=not progress, dynamic_ncols=True)
        for epoch in range(start_epoch, config.n_epochs):
            if config.max_time_s is not None and time.perf_counter() - t_start > config.max_time_s:
                break
            t_epoch = time.perf_counter()
            order = torch.randperm(
                n_train, generator=torch.Generator().manual_seed(
                    derive_seed(config.seed, 1, epoch, 0)))
            sims.start_epoch(epoch)
            sums = {"loss": 0.0, "pair_loss": 0.0, "sim_loss": 0.0}
            for step in range(steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss = torch.zeros((), device=dev)
                pair_loss = sim_loss = torch.zeros((), device=dev)
                if config.pair_weight > 0:
                    raw1 = _raw_from_head(model, h1.take(idx))
                    raw2 = _raw_from_head(model, h2.take(idx))
                    pair_loss = _finite_mean(_pair_losses(
                        raw1, raw2, zp_train[idx], zp_err_train[idx],
                        None if width_train is None else width_train[idx]))
                    loss = loss + config.pair_weight * pair_loss
                if config.sim_weight > 0:
                    inputs, truth = sims.next(global_step)
                    sim_loss = _finite_mean(_supervised_losses(_raw_from_head(model, inputs),
                                                               truth.to(dev)))
                    loss = loss + config.sim_weight * sim_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(head_params, config.max_grad_norm)
                optimizer.step()
                global_step += 1
                sums["loss"] += float(loss.detach())
                sums["pair_loss"] += float(pair_loss.detach())
                sums["sim_loss"] += float(sim_loss.detach())
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            entry = {"epoch": epoch + 1, "step": global_step, "lr": lr,
                     **{k: v / steps for k, v in sums.items()}}
            if held1 is not None:
                entry.update(_holdout_metrics(model, held1, held2, held_pairs, reference))
            entry["seconds"] = time.perf_counter() - t_epoch
            history.append(entry)
            _write_transfer_checkpoint(directory, epoch + 1, model, optimizer, scheduler, {
                "global_step": global_step,
                "history": history,
                "transfer_config": config.to_dict(),
                "frozen_sha256": frozen,
                "pairs_fingerprint": fingerprint,
            }, config.keep_checkpoints)
            _append_history(directory, entry)
            bar.update(1)
            if progress:
                tqdm.write(_epoch_line(entry, config.n_epochs))
        bar.close()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])
    model.eval()
    model.metadata = _transfer_metadata(model, pairs, train_pairs, held_pairs, config, history)
    save_model(model, directory / "transferred" if out is None else out,
               training=model.metadata)
    return model, history


def _epoch_line(entry: dict[str, Any], n_epochs: int) -> str:
    line = (f"epoch {entry['epoch']}/{n_epochs} loss {entry.get('loss', float('nan')):.4f} "
            f"(pairs {entry.get('pair_loss', float('nan')):.4f}, "
            f"sim {entry.get('sim_loss', float('nan')):.4f})")
    if "val_sigma68_D" in entry:
        line += (f" held-out sigma68(D) {entry['val_sigma68_D']:.3f} (untruncated "
                 f"{entry['val_sigma68_D_untruncated']:.3f}) median(D) "
                 f"{entry['val_median_D']:+.3f}")
    if "val_bias" in entry:
        line += f" bias {entry['val_bias']:+.4f}"
    return line + f" lr {entry['lr']:.1e}"


def _append_history(directory: Path, entry: dict[str, Any]) -> None:
    with open(directory / "history.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _write_transfer_checkpoint(directory: Path, epoch: int, model: LumosNet, optimizer,
                               scheduler, state: dict[str, Any], keep: int) -> None:
    from .training import _write_checkpoint

    _write_checkpoint(directory, epoch, model, None, optimizer, scheduler, state, keep)


def _resume(ckpt: Path, model: LumosNet, optimizer, scheduler, frozen: str, fingerprint: str,
            config: TransferConfig) -> tuple[int, int, list[dict[str, Any]]]:
    from .training import _optimizer_from_flat, _read_checkpoint

    meta, tensors = _read_checkpoint(ckpt)
    if "transfer_config" not in meta:
        raise ValueError(f"{ckpt.parent} holds training checkpoints, not transfer ones; "
                         "use another checkpoint folder")
    if meta.get("frozen_sha256") != frozen:
        raise ValueError(f"{ckpt}: written for a different starting model; use another "
                         "checkpoint folder or resume=False")
    if meta.get("pairs_fingerprint") != fingerprint:
        _log.warning("resuming %s with different pairs than the checkpoint's", ckpt.name)
    volatile = {"n_epochs", "max_time_s", "num_threads", "keep_checkpoints"}
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in volatile and meta["transfer_config"].get(k) != v)
    if changed:
        _log.warning("resuming with changed transfer settings (%s)", ", ".join(changed))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            p.copy_(state[f"head.{name}"])
    _optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    scheduler.load_state_dict(meta["scheduler"])
    _log.info("resumed transfer from %s", ckpt.name)
    return int(meta["epoch"]), int(meta["global_step"]), list(meta.get("history", []))


def _transfer_metadata(model: LumosNet, pairs: PairSet, train_pairs: PairSet,
                       held_pairs: PairSet, config: TransferConfig,
                       history: list[dict[str, Any]]) -> dict[str, Any]:
    before = dict(getattr(model, "metadata", {}) or {})
    before.pop("transfer", None)
    return {
        **before,
        "transfer": {
            "method": "lumos.transfer.transfer (pair loss + supervised simulations, "
                      "last layer only)",
            "lumos_version": __version__,
            "pairs": pairs.source,
            "n_pairs": len(pairs),
            "n_train_pairs": len(train_pairs),
            "n_holdout_pairs": len(held_pairs),
            "pairs_fingerprint": pairs.fingerprint(),
            "config": config.to_dict(),
            "epochs": history[-1]["epoch"] if history else 0,
            "before": history[0] if history else {},
            "after": history[-1] if history else {},
        },
    }

