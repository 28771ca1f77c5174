"""Survey descriptions: the camera, bands, PSF range and population a model is built for.

A :class:`Survey` says what ``lumos simulate`` and ``lumos train`` simulate and what images
``lumos measure`` may give a model. PAUS is built in (:func:`paus_survey`, from the
constants of :mod:`lumos.bands`, :mod:`lumos.simulate` and :mod:`lumos.population`);
other surveys are described by a small TOML file read with :func:`load_survey`::

    name = "DECam"
    pixel_scale = 0.262          # arcsec per pixel
    ccd_size = [2046, 4094]      # x (width), y (height), pixels
    gain = 3.8                   # e- per ADU of the images
    read_noise = 6.0             # e-
    saturation = 165000.0        # e-
    camera_states = ["default"]  # one or two names (2: before / after an intervention)
    reference_band = "r"         # band of the catalogue magnitude ("i": the population's i)
    mag_range = [17.0, 23.5]     # i-band AB magnitudes of the simulated galaxies
    flux_range = [2.0, 50000.0]  # e-/s, the log-uniform range of likelihood training

    [psf]
    family = "moffat"            # or "psfex" with files = ["a-psfex.fits", "calib/*-psfex.fits"]
    fwhm_range = [0.8, 1.8]      # arcsec
    beta_range = [2.5, 5.0]

    [bands.r]
    zero_point = 26.58           # AB magnitude of 1 e-/s
    exposure_time = 82.7         # s
    sky = 13.7                   # typical sky, e-/s/pixel
    wavelength = 6415.0          # Angstrom (optional for u g r i z Y)
    fwhm = 1480.0                # Angstrom (idem)
    # filter_curve = "r.csv"     # or a measured response (two columns: Angstrom, throughput)

Every field is required except ``saturation`` (default: none), ``camera_states`` (one
state), ``reference_band`` (``"i"``), ``mag_range``, ``flux_range``, the band
``wavelength``/``fwhm`` of the standard broad bands u, g, r, i, z, Y and ``filter_curve``;
with ``family = "psfex"`` the ``psf`` table needs ``files`` (paths or glob patterns) instead
of the ranges, and the simulated PSFs are those models' (:mod:`lumos.psf_pool`).
A band may give ``filter_curve`` instead of ``zero_point`` when the survey gives its
``collecting_area`` (m^2): the zero point is then that of the curve's photon rate. Relative
paths are relative to the TOML file. A missing, unknown or malformed field is a one-line
:class:`~lumos.errors.LumosError` naming the field and the file.

Band fluxes of the simulated galaxies come from the population's template spectra
integrated through each band's response: the measured ``filter_curve`` when given, else a
flat-topped curve of the band's ``wavelength`` and ``fwhm`` (the standard broad bands have
built-in centres and widths, close to the SDSS/DECam curves). Spectra are tabulated over
4000-9300 Angstrom, so a band's flux is the mean over the part of its response inside that
range (a band with less than half of it inside cannot be simulated). The network embeds
the ``B`` bands of a survey in the slots ``position + B * camera_state`` of its 80 band x
camera-state slots.
"""

from __future__ import annotations

import functools
import glob
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bands import (
    N_BAND_INDEX,
    N_CAMERA_STATES,
    PAUS_BANDS,
    Band,
    band_response,
    get_band,
    register_band,
)
from .errors import LumosError
from .spectra import clear_flux_tables

#: Marks a field missing from a survey file.
_ABSENT = object()

