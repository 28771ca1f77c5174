"""A synthetic PAUCam-like background: sky, scattered light, noise and detector artefacts.

Model (all numbers are constructor parameters):

* **Sky level.** A flat sky rate rising towards the red as a power law of the band's
  central wavelength, ``rate = sky_rate_685 * (wavelength / 6850 A) ** sky_slope``
  e-/s/pixel (default 2.0 e-/s/pixel at NB685 and slope 2: 0.88 e-/s at NB455,
  3.0 e-/s at NB845), times the exposure time: ~180 e-/pixel for NB685 in 90 s, ~60 for
  NB455 in 70 s, ~400 for NB845 in 130 s. An optional per-stamp log-normal scatter
  (``sky_scatter``, default 0) mimics changing sky brightness between exposures.
* **Scattered light.** The sky is multiplied by ``1 + P(x, y)`` where ``P`` is a smooth
  pattern across the 4096 x 2048 CCD: an exponential fall-off from each of the four edges
  and each corner, a weak linear gradient and a broad bump. Each camera state (before /
  after the intervention) has its own geometry; each band modulates the amplitudes
  (log-normal, 0.35) and the scale lengths (log-normal, 0.2) of its state's pattern.
  The parameters are drawn once from ``pattern_seed``, so the pattern of a band is fixed
  for a given seed. With the default seed: 8-27 % of the sky on average along the edges,
  a maximum (in a corner) of 23-77 %, 1-9 % in the centre. The pattern is evaluated at
  every pixel of a stamp, so a stamp near an edge carries the real gradient. The pattern
  is :class:`~lumos.sky.scattered.ScatteredLight` (re-exported here).
* **Noise.** Gaussian with variance ``signal + read_noise**2`` (the Gaussian limit of the
  Poisson noise); stamps whose smooth background falls below ``poisson_below`` electrons
  anywhere get exact Poisson draws plus Gaussian read noise.
* **Artefacts** (:mod:`lumos.sky.artefacts`), defaults: cosmic rays, 2 events per 10^4
  pixels in 90 s (proportional to the exposure time), 30 % tracks of 3-30 pixels and
  70 % hits of 1-3 pixels, 300-5000 e- per pixel of path; hot pixels, a fraction 2e-5
  with 5-500 e-/s; 3 hot / dead columns per CCD; 2 saturated stars per CCD (Moffat,
  FWHM 0.6-1.3 arcsec, peak 1-100 x the 65535 e- full well) with flat saturated cores and
  bleed trails along the columns. Injected artefacts are reported per stamp in
  ``artefacts`` (:class:`~lumos.sky.base.Artefact`).

``sky_model`` is the smooth ``sky x (1 + P)``; ``sky_sigma`` is
``sqrt(mean(sky_model) + read_noise**2)`` per stamp.
"""

from __future__ import annotations

import numpy as np
import torch

from lumos.bands import N_BAND_INDEX, N_PAUS_BANDS, PAUS_BANDS
from lumos.instrument import CCD_HEIGHT, CCD_WIDTH, PIXEL_SCALE
from lumos.sky.artefacts import (
    add_bad_columns,
    add_cosmic_rays,
    add_hot_pixels,
    add_saturated_stars,
    saturate_stars,
)
from lumos.sky.base import (
    BackgroundSample,
    BackgroundSource,
    check_request,
    core_slice,
)
from lumos.sky.scattered import ScatteredLight

__all__ = ["SyntheticSky", "ScatteredLight"]

_CHUNK = 1 << 18  # pixels per chunk of the noise / pattern loops (fits in cache)

