"""Build a galaxy catalogue of the DECam test patch from its own exposures.

No catalogue ships with ``decam-testcase4``, so this script makes one, in four steps:

1. **Sky.** Each exposure (ADU, sky not subtracted) gets a smooth sky fitted by ``sep``
   (64-pixel mesh, masked pixels and the weight-0 pixels excluded), subtracted, and is scaled to
   nanomaggies with its survey-ccds zero point and exposure time.
2. **Stack.** Every exposure is resampled (bilinear) onto the pixel grid of the reference
   exposure (the longest r exposure) through the TPV WCS of both (astropy), and the
   inverse-variance weighted mean of all 9 is the detection image.
3. **Detection.** ``sep.extract`` at 1.5 sigma of the stack's noise (at least 8 connected
   pixels), with its segmentation map.
4. **Sersic fit.** Each detection is fitted with one PSF-convolved Sersic profile drawn by
   lumos's own renderer (:class:`lumos.profiles.SersicRenderer`) on every exposure that
   holds it at once (:mod:`joint_fit`): a shared centre (reference pixels, mapped through
   each exposure's WCS), r50, n, q and pa, a flux per band and a constant sky residual per
   exposure, each exposure's PSFEx PSF at the source (:class:`lumos.psfsource.PSFExSource`),
   least squares weighted by the inverse-variance maps, on 41 x 41 stamps where masked
   pixels and the pixels of other detections have zero weight. Fitting all exposures keeps
   the catalogue from following one exposure's noise. Below a stack signal-to-noise ratio
   of 20 the pixels do not constrain n: it is fixed at 1 (an exponential disk) and q kept
   >= 0.2. A detection is a galaxy when its fitted circularised r50 exceeds ``--min-r50``
   (0.12 arcsec: the stars of the patch fit to 0.03-0.05 arcsec) and a signal-to-noise ratio
   of at least ``--min-snr`` (5) in a 6-pixel-radius aperture of the stack.

The catalogue (FITS) has lumos's columns ``id, ra, dec, r50, sersic_n, q, pa, i_mag``:
positions are through the reference exposure's WCS, ``pa`` is in degrees counter-clockwise
from the image +x axis (the 9 exposures have the same orientation to 0.1 degree), ``i_mag``
holds the fitted r magnitude (the survey file's reference band is r), plus ``x_ref, y_ref,
flux_fit, snr, chi2, n_exposures``, ``is_galaxy`` and ``flux_fit_<band>`` [nanomaggies]
(stars are kept in the file with ``is_galaxy`` false when ``--keep-stars`` is given).

Usage::

    python build_catalogue.py DATA_DIR OUT.fits [--min-r50 0.12] [--min-snr 5]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sep
import torch
from astropy.table import Table
from astropy.wcs import FITSFixedWarning
from scipy.ndimage import map_coordinates

from lumos.imageio import read_image
from lumos.pixelmaps import read_pixel_map
from lumos.profiles import SersicRenderer
from lumos.psfex import read_psfex
from lumos.psfsource import PSFExSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exposures import Exposure, find_exposures, nanomaggies_per_unit  # noqa: E402
from joint_fit import SHAPE_LOWER, View, fit_joint  # noqa: E402

PIXEL_SCALE = 0.262  # arcsec per DECam pixel
FIT_SIZE = 41  # pixels, side of the fitting stamp


@dataclass
class SkySubtracted:
    """One exposure after sky subtraction, in nanomaggies, with its weight and WCS."""

    exposure: Exposure
    data: np.ndarray  # nanomaggies per pixel
    weight: np.ndarray  # 1 / nanomaggies^2, 0 on bad pixels
    wcs: object
    psf: PSFExSource


def load_exposure(exposure: Exposure) -> SkySubtracted:
    """Read an exposure, subtract its sky and scale it to nanomaggies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        image, _, wcs = read_image(exposure.image)
    weight = read_pixel_map(exposure.weight, image.shape, "weight map").astype(np.float64)
    bad = (read_pixel_map(exposure.mask, image.shape, "mask") != 0) | ~(weight > 0)
    bad |= ~np.isfinite(image)
    data = np.where(bad, 0.0, image).astype(np.float64)
    sky = sep.Background(data, mask=bad, bw=64, bh=64, fw=3, fh=3)
    scale = nanomaggies_per_unit(exposure.ccdzpt, exposure.exptime)
    data = np.where(bad, 0.0, data - sky.back()) * scale
    weight = np.where(bad, 0.0, weight) / scale**2
    psf = PSFExSource(read_psfex(exposure.psf), image.shape, PIXEL_SCALE)
    return SkySubtracted(exposure, data, weight, wcs, psf)


