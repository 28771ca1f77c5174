"""Many images through Dask: 4 demo CCDs on a local cluster against one by one.

Simulates ``--images`` demo CCDs (4096 x 2048, NB685, different seeds and PSFs), measures them
with ``lumos measure`` on a manifest (Dask local cluster of processes) and one by one, checks that
the two tables are the same, and prints both wall times.

Usage::

    .venv/bin/python bench/bench_manifest.py [--images 4] [--n 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--n", type=int, default=3000, help="galaxies per CCD")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import torch

    from lumos.field import simulate_field
    from lumos.manifest import measure_manifest
    from lumos.measure import measure_file

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for k in range(args.images):
            field = simulate_field(n_galaxies=args.n, seed=500 + k, psf_fwhm=0.7 + 0.1 * k,
                                   camera_state=k % 2)  # fmt: skip
            folder = tmp / f"ccd{k}"
            folder.mkdir()
            field.write(folder)
            paths.append(folder / "image.fits")
        catalogues = [str(p.parent / "catalogue.fits") for p in paths]
        Table({"path": [str(p) for p in paths], "catalogue": catalogues}).write(
            tmp / "manifest.ecsv"
        )
        t0 = time.perf_counter()
        together = measure_manifest(tmp / "manifest.ecsv", None, tmp / "all.fits",
                                    n_workers=args.workers, progress=False)  # fmt: skip
        t_dask = time.perf_counter() - t0
        t0 = time.perf_counter()
        singles = [measure_file(p, c, tmp / f"one{k}.fits", progress=False)
                   for k, (p, c) in enumerate(zip(paths, catalogues, strict=True))]  # fmt: skip
        t_one = time.perf_counter() - t0
    same = True
    for k, single in enumerate(singles):
        part = together[together["image"] == str(paths[k])]
        same &= bool(np.array_equal(np.asarray(part["id"]), np.asarray(single["id"])))
        same &= bool(np.allclose(part["flux"], single["flux"], rtol=1e-5, equal_nan=True))
        same &= bool(np.array_equal(part["flags"], single["flags"]))
    rows = len(together)
    print(f"{args.images} CCDs x {args.n} galaxies: Dask local cluster ({args.workers} workers) "
          f"{t_dask:.1f} s ({rows / t_dask:.0f} galaxies/s); one by one {t_one:.1f} s "
          f"({rows / t_one:.0f} galaxies/s); same table: {same}")  # fmt: skip
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
