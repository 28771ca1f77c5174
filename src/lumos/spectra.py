"""Spectra and band fluxes of the TEAHUPOO galaxies and stars.

Each galaxy's spectrum is a mixture of two adjacent CWW templates (E, Sbc, Scd, Im, the
``*_ext.sed`` files shipped with GalSim) plus nebular emission lines ([OII] 3727, H-beta,
[OIII] 4959/5007, H-alpha, [NII] 6584) whose rest-frame H-alpha equivalent width grows from
0 (E) to 80 Angstrom (Im). The spectrum is redshifted, normalised so that its AB magnitude
in a broad i band (flat-topped, 6950-8450 Angstrom) equals ``i_mag``, and integrated through
each band's response (:func:`lumos.bands.band_response`) as photon counts; AB magnitudes
become electrons per second with the zero point 24.5 (``flux = 10**(-0.4 * (m_AB -
24.5))``). The band-to-i ratios are tabulated once on a redshift grid (cached), so fluxes
are vectorised table look-ups. Stars have black-body spectra.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .bands import PAUS_BANDS, band_response, get_band

__all__ = [
    "TEMPLATE_NAMES",
    "ZERO_POINT",
    "STAR_TEMPERATURE_RANGE",
    "Z_MAX",
    "band_names",
    "template_dir",
    "i_band_response",
    "mag_to_flux",
    "galaxy_band_fluxes",
    "star_band_fluxes",
    "clear_flux_tables",
]

#: CWW templates, earliest type first (GalSim share/SEDs).
TEMPLATE_NAMES = ("CWW_E_ext", "CWW_Sbc_ext", "CWW_Scd_ext", "CWW_Im_ext")
#: Rest-frame H-alpha equivalent width (Angstrom) of each template's emission lines.
_HALPHA_EW = np.array([0.0, 15.0, 40.0, 80.0])
#: Emission lines: rest wavelength (Angstrom, air) and flux relative to H-alpha.
_LINES = (
    (3727.4, 0.8),  # [OII] doublet
    (4861.3, 0.3),  # H-beta (with typical dust)
    (4958.9, 0.13),  # [OIII]
    (5006.8, 0.4),  # [OIII]
    (6562.8, 1.0),  # H-alpha
    (6583.5, 0.3),  # [NII]
)
_LINE_SIGMA = 3.0  # rest-frame Gaussian line width, Angstrom
ZERO_POINT = 24.5  # AB magnitude of 1 e-/s in a PAUS narrow band

# Grids of the precomputed flux tables.
_Z_STEP = 0.005
_Z_MAX_TABLE = 1.5
#: Largest redshift the flux tables cover.
Z_MAX = _Z_MAX_TABLE
_WAVE_OBS = np.arange(4000.0, 9301.0, 1.0)  # Angstrom
_STAR_T_GRID = np.linspace(3000.0, 12000.0, 91)  # Kelvin
#: Temperatures [K] the star tables cover.
STAR_TEMPERATURE_RANGE = (float(_STAR_T_GRID[0]), float(_STAR_T_GRID[-1]))


def i_band_response(wavelength: np.ndarray) -> np.ndarray:
    """The broad i band used to normalise spectra: flat-topped, 6950-8450 Angstrom at half power.

    Parameters
    ----------
    wavelength : array_like
        Wavelength in Angstrom.

    Returns
    -------
    numpy.ndarray
        Transmission in [0, 1].
    """
    x = (np.asarray(wavelength, dtype=float) - 7700.0) / 750.0
    return np.exp(-np.log(2.0) * x**8)


def mag_to_flux(mag: np.ndarray, zero_point: float = ZERO_POINT) -> np.ndarray:
    """AB magnitude to electrons per second: ``10**(-0.4 * (mag - zero_point))``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def band_names(bands) -> tuple[str, ...]:
    """Registered band names of ``bands`` (default the 40 PAUS narrow bands), as a tuple."""
    if bands is None:
        return tuple(PAUS_BANDS)
    if isinstance(bands, str):
        bands = (bands,)
    names = tuple(get_band(b).name for b in bands)
    if not names:
        raise ValueError("bands must name at least one band")
    return names


def _response_matrix(bands: tuple[str, ...]) -> np.ndarray:
    """Photon-counting AB weights on the observed grid, shape (L, B + 1); last column i band.

    ``<f_nu> = sum(f_lambda * lambda * R) / sum(R / lambda)`` up to a constant common to all
    bands, so band-to-band ratios of these sums are ratios of AB fluxes.
    """
    wave = _WAVE_OBS
    responses = [band_response(b, wave) for b in bands] + [i_band_response(wave)]
    cols = [wave * r / np.sum(r / wave) for r in responses]
    return np.stack(cols, axis=1)


def template_dir() -> Path:
    """GalSim's directory of SED templates (``share/SEDs``), where the CWW templates are."""
    import galsim.meta_data  # noqa: PLC0415 - heavy import, only when tables are built

    return Path(galsim.meta_data.share_dir) / "SEDs"


