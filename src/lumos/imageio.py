"""Reading images and their metadata (band, PSF, pixel scale, gain, camera state) from FITS."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .bands import Band, get_band
from .errors import ImageError, LumosError
from .instrument import PIXEL_SCALE

__all__ = ["ImageMeta", "DEFAULT_KEYWORDS", "read_image", "check_image_data", "image_metadata"]

#: FITS header keywords read for each piece of metadata (configurable per call).
DEFAULT_KEYWORDS = {
    "band": "FILTER",
    "psf_fwhm": "PSFFWHM",
    "psf_beta": "PSFBETA",
    "pixel_scale": "PIXSCALE",
    "gain": "GAIN",
    "exposure_time": "EXPTIME",
    "read_noise": "RDNOISE",
    "camera_state": "CAMSTATE",
    "zero_point": "ZP",
    "unit": "BUNIT",
}


@dataclass
class ImageMeta:
    """What the measurement needs to know about an image.

    Attributes
    ----------
    band : Band
        The band.
    psf_fwhm : float
        PSF full width at half maximum, arcsec (Moffat profile).
    psf_beta : float
        Moffat beta of the PSF.
    pixel_scale : float
        Arcsec per pixel.
    gain : float
        Electrons per image unit (1 for images in electrons).
    exposure_time : float
        Seconds.
    exposure_time_source : str
        Where the exposure time came from: ``"option"``, ``"header"`` or ``"band default"``
        (the band's nominal exposure time, used when neither gives one).
    camera_state : int
        0 before the camera intervention, 1 after.
    read_noise : float
        Electrons.
    zero_point : float or None
        Magnitude zero point of the image units, if known.
    unit : str
        Image units (recorded in the output table).
    """

    band: Band
    psf_fwhm: float
    psf_beta: float = 3.5
    pixel_scale: float = PIXEL_SCALE
    gain: float = 1.0
    exposure_time: float | None = None
    camera_state: int = 0
    read_noise: float = 5.0
    zero_point: float | None = None
    unit: str = "electron"
    extra: dict = field(default_factory=dict)
    exposure_time_source: str = "header"


def read_image(path: str | Path, hdu: int | str | None = None):
    """Read a 2-D image, its header and its WCS (or None) from a FITS file.

    Parameters
    ----------
    path : str or Path
        FITS file; tile-compressed images are supported.
    hdu : int or str, optional
        HDU to read; default the first HDU holding a 2-D image.

    Returns
    -------
    data : numpy.ndarray
        Image as float32.
    header : astropy.io.fits.Header
        The image HDU's header, completed by the primary header's keywords it lacks.
    wcs : astropy.wcs.WCS or None
        None when the header has no celestial WCS.

    Raises
    ------
    ImageError
        If the file is missing, is not a readable FITS file or has no 2-D image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    # astropy's warnings are held back: a file that cannot be read gets one error line
    # (naming a truncation where astropy saw one); one that can gets its warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _read_image(path, hdu)
        except ImageError as exc:
            truncated = _truncation(caught)
            if truncated and "cannot read FITS image" in str(exc):
                raise ImageError(f"cannot read FITS image {path.name}: {truncated}") from None
            raise
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _truncation(caught) -> str | None:
    """A one-line description of astropy's "file may have been truncated" warning, if any."""
    for w in caught:
        text = str(w.message)
        if "truncated" in text:
            sizes = re.findall(r"\((\d+)\)", text)
            if len(sizes) == 2:
                return f"the file is truncated ({sizes[0]} of {sizes[1]} bytes)"
            return "the file is truncated"
    return None


def _read_image(path: Path, hdu: int | str | None):
    try:
        with fits.open(path, memmap=False) as hdul:
            if hdu is not None:
                chosen = hdul[hdu]
            else:
                chosen = next(
                    (h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2),
                    None,
                )
            if chosen is None:
                raise ImageError(f"{path.name} has no 2-D image HDU")
            if chosen.data is None or chosen.data.ndim != 2:
                raise ImageError(f"HDU {hdu!r} of {path.name} is not a 2-D image")
            data = np.asarray(chosen.data, dtype=np.float32)
            header = chosen.header.copy()
            if chosen is not hdul[0]:
                _inherit(header, hdul[0].header)
    except ImageError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot read FITS image {path.name}: {msg}") from None
    try:
        wcs = WCS(header)
        if not wcs.has_celestial:
            wcs = None
    except Exception:
        wcs = None
    return data, header, wcs


_STRUCTURAL = {"SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE",
               "BZERO", "BLANK", "CHECKSUM", "DATASUM", "EXTNAME", "EXTVER", "INHERIT",
               "COMMENT", "HISTORY", ""}  # fmt: skip


def _inherit(header: fits.Header, primary: fits.Header) -> None:
    """Add the primary header's keywords that an extension lacks (FITS ``INHERIT``).

    Multi-extension camera files (DECam's, for one) keep the filter, exposure time and
    other exposure-wide keywords in the primary header only.
    """
    for card in primary.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith("NAXIS") or key in header:
            continue
        header.append(fits.Card.fromstring(card.image), end=True)  # HIERARCH stays, silently


def check_image_data(data: np.ndarray, path: str | Path) -> None:
    """Refuse an image without a single finite pixel (nothing on it can be measured).

    Parameters
    ----------
    data : numpy.ndarray
        The image.
    path : str or Path
        Its file, for the message.

    Raises
    ------
    ImageError
        If every pixel is NaN or infinite.
    """
    if not np.isfinite(data).any():
        raise ImageError(f"image {Path(path).name} has no finite pixels (all NaN or infinite)")


def image_metadata(
    header: fits.Header | Mapping | None = None,
    overrides: Mapping | None = None,
    keywords: Mapping[str, str] | None = None,
    wcs: WCS | None = None,
) -> ImageMeta:
    """Image metadata from options, else FITS header keywords, else defaults.

    Parameters
    ----------
    header : astropy.io.fits.Header or mapping, optional
        Image header.
    overrides : mapping, optional
        Values given explicitly (e.g. from command-line options); None values are ignored.
    keywords : mapping, optional
        Header keyword for each item, overriding :data:`DEFAULT_KEYWORDS`.
    wcs : astropy.wcs.WCS, optional
        Used for the pixel scale when no keyword or option gives it.

    Raises
    ------
    LumosError
        When the band or the PSF FWHM is unknown or a value is invalid.
    """
    header = header or {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    keys = dict(DEFAULT_KEYWORDS)
    keys.update(keywords or {})

    def get(item):
        if item in overrides:
            return overrides[item]
        key = keys.get(item)
        if key and key in header:
            return header[key]
        return None

    band_name = get("band")
    if band_name is None:
        raise LumosError(f"band unknown: give --band or the header keyword {keys['band']}")
    band = get_band(str(band_name))
    fwhm = get("psf_fwhm")
    if fwhm is None:
        raise LumosError(
            f"PSF FWHM unknown: give --psf-fwhm or the header keyword {keys['psf_fwhm']}"
        )
    exptime = get("exposure_time")
    if exptime is None:
        exptime, exptime_source = band.exposure_time, "band default"
    else:
        exptime = _positive(exptime, "exposure time")
        exptime_source = "option" if "exposure_time" in overrides else "header"
    pixel_scale = get("pixel_scale")
    if pixel_scale is None and wcs is not None:
        pixel_scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)
    meta = ImageMeta(
        band=band,
        psf_fwhm=_positive(fwhm, "PSF FWHM"),
        psf_beta=_positive(get("psf_beta") or 3.5, "PSF beta"),
        pixel_scale=_positive(pixel_scale or PIXEL_SCALE, "pixel scale"),
        gain=_positive(get("gain") or 1.0, "gain"),
        exposure_time=exptime,
        exposure_time_source=exptime_source,
        camera_state=int(get("camera_state") or 0),
        read_noise=float(get("read_noise") or 5.0),
        zero_point=None if get("zero_point") is None else float(get("zero_point")),
        unit=str(get("unit") or "electron"),
    )
    if meta.camera_state not in (0, 1):
        raise LumosError(f"camera state must be 0 or 1, got {meta.camera_state}")
    if meta.psf_beta <= 1.0:
        raise LumosError(f"Moffat PSF beta must be > 1, got {meta.psf_beta}")
    return meta


def _positive(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LumosError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise LumosError(f"{what} must be positive, got {value!r}")
    return v
