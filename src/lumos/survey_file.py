"""Survey files: the TOML schema of a survey description and its reader.

A survey other than the built-in PAUS (:func:`lumos.survey_description.paus_survey`) is
described by a small TOML file read with :func:`load_survey` into a
:class:`~lumos.survey_description.Survey`::

    name = "DECam"
    pixel_scale = 0.262          # arcsec per pixel
    ccd_size = [2046, 4094]      # x (width), y (height), pixels
    gain = 3.8                   # e- per ADU of the images
    read_noise = 6.0             # e-
    saturation = 165000.0        # e-
    camera_states = ["default"]  # one or two names (2: before / after an intervention)
    reference_band = "r"         # band of the catalogue magnitude ("i": the population's i)
    mag_range = [17.0, 23.5]     # i-band AB magnitudes of the simulated galaxies
    flux_range = [2.0, 50000.0]  # e-/s, likelihood training (its top with --flux-softening)

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
"""

from __future__ import annotations

import glob
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .bands import N_BAND_INDEX, N_CAMERA_STATES
from .errors import LumosError
from .survey_description import BROAD_BANDS, PAUS_NAME, Survey, SurveyBand, SurveyPSF, paus_survey

__all__ = ["load_survey", "survey_from_dict"]

#: Marks a field missing from a survey file.
_ABSENT = object()
_AB_FNU = 3631e-26  # W / m^2 / Hz
_PLANCK = 6.62607015e-34  # J s

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
