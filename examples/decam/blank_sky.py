"""Blank sky: lumos and aperture photometry at random positions far from every galaxy.

At zero true flux a likelihood centred on the pixels has a pull ``flux_like /
flux_like_err`` of median 0 and sigma68 1, as aperture photometry's ``flux / flux_err``
should. This script draws ``--n`` random positions on the reference exposure, at least
``--distance`` pixels from every galaxy of ``OUT/catalogue.fits`` and from the patch edge,
gives them a small exponential profile (r50 0.2 arcsec, q 0.8), measures them in every
exposure of one band with ``lumos measure`` (network and aperture, as ``run.sh`` does) and
prints, per exposure and method, the rows unflagged, the mean flux in nanomaggies and the
median and sigma68 of the pull::

    python blank_sky.py OUT [--model MODEL] [--band r] [--n 100] [--distance 12] [--seed 1]

Needs ``run.sh OUT`` to have run (the catalogue); writes ``OUT/blank/``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from lumos.cli import main as lumos
from lumos.imageio import read_image
from lumos.stats import sigma68

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from exposures import find_exposures, nanomaggies_per_unit  # noqa: E402

REPO = HERE.parents[1]
#: Side of the test patch, pixels.
PATCH = 250


def blank_catalogue(catalogue: Table, wcs: WCS, n: int, distance: float,
                    rng: np.random.Generator) -> Table:
    """``n`` positions at least ``distance`` pixels from every galaxy and from the edge."""
    gx, gy = np.asarray(catalogue["x_ref"], float), np.asarray(catalogue["y_ref"], float)
    xs, ys = [], []
    while len(xs) < n:
        x, y = rng.uniform(distance, PATCH - 1 - distance, 2)
        if np.all(np.hypot(gx - x, gy - y) >= distance):
            xs.append(x)
            ys.append(y)
    ra, dec = wcs.all_pix2world(np.array(xs), np.array(ys), 0)
    return Table({"id": np.arange(1, n + 1), "ra": ra, "dec": dec, "r50": np.full(n, 0.2),
                  "sersic_n": np.ones(n), "q": np.full(n, 0.8), "pa": np.zeros(n),
                  "i_mag": np.full(n, 24.0)},
                 meta={"comments": ["blank-sky positions drawn by examples/decam/blank_sky.py"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the OUT folder of run.sh")
    parser.add_argument("--model", default=str(REPO / "src/lumos/data/model/lumos-decam"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/decam-testcase4")
    parser.add_argument("--band", default="r")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--distance", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    catalogue = Table.read(args.out / "catalogue.fits")
    exposures = find_exposures(args.data)
    ref = next(e for e in exposures if e.name == catalogue.meta["REFIMAGE"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, wcs = read_image(ref.image)
    blank = blank_catalogue(catalogue, wcs, args.n, args.distance,
                            np.random.default_rng(args.seed))  # fmt: skip
    folder = args.out / "blank"
    folder.mkdir(parents=True, exist_ok=True)
    blank.write(folder / "catalogue.fits", overwrite=True)
    print(f"{args.n} blank positions >= {args.distance:g} pixels from every galaxy; "
          f"pull = flux_like / flux_like_err (lumos), flux / flux_err (aperture)")
    print("| exposure | method | unflagged | mean flux [nmgy] | median pull | sigma68 pull |")
    print("| --- | --- | --- | --- | --- | --- |")
    for e in (e for e in exposures if e.band == args.band):
        common = [str(e.image), str(folder / "catalogue.fits"), "--survey",
                  str(HERE / "decam.toml"), "--psf", str(e.psf), "--weight", str(e.weight),
                  "--mask", str(e.mask), "--workers", "1"]
        to_nmgy = nanomaggies_per_unit(e.ccdzpt, e.exptime)
        for method, extra, column in (
                ("lumos", ["--model", args.model, "--prior", "population"], "flux_like"),
                ("aperture", ["--method", "aperture"], "flux")):
            path = folder / method / e.name
            path.parent.mkdir(exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if lumos(["measure", *common, *extra, "--out", str(path)]) != 0:
                    return 1
            t = Table.read(path)
            ok = np.asarray(t["flags"]) == 0
            err = "flux_like_err" if column == "flux_like" else "flux_err"
            f, s = np.asarray(t[column], float)[ok], np.asarray(t[err], float)[ok]
            pull = f / s
            print(f"| {e.name} | {method} | {ok.sum()} | {np.mean(f) * to_nmgy:+.3f} | "
                  f"{np.median(pull):+.2f} | {sigma68(pull):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