class SyntheticSky(BackgroundSource):
    """Synthetic PAUCam-like background (see the module docstring for the model).

    Parameters
    ----------
    sky_rate_685 : float
        Flat sky at NB685, e-/s/pixel.
    sky_slope : float
        Power-law index of the sky rate with wavelength.
    sky_scatter : float
        Per-stamp log-normal scatter of the sky level (0 = none).
    read_noise : float
        Read noise, electrons.
    cosmic_rate : float
        Cosmic-ray events per 10^4 pixels in a 90 s exposure (scales with exposure time).
    cosmic_track_fraction : float
        Fraction of cosmic rays that are tracks (the others are 1-3 pixel hits).
    cosmic_track_length : (float, float)
        Range of track lengths, pixels.
    cosmic_charge : (float, float)
        Range of the cosmic-ray charge per pixel of path, electrons.
    hot_pixel_fraction : float
        Fraction of hot pixels.
    hot_pixel_rate : (float, float)
        Range of hot-pixel dark currents, e-/s.
    bad_columns_per_ccd : float
        Mean number of hot or dead columns per CCD.
    saturated_stars_per_ccd : float
        Mean number of saturated stars per CCD.
    saturation : float
        Full-well / saturation level, electrons.
    star_fwhm : (float, float)
        Range of the PSF FWHM of saturated stars, arcsec.
    star_beta : (float, float)
        Range of the Moffat beta of saturated stars.
    poisson_below : float
        Stamps whose smooth background drops below this level (electrons) get exact
        Poisson noise instead of the Gaussian approximation.
    pattern_seed : int
        Seed of the scattered-light pattern parameters.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    def __init__(
        self,
        *,
        sky_rate_685: float = 2.0,
        sky_slope: float = 2.0,
        sky_scatter: float = 0.0,
        read_noise: float = 5.0,
        cosmic_rate: float = 2.0,
        cosmic_track_fraction: float = 0.3,
        cosmic_track_length: tuple[float, float] = (3.0, 30.0),
        cosmic_charge: tuple[float, float] = (300.0, 5000.0),
        hot_pixel_fraction: float = 2e-5,
        hot_pixel_rate: tuple[float, float] = (5.0, 500.0),
        bad_columns_per_ccd: float = 3.0,
        saturated_stars_per_ccd: float = 2.0,
        saturation: float = 65535.0,
        star_fwhm: tuple[float, float] = (0.6, 1.3),
        star_beta: tuple[float, float] = (2.5, 5.0),
        poisson_below: float = 50.0,
        pattern_seed: int = 2025,
    ) -> None:
        def positive(name: str, value: float, allow_zero: bool = True) -> float:
            value = float(value)
            if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
                kind = "non-negative" if allow_zero else "positive"
                raise ValueError(f"{name} must be a finite {kind} number, got {value}")
            return value

        def interval(name: str, value: tuple[float, float]) -> tuple[float, float]:
            lo, hi = (float(v) for v in value)
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"{name} must be a range (lo, hi) with 0 < lo <= hi, got {value}")
            return lo, hi

        self.sky_rate_685 = positive("sky_rate_685", sky_rate_685, allow_zero=False)
        self.sky_slope = float(sky_slope)
        if not np.isfinite(self.sky_slope):
            raise ValueError(f"sky_slope must be finite, got {sky_slope}")
        self.sky_scatter = positive("sky_scatter", sky_scatter)
        self.read_noise = positive("read_noise", read_noise)
        self.cosmic_rate = positive("cosmic_rate", cosmic_rate)
        self.cosmic_track_fraction = positive("cosmic_track_fraction", cosmic_track_fraction)
        if self.cosmic_track_fraction > 1:
            raise ValueError(
                f"cosmic_track_fraction must be in [0, 1], got {cosmic_track_fraction}"
            )
        self.cosmic_track_length = interval("cosmic_track_length", cosmic_track_length)
        self.cosmic_charge = interval("cosmic_charge", cosmic_charge)
        self.hot_pixel_fraction = positive("hot_pixel_fraction", hot_pixel_fraction)
        self.hot_pixel_rate = interval("hot_pixel_rate", hot_pixel_rate)
        self.bad_columns_per_ccd = positive("bad_columns_per_ccd", bad_columns_per_ccd)
        self.saturated_stars_per_ccd = positive("saturated_stars_per_ccd", saturated_stars_per_ccd)
        self.saturation = positive("saturation", saturation, allow_zero=False)
        self.star_fwhm = interval("star_fwhm", star_fwhm)
        self.star_beta = interval("star_beta", star_beta)
        if self.star_beta[0] <= 1:
            raise ValueError(f"star_beta must be > 1, got {star_beta}")
        self.poisson_below = positive("poisson_below", poisson_below)
        self.pattern_seed = int(pattern_seed)
        self.pattern = ScatteredLight.draw(self.pattern_seed)
        wavelengths = np.array([b.wavelength for b in PAUS_BANDS.values()])
        rates = self.sky_rate_685 * (wavelengths / 6850.0) ** self.sky_slope
        self._rate = np.tile(rates, N_BAND_INDEX // N_PAUS_BANDS)

    # ------------------------------------------------------------------ smooth model
    def sky_rate(self, band_idx: np.ndarray) -> np.ndarray:
        """Flat sky rate (without scattered light), e-/s/pixel.

        Parameters
        ----------
        band_idx : array_like of int
            Band x camera-state indices 0..79.

        Returns
        -------
        numpy.ndarray
            float64, same shape as ``band_idx``.
        """
        b = np.asarray(band_idx)
        if b.size and (
            not np.issubdtype(b.dtype, np.integer) or b.min() < 0 or b.max() >= N_BAND_INDEX
        ):
            raise ValueError(f"band_idx must hold integers in 0..{N_BAND_INDEX - 1}")
        return self._rate[b]

    def scattered_light(
        self, band_idx: np.ndarray | int, x: np.ndarray | float, y: np.ndarray | float
    ) -> np.ndarray:
        """Scattered-light pattern ``P`` (fraction of the flat sky) at CCD positions.

        Parameters
        ----------
        band_idx : array_like of int
            Band x camera-state indices 0..79.
        x, y : array_like
            CCD coordinates, pixels (broadcast together with ``band_idx``).

        Returns
        -------
        numpy.ndarray
            float64 of the broadcast shape.
        """
        b, xx, yy = np.broadcast_arrays(np.asarray(band_idx), np.asarray(x, float),
                                        np.asarray(y, float))
        self.sky_rate(b)  # validates band_idx
        shape = b.shape
        fx, fy = self.pattern.factors(
            b.reshape(-1).astype(np.int64), xx.reshape(-1, 1), yy.reshape(-1, 1)
        )
        return (fx[:, :, 0].astype(np.float64) * fy[:, :, 0]).sum(axis=1).reshape(shape)

    def sky_level(
        self, band_idx: np.ndarray, ccd_xy: np.ndarray, exposure_time: np.ndarray
    ) -> np.ndarray:
        """Smooth background (sky + scattered light) at CCD positions, electrons/pixel.

        This is the expected ``sky_model`` at the stamp centre when ``sky_scatter`` is 0.

        Parameters
        ----------
        band_idx : array_like of int
            [N] band x camera-state indices 0..79.
        ccd_xy : array_like
            [N, 2] CCD positions (x, y), pixels.
        exposure_time : array_like
            [N] seconds.

        Returns
        -------
        numpy.ndarray
            float64 [N], electrons per pixel.
        """
        b = np.atleast_1d(np.asarray(band_idx))
        n, _, b, xy, t = check_request(
            b.size, 2, b, ccd_xy, exposure_time, np.random.default_rng(0)
        )
        rate = self._rate[b]
        return rate * t * (1.0 + self.scattered_light(b, xy[:, 0], xy[:, 1]))

    def _smooth(
        self, band_idx: np.ndarray, x0: np.ndarray, y0: np.ndarray, h: int, w: int,
        level: np.ndarray,
    ) -> np.ndarray:
        """float32 [N, H, W] smooth background ``level * (1 + P)`` for images whose pixel
        (0, 0) sits at CCD position (x0, y0)."""
        n = band_idx.size
        out = np.empty((n, h, w), dtype=np.float32)
        step = max(1, _CHUNK // (h * w))
        for i in range(0, n, step):
            c = slice(i, i + step)
            x = x0[c, None] + np.arange(w)[None, :]
            y = y0[c, None] + np.arange(h)[None, :]
            self.pattern.evaluate(band_idx[c], x, y, offset=1.0, scale=level[c], out=out[c])
        return out

    def _add_noise(self, pixels: np.ndarray, rng: np.random.Generator) -> None:
        """Add Gaussian noise of variance ``pixels + read_noise**2`` in place.

        The standard normal deviates come from a torch generator seeded from ``rng`` (about
        twice as fast as numpy's); the work runs in cache-sized chunks.
        """
        flat = pixels.reshape(-1)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        z = torch.empty(min(_CHUNK, flat.size), dtype=torch.float32)
        zn = z.numpy()
        tmp = np.empty_like(zn)
        read2 = np.float32(self.read_noise**2)
        for i in range(0, flat.size, _CHUNK):
            part = flat[i : i + _CHUNK]
            m = part.size
            z.normal_(generator=gen)
            np.add(part, read2, out=tmp[:m])
            np.sqrt(tmp[:m], out=tmp[:m])
            tmp[:m] *= zn[:m]
            part += tmp[:m]

    def _render(
        self,
        band_idx: np.ndarray,
        x0: np.ndarray,
        y0: np.ndarray,
        h: int,
        w: int,
        exposure_time: np.ndarray,
        rng: np.random.Generator,
        core: tuple[slice, slice] | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Render N images of H x W pixels; returns pixels, sky_model, sky_sigma, artefacts."""
        n = band_idx.size
        if n == 0:
            empty = np.zeros((0, h, w), dtype=np.float32)
            return empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, np.int64)
        scatter = np.exp(self.sky_scatter * rng.standard_normal(n))
        level = self._rate[band_idx] * exposure_time * scatter
        sky_model = self._smooth(band_idx, x0, y0, h, w, level)
        sky_mean = sky_model.reshape(n, -1).mean(axis=1, dtype=np.float64)
        sky_min = sky_model.reshape(n, -1).min(axis=1)
        sky_sigma = np.sqrt(sky_mean + self.read_noise**2)

        pixels = sky_model.copy()
        radius = 40
        stars = add_saturated_stars(
            pixels,
            rng,
            stars_per_ccd=self.saturated_stars_per_ccd,
            ccd_pixels=CCD_WIDTH * CCD_HEIGHT,
            saturation=self.saturation,
            fwhm_pixels=(self.star_fwhm[0] / PIXEL_SCALE, self.star_fwhm[1] / PIXEL_SCALE),
            beta=self.star_beta,
            radius=radius,
        )

        # noise: Gaussian limit of Poisson + read noise; exact Poisson for faint skies
        faint = np.flatnonzero(sky_min < self.poisson_below)
        signal = pixels[faint]
        self._add_noise(pixels, rng)
        if faint.size:
            read = rng.standard_normal(signal.shape)
            pixels[faint] = rng.poisson(np.clip(signal, 0.0, None)) + self.read_noise * read

        flags = np.zeros(n, dtype=np.int64)
        if stars:
            flags |= saturate_stars(
                pixels, stars, sky_mean, sky_sigma,
                saturation=self.saturation, radius=radius, core=core,
            )
        flags |= add_hot_pixels(
            pixels, exposure_time, rng,
            fraction=self.hot_pixel_fraction, dark_rate=self.hot_pixel_rate, core=core,
        )
        flags |= add_bad_columns(
            pixels, rng,
            columns_per_ccd=self.bad_columns_per_ccd, ccd_width=CCD_WIDTH, core=core,
        )
        flags |= add_cosmic_rays(
            pixels, exposure_time, rng,
            rate=self.cosmic_rate,
            track_fraction=self.cosmic_track_fraction,
            track_length=self.cosmic_track_length,
            charge=self.cosmic_charge,
            core=core,
        )
        if n == 1 or flags.any():
            hit = np.flatnonzero(flags) if n > 1 else np.arange(1)
            pixels[hit] = np.minimum(pixels[hit], np.float32(self.saturation))
        return pixels, sky_model, sky_sigma.astype(np.float32), flags

    def _sample(self, n: int, size: int, b: np.ndarray, xy: np.ndarray, t: np.ndarray,
                rng: np.random.Generator) -> BackgroundSample:
        """:meth:`BackgroundSource.sample` on checked arguments: ``n`` synthetic stamps."""
        half = 0.5 * (size - 1)
        core = (core_slice(size), core_slice(size))
        pixels, sky_model, sky_sigma, flags = self._render(
            b, xy[:, 0] - half, xy[:, 1] - half, size, size, t, rng, core
        )
        return BackgroundSample(pixels, sky_model, sky_sigma, flags)

    def render_ccd(
        self,
        band_idx: int,
        exposure_time: float,
        rng: np.random.Generator,
        shape: tuple[int, int] = (CCD_HEIGHT, CCD_WIDTH),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render a full synthetic CCD exposure (background only).

        Parameters
        ----------
        band_idx : int
            Band x camera-state index 0..79.
        exposure_time : float
            Seconds.
        rng : numpy.random.Generator
        shape : (int, int)
            (height, width) in pixels; the image covers CCD pixels ``[0:height, 0:width]``
            (the default is the full 2048 x 4096 CCD).

        Returns
        -------
        image : numpy.ndarray
            float32 [height, width], electrons, with noise and artefacts.
        sky_model : numpy.ndarray
            float32 [height, width], the smooth background, electrons.
        """
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shape must be (height, width), got {shape!r}") from exc
        if not (2 <= h <= CCD_HEIGHT and 2 <= w <= CCD_WIDTH):
            raise ValueError(
                f"shape must be within (2..{CCD_HEIGHT}, 2..{CCD_WIDTH}), got {shape!r}"
            )
        _, _, b, _, t = check_request(1, 2, np.array([band_idx]), np.zeros((1, 2)),
                                      np.array([exposure_time]), rng)
        zero = np.zeros(1)
        pixels, sky_model, _, _ = self._render(b, zero, zero, h, w, t, rng, None)
        return pixels[0], sky_model[0]
