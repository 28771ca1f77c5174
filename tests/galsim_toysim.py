"""A small GalSim simulation of context cutouts with known truth, for the classical methods.

Galaxies are single Sersic profiles convolved with a Moffat PSF, drawn by GalSim (the accuracy
reference) on ``C x C`` context cutouts at random sub-pixel offsets, with a flat sky, Poisson
noise and Gaussian read noise, in electrons. The narrow-band flux follows the PAUS zero point
(:data:`lumos.population.ZERO_POINT`): a galaxy of magnitude ``m`` gives
``10**(-0.4 * (m - 24.5))`` electrons per second (flat spectrum, so the NB685 magnitude
equals the i-band magnitude here).

It is an independent renderer (GalSim, not :mod:`lumos.profiles`) for the tests
(``from galsim_toysim import ...``) and ``bench/bench_classical.py --sim toy`` (which loads
it from this folder). To keep it fast, ``n_profiles`` distinct shapes are
drawn and shared by the galaxies (each galaxy gets its own flux and noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumos.classical.common import CONTEXT_SIZE, ContextCutouts
from lumos.instrument import PIXEL_SCALE
from lumos.population import ZERO_POINT

__all__ = [
    "ToySimulation",
    "draw_profiles",
    "gaussian_profiles",
    "magnitude_to_electrons",
    "random_shapes",
    "simulate_cutouts",
]


def magnitude_to_electrons(mag: np.ndarray, exptime: float = 90.0) -> np.ndarray:
    """Electrons collected in ``exptime`` seconds from an AB magnitude (PAUS zero point)."""
    return exptime * 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZERO_POINT))


def draw_profiles(
    r50: np.ndarray,
    n: np.ndarray,
    q: np.ndarray,
    pa: np.ndarray,
    offset: np.ndarray,
    psf_fwhm: float = 0.85,
    psf_beta: float = 3.5,
    size: int = CONTEXT_SIZE,
    pixel_scale: float = PIXEL_SCALE,
) -> np.ndarray:
    """Unit-flux PSF-convolved Sersic profiles drawn by GalSim (pixel-integrated).

    Parameters
    ----------
    r50 : array_like, shape (N,)
        Circularised half-light radius, arcsec.
    n, q, pa : array_like, shape (N,)
        Sersic index, axis ratio b/a, position angle (degrees CCW from +x).
    offset : array_like, shape (N, 2)
        Sub-pixel offset (dx, dy) of the centre from the cutout centre, pixels.
    psf_fwhm : float
        Moffat FWHM, arcsec.
    psf_beta : float
        Moffat beta.
    size : int
        Cutout side, pixels.
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    numpy.ndarray, float64, shape (N, size, size)
    """
    import galsim

    psf = galsim.Moffat(beta=psf_beta, fwhm=psf_fwhm)
    out = np.empty((len(r50), size, size))
    for k in range(len(r50)):
        gal = galsim.Sersic(float(n[k]), half_light_radius=float(r50[k]))
        gal = gal.shear(q=float(q[k]), beta=float(pa[k]) * galsim.degrees)
        img = galsim.Convolve(gal, psf).drawImage(
            nx=size, ny=size, scale=pixel_scale, offset=(float(offset[k][0]), float(offset[k][1]))
        )
        out[k] = img.array
    return out


def gaussian_profiles(
    r50: np.ndarray,
    q: np.ndarray,
    pa: np.ndarray,
    offset: np.ndarray,
    psf_fwhm: float = 0.85,
    size: int = CONTEXT_SIZE,
    pixel_scale: float = PIXEL_SCALE,
    oversample: int = 3,
) -> np.ndarray:
    """Fast analytic stand-in profiles: elliptical Gaussians convolved with a Gaussian PSF.

    For quick unit tests only (no GalSim): the galaxy is a Gaussian of circularised half-light
    radius ``r50`` (arcsec) and axis ratio ``q``, the PSF a Gaussian of FWHM ``psf_fwhm``
    (arcsec); pixels are integrated by ``oversample x oversample`` sampling and the result is
    normalised to unit sum on the cutout.

    Returns
    -------
    numpy.ndarray, float64, shape (N, size, size)
    """
    r50 = np.asarray(r50, dtype=float)
    sig_g = r50 / pixel_scale / 1.1774100225154747
    sig_p = psf_fwhm / pixel_scale / 2.3548200450309493
    s_major2 = sig_g**2 / np.asarray(q) + sig_p**2
    s_minor2 = sig_g**2 * np.asarray(q) + sig_p**2
    th = np.deg2rad(np.asarray(pa, dtype=float))
    c = (size - 1) / 2.0
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    g = (np.arange(size)[:, None] + sub[None, :]).ravel() - c
    out = np.empty((len(r50), size, size))
    for k in range(len(r50)):
        dx = g[None, :] - offset[k][0]
        dy = g[:, None] - offset[k][1]
        u = dx * np.cos(th[k]) + dy * np.sin(th[k])
        v = dy * np.cos(th[k]) - dx * np.sin(th[k])
        img = np.exp(-0.5 * (u * u / s_major2[k] + v * v / s_minor2[k]))
        img = img.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
        out[k] = img / img.sum()
    return out


@dataclass
class ToySimulation:
    """Simulated context cutouts with truth.

    Attributes
    ----------
    cutouts : ContextCutouts
        Cutouts in electrons with ``truth`` (flux, electrons) and ``true_background`` set.
    i_mag : numpy.ndarray, shape (N,)
        Magnitudes.
    profile_id : numpy.ndarray, int, shape (N,)
        Which of the distinct drawn shapes each galaxy uses.
    """

    cutouts: ContextCutouts
    i_mag: np.ndarray
    profile_id: np.ndarray


def random_shapes(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    """Random galaxy shapes: r50 log-normal around 0.45 arcsec, n in [0.5, 4], q in [0.3, 1]."""
    return {
        "r50": np.clip(np.exp(rng.normal(np.log(0.45), 0.45, k)), 0.12, 2.0),
        "n": rng.uniform(0.5, 4.0, k),
        "q": rng.uniform(0.3, 1.0, k),
        "pa": rng.uniform(0.0, 180.0, k),
        "offset": rng.uniform(-0.5, 0.5, (k, 2)),
    }


def simulate_cutouts(
    n_gal: int,
    seed: int = 0,
    mag_range: tuple[float, float] = (18.0, 23.0),
    n_profiles: int = 32,
    sky: float = 190.0,
    read_noise: float = 5.0,
    exptime: float = 90.0,
    psf_fwhm: float = 0.85,
    psf_beta: float = 3.5,
    size: int = CONTEXT_SIZE,
    profiles: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
    renderer: str = "galsim",
    dtype=np.float32,
) -> ToySimulation:
    """Simulate ``n_gal`` galaxies on context cutouts (electrons, sky included).

    Parameters
    ----------
    n_gal : int
        Number of galaxies.
    seed : int
        Seed of the random generator (shapes, magnitudes and noise).
    mag_range : tuple of float
        Magnitudes are uniform in this range.
    n_profiles : int
        Number of distinct shapes drawn with GalSim and shared among the galaxies.
    sky : float
        Sky level, electrons per pixel.
    read_noise : float
        Read noise, electrons.
    exptime : float
        Exposure time, seconds.
    psf_fwhm, psf_beta : float
        Moffat PSF (arcsec, beta).
    size : int
        Cutout side, pixels.
    profiles : tuple, optional
        ``(shapes, images)`` from an earlier call (:func:`random_shapes` dict and
        :func:`draw_profiles` array) to skip the drawing.
    renderer : {"galsim", "gaussian"}
        GalSim Sersic * Moffat (default), or the fast analytic :func:`gaussian_profiles`
        stand-in (for quick unit tests).
    dtype : numpy dtype
        Pixel dtype.

    Returns
    -------
    ToySimulation
    """
    rng = np.random.default_rng(seed)
    if renderer not in ("galsim", "gaussian"):
        raise ValueError(f"renderer must be 'galsim' or 'gaussian', got {renderer!r}")
    if profiles is None:
        shapes = random_shapes(rng, n_profiles)
        if renderer == "galsim":
            images = draw_profiles(
                shapes["r50"], shapes["n"], shapes["q"], shapes["pa"], shapes["offset"],
                psf_fwhm=psf_fwhm, psf_beta=psf_beta, size=size,
            )
        else:
            images = gaussian_profiles(
                shapes["r50"], shapes["q"], shapes["pa"], shapes["offset"],
                psf_fwhm=psf_fwhm, size=size,
            )
    else:
        shapes, images = profiles
        shapes = {key: np.asarray(val, dtype=float) for key, val in shapes.items()}
        images = np.asarray(images, dtype=float)
    k = rng.integers(0, images.shape[0], n_gal)
    mag = rng.uniform(*mag_range, n_gal)
    flux = magnitude_to_electrons(mag, exptime)
    prof = images[k]
    mean = flux[:, None, None] * np.clip(prof, 0.0, None) + sky
    pixels = rng.poisson(mean).astype(np.float64)
    pixels += rng.normal(0.0, read_noise, pixels.shape)
    cut = ContextCutouts(
        pixels=pixels.astype(dtype),
        valid=np.ones(pixels.shape, dtype=bool),
        offset=shapes["offset"][k],
        r50=shapes["r50"][k],
        n=shapes["n"][k],
        q=shapes["q"][k],
        pa=shapes["pa"][k],
        profile=prof.astype(dtype),
        gain=1.0,
        read_noise=read_noise,
        pixel_scale=PIXEL_SCALE,
        truth=flux,
        true_background=np.full(n_gal, sky),
    )
    return ToySimulation(cutouts=cut, i_mag=mag, profile_id=k)
