"""Reading and writing tables (FITS, Parquet, CSV, ECSV), chosen by the file extension.

Parquet goes through pyarrow directly (vector columns become fixed-size lists), so that no
pandas is needed. CSV cannot hold vector columns: a table written as CSV leaves them out and
says so. Writes are atomic: a temporary file in the target directory, then a rename, so a
failed run never leaves a partial table behind; the file gets the permissions of any new file
under the user's umask (0644 under 022). :func:`check_output_path` checks before any work that
an output can be written, and :func:`announce_overwrite` is how every command says that an
existing output is about to be replaced. FITS tables carry FITS-standard units
(:func:`fits_unit`), so that any FITS reader gets them without a warning. The first column name
of a text file loses a UTF-8 byte-order mark.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from .errors import LumosError

__all__ = [
    "TABLE_FORMATS",
    "table_format",
    "check_output_path",
    "announce_overwrite",
    "fits_unit",
    "new_file_mode",
    "replace_file",
    "read_table",
    "write_table",
]

TABLE_FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
}


def table_format(path: str | Path, what: str = "table") -> str:
    """The astropy format name for a file extension, or a clear error."""
    fmt = TABLE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise LumosError(
            f"cannot tell the format of {what} {Path(path).name}: use one of "
            f"{', '.join(sorted(TABLE_FORMATS))}"
        )
    return fmt


def check_output_path(path: str | Path, table: bool = True) -> Path:
    """Check, before any work, that an output can be written.

    Parameters
    ----------
    path : str or Path
        The output file.
    table : bool
        The output is a table: its extension must be a known table format.

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    LumosError
        For an unknown table extension, a missing directory, a path that is a directory, or
        a directory where no file can be created (the message names ``path``).
    """
    path = Path(path)
    if table:
        table_format(path, "output table")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LumosError(f"output directory does not exist: {parent}")
    if path.is_dir():
        raise LumosError(f"output {path} is a directory; give a file name")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise LumosError(f"cannot write {path}: {_reason(exc)} in {parent}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _reason(exc: OSError) -> str:
    """The system's one-line reason for an OSError, without the file name it carries."""
    return (exc.strerror or type(exc).__name__).lower()


def announce_overwrite(command: str, *paths: str | Path) -> list[Path]:
    """Say on standard error that outputs which exist already are about to be replaced.

    Every command calls this once for its outputs, before any work, so that replacing a
    file is always said the same way: ``lumos COMMAND: FILE exists and will be overwritten``
    (an error before the end still leaves it as it was: outputs are replaced atomically).

    Parameters
    ----------
    command : str
        Name of the sub-command (``"measure"``, ``"coadd"``, ...).
    *paths : str or Path
        The outputs; an existing directory that is not empty is announced as written into.

    Returns
    -------
    list of Path
        The outputs announced.
    """
    existing = [Path(p) for p in paths
                if Path(p).exists() and not (Path(p).is_dir() and not any(Path(p).iterdir()))]
    files = [str(p) for p in existing if not p.is_dir()]
    if files:
        verb = "exists" if len(files) == 1 else "exist"
        print(f"lumos {command}: {', '.join(files)} {verb} and will be overwritten",
              file=sys.stderr)  # fmt: skip
    for directory in (p for p in existing if p.is_dir()):
        print(f"lumos {command}: {directory} exists; the files written into it will be "
              "overwritten", file=sys.stderr)  # fmt: skip
    return existing


