"""Training backgrounds from a table of real images (``--backgrounds MANIFEST``).

A backgrounds manifest is a table (CSV, ECSV, FITS or Parquet) with one row per image:

``path``
    FITS image (relative paths are relative to the manifest); any linear unit, sky
    subtracted or not.
``band``
    The survey band whose stamps may be cut from it, or ``any`` (every band; e.g. another
    survey's images used as extra real sky).
``camera_state`` (optional)
    Camera state (0-based) whose stamps may be cut from it; empty or -1 for every state.
``hdu`` (optional)
    HDU holding the image (default: the first 2-D image).
``mask``, ``weight`` (optional)
    Bad-pixel mask (non-zero = bad) and inverse-variance map (0 = no data) of the image,
    same shape: their pixels count as invalid (at most 1% of a cutout, set to the sky).
``psf_fwhm`` (optional)
    The image's PSF FWHM, arcsec: checked and recorded, not used by the simulation (the
    simulated galaxy's PSF is drawn from the survey's PSF range).

Each stamp of band x camera-state slot ``s`` is a random cutout of one of the images
allowed for ``s`` (chosen in proportion to their valid pixels), sources left in, rescaled
to the noise of the survey's typical sky in that band and exposure time
(:class:`lumos.sky.RealImageBackground`). :func:`training_background` mixes these with the
synthetic sky in a chosen fraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bands import N_BAND_INDEX
from .errors import LumosError
from .imageio import read_image
from .instrument import CCD_HEIGHT, CCD_WIDTH
from .pixelmaps import read_pixel_map
from .sky.composite import CompositeBackground
from .sky.real import RealImageBackground
from .sky.synthetic import SyntheticSky
from .survey import Survey
from .tableio import read_table

__all__ = ["SlotRealBackground", "SurveyLevels", "read_backgrounds", "training_background"]

_COLUMNS = ("path", "band", "camera_state", "hdu", "mask", "weight", "psf_fwhm")
#: Largest fraction of invalid pixels in a cutout of an image with a mask or weight map.
MASKED_BAD_FRACTION = 0.01


class SurveyLevels(SyntheticSky):
    """The survey's typical flat sky, as the target level of real-image cutouts.

    :class:`~lumos.sky.RealImageBackground` asks its ``sky`` for ``sky_level`` and
    ``read_noise``; this gives ``sky * exposure_time`` of each band slot, without the
    PAUCam scattered light.

    Parameters
    ----------
    survey : Survey
        Gives each band's ``sky`` (e-/s/pixel) and the read noise.
    """

    def __init__(self, survey: Survey) -> None:
        super().__init__(read_noise=survey.read_noise)
        rates = np.zeros(N_BAND_INDEX)
        for state in range(len(survey.camera_states)):
            for b in survey.bands:
                rates[survey.band_index(b.name, state)] = b.sky
        self._rate = rates

    def sky_level(self, band_idx, ccd_xy, exposure_time) -> np.ndarray:
        """Flat sky ``sky * exposure_time`` of each stamp's band, electrons per pixel."""
        b = np.atleast_1d(np.asarray(band_idx, dtype=np.int64))
        t = np.broadcast_to(np.asarray(exposure_time, dtype=float), b.shape)
        return self._rate[b] * t


