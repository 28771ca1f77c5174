"""The description of an imaging survey: its camera, bands, PSF range and population.

A :class:`Survey` says what ``lumos simulate`` and ``lumos train`` simulate and what images
``lumos measure`` may give a model; :meth:`Survey.register` makes its bands known to
:mod:`lumos.bands` (the band registry that reads images' band names). PAUS is built in
(:func:`paus_survey`, from the constants of :mod:`lumos.bands`, :mod:`lumos.simulate` and
:mod:`lumos.population`); other surveys come from a TOML file (:mod:`lumos.survey_file`).

Band fluxes of the simulated galaxies come from the population's template spectra
integrated through each band's response: the measured ``filter_curve`` when given, else a
flat-topped curve of the band's ``wavelength`` and ``fwhm`` (the standard broad bands have
built-in centres and widths, :data:`BROAD_BANDS`, close to the SDSS/DECam curves). Spectra
are tabulated over 4000-9300 Angstrom (:data:`POPULATION_WAVELENGTHS`), so a band's flux is
the mean over the part of its response inside that range (a band with less than half of it
inside cannot be simulated). The network embeds the ``B`` bands of a survey in the slots
``position + B * camera_state`` of its 80 band x camera-state slots.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bands import PAUS_BANDS, Band, band_response, get_band, register_band
from .errors import LumosError
from .imageio import DEFAULT_KEYWORDS
from .observe import default_background
from .population import ZERO_POINT, PopulationConfig
from .psf_pool import PSFExPool
from .simconfig import SimulationConfig
from .spectra import clear_flux_tables
from .survey_sky import SurveySky

__all__ = [
    "SurveyBand",
    "SurveyPSF",
    "Survey",
    "BROAD_BANDS",
    "PAUS_NAME",
    "POPULATION_WAVELENGTHS",
    "paus_survey",
    "clear_population_tables",
]

PAUS_NAME = "PAUS"
#: Centre and FWHM (Angstrom) of the standard broad bands, used when a band gives neither.
BROAD_BANDS = {
    "u": (3550.0, 650.0),
    "g": (4750.0, 1450.0),
    "r": (6350.0, 1450.0),
    "i": (7750.0, 1450.0),
    "z": (9200.0, 1450.0),
    "Y": (9900.0, 1000.0),
}
#: Wavelengths (Angstrom) over which the population's spectra are tabulated.
POPULATION_WAVELENGTHS = (4000.0, 9300.0)
_PAUS_SKY_RATE = 1.9  # e-/s/pixel, the FlatSky default


@dataclass(frozen=True)
class SurveyBand:
    """One band of a survey.

    Parameters
    ----------
    name : str
        Band name as images give it (header ``FILTER`` or ``--band``).
    zero_point : float
        AB magnitude of a source giving 1 electron per second.
    exposure_time : float
        Typical exposure time, seconds.
    sky : float
        Typical sky, electrons per second per pixel.
    wavelength, fwhm : float
        Centre and width of the response, Angstrom.
    curve : tuple or None
        Measured response ``(wavelengths in Angstrom, throughput)``.
    """

    name: str
    zero_point: float
    exposure_time: float
    sky: float
    wavelength: float
    fwhm: float
    curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (without the curve's samples)."""
        return {"zero_point": self.zero_point, "exposure_time": self.exposure_time,
                "sky": self.sky, "wavelength": self.wavelength, "fwhm": self.fwhm,
                "filter_curve": self.curve is not None}  # fmt: skip


