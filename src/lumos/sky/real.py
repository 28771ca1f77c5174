"""Backgrounds cut from real images: neighbours, artefacts and gradients as they really are.

A :class:`RealImageBackground` holds one or more real images (any survey; sky-subtracted
or not, any linear flux unit). Each is prepared once:

* invalid pixels (NaN, infinite, or in a region of exact zeros at least 3 x 3 pixels
  wide: no data) are marked and set to 0;
* the image is divided by its global robust noise (:func:`~lumos.sky.noise.robust_sigma`);
* a **noise map** is measured on a grid of ``mesh`` x ``mesh`` blocks with the same
  estimator (3 x 3 median-filtered, bilinearly interpolated): a fallback for cutouts whose
  own noise cannot be measured;
* a **local background map** is measured on the same blocks as a 3-sigma-clipped median
  (3 iterations), 3 x 3 median-filtered and interpolated to every pixel with a clamped
  cubic spline: the smooth residual sky (gradients, halos of bright stars) of the image.

A stamp is a random ``size`` x ``size`` cutout at least ``border`` pixels from the image
edges with at most ``max_bad_fraction`` invalid pixels (positions are redrawn until they
pass), optionally rotated / flipped (one of the 8 symmetries of the square), then scaled
so that its noise, the robust estimate of :func:`~lumos.sky.noise.robust_sigma` measured
on the cutout itself (the block noise map where that fails), equals the target sky
noise ``sqrt(level + read_noise**2)`` electrons, where ``level`` is the sky level of a
:class:`~lumos.sky.synthetic.SyntheticSky` for the stamp's band, CCD position and
exposure time; finally that level is added (PAUS images are not sky-subtracted).

``sky_model`` is ``level + scale * local background``; ``artefacts`` is 0 (the artefacts of
real images are real, not injected). Pixel scales are not resampled: a KiDS cutout has
0.339 arcsec pixels, not PAUCam's 0.263.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.interpolate import make_interp_spline

from lumos.bands import N_BAND_INDEX, band_from_index
from lumos.sky.base import BackgroundSample, BackgroundSource
from lumos.sky.noise import robust_sigma
from lumos.sky.synthetic import SyntheticSky

__all__ = ["RealImageBackground"]

ImageLike = str | Path | np.ndarray


def _load(image: ImageLike, hdu: int | str | None, label: str) -> np.ndarray:
    """A 2-D float array from a FITS path (``hdu`` or the first HDU with a 2-D image)."""
    if isinstance(image, np.ndarray):
        data = image
    elif isinstance(image, (str, Path)):
        # astropy.io.fits (about 0.3 s to import) only for a path: lumos.sky is part of every
        # simulation, which reads no FITS file
        from astropy.io import fits

        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{label}: no such file {str(path)!r}")
        try:
            with fits.open(path, memmap=False) as hdul:
                if hdu is None:
                    found = [h for h in hdul if h.data is not None and np.ndim(h.data) == 2]
                    if not found:
                        raise ValueError(f"{label}: {path.name} holds no 2-D image HDU")
                    data = np.array(found[0].data)
                else:
                    try:
                        data = hdul[hdu].data
                    except (KeyError, IndexError) as exc:
                        raise ValueError(f"{label}: {path.name} has no HDU {hdu!r}") from exc
                    if data is None:
                        raise ValueError(f"{label}: HDU {hdu!r} of {path.name} holds no data")
                    data = np.array(data)
        except OSError as exc:
            raise ValueError(f"{label}: cannot read {str(path)!r} as FITS ({exc})") from exc
    else:
        raise ValueError(
            f"{label}: expected a FITS path or a 2-D numpy array, got {type(image).__name__}"
        )
    if data.ndim != 2:
        raise ValueError(f"{label}: expected a 2-D image, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"{label}: image must be real-valued, got dtype {data.dtype}")
    return data


def _block_view(a: np.ndarray, mesh: int) -> np.ndarray:
    """[nby * nbx, mesh, mesh] blocks covering the top-left full blocks of ``a``."""
    nby, nbx = a.shape[0] // mesh, a.shape[1] // mesh
    a = a[: nby * mesh, : nbx * mesh]
    return a.reshape(nby, mesh, nbx, mesh).transpose(0, 2, 1, 3).reshape(-1, mesh, mesh)


def _fill_and_smooth(grid: np.ndarray) -> np.ndarray:
    """Replace NaN blocks by the median of the others, then 3 x 3 median filter."""
    bad = ~np.isfinite(grid)
    if bad.all():
        raise ValueError("no block of the image has enough valid pixels")
    grid = np.where(bad, np.median(grid[~bad]), grid)
    return ndimage.median_filter(grid, size=3, mode="nearest")


def _interp_weights(n_blocks: int, mesh: int, n_pixels: int) -> np.ndarray:
    """[n_pixels, n_blocks] clamped spline weights from block centres to pixel centres."""
    centres = (np.arange(n_blocks) + 0.5) * mesh - 0.5
    pos = np.clip(np.arange(n_pixels, dtype=float), centres[0], centres[-1])
    if n_blocks == 1:
        return np.ones((n_pixels, 1))
    k = min(3, n_blocks - 1)
    return make_interp_spline(centres, np.eye(n_blocks), k=k)(pos)


def _clipped_median(values: np.ndarray, noise: np.ndarray, use: np.ndarray) -> np.ndarray:
    """3-sigma-clipped median (3 iterations) of each row of ``values`` (NaN = missing).

    Rows are sorted once; each iteration narrows the index range of kept values, so the
    whole computation is vectorised. Rows not in ``use`` give NaN.
    """
    srt = np.sort(values, axis=1)  # NaN last
    lo = np.zeros(len(srt), dtype=np.int64)
    hi = np.isfinite(srt).sum(axis=1)
    rows = np.arange(len(srt))
    med = np.full(len(srt), np.nan)
    for _ in range(4):
        ok = use & (hi > lo)
        a = np.where(ok, (lo + hi - 1) // 2, 0)
        b = np.where(ok, (lo + hi) // 2, 0)
        med = np.where(ok, 0.5 * (srt[rows, a] + srt[rows, b]), np.nan)
        with np.errstate(invalid="ignore"):
            lo = (srt < (med - 3.0 * noise)[:, None]).sum(axis=1)
            hi = (srt <= (med + 3.0 * noise)[:, None]).sum(axis=1)
    return med


class _Prepared:
    """One image made ready for cutting (see the module docstring)."""

    def __init__(self, data: np.ndarray, mesh: int, label: str) -> None:
        data = np.asarray(data, dtype=np.float32)
        # no data: NaN / infinite pixels and regions of exact zeros (at least 3 x 3; single
        # zeros are legitimate values of quantised or integer images)
        zero = data == 0
        if zero.any():
            zero = ndimage.binary_opening(zero, structure=np.ones((3, 3), dtype=bool))
        invalid = ~np.isfinite(data) | zero
        if invalid.all():
            raise ValueError(f"{label}: every pixel is NaN, infinite or zero")
        h, w = data.shape
        if h < mesh or w < mesh:
            raise ValueError(f"{label}: image {data.shape} is smaller than one {mesh}-pixel mesh")
        # noise on blocks; the global noise unit is their median
        blocks = _block_view(data, mesh)
        ok = ~_block_view(invalid, mesh)
        enough = ok.reshape(len(blocks), -1).mean(axis=1) >= 0.5
        noise = robust_sigma(blocks, valid=ok)
        noise[~enough] = np.nan
        good = np.isfinite(noise) & (noise > 0)
        if not good.any():
            raise ValueError(f"{label}: no measurable noise (constant or mostly empty image?)")
        sigma = float(np.median(noise[good]))
        self.label = label
        self.shape = (h, w)
        self.unit_sigma = sigma
        scaled = np.where(invalid, np.float32(0.0), data / np.float32(sigma))
        noise /= sigma
        level = _clipped_median(
            np.where(ok, blocks / sigma, np.nan).reshape(len(blocks), -1), noise, enough
        )
        nby, nbx = h // mesh, w // mesh
        self.noise_grid = _fill_and_smooth(noise.reshape(nby, nbx))
        level_grid = _fill_and_smooth(level.reshape(nby, nbx))
        wy = _interp_weights(nby, mesh, h)
        wx = _interp_weights(nbx, mesh, w)
        self.background = (wy @ level_grid @ wx.T).astype(np.float32)
        self.data = scaled.astype(np.float32)
        self.mesh = mesh
        cum = np.zeros((h + 1, w + 1), dtype=np.int32)
        cum[1:, 1:] = invalid.cumsum(axis=0).cumsum(axis=1)
        self._cum = cum
        self.valid_fraction = 1.0 - float(invalid.mean())

    def n_invalid(self, j0: np.ndarray, i0: np.ndarray, size: int) -> np.ndarray:
        """Number of invalid pixels in the cutouts with top-left corners (j0, i0)."""
        c = self._cum
        return c[j0 + size, i0 + size] - c[j0, i0 + size] - c[j0 + size, i0] + c[j0, i0]

    def noise_at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Noise (in units of the global noise) at pixel positions, from the block map."""
        gy = (y + 0.5) / self.mesh - 0.5
        gx = (x + 0.5) / self.mesh - 0.5
        return ndimage.map_coordinates(self.noise_grid, [gy, gx], order=1, mode="nearest")


