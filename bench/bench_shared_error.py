"""Benchmark: does the shared error split a model's likelihood right, per i bin and width?

Simulates fresh pairs of exposures of one scene, drawn like the model's training
(:func:`lumos.pairs.simulate_pairs` with the model's recorded simulation: catalogue errors,
bulge + disk galaxies and neighbours shared, PSF, offset, sky and noise new; with
``--survey``/``--backgrounds`` the survey's bands, PSFs and skies), and prints sigma68 of
D (Eq. 19) of the per-exposure likelihoods (``flux_like`` / ``flux_like_err``,
:func:`lumos.bayes.split_shared`) overall, per i bin and per equal-count bin of the pairs'
relative likelihood width ``sqrt(w1 w2)`` (the variable of the shared-error curve), for:
no shared error, one constant (``--constant``), and each model's recorded constant and
curve; then, for each model's curve, sigma68 of D in the cells of three equal-count bins of
the profile channel's half-light radius (pixels, the model profile's own size) by three of
the width: a curve of the width alone cannot follow a shared error that also depends on the
galaxy's size. D of unit width in every bin is what the split should give. The seed default,
30000001, is used by no training, calibration or validation; all models see the same pairs
(simulated with the first model's training simulation). A model whose shared error
depends on the profile's size (``lumos calibrate --shared-error curve-size``) is split with
each exposure's own profile size.

Run: ``.venv/bin/python bench/bench_shared_error.py [--model PATH ...] [--pairs 4000]
[--seed 30000001] [--constant 0.0437] [--survey FILE --backgrounds MANIFEST]``
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from lumos.calibration import pair_d
from lumos.commands.surveys import survey_simulation
from lumos.model_io import load_default_model, load_model
from lumos.pairs import PairSimulation, simulate_pairs
from lumos.shared_error import SharedError, profile_half_light_radius, relative_width
from lumos.stats import sigma68
from lumos.training import training_simulation

BINS = ((17.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0))
#: Equal-count bins of the pairs' relative likelihood width (as ``lumos calibrate`` fits).
WIDTH_BINS = 6


def _equal_count(x: np.ndarray, bins: int) -> list[np.ndarray]:
    """Indices of the finite, positive ``x`` in ``bins`` equal-count bins, smallest first."""
    good = np.flatnonzero(np.isfinite(x) & (x > 0))
    return np.array_split(good[np.argsort(x[good], kind="stable")], bins)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="models (default: the shipped one)")
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=30_000_001)
    parser.add_argument("--constant", type=float, default=0.0437,
                        help="a constant shared error to compare (default: the first "
                        "calibration of the shipped weights)")  # fmt: skip
    parser.add_argument("--survey", help="survey file of the models (not PAUS)")
    parser.add_argument("--backgrounds", help="background manifest, as in their training")
    args = parser.parse_args(argv)
    paths = args.model or [None]
    models = [(p or "shipped model",
               (load_default_model() if p is None else load_model(p)).eval()) for p in paths]
    first = models[0][1]
    kwargs = survey_simulation(argparse.Namespace(survey=args.survey, model=paths[0],
                                                  backgrounds=args.backgrounds,
                                                  background_fraction=None), first)
    sim = replace(training_simulation(first), flux_prior="population")
    pairs = simulate_pairs(args.pairs, seed=args.seed, config=PairSimulation(simulation=sim),
                           background=kwargs.get("background"))  # fmt: skip
    i_mag = np.asarray(pairs.first.i_mag)
    heads = " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
    wheads = " | ".join(f"w{k + 1}" for k in range(WIDTH_BINS))
    print(f"{args.pairs} simulated pairs, seed {args.seed}: sigma68 of D from flux_like, "
          f"per i bin and per equal-count bin of the relative width (w1 narrowest)\n")
    print(f"| model | shared error | all | {heads} | {wheads} | mean abs(D - 1): i | w |")
    print("| --- | --- | --- |" + " --- |" * (len(BINS) + WIDTH_BINS + 2))
    radii = (profile_half_light_radius(pairs.first.profile),
             profile_half_light_radius(pairs.second.profile))
    sizes = _equal_count(np.sqrt(radii[0] * radii[1]), 3)
    by_size = []
    for label, model in models:
        with torch.inference_mode():
            m1 = model.predict(pairs.first).to(torch.float64)
            m2 = model.predict(pairs.second).to(torch.float64)
        w = np.sqrt(relative_width(m1) * relative_width(m2))
        members = _equal_count(w, WIDTH_BINS)
        by_size.append((label, pair_d(m1, m2, SharedError.of(model.config), radii), w))
        rows = (("none", 0.0), (f"one constant, {args.constant:g}", args.constant),
                (f"its constant, {model.config.shared_error:.4f}", model.config.shared_error),
                ("its curve", SharedError.of(model.config)))  # fmt: skip
        for name, shared in rows:
            d = pair_d(m1, m2, shared, radii)
            per_bin = [sigma68(d[(i_mag >= lo) & (i_mag < hi)]) for lo, hi in BINS]
            per_w = [sigma68(d[m]) for m in members]
            print(f"| {label} | {name} | {sigma68(d):.3f} | "
                  + " | ".join(f"{v:.3f}" for v in per_bin + per_w)
                  + f" | {np.mean(np.abs(np.asarray(per_bin) - 1.0)):.3f}"
                  + f" | {np.mean(np.abs(np.asarray(per_w) - 1.0)):.3f} |", flush=True)
    print("\nsigma68 of D with each model's curve, by the profile's half-light radius (rows, "
          "terciles) and the relative width (columns, terciles; pairs in brackets)\n")
    print("| model | profile size | narrow | middle | wide |\n| --- | --- | --- | --- | --- |")
    for label, d, w in by_size:
        widths = []
        for name, rows in zip(("small", "middle", "large"), sizes, strict=True):
            cells = []
            for cols in _equal_count(w, 3):
                both = np.intersect1d(rows, cols)
                widths.append(sigma68(d[both]))
                cells.append(f"{widths[-1]:.3f} ({both.size})")
            print(f"| {label} | {name} | " + " | ".join(cells) + " |", flush=True)
        print(f"| {label} | mean abs(D - 1) over the 9 cells | "
              f"{np.mean(np.abs(np.asarray(widths) - 1.0)):.3f} | | |", flush=True)


if __name__ == "__main__":
    main()