class SlotRealBackground(RealImageBackground):
    """Real-image cutouts, each stamp from an image allowed for its band x camera state.

    Parameters
    ----------
    images : sequence of path
        FITS images.
    slots : sequence of sequence of int
        Band x camera-state slots each image may serve.
    hdu : sequence, optional
        HDU of each image.
    sky : SyntheticSky
        Target sky level and read noise (see :class:`SurveyLevels`).
    **kwargs
        Further :class:`~lumos.sky.RealImageBackground` settings.
    """

    def __init__(self, images, slots, hdu=None, *, sky: SyntheticSky, **kwargs) -> None:
        super().__init__(list(images), hdu, sky=sky, **kwargs)
        allowed = np.zeros((N_BAND_INDEX, len(self.images)), dtype=bool)
        for k, image_slots in enumerate(slots):
            allowed[list(image_slots), k] = True
        self.allowed = allowed

    def _choose_images(self, band_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = np.asarray(band_idx, dtype=np.int64)
        which = np.empty(b.size, dtype=np.int64)
        for slot in np.unique(b):
            sel = np.flatnonzero(b == slot)
            p = self.weights * self.allowed[slot]
            if p.sum() <= 0:
                raise ValueError(f"no background image serves band slot {slot}")
            which[sel] = rng.choice(len(self.images), size=sel.size, p=p / p.sum())
        return which


class _PAUCamFrame:
    """Pass CCD positions of another survey's CCD to ``source`` on the 4096 x 2048 frame
    the background sources check positions against (real cutouts do not depend on them)."""

    def __init__(self, source, ccd_size: tuple[int, int]) -> None:
        self.source = source
        self.scale = np.array([CCD_WIDTH / ccd_size[0], CCD_HEIGHT / ccd_size[1]])

    def sample(self, n, size, band_idx, ccd_xy, exposure_time, rng):
        """Draw ``n`` background stamps (see :class:`lumos.sky.BackgroundSource`)."""
        xy = np.clip(np.asarray(ccd_xy, dtype=float) * self.scale, 0.0,
                     [CCD_WIDTH, CCD_HEIGHT])  # fmt: skip
        return self.source.sample(n, size, band_idx, xy, exposure_time, rng)


def _cell(row, name: str):
    """A manifest cell, or None when the column is absent, masked or empty."""
    if name not in row.colnames:
        return None
    value = row[name]
    if np.ma.is_masked(value):
        return None
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _local(value, path: Path) -> Path:
    """A manifest path, relative to the manifest's folder unless absolute."""
    p = Path(str(value))
    return p if p.is_absolute() else path.parent / p


def _masked_image(image: Path, hdu, mask, weight, path: Path, where: str) -> np.ndarray:
    """The image with the pixels its mask or weight map marks bad set to NaN."""
    data, _, _ = read_image(image, hdu)
    bad = np.zeros(data.shape, dtype=bool)
    try:
        if mask is not None:
            bad |= read_pixel_map(_local(mask, path), data.shape, "mask") != 0
        if weight is not None:
            w = read_pixel_map(_local(weight, path), data.shape, "weight map")
            bad |= ~(np.isfinite(w) & (w > 0))
    except LumosError as exc:
        raise LumosError(f"{where}: {exc}") from None
    data[bad] = np.nan
    return data


def read_backgrounds(path: str | Path, survey: Survey) -> tuple[list, list, list[list[int]]]:
    """Read a backgrounds manifest for ``survey``.

    Returns
    -------
    images : list of str or numpy.ndarray
        Absolute image paths, or the image arrays with bad pixels set to NaN for rows with
        a mask or weight map.
    hdus : list
        HDU of each image (None: the first 2-D image).
    slots : list of list of int
        Band x camera-state slots each image serves.

    Raises
    ------
    LumosError
        One line naming the manifest, the row and the problem.
    """
    path = Path(path)
    table = read_table(path, "backgrounds manifest")
    name = path.name
    for column in ("path", "band"):
        if column not in table.colnames:
            raise LumosError(f"backgrounds manifest {name} needs a {column!r} column; it has: "
                             f"{', '.join(table.colnames)}")  # fmt: skip
    unknown = [c for c in table.colnames if c not in _COLUMNS]
    if unknown:
        raise LumosError(f"backgrounds manifest {name}: unknown column {unknown[0]!r} (known: "
                         f"{', '.join(_COLUMNS)})")  # fmt: skip
    if len(table) == 0:
        raise LumosError(f"backgrounds manifest {name} lists no images")
    n_states = len(survey.camera_states)
    images, hdus, slots = [], [], []
    for k, row in enumerate(table, start=1):
        where = f"backgrounds manifest {name} row {k}"
        image = _cell(row, "path")
        if image is None:
            raise LumosError(f"{where}: empty path")
        image_path = _local(image, path)
        if not image_path.is_file():
            raise LumosError(f"{where}: image not found: {image_path}")
        band = _cell(row, "band")
        if band is None:
            raise LumosError(f"{where}: empty band (give a band of {survey.name} or 'any')")
        band = str(band).strip()
        if band.lower() == "any":
            names = survey.band_names
        else:
            try:
                names = (survey.band(band).name,)
            except LumosError as exc:
                raise LumosError(f"{where}: {exc} (or 'any')") from None
        state = _cell(row, "camera_state")
        if state is None or int(state) == -1:
            states = range(n_states)
        else:
            if not 0 <= int(state) < n_states:
                raise LumosError(f"{where}: camera_state {state} is not one of survey "
                                 f"{survey.name}'s {n_states} state(s)")  # fmt: skip
            states = (int(state),)
        fwhm = _cell(row, "psf_fwhm")
        if fwhm is not None and not (np.isfinite(float(fwhm)) and float(fwhm) > 0):
            raise LumosError(f"{where}: psf_fwhm must be positive, got {fwhm}")
        hdu = _cell(row, "hdu")
        hdu = None if hdu is None else (int(hdu) if str(hdu).isdigit() else str(hdu))
        mask, weight = _cell(row, "mask"), _cell(row, "weight")
        if mask is None and weight is None:
            images.append(str(image_path))
            hdus.append(hdu)
        else:
            images.append(_masked_image(image_path, hdu, mask, weight, path, where))
            hdus.append(None)
        slots.append([survey.band_index(b, s) for b in names for s in states])
    return images, hdus, slots


def training_background(survey: Survey, backgrounds: str | Path | None = None,
                        fraction: float = 1.0):
    """The background source of a survey's training simulation.

    Parameters
    ----------
    survey : Survey
        The survey.
    backgrounds : str or Path, optional
        Backgrounds manifest; None for the synthetic sky alone.
    fraction : float
        Fraction of the stamps cut from the real images (the rest: synthetic sky).

    Returns
    -------
    BackgroundSource or None
        None for PAUS without backgrounds (the simulator's default synthetic sky).
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise LumosError(f"--background-fraction must be in [0, 1], got {fraction}")
    if backgrounds is None:
        return None if survey.is_paus else survey.background()
    images, hdus, slots = read_backgrounds(backgrounds, survey)
    sky = SyntheticSky() if survey.is_paus else SurveyLevels(survey)
    try:
        masked = any(isinstance(im, np.ndarray) for im in images)
        real = SlotRealBackground(images, slots, hdus, sky=sky,
                                  max_bad_fraction=MASKED_BAD_FRACTION if masked else 0.0)
    except ValueError as exc:
        raise LumosError(f"backgrounds manifest {Path(backgrounds).name}: "
                         f"{str(exc).splitlines()[0]}") from None
    served = np.flatnonzero(real.allowed.any(axis=1))
    needed = {survey.band_index(b, s) for b in survey.band_names
              for s in range(len(survey.camera_states))}  # fmt: skip
    missing = sorted(needed - set(served.tolist()))
    if missing and fraction > 0:
        names = sorted({survey.bands[m % len(survey.bands)].name for m in missing})
        raise LumosError(f"backgrounds manifest {Path(backgrounds).name} has no image for "
                         f"band(s) {', '.join(names)} (give them rows, or band 'any')")
    source = real
    if fraction < 1.0:
        source = CompositeBackground([real, survey.background()],
                                     weights=[fraction, 1.0 - fraction])  # fmt: skip
    return source if survey.is_paus else _PAUCamFrame(source, survey.ccd_size)
