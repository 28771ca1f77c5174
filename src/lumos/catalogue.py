"""Input catalogues: reading, column mapping, unit conversion and validation.

A catalogue lists the galaxies to measure with their external-catalogue description:

=============  =========================================================================
column         meaning
=============  =========================================================================
``id``         unique identifier
``x``, ``y``   0-based pixel position (``image[j, i]`` is centred on x = i, y = j), or
``ra``, ``dec`` sky position in degrees (needs the image WCS)
``r50``        circularised half-light radius (arcsec; a unit-bearing column is converted)
``sersic_n``   Sersic index
``q``          axis ratio b/a in (0, 1], or ``ellipticity`` = 1 - b/a
``pa``         position angle in degrees, counter-clockwise from the image +x axis; with
               ``pa_frame="sky"`` it is east of north and converted through the WCS
``i_mag``      i-band AB magnitude
=============  =========================================================================

Structural problems raise :class:`~lumos.errors.CatalogueError` with a one-line message;
problems with the values of one row set bits of its ``flags`` column and never drop it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from .errors import CatalogueError
from .flags import Flag
from .profiles import valid_profile_parameters
from .tableio import read_table

__all__ = [
    "REQUIRED_COLUMNS",
    "read_catalogue",
    "validate_catalogue",
]

REQUIRED_COLUMNS = ("id", "r50", "sersic_n", "pa", "i_mag")
_STANDARD = ("id", "x", "y", "ra", "dec", "r50", "sersic_n", "q", "ellipticity", "pa", "i_mag")


def _find(table: Table, name: str) -> str | None:
    """Column name in ``table`` matching ``name`` exactly or case-insensitively."""
    if name in table.colnames:
        return name
    lower = {c.lower(): c for c in table.colnames}
    return lower.get(name.lower())


def _missing(table: Table, name: str, role: str) -> CatalogueError:
    close = difflib.get_close_matches(name, table.colnames, n=1, cutoff=0.6)
    hint = f" (map one to it with --column {role}=NAME, or columns={{'{role}': NAME}} in Python)"
    if close:
        hint = (f" (did you mean {close[0]!r}? map it with --column {role}={close[0]}, or "
                f"columns={{'{role}': '{close[0]}'}} in Python)")  # fmt: skip
    return CatalogueError(
        f"catalogue is missing required column {name!r} for {role}{hint}; "
        f"it has: {', '.join(table.colnames)}"
    )


def _values(table: Table, name: str, unit: u.UnitBase | None, equivalencies=None) -> np.ndarray:
    col = table[name]
    if hasattr(col, "mask") and np.any(getattr(col, "mask", False)):
        data = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    else:
        try:
            data = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            raise CatalogueError(f"catalogue column {name!r} is not numeric") from None
    if unit is not None and col.unit is not None:
        try:
            data = (data * col.unit).to_value(unit, equivalencies=equivalencies or [])
        except u.UnitConversionError:
            raise CatalogueError(
                f"catalogue column {name!r} has unit {col.unit}, which does not convert to {unit}"
            ) from None
    return data


def read_catalogue(
    source: str | Path | Table,
    columns: Mapping[str, str] | None = None,
    wcs=None,
    pixel_scale: float | None = None,
    pa_frame: str = "image",
) -> Table:
    """Read, normalise and validate an input catalogue.

    Parameters
    ----------
    source : str, Path or astropy.table.Table
        A FITS, Parquet, CSV or ECSV file, or a table already in memory.
    columns : mapping, optional
        Map from standard names (``id, x, y, ra, dec, r50, sersic_n, q, ellipticity, pa,
        i_mag``) to the names used in the file, e.g. ``{"r50": "FLUX_RADIUS"}``.
    wcs : astropy.wcs.WCS, optional
        Image WCS, required when positions are given as ``ra``, ``dec`` (or when
        ``pa_frame="sky"``).
    pixel_scale : float, optional
        Arcsec per pixel; needed only when ``r50`` has a pixel unit.
    pa_frame : {"image", "sky"}
        Frame of the position angle: counter-clockwise from the image +x axis, or east of
        north on the sky (converted to the image frame through ``wcs``).

    Returns
    -------
    astropy.table.Table
        One row per input row, in the input order, with columns ``id, x, y, r50, sersic_n, q,
        pa, i_mag, flags`` (plus ``ra, dec`` when given). ``r50`` is in arcsec, ``pa`` in
        degrees in the image frame; ``flags`` holds :class:`~lumos.flags.Flag` bits for rows
        with unusable values.

    Raises
    ------
    CatalogueError
        For structural problems: unreadable file, missing column, non-numeric column,
        ra/dec without a WCS, duplicate ids, empty catalogue.
    """
    if isinstance(source, Table):
        table = source.copy(copy_data=False)
    else:
        table = read_table(source, "catalogue", CatalogueError)
    mapping = {k: v for k, v in (columns or {}).items()}
    unknown = set(mapping) - set(_STANDARD)
    if unknown:
        raise CatalogueError(
            f"unknown standard column name(s) {sorted(unknown)} in the column map; "
            f"valid: {', '.join(_STANDARD)}"
        )
    if pa_frame not in ("image", "sky"):
        raise CatalogueError(f"pa_frame must be 'image' or 'sky', got {pa_frame!r}")
    if len(table) == 0:
        raise CatalogueError("catalogue has no rows")

    def col(role: str, required: bool = True) -> str | None:
        name = mapping.get(role, role)
        found = _find(table, name)
        if found is None and required:
            raise _missing(table, name, role)
        return found

    out = Table()
    id_col = col("id")
    ids = np.asarray(table[id_col])
    _check_unique(ids, id_col)
    out["id"] = table[id_col]

    xc, yc = col("x", False), col("y", False)
    rac, decc = col("ra", False), col("dec", False)
    if xc is not None and yc is not None:
        x = _values(table, xc, u.pix)
        y = _values(table, yc, u.pix)
        if rac is not None and decc is not None:
            out["ra"] = _values(table, rac, u.deg)
            out["dec"] = _values(table, decc, u.deg)
    elif rac is not None and decc is not None:
        if wcs is None or not getattr(wcs, "has_celestial", False):
            raise CatalogueError(
                "catalogue gives positions as ra/dec but the image has no celestial WCS; "
                "give x/y pixel positions instead"
            )
        ra = _values(table, rac, u.deg)
        dec = _values(table, decc, u.deg)
        out["ra"], out["dec"] = ra, dec
        x, y = _sky_to_pixel(wcs, ra, dec)
    else:
        raise CatalogueError(
            "catalogue needs positions: columns x and y (pixels) or ra and dec (degrees); "
            f"it has: {', '.join(table.colnames)}"
        )
    out["x"], out["y"] = x, y

    r50c = col("r50")
    r50_unit = table[r50c].unit
    if r50_unit is not None and u.pix in getattr(r50_unit, "bases", []):
        if pixel_scale is None:
            raise CatalogueError(
                "column r50 is in pixels: give the image pixel scale to convert it"
            )
        out["r50"] = _values(table, r50c, u.pix) * float(pixel_scale)
    else:
        out["r50"] = _values(table, r50c, u.arcsec)
    out["r50"].unit = u.arcsec
    out["sersic_n"] = _values(table, col("sersic_n"), None)

    qc, ec = col("q", False), col("ellipticity", False)
    if qc is not None:
        out["q"] = _values(table, qc, u.dimensionless_unscaled)
    elif ec is not None:
        out["q"] = 1.0 - _values(table, ec, u.dimensionless_unscaled)
    else:
        raise _missing(table, mapping.get("q", "q"), "q (or ellipticity)")

    pa = _values(table, col("pa"), u.deg)
    if pa_frame == "sky":
        if wcs is None or not getattr(wcs, "has_celestial", False):
            raise CatalogueError("pa_frame='sky' needs an image with a celestial WCS")
        pa = _sky_pa_to_image(wcs, np.asarray(out["x"]), np.asarray(out["y"]), pa)
    out["pa"] = pa
    out["pa"].unit = u.deg
    out["i_mag"] = _values(table, col("i_mag"), u.mag if table[col("i_mag")].unit else None)
    out["flags"] = validate_catalogue(out)
    return out


def validate_catalogue(table: Table) -> np.ndarray:
    """Per-row flags for values the measurement cannot use.

    Parameters
    ----------
    table : astropy.table.Table
        A normalised catalogue (columns ``x, y, r50, sersic_n, q, pa, i_mag``).

    Returns
    -------
    numpy.ndarray of int64
        ``Flag.BAD_PROFILE`` where the profile parameters fail
        :func:`lumos.profiles.valid_profile_parameters` (r50 outside (0, 20] arcsec, Sersic
        index outside [0.3, 6.2], q outside [0.05, 1], or a value that is not finite: the
        rule of the simulations too); ``Flag.BAD_MAGNITUDE`` where
        ``i_mag`` is not finite; ``Flag.OFF_IMAGE`` where the position is not finite.
    """
    r50 = np.asarray(table["r50"], dtype=float)
    n = np.asarray(table["sersic_n"], dtype=float)
    q = np.asarray(table["q"], dtype=float)
    pa = np.asarray(table["pa"], dtype=float)
    flags = np.zeros(len(table), dtype=np.int64)
    bad = ~valid_profile_parameters(r50, n, q, pa).numpy()
    flags[bad] |= int(Flag.BAD_PROFILE)
    flags[~np.isfinite(np.asarray(table["i_mag"], dtype=float))] |= int(Flag.BAD_MAGNITUDE)
    x = np.asarray(table["x"], dtype=float)
    y = np.asarray(table["y"], dtype=float)
    pos_bad = ~(np.isfinite(x) & np.isfinite(y))
    flags[pos_bad] |= int(Flag.OFF_IMAGE)
    return flags


def _check_unique(ids: np.ndarray, name: str) -> None:
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup = values[counts > 1][0]
        rows = np.flatnonzero(ids == dup)[:2]
        raise CatalogueError(
            f"duplicate id {getattr(dup, 'item', lambda: dup)()!r} in column {name!r} "
            f"(rows {rows[0]} and {rows[1]})"
        )


def _sky_to_pixel(wcs, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    good = np.isfinite(ra) & np.isfinite(dec)
    x = np.full(ra.shape, np.nan)
    y = np.full(ra.shape, np.nan)
    if np.any(good):
        px, py = wcs.celestial.all_world2pix(ra[good], dec[good], 0)
        x[good], y[good] = px, py
    return x, y


def _sky_pa_to_image(wcs, x: np.ndarray, y: np.ndarray, pa_sky: np.ndarray) -> np.ndarray:
    """Position angle east of north -> degrees counter-clockwise from the image +x axis."""
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(pa_sky)
    out = np.full(pa_sky.shape, np.nan)
    if not np.any(good):
        return out
    cel = wcs.celestial
    ra, dec = cel.all_pix2world(x[good], y[good], 0)
    step = 1.0 / 3600.0  # one arcsec along the major axis
    theta = np.deg2rad(pa_sky[good])
    dec2 = dec + step * np.cos(theta)
    ra2 = ra + step * np.sin(theta) / np.cos(np.deg2rad(dec))
    x2, y2 = cel.all_world2pix(ra2, dec2, 0)
    out[good] = np.rad2deg(np.arctan2(y2 - y[good], x2 - x[good])) % 180.0
    return out
