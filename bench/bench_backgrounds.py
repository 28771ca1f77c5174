"""Throughput of the background sources (stamps per second on one core).

Run: ``.venv/bin/python bench/bench_backgrounds.py [--n 5000] [--size 60] [--repeat 3]``

Prints, for 60 x 60 stamps at random bands / CCD positions / exposure times: the synthetic
sky (default artefact rates), the real-image cutouts (KiDS, from ../shared/data/kids, when
present), a 50/50 composite, robust_sigma alone, and the time to render a full
2048 x 4096 CCD. Timings on a shared machine are noisy: the best of ``--repeat`` runs is
the number to quote, the median is shown too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import KIDS_DIR, best_of  # noqa: E402

from lumos.backgrounds import (  # noqa: E402
    CompositeBackground,
    RealImageBackground,
    SyntheticSky,
    robust_sigma,
)
from lumos.instrument import CCD_SIZE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="stamps per call")
    parser.add_argument("--size", type=int, default=60, help="stamp side, pixels")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    n, size = args.n, args.size
    rng = np.random.default_rng(0)
    band = rng.integers(0, 80, n)
    xy = rng.uniform([0.0, 0.0], CCD_SIZE, (n, 2))
    t = rng.uniform(70.0, 130.0, n)

    def rate(source) -> str:
        source.sample(min(n, 200), size, band[:200], xy[:200], t[:200], rng)  # warm-up
        best, med = best_of(lambda: source.sample(n, size, band, xy, t, rng), args.repeat)
        return f"{n / best:8.0f} stamps/s (median {n / med:.0f})"

    print(f"background sources: {n} stamps of {size}x{size}, 1 thread, best of {args.repeat}")
    sky = SyntheticSky()
    print(f"  SyntheticSky (default artefacts) : {rate(sky)}")
    clean = SyntheticSky(
        cosmic_rate=0.0, hot_pixel_fraction=0.0, bad_columns_per_ccd=0.0,
        saturated_stars_per_ccd=0.0,
    )
    print(f"  SyntheticSky (no artefacts)      : {rate(clean)}")

    if KIDS_DIR.is_dir():
        paths = [KIDS_DIR / f"{b}.fits" for b in "ugri"]
        t0 = time.perf_counter()
        real = RealImageBackground(paths)
        load = time.perf_counter() - t0
        print(f"  RealImageBackground (KiDS ugri)  : {rate(real)}  [load {load:.1f} s]")
        mix = CompositeBackground([sky, real], weights=[0.5, 0.5])
        print(f"  Composite 50/50                  : {rate(mix)}")
    else:
        print("  RealImageBackground: skipped (../shared/data/kids absent)")

    stamps = sky.sample(n, size, band, xy, t, rng).pixels
    best, med = best_of(lambda: robust_sigma(stamps), args.repeat)
    print(f"  robust_sigma alone               : {n / best:8.0f} stamps/s (median {n / med:.0f})")

    best, med = best_of(lambda: sky.render_ccd(25, 90.0, rng), args.repeat)
    print(f"  render_ccd 2048x4096             : {best:8.2f} s (median {med:.2f} s)")


if __name__ == "__main__":
    main()
