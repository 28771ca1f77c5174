"""Benchmark: the flux bias by galaxy size and Sersic index on exact single-Sersic galaxies.

Simulates the demo's field (``lumos.field.simulate_field``: one PAUS-like NB685 CCD,
TEAHUPOO galaxies drawn as exact single-Sersic profiles, synthetic sky) with an exact
catalogue, measures it with lumos (``flux_like``), the profile-weighted sum (same catalogue
profile) and aperture photometry through ``lumos measure``'s path, and prints the median
``flux / f_true - 1`` of galaxies brighter than ``--i-max`` in bins of the true r50 and
Sersic index. Then, on stamps simulated like the model's training but of single-Sersic
galaxies with an exact catalogue and the demo's PSF, the median ``flux_like / f_true - 1`` by
true flux with the training's fluxes (independent of the shape) and with the population's
(bright galaxies large). Last, on bright stamps of the training simulation (100-1000 e-/s, its
catalogue errors), single-Sersic galaxies and bulge + disk galaxies behind single-Sersic fits
by the catalogue's n (r50 > 0.8 arcsec): the median ``flux_like / f_true - 1`` and the 68%
coverage of the likelihood with its shared error. The seed default, 63000001, is used by no
training, calibration or validation.

Run: ``.venv/bin/python bench/bench_profile_bias.py [--model PATH] [--n 3000]
[--i-max 21] [--seed 63000001]``
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import likelihood

from lumos.field import simulate_field
from lumos.measure import measure_file
from lumos.model_io import load_default_model, load_model
from lumos.simconfig import CatalogueErrors
from lumos.simulate import Simulator
from lumos.streams import training_simulation

R50_EDGES = (0.0, 0.3, 0.5, 0.8, 1.2, 10.0)
N_EDGES = (0.0, 1.0, 2.0, 3.0, 10.0)
METHODS = (("lumos", "flux_like"), ("weighted", "flux"), ("aperture", "flux"))
FLUX_RANGES = ((2000.0, 5000.0), (5000.0, 15000.0), (15000.0, np.inf))


def stamp_bias(model, flux_prior: str, n: int, seed: int) -> list[float]:
    """Median ``flux_like / f_true - 1`` per :data:`FLUX_RANGES` on single-Sersic stamps."""
    base = training_simulation(model)
    sim = replace(base, two_component_fraction=0.0, catalogue_errors=CatalogueErrors(),
                  psf_fwhm_range=(0.849, 0.851), psf_beta_range=(3.499, 3.501))
    sim = replace(sim, flux_prior="loguniform", flux_range=(20.0, 1000.0)) \
        if flux_prior == "training" else replace(sim, flux_prior="population")  # fmt: skip
    batch = Simulator(sim, seed=seed).sample(n)
    mean, _, _ = likelihood(model, batch)
    truth = batch.truth.double().numpy()
    ratio = mean / truth - 1
    return [float(np.median(ratio[(truth >= lo) & (truth < hi)])) for lo, hi in FLUX_RANGES]


def morphology_rows(model, n: int, seed: int) -> list[str]:
    """Table rows: bias and coverage by catalogue n for single-Sersic and bulge + disk."""
    base = training_simulation(model)
    rows = []
    for k, (label, frac) in enumerate((("single Sersic", 0.0), ("bulge + disk", 1.0))):
        sim = replace(base, two_component_fraction=frac, flux_prior="loguniform",
                      flux_range=(100.0, 1000.0))  # fmt: skip
        batch, extras = Simulator(sim, seed=seed + k).sample_with_context(n, context_size=60)
        mean, err, shared = likelihood(model, batch)
        truth = batch.truth.double().numpy()
        inside = np.abs(mean - truth) <= np.hypot(err, shared)
        big = np.asarray(extras.r50_catalogue) > 0.8
        n_cat = np.asarray(extras.n_catalogue)
        for lo, hi in ((0.0, 1.5), (1.5, 3.0), (3.0, 10.0)):
            sel = big & (n_cat >= lo) & (n_cat < hi)
            rows.append(f"| {label} | {lo:g}-{hi:g} | {int(sel.sum())} | "
                        f"{100 * np.median(mean[sel] / truth[sel] - 1):+.2f} | "
                        f"{inside[sel].mean():.3f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model (default: the shipped one)")
    parser.add_argument("--n", type=int, default=3000, help="galaxies on the CCD")
    parser.add_argument("--i-max", type=float, default=21.0, help="brightest galaxies only")
    parser.add_argument("--seed", type=int, default=63_000_001)
    args = parser.parse_args(argv)
    field = simulate_field(n_galaxies=args.n, seed=args.seed)
    truth = field.truth
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        field.write(Path(tmp))
        for method, column in METHODS:
            table = measure_file(Path(tmp) / "image.fits", Path(tmp) / "catalogue.fits",
                                 Path(tmp) / f"{method}.fits", method=method,
                                 model_path=args.model if method == "lumos" else None)
            assert np.array_equal(np.asarray(table["id"]), np.asarray(truth["id"]))
            ratios[method] = np.asarray(table[column], float) / np.asarray(truth["flux_true"]) - 1
    bright = np.asarray(truth["i_mag"]) < args.i_max
    print(f"\n{args.n} exact single-Sersic galaxies on the demo's CCD, seed {args.seed}; "
          f"i < {args.i_max:g}: median flux / f_true - 1 [%]\n")
    print("| galaxies | count | " + " | ".join(m for m, _ in METHODS) + " |")
    print("| --- | --- |" + " --- |" * len(METHODS))
    for name, values, edges, unit in (("r50", truth["r50"], R50_EDGES, " arcsec"),
                                      ("n", truth["sersic_n"], N_EDGES, "")):
        values = np.asarray(values, float)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = bright & (values >= lo) & (values < hi)
            cells = [f"{100 * np.nanmedian(ratios[m][sel]):+.2f}" if sel.any() else "-"
                     for m, _ in METHODS]
            print(f"| {name} {lo:g}-{hi:g}{unit} | {int(sel.sum())} | " + " | ".join(cells)
                  + " |")
    cells = [f"{100 * np.nanmedian(ratios[m][bright]):+.2f}" for m, _ in METHODS]
    print(f"| all | {int(bright.sum())} | " + " | ".join(cells) + " |")

    model = load_default_model() if args.model is None else load_model(args.model)
    heads = " | ".join(f"{lo:g}-{hi:g} e-" for lo, hi in FLUX_RANGES)
    print("\nsingle-Sersic stamps of the training simulation, exact catalogue, PSF 0.85 "
          "arcsec / beta 3.5, 4000 per row: median flux_like / f_true - 1 [%]\n")
    print(f"| fluxes | {heads} |")
    print("| --- |" + " --- |" * len(FLUX_RANGES))
    for k, prior in enumerate(("training", "population")):
        cells = [f"{100 * b:+.2f}" for b in stamp_bias(model, prior, 4000, args.seed + 1 + k)]
        print(f"| {prior} | " + " | ".join(cells) + " |", flush=True)

    print("\nbright stamps of the training simulation (100-1000 e-/s, r50 > 0.8 arcsec), "
          "4000 per kind: median flux_like / f_true - 1 [%] and 68% coverage of the "
          "likelihood with its shared error\n")
    print("| galaxies | catalogue n | count | bias | coverage |")
    print("| --- | --- | --- | --- | --- |")
    for row in morphology_rows(model, 4000, args.seed + 3):
        print(row)


if __name__ == "__main__":
    main()
