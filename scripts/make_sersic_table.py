"""Generate ``src/lumos/data/sersic_ktable.npz``: Fourier transforms of unit Sersic profiles.

The table holds the (real, radial) Fourier transform ``F_n(kappa)`` of a circular Sersic
profile of unit flux and unit half-light radius, on a grid of Sersic index ``n`` and of
``ln(kappa)`` (``kappa`` = wavenumber times half-light radius, radians). The values come
from GalSim's ``Sersic.kValue`` with tightened accuracy parameters (numbers computed by a
library are data). The renderer in :mod:`lumos.profiles` interpolates this table (cubic in
``n`` and ``ln kappa`` when the table is loaded, linear on the fine grid per k-point).

Run once (a few minutes on one core)::

    .venv/bin/python scripts/make_sersic_table.py [--out src/lumos/data/sersic_ktable.npz]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import galsim
import numpy as np

N_MIN, N_MAX, N_STEP = 0.3, 6.2, 0.025
LNK_MIN, LNK_MAX, LNK_STEP = np.log(1e-4), np.log(1e5), 0.02


def sersic_kvalues(n: float, kappa: np.ndarray) -> np.ndarray:
    """Fourier transform of a unit-flux, unit-half-light-radius Sersic profile at ``kappa``."""
    gsp = galsim.GSParams(kvalue_accuracy=1e-8, integration_relerr=1e-8, integration_abserr=1e-10)
    prof = galsim.Sersic(n, half_light_radius=1.0, gsparams=gsp)
    return np.array([prof.kValue(float(k), 0.0).real for k in kappa])


def main() -> None:
    default_out = Path(__file__).resolve().parents[1] / "src" / "lumos" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out / "sersic_ktable.npz")
    args = parser.parse_args()

    n_grid = np.round(np.arange(N_MIN, N_MAX + N_STEP / 2, N_STEP), 6)
    n_lnk = int(round((LNK_MAX - LNK_MIN) / LNK_STEP)) + 1
    lnk = LNK_MIN + LNK_STEP * np.arange(n_lnk)
    kappa = np.exp(lnk)
    table = np.empty((n_grid.size, n_lnk))
    t0 = time.time()
    for i, n in enumerate(n_grid):
        table[i] = sersic_kvalues(float(n), kappa)
        if i % 20 == 0:
            print(f"n={n:.3f}  {time.time() - t0:.0f} s", flush=True)
    np.savez_compressed(
        args.out,
        table=table.astype(np.float32),
        n_min=N_MIN,
        n_step=N_STEP,
        lnk_min=LNK_MIN,
        lnk_step=LNK_STEP,
        galsim_version=galsim.__version__,
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