class RealImageBackground(BackgroundSource):
    """Background stamps cut from real images (see the module docstring).

    :meth:`sample` draws cutouts scaled to electrons: ``band_idx`` sets the target sky level
    and noise, ``ccd_xy`` the scattered-light part of the level.

    Parameters
    ----------
    images : path, array or sequence of them
        FITS file paths and/or 2-D arrays (linear flux, any unit; sky-subtracted or not).
    hdu : int, str, None or sequence of them
        HDU of each FITS file (one value for all, or one per image). None takes the first
        HDU with a 2-D image (for tile-compressed files, HDU 1).
    sky : SyntheticSky, optional
        Gives the sky level (and read noise) that sets each stamp's target noise; a
        default :class:`SyntheticSky` when omitted.
    border : int
        Minimum distance of a cutout from the image edges, pixels.
    max_bad_fraction : float
        Largest fraction of invalid pixels (NaN, infinite, or in zero regions) allowed in a
        cutout; they are set to 0 before scaling (i.e. to the sky level in the output).
    mesh : int
        Block size of the noise and background maps, pixels.
    augment : bool
        Rotate / flip each cutout by a random symmetry of the square.
    wavelengths : sequence of float, optional
        Central wavelength (Angstrom) of each image; when given, each stamp is cut from the
        image nearest in wavelength to its band. Otherwise images are drawn at random.
    weights : sequence of float, optional
        Relative probability of each image when ``wavelengths`` is not given (default:
        proportional to the number of valid pixels).

    Raises
    ------
    ValueError
        For unreadable or unusable images and bad parameters.
    """

    def __init__(
        self,
        images: ImageLike | Sequence[ImageLike],
        hdu: int | str | None | Sequence[int | str | None] = None,
        *,
        sky: SyntheticSky | None = None,
        border: int = 32,
        max_bad_fraction: float = 0.0,
        mesh: int = 64,
        augment: bool = True,
        wavelengths: Sequence[float] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("RealImageBackground needs at least one image")
        if isinstance(hdu, (list, tuple)):
            if len(hdu) != len(images):
                raise ValueError(f"got {len(hdu)} HDU choices for {len(images)} images")
            hdus = list(hdu)
        else:
            hdus = [hdu] * len(images)
        if int(border) < 0:
            raise ValueError(f"border must be >= 0 pixels, got {border}")
        if not 0.0 <= float(max_bad_fraction) < 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1), got {max_bad_fraction}")
        if int(mesh) < 8:
            raise ValueError(f"mesh must be >= 8 pixels, got {mesh}")
        if sky is not None and not isinstance(sky, SyntheticSky):
            raise ValueError(f"sky must be a SyntheticSky, got {type(sky).__name__}")
        self.sky = sky if sky is not None else SyntheticSky()
        self.border = int(border)
        self.max_bad_fraction = float(max_bad_fraction)
        self.augment = bool(augment)
        self.images = []
        for k, (image, h) in enumerate(zip(images, hdus, strict=True)):
            label = f"image {k}" + (f" ({image})" if isinstance(image, (str, Path)) else "")
            self.images.append(_Prepared(_load(image, h, label), int(mesh), label))

        if wavelengths is not None:
            wl = np.asarray(wavelengths, dtype=float)
            if wl.shape != (len(images),) or not np.all(np.isfinite(wl)):
                raise ValueError(
                    f"wavelengths must give one finite value per image ({len(images)})"
                )
            self.wavelengths = wl
        else:
            self.wavelengths = None
        if weights is None:
            p = np.array([im.valid_fraction * np.prod(im.shape) for im in self.images])
        else:
            p = np.asarray(weights, dtype=float)
            if p.shape != (len(images),) or not np.all(np.isfinite(p)) or p.min() < 0:
                raise ValueError(
                    f"weights must give one non-negative value per image ({len(images)})"
                )
            if p.sum() <= 0:
                raise ValueError("weights must not all be zero")
        self.weights = p / p.sum()

    def _choose_images(self, band_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.wavelengths is None:
            return rng.choice(len(self.images), size=band_idx.size, p=self.weights)
        lam = np.array([band_from_index(i)[0].wavelength for i in range(N_BAND_INDEX)])[band_idx]
        return np.argmin(np.abs(lam[:, None] - self.wavelengths[None, :]), axis=1)

    def _positions(
        self, im: _Prepared, m: int, size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corners of ``m`` acceptable cutouts (rejection sampling)."""
        h, w = im.shape
        hi_j, hi_i = h - self.border - size, w - self.border - size
        if hi_j < self.border or hi_i < self.border:
            raise ValueError(
                f"{im.label}: image {im.shape} is too small for {size}-pixel stamps "
                f"{self.border} pixels from the edges"
            )
        limit = int(np.floor(self.max_bad_fraction * size * size))
        j0 = rng.integers(self.border, hi_j + 1, m)
        i0 = rng.integers(self.border, hi_i + 1, m)
        bad = np.flatnonzero(im.n_invalid(j0, i0, size) > limit)
        for _ in range(200):
            if bad.size == 0:
                return j0, i0
            j0[bad] = rng.integers(self.border, hi_j + 1, bad.size)
            i0[bad] = rng.integers(self.border, hi_i + 1, bad.size)
            bad = bad[im.n_invalid(j0[bad], i0[bad], size) > limit]
        raise ValueError(
            f"{im.label}: could not find {size}-pixel cutouts with at most "
            f"{self.max_bad_fraction:.0%} invalid (NaN/zero) pixels; the image is mostly empty"
        )

    def _sample(self, n: int, size: int, b: np.ndarray, xy: np.ndarray, t: np.ndarray,
                rng: np.random.Generator) -> BackgroundSample:
        """:meth:`BackgroundSource.sample` on checked arguments: ``n`` scaled cutouts."""
        level = self.sky.sky_level(b, xy, t) if n else np.zeros(0)
        target = np.sqrt(level + self.sky.read_noise**2)
        which = self._choose_images(b, rng)
        pixels = np.empty((n, size, size), dtype=np.float32)
        model = np.empty((n, size, size), dtype=np.float32)
        for k, im in enumerate(self.images):
            sel = np.flatnonzero(which == k)
            if sel.size == 0:
                continue
            j0, i0 = self._positions(im, sel.size, size, rng)
            win = np.lib.stride_tricks.sliding_window_view
            cut = win(im.data, (size, size))[j0, i0]
            bkg = win(im.background, (size, size))[j0, i0]
            if self.augment:  # a random symmetry of the square
                code = rng.integers(0, 8, sel.size)
                for c in range(1, 8):
                    pick = np.flatnonzero(code == c)
                    if pick.size:
                        cut[pick] = _symmetry(cut[pick], c)
                        bkg[pick] = _symmetry(bkg[pick], c)
            noise = robust_sigma(cut)
            bad = ~(np.isfinite(noise) & (noise > 0))
            if bad.any():  # (almost) constant cutouts: use the block noise map
                half = 0.5 * (size - 1)
                noise[bad] = im.noise_at(j0[bad] + half, i0[bad] + half)
            scale = (target[sel] / noise).astype(np.float32)
            pixels[sel] = cut * scale[:, None, None]
            model[sel] = bkg * scale[:, None, None]
        lv = level.astype(np.float32)[:, None, None]
        pixels += lv
        model += lv
        return BackgroundSample(
            pixels, model, target.astype(np.float32), np.zeros(n, dtype=np.int64)
        )


def _symmetry(a: np.ndarray, code: int) -> np.ndarray:
    """Apply symmetry ``code`` (0..7) of the square to [N, S, S] images."""
    if code & 4:
        a = a.transpose(0, 2, 1)
    if code & 2:
        a = a[:, ::-1, :]
    if code & 1:
        a = a[:, :, ::-1]
    return a