def new_file_mode() -> int:
    """Permission bits of a newly created file under the process umask (0o644 under 022)."""
    mask = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        mask = None
    if mask is None:  # not Linux: read the umask by setting it (and put it back at once)
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def replace_file(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file onto ``path`` with the permissions of a new file.

    Temporary files are created private (0600); the output gets the mode any new file would
    get under the umask, also when it replaces an existing file.
    """
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)


def read_table(path: str | Path, what: str = "table", error=LumosError) -> Table:
    """Read a table; any failure becomes ``error`` with a one-line message.

    Parameters
    ----------
    path : str or Path
        File name; the extension chooses the format.
    what : str
        What the table is, for messages ("catalogue", "manifest", ...).
    error : type
        Exception class raised on failure (a :class:`~lumos.errors.LumosError`).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        fmt = table_format(path, what)
    except LumosError as exc:
        raise error(str(exc)) from None
    try:
        if fmt == "parquet":
            return _strip_bom(_read_parquet(path))
        with warnings.catch_warnings():
            # non-standard units in foreign files come back as unrecognised units
            warnings.simplefilter("ignore", u.UnitsWarning)
            if fmt == "fits":
                table = Table.read(path, format="fits", hdu=_first_table_hdu(path, what, error))
                return _strip_bom(_restore_units(table))
            return _strip_bom(Table.read(path, format=fmt))
    except LumosError:
        raise
    except Exception as exc:  # astropy and pyarrow raise many kinds for a corrupt file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"cannot read {what} {path.name}: {msg}") from None


def _strip_bom(table: Table) -> Table:
    """Drop a UTF-8 byte-order mark that a text file left on its first column name."""
    if table.colnames and table.colnames[0].startswith("\ufeff"):
        first = table.colnames[0]
        table.rename_column(first, first.lstrip("\ufeff"))
    return table


def _first_table_hdu(path: Path, what: str, error) -> int:
    try:
        with fits.open(path) as hdul:
            for i, hdu in enumerate(hdul):
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    return i
    except Exception as exc:
        raise error(f"cannot read {what} {path.name}: {exc}") from None
    raise error(f"{what} {path.name} has no table HDU")


def _read_parquet(path: Path) -> Table:
    # pyarrow (about 0.1 s to import) only for Parquet tables
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    table = Table()
    for name in arrow.column_names:
        column = arrow.column(name).combine_chunks()
        values = column.to_numpy(zero_copy_only=False)
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            values = np.stack(values)
        elif values.dtype == object and len(values) and isinstance(values[0], str):
            values = values.astype(str)  # fixed-width strings, writable to FITS
        table[name] = values
    meta = arrow.schema.metadata or {}
    if b"lumos_meta" in meta:
        info = json.loads(meta[b"lumos_meta"])
        table.meta.update(info.get("meta", {}))
        for name, unit in info.get("units", {}).items():
            if name in table.colnames:
                table[name].unit = unit
    return table


def _write_parquet(table: Table, path: str) -> None:
    # pyarrow (about 0.1 s to import) only for Parquet tables
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, names = [], []
    for name in table.colnames:
        values = np.asarray(table[name])
        if values.dtype.byteorder not in ("=", "|"):  # FITS columns are big-endian
            values = values.astype(values.dtype.newbyteorder("="))
        if values.ndim == 2:
            flat = pa.array(values.reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    units = {n: str(table[n].unit) for n in table.colnames if table[n].unit is not None}
    meta = {k: v for k, v in table.meta.items() if isinstance(v, str | int | float | bool)}
    schema_meta = {"lumos_meta": json.dumps({"meta": meta, "units": units})}
    arrow = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(schema_meta)
    pq.write_table(arrow, path)


#: FITS-standard stand-ins for units the FITS standard lacks (a number of electrons is a count).
_FITS_EQUIVALENTS = {"electron": "ct"}
#: Header keyword prefix recording a column's unit where TUNITn holds a FITS stand-in.
_LUMOS_UNIT_KEY = "LUNIT"


def fits_unit(unit) -> str | None:
    """The unit as a FITS-standard TUNITn string that reads back without a warning.

    Units the standard lacks are written through a FITS-standard equivalent
    (``electron`` -> ``ct``, ``electron / s`` -> ``ct / s``).

    Parameters
    ----------
    unit : astropy.units.UnitBase or str
        The unit.

    Returns
    -------
    str or None
        The TUNITn value, or None when the unit has no FITS form.
    """
    unit = u.Unit(unit, parse_strict="silent")
    candidates = [unit]
    if not isinstance(unit, u.UnrecognizedUnit):
        bases = [u.Unit(_FITS_EQUIVALENTS.get(b.to_string(), b)) for b in unit.bases]
        candidates.append(u.CompositeUnit(unit.scale, bases, unit.powers))
    for candidate in candidates:
        try:
            text = candidate.to_string("fits")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                u.Unit(text, format="fits")
        except (ValueError, TypeError, UserWarning):
            continue
        return text
    return None


def _write_fits(table: Table, path: str) -> None:
    """FITS whose TUNITn values are FITS-standard (:func:`fits_unit`), so that any reader
    gets them without a warning. Where the FITS form differs from the table's unit, or there
    is none, ``LUNITn`` keeps the unit as written, for :func:`read_table` to restore."""
    plain = table.copy(copy_data=False)
    units = {}
    for name in plain.colnames:
        if plain[name].unit is not None:
            units[name] = plain[name].unit
            plain[name].unit = None
    hdu = fits.table_to_hdu(plain)
    for i, name in enumerate(plain.colnames, start=1):
        if name not in units:
            continue
        text = units[name].to_string()
        standard = fits_unit(units[name])
        if standard is not None:
            hdu.header[f"TUNIT{i}"] = standard
        if standard is None or u.Unit(standard, format="fits") != units[name]:
            hdu.header[f"{_LUMOS_UNIT_KEY}{i}"] = (text, f"unit of column {i} as written")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def _restore_units(table: Table) -> Table:
    """Give columns back the units recorded in ``LUNITn`` (see :func:`_write_fits`)."""
    for i, name in enumerate(table.colnames, start=1):
        key = f"{_LUMOS_UNIT_KEY}{i}"
        if key in table.meta:
            table[name].unit = u.Unit(str(table.meta.pop(key)), parse_strict="silent")
    return table


def _drop_vector_columns(table: Table, path: Path) -> Table:
    """The table without its vector columns, for CSV (said on standard error)."""
    vectors = [name for name in table.colnames if np.ndim(table[name]) > 1]
    if not vectors:
        return table
    print(f"lumos: {path.name}: CSV cannot hold the vector columns {', '.join(vectors)}; "
          "written without them (use .fits, .parquet or .ecsv to keep them)",
          file=sys.stderr)  # fmt: skip
    return table[[name for name in table.colnames if name not in vectors]]


def write_table(table: Table, path: str | Path, overwrite: bool = True) -> Path:
    """Write a table atomically; the format follows the extension.

    Parameters
    ----------
    table : astropy.table.Table
        The table.
    path : str or Path
        Output file (``.fits``, ``.parquet``, ``.ecsv`` or ``.csv``; CSV leaves out the
        vector columns, and says so on standard error).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    LumosError
        If the directory does not exist or cannot be written, the extension is unknown, the
        file exists and ``overwrite`` is false, or writing fails (the message names
        ``path``, never the temporary file).
    """
    path = check_output_path(path)
    fmt = table_format(path, "output table")
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and not overwrite:
        raise LumosError(f"output file exists: {path}")
    if fmt == "ascii.csv":
        table = _drop_vector_columns(table, path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=parent)
        os.close(fd)
        if fmt == "parquet":
            _write_parquet(table, tmp)
        elif fmt == "fits":
            _write_fits(table, tmp)
        else:
            table.write(tmp, format=fmt, overwrite=True)
        replace_file(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise LumosError(f"cannot write {path}: {_reason(exc)}") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)
