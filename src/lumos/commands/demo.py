"""``lumos demo``: the embedded default, end to end.

Simulates a PAUS-like 4096 x 2048 CCD in one narrow band (scattered light, cosmic rays, a few
thousand catalogued galaxies of known flux; the catalogue's shapes, magnitudes and positions
and the header's PSF FWHM carry realistic measurement errors), writes the image, catalogue
and truth as FITS, measures it with the shipped model and with forced aperture photometry
through the same path as ``lumos measure``, and writes both tables and a short report with
plots.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import LumosError
from ..tableio import announce_overwrite, check_output_path

#: Error of the demo catalogue's positions, pixels in x and in y (an astrometric tie and a
#: WCS, as the shipped model was trained with: ``lumos train --position-error 0.15``).
DEMO_POSITION_ERROR = 0.15


def run(args: argparse.Namespace) -> int:
    from ..field import simulate_field
    from ..measure import measure_file
    from ..report import write_demo_report
    from ..simulate import CatalogueErrors

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LumosError(f"--out {out} exists and is not a directory")
    if args.n_galaxies < 10:
        raise LumosError("--n-galaxies must be at least 10")
    if out.is_dir():
        check_output_path(out / "report.md", table=False)
    announce_overwrite("demo", out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    print(f"lumos demo: simulating a PAUS-like NB685 CCD with {args.n_galaxies} galaxies")
    errors = replace(CatalogueErrors.realistic(), position_sigma=DEMO_POSITION_ERROR)
    field = simulate_field(n_galaxies=args.n_galaxies, seed=args.seed, progress=True,
                           catalogue_errors=errors)  # fmt: skip
    field.write(out)
    timings = {"simulate": time.perf_counter() - t0}

    tables = {}
    for method in ("lumos", "aperture"):
        t = time.perf_counter()
        try:
            tables[method] = measure_file(
                out / "image.fits", out / "catalogue.fits", out / f"{method}.fits",
                method=method, progress=True,
            )  # fmt: skip
        except LumosError as exc:
            if method != "lumos":
                raise
            print(f"lumos demo: skipping the network ({exc})")
            continue
        timings[method] = time.perf_counter() - t
    note = (f"As for real data, the catalogue given to both methods is measured with errors "
            f"({100 * errors.r50_frac:g}% in r50, {100 * errors.n_frac:g}% in n, "
            f"{errors.q_sigma:g} in q, {errors.pa_sigma:g} deg in pa, "
            f"{errors.i_mag_sigma:g} mag in i, {errors.position_sigma:g} pixels in x and y) and "
            f"the header's PSF FWHM by {100 * errors.psf_fwhm_frac:g}%; bins use the true i "
            f"magnitude. The galaxies are exact single-Sersic profiles, while the shipped "
            f"model expects catalogue entries to be Sersic fits of galaxies that are not "
            f"(bulge + disk): it measures large, concentrated Sersic profiles a few percent "
            f"low (model card, limits; bench/bench_profile_bias.py).")
    report = write_demo_report(out, field.catalogue, field.truth, tables, timings, note)
    total = time.perf_counter() - t0
    print(f"lumos demo: done in {total:.0f} s; report: {report}")
    for method, table in tables.items():
        ok = np.isfinite(np.asarray(table["flux"]))
        print(f"  {method}: {ok.sum()} of {len(table)} galaxies measured")
    return 0