@functools.lru_cache(maxsize=8)
def _galaxy_tables(bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Band fluxes relative to the i-band continuum on the redshift grid.

    Returns
    -------
    continuum : numpy.ndarray, shape (Z, T, B + 1)
        AB flux of each template's continuum in each band (last column: i band, = 1).
    lines : numpy.ndarray, shape (Z, T, B + 1)
        AB flux of each template's emission lines (line strength 1), same normalisation.
    """
    sed_dir = template_dir()
    z_grid = np.arange(0.0, _Z_MAX_TABLE + 0.5 * _Z_STEP, _Z_STEP)
    weights = _response_matrix(bands)
    cont = np.empty((z_grid.size, len(TEMPLATE_NAMES), len(bands) + 1))
    line = np.empty_like(cont)
    for t, name in enumerate(TEMPLATE_NAMES):
        path = sed_dir / f"{name}.sed"
        if not path.is_file():
            raise FileNotFoundError(f"GalSim SED template not found: {path}")
        data = np.loadtxt(path)
        wave_rest, flam = data[:, 0], data[:, 1]
        halpha_continuum = np.interp(6562.8, wave_rest, flam)
        rest = _WAVE_OBS[None, :] / (1.0 + z_grid[:, None])  # (Z, L)
        spec = np.interp(rest, wave_rest, flam)
        lines = np.zeros_like(rest)
        for centre, ratio in _LINES:
            amplitude = _HALPHA_EW[t] * halpha_continuum * ratio
            amplitude /= np.sqrt(2 * np.pi) * _LINE_SIGMA
            lines += amplitude * np.exp(-0.5 * ((rest - centre) / _LINE_SIGMA) ** 2)
        c = spec @ weights  # (Z, B + 1)
        li = lines @ weights
        cont[:, t] = c / c[:, -1:]
        line[:, t] = li / c[:, -1:]
    return cont, line


@functools.lru_cache(maxsize=8)
def _star_table(bands: tuple[str, ...]) -> np.ndarray:
    """Black-body band fluxes relative to the i band on the temperature grid, shape (T, B)."""
    hc_over_k = 1.438777e8  # Angstrom Kelvin
    wave = _WAVE_OBS
    flam = wave[None, :] ** -5 / np.expm1(hc_over_k / (wave[None, :] * _STAR_T_GRID[:, None]))
    c = flam @ _response_matrix(bands)
    return c[:, :-1] / c[:, -1:]


def galaxy_band_fluxes(
    i_mag: np.ndarray,
    z: np.ndarray,
    template_weights: np.ndarray,
    line_strength: np.ndarray | None = None,
    bands=None,
    flux_max: float = 1000.0,
) -> np.ndarray:
    """Narrow-band fluxes (e-/s) of galaxies of given i magnitude, redshift and spectrum.

    Parameters
    ----------
    i_mag : numpy.ndarray
        i-band AB magnitudes, shape (N,).
    z : numpy.ndarray
        Redshifts in [0, 1.5], shape (N,).
    template_weights : numpy.ndarray, shape (N, 4)
        Weights of the CWW templates (normalised to the observed i-band continuum).
    line_strength : numpy.ndarray, optional
        Emission-line strength multiplier, shape (N,); None for no lines.
    bands : sequence of str, optional
        Band names (default the 40 PAUS narrow bands).
    flux_max : float
        Upper clip, e-/s.

    Returns
    -------
    numpy.ndarray, shape (N, B)
        Fluxes in e-/s, clipped to [0, flux_max].
    """
    names = band_names(bands)
    cont, line = _galaxy_tables(names)
    z = np.asarray(z, dtype=float)
    if np.any(~np.isfinite(z)) or np.any(z < 0) or np.any(z > _Z_MAX_TABLE):
        raise ValueError(f"redshifts must lie in [0, {_Z_MAX_TABLE}]")
    pos = z / _Z_STEP
    i0 = np.minimum(np.floor(pos).astype(np.int64), cont.shape[0] - 2)
    f = (pos - i0)[:, None]
    w = np.asarray(template_weights, dtype=float)
    if line_strength is not None:
        table = np.concatenate([cont, line], axis=1)  # (Z, 2T, B + 1)
        w = np.concatenate([w, np.asarray(line_strength, dtype=float)[:, None] * w], axis=1)
    else:
        table = cont
    total = np.matmul(((1.0 - f) * w)[:, None, :], table[i0])[:, 0]
    total += np.matmul((f * w)[:, None, :], table[i0 + 1])[:, 0]
    return _scale_to_i(i_mag, total[:, :-1] / total[:, -1:], flux_max)


def star_band_fluxes(
    i_mag: np.ndarray, temperature: np.ndarray, bands=None, flux_max: float = 1000.0
) -> np.ndarray:
    """Narrow-band fluxes (e-/s) of black-body stars of given i magnitude and temperature.

    Parameters
    ----------
    temperature : numpy.ndarray
        Temperatures in Kelvin (3000-12000), shape (N,).
    i_mag, bands, flux_max
        As in :func:`galaxy_band_fluxes`, which also gives the result's shape and units.
    """
    names = band_names(bands)
    table = _star_table(names)
    temperature = np.asarray(temperature, dtype=float)
    ratio = np.stack(
        [np.interp(temperature, _STAR_T_GRID, table[:, b]) for b in range(len(names))], axis=1
    )
    return _scale_to_i(i_mag, ratio, flux_max)


def _scale_to_i(i_mag: np.ndarray, ratio: np.ndarray, flux_max: float) -> np.ndarray:
    """Band fluxes (e-/s, clipped to [0, flux_max]) of sources of i magnitude ``i_mag`` whose
    band-to-i flux ratios are ``ratio`` [N, B]."""
    return np.clip(mag_to_flux(i_mag)[:, None] * ratio, 0.0, flux_max)


def clear_flux_tables() -> None:
    """Forget the cached flux tables (after the band registry changed)."""
    _galaxy_tables.cache_clear()
    _star_table.cache_clear()
