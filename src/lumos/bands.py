"""Photometric bands: the 40 PAUS narrow bands, filter trays and the band x camera-state index.

The PAU Camera carries 40 narrow-band filters, NB455 to NB845, with central wavelengths
4550 to 8450 Angstrom in steps of 100 Angstrom and a FWHM of 130 Angstrom. They sit in five
filter trays of eight bands each; the baseline exposure time grows from the bluest tray
(70 s) to the reddest (130 s). The camera was serviced once during the survey (the
"intervention"), which changed its scattered-light pattern, so the network embeds each band
separately before and after: ``index = band_number + 40 * camera_state`` runs from 0 to 79.

Other surveys' bands can be registered with :func:`register_band`: by default the network
sees them through the PAUS band nearest in central wavelength; a survey description
(:mod:`lumos.survey`) instead gives its ``B`` bands their own slots,
``index = position + B * camera_state``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LumosError

__all__ = [
    "Band",
    "PAUS_BANDS",
    "N_PAUS_BANDS",
    "N_CAMERA_STATES",
    "N_BAND_INDEX",
    "TRAY_EXPOSURE_TIME",
    "get_band",
    "band_names",
    "register_band",
    "band_index",
    "band_from_index",
    "band_response",
]

N_PAUS_BANDS = 40
N_CAMERA_STATES = 2  # before / after the camera intervention
N_BAND_INDEX = N_PAUS_BANDS * N_CAMERA_STATES

#: Baseline exposure time (seconds) of each of the five filter trays, bluest first.
TRAY_EXPOSURE_TIME = (70.0, 80.0, 90.0, 110.0, 130.0)
_BANDS_PER_TRAY = 8
PAUS_FWHM_ANGSTROM = 130.0


@dataclass(frozen=True)
class Band:
    """A photometric band.

    Parameters
    ----------
    name : str
        Band name, e.g. ``"NB685"``.
    wavelength : float
        Central wavelength in Angstrom.
    fwhm : float
        Full width at half maximum of the response, Angstrom.
    exposure_time : float
        Baseline exposure time of one image in this band, seconds.
    number : int
        Position among the 40 PAUS narrow bands (0 for NB455) or, for a registered band,
        the number of the PAUS band nearest in wavelength (used by the network embedding).
    tray : int or None
        Filter tray (0-4) for PAUS bands, None for registered bands.
    slots : int
        Band slots per camera state of the band's survey: the band x camera-state index is
        ``number + slots * camera_state`` (40 for PAUS).
    survey : str
        Name of the survey the band belongs to.
    zero_point : float
        AB magnitude of a source giving 1 electron per second in this band.
    curve : tuple or None
        Measured response ``(wavelengths in Angstrom, throughput)``; None for the
        flat-topped model of :func:`band_response`.
    """

    name: str
    wavelength: float
    fwhm: float
    exposure_time: float
    number: int
    tray: int | None = None
    slots: int = N_PAUS_BANDS
    survey: str = "PAUS"
    zero_point: float = 24.5
    curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def index(self, camera_state: int = 0) -> int:
        """Band x camera-state index (0..79) used by the network embedding.

        Parameters
        ----------
        camera_state : int
            0 before the camera intervention, 1 after.
        """
        return band_index(self.name, camera_state)


def _make_paus() -> dict[str, Band]:
    bands = {}
    for number in range(N_PAUS_BANDS):
        wavelength = 4550.0 + 100.0 * number
        tray = number // _BANDS_PER_TRAY
        name = f"NB{int(wavelength) // 10}"
        bands[name] = Band(
            name=name,
            wavelength=wavelength,
            fwhm=PAUS_FWHM_ANGSTROM,
            exposure_time=TRAY_EXPOSURE_TIME[tray],
            number=number,
            tray=tray,
        )
    return bands


PAUS_BANDS: dict[str, Band] = _make_paus()
_REGISTRY: dict[str, Band] = dict(PAUS_BANDS)


def band_names() -> list[str]:
    """Names of all known bands: the 40 PAUS bands, then registered ones."""
    return list(_REGISTRY)


def get_band(name: str | Band) -> Band:
    """Look up a band by name (case-insensitive).

    Parameters
    ----------
    name : str or Band
        Band name such as ``"NB685"`` or ``"nb685"``.

    Returns
    -------
    Band

    Raises
    ------
    ValueError
        If the band is unknown; the message lists the valid names.
    """
    if isinstance(name, Band):
        return name
    key = str(name).strip().upper()
    for band_name, band in _REGISTRY.items():
        if band_name.upper() == key:
            return band
    raise LumosError(
        f"unknown band {name!r}; valid bands are: {', '.join(band_names())} "
        "(another survey's bands: give --survey FILE)"
    )


def register_band(
    name: str,
    wavelength: float,
    exposure_time: float,
    fwhm: float = PAUS_FWHM_ANGSTROM,
    *,
    number: int | None = None,
    slots: int = N_PAUS_BANDS,
    survey: str = "PAUS",
    zero_point: float = 24.5,
    curve: tuple | None = None,
    replace: bool = False,
) -> Band:
    """Register another survey's band.

    Parameters
    ----------
    name : str
        Band name; must not clash with a known band.
    wavelength : float
        Central wavelength in Angstrom (within 3000-11000).
    exposure_time : float
        Baseline exposure time in seconds (positive).
    fwhm : float, optional
        Width of the response in Angstrom.
    number : int, optional
        Slot of the band among its survey's bands (default: the number of the PAUS band
        nearest in wavelength, so that the network embeds it as that band).
    slots : int, optional
        Band slots per camera state of the band's survey.
    survey : str, optional
        Name of the band's survey; by default PAUS, whose network sees the band as the
        PAUS band of slot ``number``.
    zero_point : float, optional
        AB magnitude of 1 electron per second.
    curve : tuple, optional
        Measured response ``(wavelengths in Angstrom, throughput)``.
    replace : bool, optional
        Replace a registered (non-PAUS) band of the same name instead of refusing.

    Returns
    -------
    Band
        The new band.
    """
    if not name or not str(name).strip():
        raise ValueError("a band needs a non-empty name")
    clash = [n for n in _REGISTRY if n.upper() == str(name).strip().upper()]
    if clash and (not replace or clash[0] in PAUS_BANDS):
        raise ValueError(f"band {name!r} is already registered")
    for old in clash:
        del _REGISTRY[old]
    if not (3000.0 <= float(wavelength) <= 11000.0):
        raise ValueError(f"band wavelength {wavelength} Angstrom is outside 3000-11000")
    if not float(exposure_time) > 0:
        raise ValueError(f"band exposure time must be positive, got {exposure_time}")
    if number is None:
        centres = np.array([b.wavelength for b in PAUS_BANDS.values()])
        number = int(np.argmin(np.abs(centres - float(wavelength))))
    if not (0 <= int(number) < int(slots) and int(slots) * N_CAMERA_STATES <= N_BAND_INDEX):
        raise ValueError(f"band slot {number} of {slots} does not fit the band index")
    band = Band(str(name).strip(), float(wavelength), float(fwhm), float(exposure_time),
                int(number), slots=int(slots), survey=str(survey),
                zero_point=float(zero_point), curve=curve)  # fmt: skip
    _REGISTRY[band.name] = band
    return band


def band_index(name: str | Band, camera_state: int = 0) -> int:
    """Band x camera-state index in 0..79.

    Parameters
    ----------
    name : str or Band
        Band.
    camera_state : int
        0 before the camera intervention, 1 after.
    """
    if int(camera_state) not in (0, 1):
        raise ValueError(f"camera_state must be 0 (before) or 1 (after), got {camera_state}")
    band = get_band(name)
    return band.number + band.slots * int(camera_state)


def band_from_index(index: int) -> tuple[Band, int]:
    """Inverse of :func:`band_index`: the PAUS band and camera state of an index."""
    index = int(index)
    if not 0 <= index < N_BAND_INDEX:
        raise ValueError(f"band index must be in 0..{N_BAND_INDEX - 1}, got {index}")
    number, state = index % N_PAUS_BANDS, index // N_PAUS_BANDS
    return list(PAUS_BANDS.values())[number], state


def band_response(band: str | Band, wavelength: np.ndarray) -> np.ndarray:
    """Transmission of a band: its measured curve, else a flat-topped (super-Gaussian) model.

    The measured PAUS curves are close to top hats of 130 Angstrom FWHM; this analytic form
    keeps the package free of third-party data files and is checked against the measured
    curves in the tests.

    Parameters
    ----------
    band : str or Band
        Band.
    wavelength : array_like
        Wavelengths in Angstrom.

    Returns
    -------
    numpy.ndarray
        Transmission in [0, 1]; for the model curve 0.5 at centre +- FWHM/2. A measured
        curve is interpolated linearly and is 0 outside its wavelengths.
    """
    b = get_band(band)
    if b.curve is not None:
        wave, throughput = (np.asarray(c, dtype=float) for c in b.curve)
        return np.interp(np.asarray(wavelength, dtype=float), wave, throughput, left=0.0,
                         right=0.0)  # fmt: skip
    x = (np.asarray(wavelength, dtype=float) - b.wavelength) / (0.5 * b.fwhm)
    return np.exp(-np.log(2.0) * x**8)