__all__ = [
    "SurveyBand",
    "SurveyPSF",
    "Survey",
    "BROAD_BANDS",
    "PAUS_NAME",
    "paus_survey",
    "load_survey",
    "survey_from_dict",
    "model_survey",
    "check_model_band",
    "SurveySky",
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
_PAUS_ZERO_POINT = 24.5
_AB_FNU = 3631e-26  # W / m^2 / Hz
_PLANCK = 6.62607015e-34  # J s


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
        from .population import PopulationConfig
        from .simulate import SimulationConfig

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
        from .psf_pool import PSFExPool

        return PSFExPool(self.psf.files, self.pixel_scale)

    def background(self):
        """The synthetic sky of this survey: :class:`lumos.simulate.default_background`
        for PAUS, else a :class:`SurveySky` of the bands' typical sky levels."""
        if self.is_paus:
            from .simulate import default_background

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
    from .population import ZERO_POINT, PopulationConfig
    from .simulate import SimulationConfig

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


# --- reading TOML -------------------------------------------------------------------------

_TOP_FIELDS = {"name", "pixel_scale", "ccd_size", "gain", "read_noise", "saturation",
               "camera_states", "reference_band", "mag_range", "flux_range",
               "collecting_area", "psf", "bands"}  # fmt: skip
_PSF_FIELDS = {"family", "fwhm_range", "beta_range", "files"}
_BAND_FIELDS = {"zero_point", "exposure_time", "sky", "wavelength", "fwhm", "filter_curve"}


class _Reader:
    """Typed access to a TOML table with one-line errors naming the field and the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> LumosError:
        return LumosError(f"survey file {self.source}: field '{field}' {problem}")

    def table(self, data: Mapping, key: str, prefix: str = "") -> Mapping:
        value = data.get(key)
        if value is None:
            raise self.fail(prefix + key, "is missing")
        if not isinstance(value, Mapping):
            raise self.fail(prefix + key, "must be a table")
        return value

    def get(self, data: Mapping, prefix: str, key: str, default: Any) -> tuple[str, Any]:
        """``(field name, value)``; the value is ``_ABSENT`` for a missing optional field, and
        a missing required one (``default`` is ``...``) is an error."""
        field = prefix + key
        if key in data:
            return field, data[key]
        if default is ...:
            raise self.fail(field, "is missing")
        return field, _ABSENT

    def check_fields(self, data: Mapping, allowed: set[str], prefix: str) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.fail(prefix + unknown[0], f"is unknown (known fields: "
                            f"{', '.join(sorted(allowed))})")  # fmt: skip

    def number(self, data: Mapping, key: str, prefix: str = "", default: Any = ...,
               positive: bool = True, allow_zero: bool = False) -> float:
        field, value = self.get(data, prefix, key, default)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(field, f"must be finite, got {value!r}")
        if positive and not (value > 0 or (allow_zero and value == 0)):
            raise self.fail(field, f"must be {'>= 0' if allow_zero else 'positive'}, got "
                            f"{data[key]!r}")  # fmt: skip
        return value

    def string(self, data: Mapping, key: str, prefix: str = "", default: Any = ...) -> str:
        field, value = self.get(data, prefix, key, default)
        if value is _ABSENT:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def pair(self, data: Mapping, key: str, prefix: str = "", default: Any = ...,
             integer: bool = False, increasing: bool = True) -> tuple:
        field, value = self.get(data, prefix, key, default)
        if value is _ABSENT:
            return default
        kind = int if integer else (int, float)
        if (not isinstance(value, list) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, kind) for v in value)):
            what = "two integers" if integer else "two numbers"
            raise self.fail(field, f"must be a list of {what}, got {value!r}")
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi > 0):
            raise self.fail(field, f"must hold positive values, got {value!r}")
        if increasing and lo > hi:
            raise self.fail(field, f"must be an increasing range, got {value!r}")
        return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def _read_curve(path: Path, field: str, reader: _Reader) -> tuple:
    """A two-column response file (Angstrom, throughput); ``#`` comments, commas allowed."""
    if not path.is_file():
        raise reader.fail(field, f"names a file that does not exist: {path}")
    try:
        text = path.read_text().replace(",", " ")
        rows = [line.split("#")[0].split() for line in text.splitlines()]
        data = np.array([[float(x) for x in row[:2]] for row in rows if row], dtype=float)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise reader.fail(field, f"cannot be read as two columns of numbers ({exc})") from None
    if data.ndim != 2 or data.shape[0] < 3 or data.shape[1] != 2:
        raise reader.fail(field, "needs at least 3 rows of wavelength (Angstrom), throughput")
    wave, resp = data[:, 0], data[:, 1]
    if (not np.all(np.isfinite(data)) or np.any(np.diff(wave) <= 0) or np.any(resp < 0)
            or resp.max() <= 0):
        raise reader.fail(field, "must have increasing wavelengths and throughput >= 0 with a "
                          "positive peak")  # fmt: skip
    return tuple(map(float, wave)), tuple(map(float, resp))


def _curve_zero_point(curve: tuple, area_m2: float) -> float:
    """AB magnitude of 1 e-/s through ``curve`` with a collecting area of ``area_m2``."""
    wave, resp = (np.asarray(c, dtype=float) for c in curve)
    integral = float(np.sum(0.5 * (resp[1:] / wave[1:] + resp[:-1] / wave[:-1]) * np.diff(wave)))
    return 2.5 * math.log10(area_m2 * _AB_FNU / _PLANCK * integral)


def _read_band(name: str, data: Mapping, base: Path, area: float | None,
               reader: _Reader) -> SurveyBand:
    prefix = f"bands.{name}."
    reader.check_fields(data, _BAND_FIELDS, prefix)
    curve = None
    if "filter_curve" in data:
        rel = reader.string(data, "filter_curve", prefix)
        curve = _read_curve((base / rel).resolve(), prefix + "filter_curve", reader)
    if "zero_point" in data or curve is None or area is None:
        if "zero_point" not in data and curve is not None:
            raise reader.fail(prefix + "zero_point", "is missing (a filter_curve alone needs "
                              "the survey's collecting_area)")  # fmt: skip
        zero_point = reader.number(data, "zero_point", prefix, positive=False)
    else:
        zero_point = _curve_zero_point(curve, area)
    exposure_time = reader.number(data, "exposure_time", prefix)
    sky = reader.number(data, "sky", prefix, allow_zero=True)
    if curve is not None:
        w, r = (np.asarray(c) for c in curve)
        centre = float(np.sum(w * r) / np.sum(r))
        width = float(np.sum(r) * np.mean(np.diff(w)) / r.max())
    else:
        centre, width = BROAD_BANDS.get(name, (None, None))
    wavelength = reader.number(data, "wavelength", prefix, default=centre)
    fwhm = reader.number(data, "fwhm", prefix, default=width)
    if wavelength is None or fwhm is None:
        missing = "wavelength" if wavelength is None else "fwhm"
        raise reader.fail(prefix + missing, f"is missing (band {name!r} is not one of the "
                          f"standard broad bands {', '.join(BROAD_BANDS)})")  # fmt: skip
    if not 3000.0 <= wavelength <= 11000.0:
        raise reader.fail(prefix + "wavelength", f"must be 3000-11000 Angstrom, got {wavelength}")
    return SurveyBand(name, zero_point, exposure_time, sky, wavelength, fwhm, curve)


def survey_from_dict(data: Mapping, source: str = "<dict>", base: str | Path = ".") -> Survey:
    """Build a survey from the parsed contents of a survey file.

    Parameters
    ----------
    data : mapping
        Parsed TOML (see the module docstring for the fields).
    source : str
        Name of the file, for error messages.
    base : str or Path
        Directory that relative paths are relative to.

    Raises
    ------
    LumosError
        For a missing, unknown or malformed field (one line naming it and ``source``).
    """
    reader = _Reader(source)
    base = Path(base)
    reader.check_fields(data, _TOP_FIELDS, "")
    name = reader.string(data, "name")
    if name.upper() == PAUS_NAME:
        raise reader.fail("name", "must not be PAUS (the built-in survey, used without a file)")
    pixel_scale = reader.number(data, "pixel_scale")
    ccd_size = reader.pair(data, "ccd_size", integer=True, increasing=False)
    gain = reader.number(data, "gain")
    read_noise = reader.number(data, "read_noise", allow_zero=True)
    saturation = reader.number(data, "saturation", default=None)
    area = reader.number(data, "collecting_area", default=None)
    states = data.get("camera_states", ["default"])
    if isinstance(states, int) and not isinstance(states, bool):
        states = [f"state{k}" for k in range(states)]
    if (not isinstance(states, list) or not 1 <= len(states) <= N_CAMERA_STATES
            or not all(isinstance(s, str) and s.strip() for s in states)
            or len(set(states)) != len(states)):
        raise reader.fail("camera_states", f"must list 1 or {N_CAMERA_STATES} distinct names "
                          f"(or give their number), got {data.get('camera_states')!r}")
    mag_range = reader.pair(data, "mag_range", default=(17.0, 23.0))
    flux_range = reader.pair(data, "flux_range", default=(0.2, 1000.0))
    if flux_range[0] >= flux_range[1]:
        raise reader.fail("flux_range", f"must be an increasing range, got {list(flux_range)}")

    psf_data = reader.table(data, "psf")
    reader.check_fields(psf_data, _PSF_FIELDS, "psf.")
    family = reader.string(psf_data, "family", "psf.")
    if family == "moffat":
        psf = SurveyPSF("moffat", reader.pair(psf_data, "fwhm_range", "psf."),
                        reader.pair(psf_data, "beta_range", "psf."))  # fmt: skip
        if psf.beta_range[0] <= 1.0:
            raise reader.fail("psf.beta_range", "must exceed 1 (Moffat beta)")
    elif family == "psfex":
        files = psf_data.get("files")
        if (not isinstance(files, list) or not files
                or not all(isinstance(f, str) and f.strip() for f in files)):
            raise reader.fail("psf.files", "must list at least one PSFEx file")
        found: list[str] = []
        for f in files:
            if any(c in f for c in "*?["):
                pattern = f if Path(f).is_absolute() else str(base / f)
                matches = sorted(str(Path(p).resolve()) for p in glob.glob(pattern, recursive=True)
                                 if Path(p).is_file())  # fmt: skip
                if not matches:
                    raise reader.fail("psf.files", f"pattern {f!r} matches no file")
                found.extend(matches)
            elif not (base / f).is_file():
                raise reader.fail("psf.files", f"names a file that does not exist: {f}")
            else:
                found.append(str((base / f).resolve()))
        paths = tuple(found)
        psf = SurveyPSF("psfex", reader.pair(psf_data, "fwhm_range", "psf.", default=(0.6, 1.3)),
                        reader.pair(psf_data, "beta_range", "psf.", default=(2.5, 5.0)),
                        paths)  # fmt: skip
    else:
        raise reader.fail("psf.family", f"must be \"moffat\" or \"psfex\", got {family!r}")

    bands_data = reader.table(data, "bands")
    if not bands_data:
        raise reader.fail("bands", "must describe at least one band")
    bands = tuple(
        _read_band(str(b), reader.table(bands_data, b, "bands."), base, area, reader)
        for b in bands_data
    )
    if len({b.name.upper() for b in bands}) != len(bands):
        raise reader.fail("bands", "holds two bands whose names differ only in case")
    if len(bands) * len(states) > N_BAND_INDEX:
        raise reader.fail("bands", f"{len(bands)} bands x {len(states)} camera states exceed "
                          f"the network's {N_BAND_INDEX} band slots")  # fmt: skip
    reference = reader.string(data, "reference_band", default="i")
    if reference != "i" and reference not in [b.name for b in bands]:
        raise reader.fail("reference_band", f"must be 'i' or one of the bands "
                          f"({', '.join(b.name for b in bands)}), got {reference!r}")
    return Survey(name=name, pixel_scale=pixel_scale, ccd_size=ccd_size, gain=gain,
                  read_noise=read_noise, saturation=saturation, bands=bands,
                  camera_states=tuple(s.strip() for s in states), psf=psf,
                  reference_band=reference, mag_range=mag_range, flux_range=flux_range,
                  source=source)  # fmt: skip


def load_survey(path: str | Path | None) -> Survey:
    """Read a survey file (TOML), or the built-in PAUS survey for None.

    The survey's bands are registered (:meth:`Survey.register`), so that images in them
    can be read.

    Raises
    ------
    LumosError
        If the file is missing, is not TOML, or has a missing or malformed field.
    """
    if path is None:
        return paus_survey()
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"survey file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LumosError(f"survey file {path}: not valid TOML ({exc})") from None
    survey = survey_from_dict(data, str(path), path.parent)
    survey.register()
    return survey


# --- models -------------------------------------------------------------------------------


def model_survey(metadata: Mapping | None) -> dict[str, Any]:
    """The survey a model was trained for, from its metadata (PAUS when not recorded).

    Returns
    -------
    dict
        ``{"name": ..., "bands": {name: {...}}}`` as :meth:`Survey.to_dict` writes it.
    """
    recorded = (metadata or {}).get("survey")
    if isinstance(recorded, Mapping) and recorded.get("name"):
        return dict(recorded)
    return {"name": PAUS_NAME, "bands": {name: {} for name in PAUS_BANDS}}


def check_model_band(metadata: Mapping | None, band: str | Band) -> None:
    """Raise a one-line error unless a model was trained for ``band`` and its survey.

    Parameters
    ----------
    metadata : mapping or None
        The model's training metadata (``model.metadata``).
    band : str or Band
        Band of the image to measure.

    Raises
    ------
    LumosError
        When the band belongs to another survey than the model's, or the model's survey
        has no such band, or the band sits in another network slot than in training.
    """
    band = get_band(band)
    recorded = model_survey(metadata)
    name = str(recorded["name"])
    if band.survey.upper() != name.upper():
        hint = "" if name == PAUS_NAME else f" (give --survey with the {name} survey file)"
        raise LumosError(f"the model was trained for survey {name}, not for {band.survey} "
                         f"images (band {band.name}){hint}")  # fmt: skip
    bands = list(recorded.get("bands") or {})
    if name == PAUS_NAME:
        return  # PAUS models see every band through its PAUS slot
    if band.name not in bands:
        raise LumosError(f"the model was not trained for band {band.name} of survey {name}; "
                         f"its bands are: {', '.join(bands)}")  # fmt: skip
    if bands.index(band.name) != band.number or len(bands) != band.slots:
        raise LumosError(f"band {band.name} of survey {name} is band {band.number + 1} of "
                         f"{band.slots} in the survey file but {bands.index(band.name) + 1} of "
                         f"{len(bands)} in the model")  # fmt: skip


# --- synthetic sky --------------------------------------------------------------------------


@dataclass
class _Sample:
    pixels: np.ndarray
    sky_model: np.ndarray
    sky_sigma: np.ndarray
    artefacts: np.ndarray
    source: np.ndarray | None = None


class SurveySky:
    """A flat sky at each band's typical level, with Gaussian sky and read noise.

    The background source of a survey's simulations when no real images are given:
    ``sky * exposure_time`` electrons per pixel, noise ``sqrt(sky * t + read_noise**2)``.

    Parameters
    ----------
    survey : Survey
        Gives each band's ``sky`` (e-/s/pixel) and the read noise.
    """

    def __init__(self, survey: Survey) -> None:
        rates = np.zeros(N_BAND_INDEX)
        for state in range(len(survey.camera_states)):
            for b in survey.bands:
                rates[survey.band_index(b.name, state)] = b.sky
        self.rates = rates
        self.read_noise = float(survey.read_noise)

    def sample(self, n, size, band_idx, ccd_xy, exposure_time, rng) -> _Sample:
        """Draw ``n`` background stamps (see :class:`lumos.sky.BackgroundSource`)."""
        t = np.broadcast_to(np.asarray(exposure_time, dtype=float), (n,))
        level = (self.rates[np.asarray(band_idx, dtype=np.int64)] * t).astype(np.float32)
        sigma = np.sqrt(level + self.read_noise**2).astype(np.float32)
        noise = rng.standard_normal((n, size, size), dtype=np.float32)
        sky = np.broadcast_to(level[:, None, None], (n, size, size))
        return _Sample(pixels=sky + sigma[:, None, None] * noise,
                       sky_model=np.ascontiguousarray(sky), sky_sigma=sigma,
                       artefacts=np.zeros(n, dtype=np.int64))  # fmt: skip


def clear_population_tables() -> None:
    """Forget the population's cached band tables (a band was redefined)."""
    clear_flux_tables()

