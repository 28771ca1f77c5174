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

A likelihood model's training draws the flux independently of the galaxy
(``SimulationConfig.flux_prior``), down to zero and below: a negative flux subtracts the
galaxy's expected light after the shot noise of the other sources (a stamp whose pixels
carry less light than the sky, as noise makes them at zero flux).

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
(``CatalogueErrors.realistic()``) and, with ``position_sigma``, to the position (the profile
channel and the stamp's recorded offset then sit where the catalogue says, the light at the
truth), off by default so that the network learns the flux, not the catalogue's mistakes,
unless asked to.

Everything is vectorised over stamps and rendered in chunks; the same seed gives identical
batches. The pieces live in their own modules: the settings in :mod:`lumos.simconfig`, the
galaxies, neighbours and stars in :mod:`lumos.scene`, the exposure (PSF, offsets, noise,
background, stamp assembly) in :mod:`lumos.observe`, the file format in :mod:`lumos.simfile`;
this module's :class:`Simulator` draws them in one fixed order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import observe
from .observe import (
    Exposure,
    SimulationExtras,
    default_background,
    draw_pointing,
    expose,
    profile_flags,
    stamp_batch,
    sum_by_host,
)
from .scene import Scene, SimulatedBands, draw_neighbours, fitted_bulge_disks, galaxy_components
from .simconfig import (
    CatalogueErrors,
    SimulationConfig,
    apply_catalogue_errors,
    catalogued_offset,
    draw_training_flux,
)
from .simfile import (
    HDF5_FORMAT,
    HDF5_VERSION,
    ChunkJob,
    read_attrs,
    read_extras,
    read_hdf5,
    write_chunks,
    write_hdf5,
)
from .sky.flat import FlatSky
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
        self._renderer_factory = renderer_factory or observe.default_renderer
        self._psf_factory = psf_factory or observe.moffat_psf
        self._renderers: dict[int, Any] = {}
        self.rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        self.bands = SimulatedBands(self.config.bands, self.config.reference_band)

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
            "truth_scale": np.empty(n, dtype=np.float32),
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

        # the central galaxies and their exposures
        gal = self.bands.galaxies(m, rng, cfg.population)
        band, state = self.bands.draw(m, cfg.camera_state_prob, rng)
        exptime = self.bands.exposure_time(band)
        ccd_xy, fwhm, beta, offset = draw_pointing(m, cfg, rng,
                                                   getattr(self._psf_factory, "draw", None))
        exposure = Exposure(band=band, camera_state=state,
                            band_idx=self.bands.band_index(band, state), exposure_time=exptime,
                            ccd_xy=ccd_xy, psf_fwhm=fwhm, psf_beta=beta, offset=offset)
        truth, truth_scale = draw_training_flux(cfg, gal.flux_e_per_s[np.arange(m), band],
                                                exptime, rng)  # fmt: skip

        # neighbours (a close one for some stamps, random ones everywhere) and the catalogue
        nb = draw_neighbours(cfg, m, size, self.bands, rng)
        gal, fitted = fitted_bulge_disks(cfg, gal, rng)
        cat = self._catalogue(gal, fwhm, rng)
        scene = Scene(gal, nb, cat, galaxy_components(cfg, gal, rng, fitted))
        components = scene.components
        images = self._render(size, scene, exposure, components)
        return self._finish(m, size, scene, exposure, truth, truth_scale, components, images,
                            rng, out, with_extras)

    def _render(self, size: int, scene: Scene, exposure: Exposure, components: dict):
        """One renderer call for everything: the central galaxies (their components), the
        neighbours and, when it differs from the truth, the catalogue profile."""
        gal, nb, cat = scene.galaxies, scene.neighbours, scene.catalogue
        m, host = len(gal), nb.host
        fwhm, beta, offset = exposure.psf_fwhm, exposure.psf_beta, exposure.offset
        c = components
        two = c.two
        nb_flux = nb.flux(exposure.band, exposure.exposure_time)
        r50 = [c.r50, nb.r50, c.bulge_r50]
        sersic = [c.n, nb.n, np.full(c.n_two, 4.0)]
        q = [c.q, nb.q, c.bulge_q]
        pa = [c.pa, nb.pa, c.bulge_pa]
        pos = [offset, nb.canvas_position(offset), offset[two]]
        flux = [c.flux, nb_flux, c.bulge_flux]
        psf_f = [fwhm, fwhm[host], fwhm[two]]
        psf_b = [beta, beta[host], beta[two]]
        if self._render_catalogue(components):
            r50.append(cat["r50"])
            sersic.append(cat["n"])
            q.append(cat["q"])
            pa.append(cat["pa"])
            pos.append(catalogued_offset(offset, cat))
            flux.append(np.ones(m))
            psf_f.append(cat["psf_fwhm"])
            psf_b.append(beta)
        return observe.render(
            self._renderer(size), self._psf_factory,
            *(np.concatenate(a) for a in (r50, sersic, q, pa, pos, flux, psf_f, psf_b)),
        )

    def _finish(self, m, size, scene, exposure, truth, truth_scale, components, images, rng,
                out, with_extras):
        """Noise, background and the stamps (and the extras) from the rendered images."""
        cfg = self.config
        s = cfg.stamp_size
        gal, nb, cat = scene.galaxies, scene.neighbours, scene.catalogue
        k, host, two, n_two = len(nb), nb.host, components.two, components.n_two
        render_cat = self._render_catalogue(components)
        profile_true = images[:m]
        profile_true[two] += images[m + k : m + k + n_two]
        neighbours = sum_by_host(images[m : m + k], host, m)
        profile_cat = images[m + k + n_two :] if render_cat else profile_true

        # noise and background; a negative flux removes its light after the shot noise
        galaxy = profile_true * truth.astype(np.float32)[:, None, None]
        negative = truth < 0
        light = galaxy + neighbours
        if negative.any():
            light[negative] -= galaxy[negative]
        sources, bg = expose(light, cfg.shot_noise, self.background, exposure, rng)
        if negative.any():
            sources[negative] += galaxy[negative]

        flags = profile_flags(cat["r50"], cat["n"], cat["q"])
        lo = (size - s) // 2
        crop = (slice(None), slice(lo, lo + s), slice(lo, lo + s))
        small = {
            "i_mag": cat["i_mag"],
            "ccd_xy": exposure.ccd_xy,
            "band_idx": exposure.band_idx,
            "flags": flags,
            "offset": catalogued_offset(exposure.offset, cat),
            "truth": truth,
            "truth_scale": truth_scale,
        }
        if out is None:
            pixels = np.asarray(bg.pixels, dtype=np.float32)[crop] + sources[crop]
            batch = stamp_batch(pixels, profile_cat[crop], **small)
        else:
            np.add(np.asarray(bg.pixels, dtype=np.float32)[crop], sources[crop],
                   out=out["pixels"])  # fmt: skip
            out["profile"][...] = profile_cat[crop]
            for name, value in small.items():
                out[name][...] = value
            batch = None
        if not with_extras:
            return batch, None
        pixels = np.asarray(bg.pixels, dtype=np.float32) + sources

        nb_pos = nb.canvas_position(exposure.offset)
        dxy = nb_pos - exposure.offset[host]
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
            psf_fwhm=exposure.psf_fwhm,
            psf_beta=exposure.psf_beta,
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
            band=exposure.band,
            camera_state=exposure.camera_state,
            exposure_time=exposure.exposure_time,
        )
        return batch, extras

    def _render_catalogue(self, components) -> bool:
        """The catalogue profile differs from the true one and is drawn separately."""
        return self.config.catalogue_errors.enabled or components.n_two > 0

    def _catalogue(self, gal, fwhm: np.ndarray, rng: np.random.Generator) -> dict:
        """Catalogue parameters: the truth, or the truth with errors."""
        return apply_catalogue_errors(self.config.catalogue_errors, gal.r50, gal.n, gal.q,
                                      gal.pa, gal.i_mag, fwhm, rng)  # fmt: skip


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
    make = functools.partial(Simulator, cfg, seed=int(seed), background=background,
                             psf_factory=psf_factory)  # fmt: skip
    return write_chunks(out, int(n), sizes, ChunkJob(make, context_size), attrs,
                        workers=workers, compression=compression, progress=progress)
