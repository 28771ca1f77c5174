"""End-to-end check of ``lumos measure`` on an exposure rendered by an independent code.

``../shared/data/field-nb685`` is a PAUS-like NB685 exposure (2048 x 2048, 90 s) drawn with
GalSim, not with lumos: 625 COSMOS-like galaxies as bulge + disk (two components, so the
catalogue's single-Sersic description is only an approximation), Moffat PSF (FWHM 0.85",
beta 3.5), a sky gradient, Poisson and read noise, cosmic rays, and a neighbour 4-12 px away
for one galaxy in five. The script measures it with ``lumos measure`` (the network) and with
the classical methods through the same path, and prints, per i-band magnitude bin and for
isolated galaxies and those with a neighbour: bias (median of (f - f_true)/f_true), sigma68
of it, sigma68 of (f - f_true) over the Cramer-Rao bound with the true profile (``crb_sigma``),
and the 68% coverage (lumos: the PDF's q16-q84 interval; classical: f +- flux_err).

Usage::

    .venv/bin/python bench/bench_field.py [--model PATH] [--methods lumos,aperture,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import FIELD_DIR as FIELD
from _common import median_sigma68

BINS = ((18.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0))


def field_statistics(table, truth, i_mag: np.ndarray) -> dict:
    """Bias, sigma68, sigma68/CRB and 68% coverage by magnitude bin and neighbour group."""
    f = np.asarray(table["flux"], dtype=float)
    f_true = np.asarray(truth["flux_true"], dtype=float)
    crb = np.asarray(truth["crb_sigma"], dtype=float)
    neighbour = np.asarray(truth["neighbour"]) > 0
    if table.meta.get("METHOD", "lumos") == "lumos":
        lo, hi = np.asarray(table["flux_q16"]), np.asarray(table["flux_q84"])
    else:
        err = np.asarray(table["flux_err"], dtype=float)
        lo, hi = f - err, f + err
    inside = (f_true >= lo) & (f_true <= hi)
    ok = (np.asarray(table["flags"]) == 0) & np.isfinite(f)
    rel = (f - f_true) / f_true
    out: dict = {"n": int(ok.sum()), "coverage68": float(inside[ok].mean())}
    for name, group in (("all", np.ones_like(ok)), ("isolated", ~neighbour),
                        ("neighbour", neighbour)):  # fmt: skip
        for b_lo, b_hi in BINS:
            sel = ok & group & (i_mag >= b_lo) & (i_mag < b_hi)
            out[(name, b_lo)] = {
                "n": int(sel.sum()),
                "bias": float(np.median(rel[sel])) if sel.any() else float("nan"),
                "sigma68": median_sigma68(rel[sel])[1],
                "crb_ratio": median_sigma68((f - f_true)[sel])[1] / float(np.median(crb[sel]))
                if sel.any() else float("nan"),
                "coverage68": float(inside[sel].mean()) if sel.any() else float("nan"),
            }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="lumos model (default: the shipped one)")
    parser.add_argument("--methods", default="lumos,aperture,weighted,modelfit")
    args = parser.parse_args(argv)
    if not FIELD.is_dir():
        print(f"skipped: {FIELD} is absent")
        return
    from astropy.table import Table

    from lumos.measure import measure_file

    warnings.filterwarnings("ignore", message=".*did not parse as fits unit.*")
    catalogue = Table.read(FIELD / "catalogue.fits")
    truth = Table.read(FIELD / "truth.fits")
    i_mag = np.asarray(catalogue["i_mag"], dtype=float)
    print(f"field-nb685: {len(catalogue)} galaxies (GalSim bulge + disk), model "
          f"{args.model or 'shipped'}")  # fmt: skip
    header = " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
    print("cells: bias % / sigma68 % / sigma68 over CRB / 68% coverage\n")
    print(f"| method | group | coverage68 (all) | {header} |")
    print("| --- | --- | --- |" + " --- |" * len(BINS))
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            table = measure_file(FIELD / "image.fits", FIELD / "catalogue.fits",
                                 Path(tmp) / f"{method}.fits", method=method,
                                 model_path=args.model if method == "lumos" else None,
                                 progress=False)  # fmt: skip
            seconds = time.perf_counter() - t0
            stats = field_statistics(table, truth, i_mag)
            for group in ("isolated", "neighbour"):
                cells = []
                for lo, _ in BINS:
                    s = stats[(group, lo)]
                    cells.append(f"{100 * s['bias']:+.1f} / {100 * s['sigma68']:.1f} / "
                                 f"{s['crb_ratio']:.2f} / {s['coverage68']:.2f}")  # fmt: skip
                print(f"| {method} | {group} | {stats['coverage68']:.3f} | "
                      + " | ".join(cells) + " |")
            print(f"<!-- {method}: {stats['n']} unflagged of {len(table)}, {seconds:.1f} s -->",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
