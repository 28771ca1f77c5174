"""Stack the per-exposure tables of ``run.sh`` and compare repeated exposures.

``OUT/lumos/*.fits`` and ``OUT/aperture/*.fits`` (one ``lumos measure`` table per exposure)
become ``OUT/lumos.fits`` and ``OUT/aperture.fits``: one row per (catalogue galaxy, exposure)
with ``image`` (the exposure's file name), ``ccdzpt``, ``exptime`` and ``to_nmgy`` (the factor
turning the table's ADU fluxes into nanomaggies) added to lumos's columns.

It then prints, per band and method, D = (f1 - f2) / sqrt(s1^2 + s2^2) (Eq. 19,
:func:`lumos.stats.pair_pull`) over every pair of exposures of one band in which a galaxy is
measured without a flag, on fluxes in nanomaggies: ``flux_like`` / ``flux_like_err`` (the
per-exposure likelihood; for aperture photometry these are its flux and error), and
sigma68 of D (Eq. 14), and the same on the pairs both methods measured (unflagged by lumos,
and by aperture photometry but for ``EDGE``), with the 68% and 95% intervals of that sigma68
when the galaxies are resampled (a bootstrap over galaxies: each brings all its pairs, as
the pairs of one galaxy are not independent). The numbers are also written to
``OUT/summary.json``, and each exposure's ``to_nmgy`` to ``OUT/zero_points.csv`` (the
``--zero-points`` table of ``lumos transfer``).

Usage::

    python combine.py OUT
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from lumos.stats import pair_pull, sigma68

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exposures import nanomaggies_per_unit  # noqa: E402

METHODS = ("lumos", "aperture")


def read_exposures(out: Path) -> list[dict]:
    """The exposures ``run.sh`` measured (``OUT/exposures.tsv``)."""
    keys = ("image", "weight", "mask", "psf", "band", "ccdzpt", "exptime")
    rows = []
    for line in (out / "exposures.tsv").read_text().splitlines():
        if line.strip():
            rows.append(dict(zip(keys, line.split("\t"), strict=True)))
    return rows


def stack_tables(out: Path, method: str, exposures: list[dict]) -> Table:
    """One method's per-exposure tables as one table with the exposure columns."""
    parts = []
    for e in exposures:
        name = Path(e["image"]).name
        table = Table.read(out / method / f"{Path(name).stem}.fits")
        table.meta = {}
        table["image"] = name
        table["ccdzpt"] = float(e["ccdzpt"])
        table["exptime"] = float(e["exptime"])
        table["to_nmgy"] = nanomaggies_per_unit(float(e["ccdzpt"]), float(e["exptime"]))
        parts.append(table)
    return vstack(parts, metadata_conflicts="silent")


def pair_statistics(table: Table, good: np.ndarray | None = None) -> dict[str, dict]:
    """D over same-band pairs of unflagged measurements, per band.

    Parameters
    ----------
    table : astropy.table.Table
        Stacked measurements (``id, band, flags, flux_like, flux_like_err, to_nmgy``).
    good : numpy.ndarray of bool, optional
        The rows to use (default: ``flags == 0``); rows without a finite flux are dropped.

    Returns
    -------
    dict
        Per band: ``pairs``, ``galaxies``, ``sigma68_D``, ``median_D``, the D values and the
        galaxy of each (``galaxy``).
    """
    result = {}
    good = np.asarray(table["flags"] == 0) if good is None else np.asarray(good, dtype=bool)
    good = good & np.isfinite(table["flux_like"])
    for band in sorted(set(table["band"])):
        d, of = [], []
        sub = table[good & (table["band"] == band)]
        for gid in sorted(set(sub["id"])):
            rows = sub[sub["id"] == gid]
            f = np.asarray(rows["flux_like"] * rows["to_nmgy"])
            s = np.asarray(rows["flux_like_err"] * rows["to_nmgy"])
            for i, j in itertools.combinations(range(len(rows)), 2):
                d.append(float(pair_pull(f[i], s[i], f[j], s[j])))
                of.append(int(gid))
        d = np.asarray(d)
        result[band] = {"pairs": int(d.size), "galaxies": len(set(of)),
                        "sigma68_D": sigma68(d) if d.size else float("nan"),
                        "median_D": float(np.median(d)) if d.size else float("nan"),
                        "D": [round(x, 3) for x in d], "galaxy": of}  # fmt: skip
    return result


