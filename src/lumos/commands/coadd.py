"""``lumos coadd``: co-add per-exposure measurement tables per galaxy and band."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..coadd import coadd_tables
    from ..tableio import check_output_path, read_table, write_table

    out = check_output_path(args.out)
    tables = []
    for path in args.tables:
        table = read_table(path, "measurement table")
        missing = [c for c in ("id", "band", "flags") if c not in table.colnames]
        if missing:
            raise LumosError(f"{Path(path).name} is not a lumos measurement table "
                             f"(missing {', '.join(missing)})")  # fmt: skip
        if "image" not in table.colnames:
            table["image"] = Path(path).name
        tables.append(table)
    zero_points = None if args.zero_points is None else read_table(args.zero_points, "zero points")
    try:
        result = coadd_tables(tables, zero_points=zero_points)
    except ValueError as exc:
        raise LumosError(str(exc)) from None
    write_table(result, out)
    print(f"wrote {len(result)} co-added (id, band) rows from {len(tables)} tables to {out}")
    return 0