def resample(src: SkySubtracted, ref: SkySubtracted) -> tuple[np.ndarray, np.ndarray]:
    """``src``'s data and weight on ``ref``'s pixel grid (bilinear, through both WCSs)."""
    ny, nx = ref.data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = ref.wcs.celestial.all_pix2world(xx.ravel(), yy.ravel(), 0)
    x, y = src.wcs.celestial.all_world2pix(ra, dec, 0)
    coords = np.vstack([y, x])
    data = map_coordinates(src.data, coords, order=1, cval=0.0).reshape(ny, nx)
    good = map_coordinates((src.weight > 0).astype(float), coords, order=1, cval=0.0)
    weight = map_coordinates(src.weight, coords, order=1, cval=0.0).reshape(ny, nx)
    weight = np.where(good.reshape(ny, nx) > 0.999, weight, 0.0)
    return data, weight


def stack(exposures: list[SkySubtracted], ref: SkySubtracted) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean of all exposures on the reference grid, and its noise."""
    num = np.zeros_like(ref.data)
    wsum = np.zeros_like(ref.data)
    for e in exposures:
        data, weight = (ref.data, ref.weight) if e is ref else resample(e, ref)
        num += data * weight
        wsum += weight
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(wsum > 0, num / wsum, 0.0)
        noise = np.where(wsum > 0, 1.0 / np.sqrt(wsum), np.inf)
    return mean, noise


def detect(image: np.ndarray, noise: np.ndarray, thresh: float = 1.5):
    """Sources of the stack (``sep.extract``) and the segmentation map."""
    err = np.where(np.isfinite(noise), noise, 1e10)
    mask = ~np.isfinite(noise)
    return sep.extract(np.ascontiguousarray(image), thresh, err=np.ascontiguousarray(err),
                       mask=mask, minarea=8, deblend_cont=0.005,
                       segmentation_map=True)  # fmt: skip


def _cutout(array: np.ndarray, x0: int, y0: int, size: int, fill: float = 0.0) -> np.ndarray:
    """``size`` x ``size`` cutout with its centre pixel at (x0, y0), padded with ``fill``."""
    half = size // 2
    out = np.full((size, size), fill, dtype=np.float64)
    ny, nx = array.shape
    ys, xs = slice(max(y0 - half, 0), min(y0 + half + 1, ny)), slice(max(x0 - half, 0),
                                                                       min(x0 + half + 1, nx))
    out[ys.start - (y0 - half): ys.stop - (y0 - half),
        xs.start - (x0 - half): xs.stop - (x0 - half)] = array[ys, xs]  # fmt: skip
    return out


def _mapper(src: SkySubtracted, dst: SkySubtracted):
    """A function mapping ``src`` pixel coordinates to ``dst`` pixels through both WCSs."""
    if src is dst:
        return lambda x, y: (x, y)

    def to_dst(x, y):
        ra, dec = src.wcs.celestial.all_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)
        xd, yd = dst.wcs.celestial.all_world2pix(ra, dec, 0)
        return (xd[0], yd[0]) if np.ndim(x) == 0 else (xd, yd)

    return to_dst


def source_views(loaded: list[SkySubtracted], ref: SkySubtracted, segmap: np.ndarray,
                 label: int, x: float, y: float, bands: list[str], size: int) -> list[View]:
    """The stamps of the source at reference pixel ``(x, y)`` in every exposure holding it.

    An exposure holds the source when at least half of the 7 x 7 pixels round its centre
    have a positive weight. Pixels of other detections (``segmap`` labels other than
    ``label``, looked up through the WCSs at the nearest reference pixel) get zero weight.
    """
    views = []
    half = size // 2
    for e in loaded:
        to_e = _mapper(ref, e)
        xe, ye = to_e(x, y)
        x0, y0 = int(round(float(xe))), int(round(float(ye)))
        weight = _cutout(e.weight, x0, y0, size)
        if np.count_nonzero(weight[half - 3:half + 4, half - 3:half + 4] > 0) < 25:
            continue
        yy, xx = np.mgrid[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
        xr, yr = _mapper(e, ref)(xx.ravel().astype(float), yy.ravel().astype(float))
        ir, jr = np.rint(yr).astype(int), np.rint(xr).astype(int)
        inside = (ir >= 0) & (ir < segmap.shape[0]) & (jr >= 0) & (jr < segmap.shape[1])
        seg = np.full(ir.size, -1)
        seg[inside] = segmap[ir[inside], jr[inside]]
        seg = seg.reshape(size, size)
        weight = np.where((seg == 0) | (seg == label), weight, 0.0)
        views.append(View(_cutout(e.data, x0, y0, size), weight,
                          e.psf.at([float(xe)], [float(ye)]), x0, y0,
                          bands.index(e.exposure.band), to_e))  # fmt: skip
    return views


class SersicModel:
    """PSF-convolved single-Sersic stamps drawn by lumos's renderer, for the fits of
    :func:`joint_fit.fit_joint`."""

    def __init__(self, size: int = FIT_SIZE) -> None:
        self.size = size
        self.renderer = SersicRenderer(size=size, pixel_scale=PIXEL_SCALE, dtype=torch.float64)

    def stamps(self, params: np.ndarray, psf) -> np.ndarray:
        """Model stamps for parameter rows ``(flux, dx, dy, ln r50, n, q, pa, sky)``."""
        p = np.atleast_2d(params)
        stamps = self.renderer.render(np.exp(p[:, 3]), p[:, 4], p[:, 5], p[:, 6] % 180.0, psf,
                                      offset=p[:, 1:3], flux=p[:, 0]).numpy()  # fmt: skip
        return stamps + p[:, 7, None, None]


def build_catalogue(data_dir: str | Path, min_r50: float = 0.12, min_snr: float = 5.0,
                    keep_stars: bool = False, limit: int | None = None,
                    faint_snr: float = 20.0) -> Table:
    """Detect and fit the sources of the test patch (see the module docstring).

    Parameters
    ----------
    data_dir : str or Path
        The ``decam-testcase4`` folder.
    min_r50 : float
        Smallest fitted circularised r50 of a galaxy [arcsec].
    min_snr : float
        Smallest signal-to-noise ratio in the stack (sep's flux over its error).
    keep_stars : bool
        Keep the point sources in the table (``is_galaxy`` false).
    limit : int, optional
        Fit only the ``limit`` brightest detections (for quick tests).
    faint_snr : float
        Below this signal-to-noise ratio the Sersic index is fixed at 1 (exponential) and
        the axis ratio kept >= 0.2: the pixels do not constrain them.

    Returns
    -------
    astropy.table.Table
    """
    exposures = find_exposures(data_dir)
    loaded = [load_exposure(e) for e in exposures]
    ref = max((e for e in loaded if e.exposure.band == "r"), key=lambda e: e.exposure.exptime)
    image, noise = stack(loaded, ref)
    sources, segmap = detect(image, noise)
    ny, nx = image.shape
    err = np.where(np.isfinite(noise), noise, 0.0)
    flux, fluxerr, _ = sep.sum_circle(image, sources["x"], sources["y"], 6.0, err=err)
    snr = flux / np.maximum(fluxerr, 1e-30)
    order = np.argsort(-flux)
    if limit is not None:
        order = order[:limit]
    fitter = SersicModel()
    bands = sorted({e.exposure.band for e in loaded})
    ref_band = bands.index(ref.exposure.band)
    rows = []
    for k in order:
        s = sources[k]
        if snr[k] < min_snr:
            continue
        views = source_views(loaded, ref, segmap, k + 1, float(s["x"]), float(s["y"]),
                             bands, fitter.size)  # fmt: skip
        if not views:  # no exposure holds its core: nothing to fit
            continue
        r50 = max(np.sqrt(s["a"] * s["b"]) * PIXEL_SCALE, 0.2)
        shape = np.array([np.log(r50), 1.5, max(s["b"] / s["a"], 0.2), np.rad2deg(s["theta"])])
        free, lower = None, SHAPE_LOWER
        if snr[k] < faint_snr:  # n unconstrained: an exponential disk, q >= 0.2
            shape[1] = 1.0
            free = np.arange(6) != 3
            lower = np.where(np.arange(6) == 4, 0.2, SHAPE_LOWER)
        fit = fit_joint(fitter, views, len(bands), float(s["x"]), float(s["y"]), shape,
                        float(flux[k]), free_shape=free, shape_lower=lower,
                        positive_band=ref_band)  # fmt: skip
        ra, dec = ref.wcs.celestial.all_pix2world([fit.x_ref], [fit.y_ref], 0)
        f_ref = float(fit.flux[ref_band])
        mag = 22.5 - 2.5 * np.log10(f_ref) if f_ref > 0 else np.nan
        rows.append((float(ra[0]), float(dec[0]), fit.r50, fit.sersic_n, fit.q, fit.pa,
                     float(mag), fit.x_ref, fit.y_ref, f_ref, float(snr[k]), fit.chi2,
                     len(views), bool(fit.r50 > min_r50),
                     *[float(f) for f in fit.flux]))  # fmt: skip
    names = ("ra", "dec", "r50", "sersic_n", "q", "pa", "i_mag", "x_ref", "y_ref", "flux_fit",
             "snr", "chi2", "n_exposures", "is_galaxy",
             *[f"flux_fit_{b}" for b in bands])  # fmt: skip
    table = Table(rows=rows, names=names) if rows else Table(names=names)
    if not keep_stars:
        table = table[table["is_galaxy"]]
    table.sort("i_mag")
    table.add_column(np.arange(1, len(table) + 1), name="id", index=0)
    table["r50"].unit = "arcsec"
    table["ra"].unit = table["dec"].unit = table["pa"].unit = "deg"
    table.meta["REFIMAGE"] = ref.exposure.name
    table.meta["COMMENT"] = ["i_mag holds the fitted DECam r AB magnitude",
                             "pa: degrees counter-clockwise from the image +x axis",
                             "built by examples/decam/build_catalogue.py"]  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build_catalogue.py DATA_DIR OUT.fits``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("out")
    parser.add_argument("--min-r50", type=float, default=0.12)
    parser.add_argument("--min-snr", type=float, default=5.0)
    parser.add_argument("--keep-stars", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = build_catalogue(args.data_dir, args.min_r50, args.min_snr, args.keep_stars)
    table.write(args.out, overwrite=True)
    print(f"build_catalogue: {int(np.sum(table['is_galaxy']))} galaxies "
          f"({len(table)} rows) written to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