@dataclass(frozen=True)
class SurveyPSF:
    """PSF family and range of a survey.

    Parameters
    ----------
    family : {"moffat", "psfex"}
        Moffat profiles drawn from the ranges, or the survey's PSFEx models.
    fwhm_range : tuple of float
        Moffat FWHM range, arcsec.
    beta_range : tuple of float
        Moffat beta range.
    files : tuple of str
        PSFEx files (``family="psfex"``).
    """

    family: str = "moffat"
    fwhm_range: tuple[float, float] = (0.6, 1.3)
    beta_range: tuple[float, float] = (2.5, 5.0)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Survey:
    """An imaging survey as lumos needs to know it (see the module docstring).

    Parameters
    ----------
    name : str
        Survey name, recorded in model files.
    pixel_scale : float
        Arcsec per pixel.
    ccd_size : tuple of int
        CCD width and height (x, y), pixels.
    gain : float
        Electrons per image unit.
    read_noise : float
        Read noise, electrons.
    saturation : float or None
        Saturation level, electrons.
    bands : tuple of SurveyBand
        The bands, in slot order.
    camera_states : tuple of str
        Names of the camera states (one or two).
    psf : SurveyPSF
        PSF family and range.
    reference_band : str
        Band of the catalogue magnitude; ``"i"`` is the population's own i band.
    mag_range : tuple of float
        i-band AB magnitude range of the simulated galaxies.
    flux_range : tuple of float
        Log-uniform flux range of likelihood training, electrons per second.
    source : str or None
        File the survey was read from (None for the built-in PAUS).
    """

    name: str
    pixel_scale: float
    ccd_size: tuple[int, int]
    gain: float
    read_noise: float
    saturation: float | None
    bands: tuple[SurveyBand, ...]
    camera_states: tuple[str, ...] = ("default",)
    psf: SurveyPSF = SurveyPSF()
    reference_band: str = "i"
    mag_range: tuple[float, float] = (17.0, 23.0)
    flux_range: tuple[float, float] = (0.2, 1000.0)
    source: str | None = None

    @property
    def is_paus(self) -> bool:
        """True for the built-in PAUS survey."""
        return self.name == PAUS_NAME and self.source is None

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands, in slot order."""
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> SurveyBand:
        """The band called ``name`` (case-insensitive).

        Raises
        ------
        LumosError
            If the survey has no such band; the message lists its bands.
        """
        key = str(name).strip().upper()
        for b in self.bands:
            if b.name.upper() == key:
                return b
        where = f" ({self.source})" if self.source else ""
        raise LumosError(f"survey {self.name}{where} has no band {name!r}; its bands are: "
                         f"{', '.join(self.band_names)}")  # fmt: skip

    def band_index(self, name: str, camera_state: int = 0) -> int:
        """Network slot ``position + n_bands * camera_state`` of a band."""
        if not 0 <= int(camera_state) < len(self.camera_states):
            raise LumosError(f"survey {self.name} has {len(self.camera_states)} camera "
                             f"state(s); got camera state {camera_state}")  # fmt: skip
        position = self.band_names.index(self.band(name).name)
        return position + len(self.bands) * int(camera_state)

    def register(self) -> tuple[Band, ...]:
        """Make the survey's bands known to :func:`lumos.bands.get_band` (idempotent).

        PAUS bands are built in; another survey's bands replace registered bands of the
        same name (a PAUS band name cannot be reused).
        """
        if self.is_paus:
            return tuple(PAUS_BANDS.values())
        out = []
        for number, b in enumerate(self.bands):
            if b.name.upper() in (n.upper() for n in PAUS_BANDS):
                raise LumosError(f"survey {self.name}: band name {b.name!r} is a PAUS band")
            try:
                old = get_band(b.name)
            except LumosError:
                old = None
            new = Band(b.name, b.wavelength, b.fwhm, b.exposure_time, number,
                       slots=len(self.bands), survey=self.name, zero_point=b.zero_point,
                       curve=b.curve)  # fmt: skip
            if old != new:
                register_band(b.name, b.wavelength, b.exposure_time, b.fwhm, number=number,
                              slots=len(self.bands), survey=self.name,
                              zero_point=b.zero_point, curve=b.curve, replace=True)  # fmt: skip
                if old is not None:
                    clear_population_tables()
            out.append(get_band(b.name))
        return tuple(out)

    def image_overrides(self, header: Mapping, has_wcs: bool, overrides: Mapping | None = None,
                        keywords: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The metadata of one of the survey's images that its header and options lack.

        The survey's pixel scale (without a WCS), gain and read noise stand in for header
        keywords the image lacks (given overrides and header keywords come first), and the
        flux unit is ``adu`` when the survey's gain is not 1. A band given in ``overrides``
        is checked against the survey's bands; otherwise the header band is read, by its
        first word when the whole value is not a band (DECam's
        ``"r DECam SDSS c0002 6415.0 1480.0"``).

        Parameters
        ----------
        header : mapping
            The image's FITS header.
        has_wcs : bool
            Whether the image has a celestial WCS (which then gives the pixel scale).
        overrides : mapping, optional
            Metadata given by options or a manifest row (``band``, ``gain``, ...).
        keywords : mapping, optional
            Header keywords replacing :data:`lumos.imageio.DEFAULT_KEYWORDS`.

        Returns
        -------
        dict
            The completed overrides.

        Raises
        ------
        LumosError
            If the band is not one of the survey's, or the camera state is out of range.
        """
        out = dict(overrides or {})
        if out.get("band") is not None:
            out["band"] = self.band(str(out["band"])).name
        if out.get("camera_state") is not None:
            self.band_index(self.bands[0].name, int(out["camera_state"]))
        keys = {**DEFAULT_KEYWORDS, **(keywords or {})}
        fallback: dict[str, Any] = {"gain": self.gain, "read_noise": self.read_noise}
        if not has_wcs:
            fallback["pixel_scale"] = self.pixel_scale
        if self.gain != 1.0:
            fallback["unit"] = "adu"
        for item, value in fallback.items():
            if out.get(item) is None and keys.get(item) not in header:
                out[item] = value
        if out.get("band") is None and keys["band"] in header:
            value = str(header[keys["band"]]).strip()
            try:
                out["band"] = self.band(value).name
            except LumosError:
                first = value.split()[0] if value.split() else value
                out["band"] = self.band(first).name
        return out

    def check_simulable(self) -> None:
        """Raise a one-line error unless the population can give fluxes in every band."""
        if self.is_paus:
            return
        self.register()
        wave = np.linspace(2000.0, 12000.0, 10001)
        lo, hi = POPULATION_WAVELENGTHS
        for b in self.bands:
            r = band_response(b.name, wave) / wave
            inside = float(r[(wave >= lo) & (wave <= hi)].sum()) / max(float(r.sum()), 1e-300)
            if inside < 0.5:
                raise LumosError(
                    f"survey {self.name}: band {b.name} lies mostly outside the "
                    f"{lo:.0f}-{hi:.0f} Angstrom of the population's spectra; it cannot be "
                    "simulated"
                )
        if self.reference_band != "i" and self.reference_band not in self.band_names:
            raise LumosError(f"survey {self.name}: reference_band {self.reference_band!r} "
                             "is neither 'i' nor one of its bands")  # fmt: skip

    def simulation_config(self, **kwargs):
        """A :class:`lumos.simulate.SimulationConfig` for this survey.

        For PAUS this is ``SimulationConfig(**kwargs)``: the simulation as without a survey.

        Parameters
        ----------
        **kwargs
            Further :class:`~lumos.simulate.SimulationConfig` fields.
        """
        if self.is_paus:
            return SimulationConfig(**kwargs)
        self.check_simulable()
        settings = {
            "pixel_scale": self.pixel_scale,
            "psf_fwhm_range": self.psf.fwhm_range,
            "psf_beta_range": self.psf.beta_range,
            "bands": self.band_names,
            "camera_state_prob": 0.5 if len(self.camera_states) == 2 else 0.0,
            "ccd_size": self.ccd_size,
            "flux_range": self.flux_range,
            "population": PopulationConfig(mag_range=self.mag_range),
            "reference_band": self.reference_band,
        }
        settings.update(kwargs)
        return SimulationConfig(**settings)

    def psf_factory(self):
        """The simulator's ``psf_factory``: None (Moffat profiles drawn from the ranges) or,
        for PSF family ``psfex``, a :class:`lumos.psf_pool.PSFExPool` of the survey's files."""
        if self.psf.family != "psfex":
            return None
        return PSFExPool(self.psf.files, self.pixel_scale)

    def background(self):
        """The synthetic sky of this survey: :class:`lumos.simulate.default_background`
        for PAUS, else a :class:`SurveySky` of the bands' typical sky levels."""
        if self.is_paus:
            return default_background()
        return SurveySky(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, recorded in model files."""
        return {
            "name": self.name,
            "pixel_scale": self.pixel_scale,
            "ccd_size": list(self.ccd_size),
            "gain": self.gain,
            "read_noise": self.read_noise,
            "saturation": self.saturation,
            "camera_states": list(self.camera_states),
            "reference_band": self.reference_band,
            "mag_range": list(self.mag_range),
            "flux_range": list(self.flux_range),
            "psf": {"family": self.psf.family, "fwhm_range": list(self.psf.fwhm_range),
                    "beta_range": list(self.psf.beta_range),
                    "files": [Path(f).name for f in self.psf.files]},  # fmt: skip
            "bands": {b.name: b.to_dict() for b in self.bands},
        }


@functools.lru_cache(maxsize=1)
def paus_survey() -> Survey:
    """The built-in PAU Survey: 40 narrow bands, two camera states, the PAUCam CCD."""
    sim = SimulationConfig()
    bands = tuple(
        SurveyBand(b.name, ZERO_POINT, b.exposure_time, _PAUS_SKY_RATE, b.wavelength, b.fwhm)
        for b in PAUS_BANDS.values()
    )
    return Survey(
        name=PAUS_NAME,
        pixel_scale=sim.pixel_scale,
        ccd_size=tuple(sim.ccd_size),
        gain=1.0,
        read_noise=5.0,
        saturation=65535.0,
        bands=bands,
        camera_states=("before", "after"),
        psf=SurveyPSF("moffat", tuple(sim.psf_fwhm_range), tuple(sim.psf_beta_range)),
        reference_band="i",
        mag_range=tuple(PopulationConfig().mag_range),
        flux_range=tuple(sim.flux_range),
    )


def clear_population_tables() -> None:
    """Forget the population's cached band tables (a band was redefined)."""
    clear_flux_tables()
