"""Benchmark: lumos's precision on exact single-Sersic galaxies, split into noise and shape.

With an exact catalogue lumos is 1.2-1.5x the Cramer-Rao bound at i 18-21 on GalSim's
exact-Sersic fields (``bench_galsim_repeat.py --kind sersic``). This bench asks where the
excess comes from, on lumos's own renderer: ``--n`` TEAHUPOO galaxies in one band (default
NB685), single Sersic, PSF FWHM 0.85 arcsec and beta 3.5, no neighbours, the clean synthetic
sky (:func:`lumos.validation.scenes.clean_sky`), each observed *twice* with the same PSF,
offset and catalogue and new noise. For ``e1``, ``e2`` the two relative errors
``(f - f_true) / f_true`` of a galaxy, per i bin:

* ``sigma68``: of ``e1`` (the scatter a field shows);
* ``noise``: sigma68 of ``(e1 - e2) / sqrt(2)``, what changes with the noise;
* ``shape``: ``sqrt(sigma68^2 - noise^2)``, what a galaxy keeps from one noise draw to the
  next (a bias that depends on its shape and flux), 0 where the noise holds it all;

for lumos's ``flux_like`` (no prior), aperture photometry and the oracle weighted sum (the
true profile, sky and flux: the best linear estimate, at the Cramer-Rao bound for these
isolated galaxies). ``--catalogue realistic`` gives both observations one catalogue with the
training's errors (:meth:`lumos.simconfig.CatalogueErrors.realistic`) instead of the truth.
The seed default, 73000001, is used by no training, calibration or validation.

Run: ``.venv/bin/python bench/bench_efficiency.py [--model PATH] [--n 8000] [--band NB685]
[--catalogue exact|realistic] [--seed 73000001]``
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import FIELD_I_EDGES, i_bin_counts, i_bin_header

from lumos.bands import PAUS_BANDS
from lumos.model_io import load_default_model, load_model
from lumos.simconfig import CatalogueErrors, apply_catalogue_errors
from lumos.stats import sigma68
from lumos.validation.draws import experiment_targets
from lumos.validation.measuring import measure_all
from lumos.validation.scenes import clean_sky, observe

METHODS = (("lumos", "flux_like"), ("aperture", "flux"), ("weighted_oracle", "flux"))


def split(e1: np.ndarray, e2: np.ndarray) -> tuple[float, float, float]:
    """(sigma68 of ``e1``, its noise part, its per-galaxy part) of two observations' errors."""
    ok = np.isfinite(e1) & np.isfinite(e2)
    total = sigma68(e1[ok]) if ok.sum() > 2 else float("nan")
    noise = sigma68((e1[ok] - e2[ok]) / np.sqrt(2.0)) if ok.sum() > 2 else float("nan")
    return total, noise, float(np.sqrt(max(total**2 - noise**2, 0.0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a likelihood model (default: the shipped one)")
    parser.add_argument("--n", type=int, default=8000, help="galaxies")
    parser.add_argument("--band", default="NB685")
    parser.add_argument("--catalogue", choices=("exact", "realistic"), default="exact")
    parser.add_argument("--seed", type=int, default=73_000_001)
    args = parser.parse_args(argv)
    model = (load_default_model() if args.model is None else load_model(args.model)).eval()
    band = np.full(args.n, tuple(PAUS_BANDS).index(args.band))
    rng, targets, _ = experiment_targets("efficiency", args.n, args.seed, band=band,
                                         psf_fwhm_range=(0.85, 0.85),
                                         psf_beta_range=(3.5, 3.5))  # fmt: skip
    catalogue = None
    if args.catalogue == "realistic":
        t = targets
        catalogue = apply_catalogue_errors(CatalogueErrors.realistic(), t.r50, t.n, t.q, t.pa,
                                           t.i_mag, t.psf_fwhm, rng)  # fmt: skip
    sky = clean_sky()
    rel = {name: [] for name, _ in METHODS}
    for _ in range(2):
        measured = measure_all(model, observe(targets, sky, rng, catalogue=catalogue),
                               ("aperture", "weighted_oracle"))  # fmt: skip
        for name, column in METHODS:
            flux = np.asarray(measured[name][column], float)
            rel[name].append(flux / targets.flux - 1.0)
    i_mag = targets.i_mag
    print(f"{args.n} single-Sersic galaxies in {args.band}, PSF 0.85 arcsec, clean sky, "
          f"{args.catalogue} catalogue, each observed twice; seed {args.seed}; "
          f"{args.model or 'shipped model'}\n")
    print(i_bin_header(("method", "quantity")))
    edges = FIELD_I_EDGES
    cells = {}
    for name, _ in METHODS:
        e1, e2 = rel[name]
        parts = [split(e1[k], e2[k]) for k in
                 ((i_mag >= lo) & (i_mag < hi) for lo, hi in zip(edges[:-1], edges[1:],
                                                                  strict=True))]  # fmt: skip
        cells[name] = parts
        for j, label in enumerate(("sigma68", "noise", "shape")):
            print(f"| {name} | {label} | " + " | ".join(f"{p[j]:.4f}" for p in parts) + " |")
    for j, label in enumerate(("sigma68", "noise")):
        ratio = [a[j] / b[j] for a, b in zip(cells["lumos"], cells["weighted_oracle"],
                                             strict=True)]  # fmt: skip
        print(f"| lumos / oracle | {label} | " + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    print(f"\ngalaxies per bin: {i_bin_counts(i_mag)}")


if __name__ == "__main__":
    main()