def bootstrap_sigma68(d, galaxy, n: int = 4000, seed: int = 13) -> list[float]:
    """The 16, 84, 2.5 and 97.5 percentiles of sigma68(D) over resampled galaxies.

    Parameters
    ----------
    d : array_like
        D of every pair.
    galaxy : array_like
        The galaxy of each pair; a resample draws galaxies with replacement, each with all
        its pairs.
    n : int
        Resamples.
    seed : int
        Seed of the resampling.
    """
    d, galaxy = np.asarray(d, float), np.asarray(galaxy)
    ids = np.unique(galaxy)
    if ids.size == 0:
        return [float("nan")] * 4
    rows = [np.flatnonzero(galaxy == g) for g in ids]
    rng = np.random.default_rng(seed)
    values = [sigma68(d[np.concatenate([rows[k] for k in rng.integers(0, ids.size, ids.size)])])
              for _ in range(int(n))]
    return [float(v) for v in np.percentile(values, [16, 84, 2.5, 97.5])]


def unflagged_everywhere(table: Table) -> dict[str, list[int]]:
    """Galaxies measured without a flag in all exposures, and in all that hold their stamp.

    An exposure holds a galaxy's stamp when its row has neither ``EDGE`` (1) nor ``OFF_IMAGE``
    (64) set.
    """
    n_images = len(set(table["image"]))
    every, covering = [], []
    for gid in sorted(set(table["id"])):
        flags = np.asarray(table["flags"][table["id"] == gid])
        held = (flags & (1 | 64)) == 0
        if np.count_nonzero(flags == 0) == n_images:
            every.append(int(gid))
        if held.any() and np.all(flags[held] == 0):
            covering.append(int(gid))
    return {"every_exposure": every, "every_exposure_holding_the_stamp": covering}


def main(argv: list[str]) -> int:
    """Stack, write and summarise ``argv[0]``."""
    out = Path(argv[0])
    exposures = read_exposures(out)
    summary = {}
    tables = {method: stack_tables(out, method, exposures) for method in METHODS}
    for key in ("id", "image"):  # one row per catalogue galaxy and exposure, in one order
        if not np.array_equal(tables["lumos"][key], tables["aperture"][key]):
            raise SystemExit("combine.py: the lumos and aperture tables do not match row by row")
    # the same pairs for both methods: unflagged by lumos, and by aperture photometry but
    # for EDGE (its 100-pixel context cutout padded, the aperture itself on the image)
    both = (np.asarray(tables["lumos"]["flags"]) == 0) & (
        (np.asarray(tables["aperture"]["flags"]) & ~1) == 0)
    for method in METHODS:
        table = tables[method]
        table.write(out / f"{method}.fits", overwrite=True)
        stats = pair_statistics(table)
        clean = unflagged_everywhere(table)
        common = pair_statistics(table, both)
        summary[method] = {"pairs": stats, "common_pairs": common, "unflagged": clean}
        print(f"{method}: {len(table)} rows ({len(set(table['id']))} galaxies x "
              f"{len(exposures)} exposures) -> {out / (method + '.fits')}")  # fmt: skip
        print(f"  unflagged in all {len(exposures)} exposures: {len(clean['every_exposure'])} "
              f"galaxies {clean['every_exposure']}; in every exposure holding their stamp: "
              f"{len(clean['every_exposure_holding_the_stamp'])}")  # fmt: skip
        for band, s in stats.items():
            c = common[band]
            c["bootstrap"] = bootstrap_sigma68(c["D"], c["galaxy"])
            print(f"  {band}: {s['pairs']} same-band pairs of {s['galaxies']} galaxies, "
                  f"sigma68(D) = {s['sigma68_D']:.3f}, median D = {s['median_D']:+.3f}; "
                  f"on the pairs common to both methods ({c['pairs']}): "
                  f"sigma68(D) = {c['sigma68_D']:.3f} (bootstrap over galaxies: 68% "
                  f"{c['bootstrap'][0]:.2f}-{c['bootstrap'][1]:.2f}, 95% "
                  f"{c['bootstrap'][2]:.2f}-{c['bootstrap'][3]:.2f})")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    # per-image calibration of the ADU fluxes, for lumos transfer --zero-points
    Table({"image": [Path(e["image"]).name for e in exposures],
           "zp": [nanomaggies_per_unit(float(e["ccdzpt"]), float(e["exptime"]))
                  for e in exposures]}).write(out / "zero_points.csv", overwrite=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
