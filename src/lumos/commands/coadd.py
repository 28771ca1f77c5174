"""``lumos coadd``: co-add per-exposure measurement tables per galaxy and band."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..coadd import check_exposures, coadd_tables
    from ..tableio import announce_overwrite, check_output_path, read_table, write_table
    from .measure import lumos_only_options, prior_choice

    prior = prior_choice(args)
    out = check_output_path(args.out)
    tables, exposures = [], []
    for path in args.tables:
        table = read_table(path, "measurement table")
        missing = [c for c in ("id", "band", "flags") if c not in table.colnames]
        if missing:
            raise LumosError(f"{Path(path).name} is not a lumos measurement table "
                             f"(missing {', '.join(missing)})")  # fmt: skip
        exposures.append(_exposure(table, path))
        if "image" not in table.colnames:
            table["image"] = Path(path).name
        tables.append(table)
    check_exposures(tables, exposures, [Path(p).name for p in args.tables])
    zero_points = None if args.zero_points is None else read_table(args.zero_points, "zero points")
    likelihood = [_is_likelihood_table(t) for t in tables]
    if any(likelihood) and not all(likelihood):
        raise LumosError("the tables mix a likelihood model's measurements with others; "
                         "co-add them separately")
    given = lumos_only_options(args, ("prior", "prior_form"))
    if given and not all(likelihood):
        raise LumosError(f"{', '.join(given)}: for tables of a likelihood model; these are "
                         "co-added by inverse variance and the product of their PDFs")
    announce_overwrite("coadd", out)
    try:
        if all(likelihood):
            from ..bayes import coadd_likelihoods

            result = coadd_likelihoods(tables, prior=prior,
                                       zero_points=zero_points)
            print(f"lumos coadd: likelihoods multiplied, shared error and the "
                  f"{result.meta['PRIOR']} prior applied once")
        else:
            result = coadd_tables(tables, zero_points=zero_points, exposures=exposures)
    except ValueError as exc:
        raise LumosError(str(exc)) from None
    write_table(result, out)
    print(f"wrote {len(result)} co-added (id, band) rows from {len(tables)} tables to {out}")
    return 0


def _exposure(table, path: str):
    """What identifies the exposure of a table's rows: its ``image`` column (a manifest
    run), else the measured image's path in its metadata, else the table file itself."""
    if "image" in table.colnames:
        return table["image"]
    for key in ("IMGPATH", "IMAGE"):
        if key in table.meta:
            return str(table.meta[key])
    return str(Path(path).resolve())


def _is_likelihood_table(table) -> bool:
    """Measured by a likelihood model: likelihood columns and an explicit prior."""
    import numpy as np

    if "flux_like" not in table.colnames or "like_weight" not in table.colnames:
        return False
    if str(table.meta.get("METHOD", "lumos")) != "lumos":
        return False
    return str(table.meta.get("PRIOR", "implicit")) != "implicit" and bool(
        np.isfinite(np.asarray(table["flux_like"], float)).any())
