"""``lumos simulate`` as a user runs it, with GalSim's rendering rate beside it.

Times the whole command (``lumos simulate --n N``: start-up, the chunk processes, every stamp
with its neighbours, noise, synthetic PAUCam sky and model-profile channel, the HDF5 file) in
a subprocess, then draws ``--galsim`` PSF-convolved Sersic stamps with GalSim in this process
(the central galaxy only, parameters spanning the renderer's validated ranges: a lower bound on
what a GalSim-rendered full stamp costs), and prints both rates and their ratio. GalSim's rate
on two cores is given as twice its one-core rate (two independent processes).

Usage::

    .venv/bin/python bench/bench_simulate_command.py [--n 20000] [--galsim 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_render import galsim_stamps, random_galaxies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="stamps for lumos simulate")
    parser.add_argument("--galsim", type=int, default=300, help="stamps drawn with GalSim")
    args = parser.parse_args()
    lumos = Path(sys.executable).with_name("lumos")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.h5"
        t0 = time.perf_counter()
        subprocess.run([str(lumos), "simulate", "--n", str(args.n), "--out", str(out)],
                       check=True, capture_output=True)  # fmt: skip
        wall = time.perf_counter() - t0
    rate = args.n / wall
    g = random_galaxies(args.galsim, np.random.default_rng(3))
    _, gs_wall, _ = galsim_stamps(g, 60, strict=False)
    gs_rate = args.galsim / gs_wall
    print(f"lumos simulate --n {args.n}: {wall:.1f} s, {rate:.0f} stamps/s (whole command, "
          "full stamps)")
    print(f"GalSim drawImage, galaxy only: {gs_rate:.0f} stamps/s on one core, "
          f"{2 * gs_rate:.0f}/s on two")
    print(f"ratio lumos / GalSim (two cores each): {rate / (2 * gs_rate):.1f}")


if __name__ == "__main__":
    main()
