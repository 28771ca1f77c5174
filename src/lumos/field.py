"""A simulated PAUS-like exposure with catalogued galaxies of known flux (the embedded default).

The field is drawn by the project's own simulator pieces: the synthetic PAUCam sky
(:class:`lumos.sky.SyntheticSky`: sky level, scattered light, read noise, cosmic rays, hot
pixels and columns, saturated stars), galaxies from the TEAHUPOO population (COSMOS-like
shapes, template-spectrum narrow-band fluxes) rendered with the exact PSF-convolved Sersic
renderer, and photon shot noise. Positions are uniform, so blends occur at their natural rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from .bands import get_band
from .instrument import CCD_SHAPE, PIXEL_SCALE
from .observe import default_renderer
from .population import sample_population
from .psf import MoffatPSF
from .simconfig import CatalogueErrors, apply_catalogue_errors
from .sky import SyntheticSky
from .stamps import stamp_origin
from .tableio import write_table

__all__ = ["SimulatedField", "simulate_field"]


@dataclass
class SimulatedField:
    """An image with its catalogue and truth.

    Attributes
    ----------
    image : numpy.ndarray
        float32 image in electrons, including the sky.
    header : astropy.io.fits.Header
        BUNIT, EXPTIME, GAIN, RDNOISE, FILTER, PSFFWHM, PSFBETA, PIXSCALE, CAMSTATE.
    catalogue : astropy.table.Table
        id, x, y, i_mag, r50, sersic_n, q, pa (what a survey catalogue gives).
    truth : astropy.table.Table
        id, flux_true (electrons), nearest (distance to the nearest other galaxy, pixels),
        z, and the true i_mag, r50, sersic_n, q, pa.
    sky_model : numpy.ndarray
        The noiseless background, electrons.
    """

    image: np.ndarray
    header: fits.Header
    catalogue: Table
    truth: Table
    sky_model: np.ndarray

    def write(self, directory) -> None:
        """Write ``image.fits``, ``catalogue.fits`` and ``truth.fits`` into ``directory``."""
        directory = Path(directory)
        fits.PrimaryHDU(self.image, header=self.header).writeto(
            directory / "image.fits", overwrite=True
        )
        write_table(self.catalogue, directory / "catalogue.fits")
        write_table(self.truth, directory / "truth.fits")


def _postage_size(r50_pix: np.ndarray) -> np.ndarray:
    return np.select([r50_pix < 4.0, r50_pix < 10.0], [64, 128], 256)


def simulate_field(
    n_galaxies: int = 3000,
    band: str = "NB685",
    camera_state: int = 0,
    psf_fwhm: float = 0.85,
    psf_beta: float = 3.5,
    shape: tuple[int, int] = CCD_SHAPE,
    seed: int = 2024,
    margin: int = 10,
    progress: bool = False,
    catalogue_errors=None,
) -> SimulatedField:
    """Simulate a PAUS-like single exposure.

    Parameters
    ----------
    n_galaxies : int
        Number of catalogued galaxies.
    band : str
        Narrow band; its tray sets the exposure time.
    camera_state : int
        0 before the camera intervention, 1 after (changes the scattered light).
    psf_fwhm, psf_beta : float
        Moffat PSF, arcsec.
    shape : (int, int)
        Image (height, width); at most the 2048 x 4096 CCD.
    seed : int
        Random seed: the field is a deterministic function of it.
    margin : int
        Galaxies are placed at least this many pixels inside the image.
    progress : bool
        Show a progress bar while rendering.
    catalogue_errors : lumos.simconfig.CatalogueErrors, optional
        Errors of the catalogue's r50, n, q, pa and i mag and of the header's PSF FWHM (one
        draw for the exposure), as an external catalogue and a PSF model have them; the
        image is the same with or without them (their draws come from their own stream).
        Default: an exact catalogue.

    Returns
    -------
    SimulatedField
    """
    rng = np.random.default_rng(seed)
    b = get_band(band)
    exptime = b.exposure_time
    band_idx = b.index(camera_state)
    sky = SyntheticSky()
    image, sky_model = sky.render_ccd(band_idx, exptime, rng, shape=shape)
    image = image.astype(np.float64)
    height, width = image.shape

    pop = sample_population(n_galaxies, rng)
    flux = pop.flux_e_per_s[:, b.number] * exptime
    x = rng.uniform(margin, width - 1 - margin, n_galaxies)
    y = rng.uniform(margin, height - 1 - margin, n_galaxies)
    sizes = _postage_size(pop.r50 / PIXEL_SCALE)
    model = np.zeros_like(image)
    bar = tqdm(total=n_galaxies, desc="rendering field", unit="gal", disable=not progress)
    for size in np.unique(sizes):
        renderer = default_renderer(int(size), PIXEL_SCALE)
        for start in range(0, n_galaxies, 256):
            idx = np.flatnonzero(sizes == size)[start : start + 256]
            if idx.size == 0:
                break
            origin, offset = stamp_origin(x[idx], y[idx], int(size))
            psf = MoffatPSF(torch.full((idx.size,), psf_fwhm), torch.full((idx.size,), psf_beta))
            stamps = renderer.render(
                pop.r50[idx], pop.n[idx], pop.q[idx], pop.pa[idx], psf,
                offset=offset, flux=flux[idx],
            ).double().numpy()  # fmt: skip
            _paste(model, stamps, origin)
            bar.update(idx.size)
    bar.close()
    image += rng.poisson(np.clip(model, 0, None)).astype(np.float64)

    header = fits.Header()
    header["BUNIT"] = ("electron", "image units")
    header["EXPTIME"] = (exptime, "exposure time [s]")
    header["GAIN"] = (1.0, "electrons per image unit")
    header["RDNOISE"] = (sky.read_noise, "read noise [e-]")
    header["FILTER"] = (b.name, "PAUS narrow band")
    header["CAMSTATE"] = (camera_state, "0 before, 1 after the camera intervention")
    header["PSFFWHM"] = (psf_fwhm, "Moffat PSF FWHM [arcsec]")
    header["PSFBETA"] = (psf_beta, "Moffat PSF beta")
    header["PIXSCALE"] = (PIXEL_SCALE, "arcsec per pixel")
    header["ORIGIN"] = "lumos simulate_field"
    header["SEED"] = seed

    ids = np.arange(1, n_galaxies + 1)
    errors = catalogue_errors if catalogue_errors is not None else CatalogueErrors()
    err_rng = np.random.default_rng([seed, 1])
    # an exact catalogue (no error enabled) is the truth, and draws nothing
    cat = apply_catalogue_errors(errors, pop.r50, pop.n, pop.q, pop.pa, pop.i_mag,
                                 np.full(n_galaxies, psf_fwhm), err_rng)  # fmt: skip
    if errors.enabled:
        header["PSFFWHM"] = (float(psf_fwhm * np.exp(errors.psf_fwhm_frac
                                                     * err_rng.standard_normal())),
                             "Moffat PSF FWHM [arcsec] (PSF model)")  # fmt: skip
        header["TRUEFWHM"] = (psf_fwhm, "true PSF FWHM [arcsec]")
    catalogue = Table(
        {"id": ids, "x": x + cat["position_error"][:, 0], "y": y + cat["position_error"][:, 1],
         "i_mag": cat["i_mag"], "r50": cat["r50"],
         "sersic_n": cat["n"], "q": cat["q"], "pa": cat["pa"]}  # fmt: skip
    )
    catalogue["r50"].unit = "arcsec"
    catalogue["pa"].unit = "deg"
    nearest = _nearest_distance(x, y)
    truth = Table({"id": ids, "flux_true": flux, "nearest": nearest, "z": pop.z,
                   "i_mag": pop.i_mag, "r50": pop.r50, "sersic_n": pop.n, "q": pop.q,
                   "pa": pop.pa})  # fmt: skip
    truth["flux_true"].unit = "electron"
    return SimulatedField(image.astype(np.float32), header, catalogue, truth, sky_model)


def _paste(image: np.ndarray, stamps: np.ndarray, origin: np.ndarray) -> None:
    """Add stamps into an image at their origins, clipping at the edges."""
    height, width = image.shape
    size = stamps.shape[-1]
    for stamp, (i0, j0) in zip(stamps, origin, strict=True):
        a0, b0 = max(0, -i0), max(0, -j0)
        a1, b1 = min(size, width - i0), min(size, height - j0)
        if a1 > a0 and b1 > b0:
            image[j0 + b0 : j0 + b1, i0 + a0 : i0 + a1] += stamp[b0:b1, a0:a1]


def _nearest_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.size < 2:
        return np.full(x.size, np.inf)
    dist, _ = cKDTree(np.stack([x, y], 1)).query(np.stack([x, y], 1), k=2)
    return dist[:, 1]
