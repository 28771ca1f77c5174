"""Benchmark: is a model's likelihood centred on the data at and near zero flux?

Simulates held-out stamps drawn like each model's training (its recorded simulation:
survey, catalogue errors, bulge + disk galaxies, neighbours, sky) with the central
galaxy's true flux set to zero (blank sky at a catalogue position) or drawn uniform in
0 to ``3 S`` electrons per second (``--softening S``, about a faint galaxy's flux error),
and prints, for each model, the pull ``(flux_like - f_true) / flux_like_err`` of its
per-exposure likelihood (:func:`lumos.bayes.split_shared`, as in ``lumos measure``): its
median, sigma68 and the fraction inside +-1. A likelihood centred on the pixels has a
median pull near 0, sigma68 near 1 and 68% inside. The seed default, 40000001, is used by
no training, calibration or validation.

Run: ``.venv/bin/python bench/bench_zero_flux.py [--model PATH ...] [--n 4000]
[--softening 1.5] [--survey FILE --backgrounds MANIFEST] [--seed 40000001]``
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from _common import likelihood

from lumos.commands.surveys import survey_simulation
from lumos.model_io import load_default_model, load_model
from lumos.simulate import Simulator
from lumos.stats import sigma68
from lumos.training import training_simulation


def pulls(model, n: int, rate: tuple[float, float], softening: float, seed: int,
          simulator_kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pulls of ``flux_like`` and the true rates of ``n`` stamps with rates in ``rate``."""
    sim = replace(training_simulation(model), flux_prior="asinh", flux_softening=softening,
                  flux_range=rate)  # fmt: skip
    batch = Simulator(sim, seed=seed, **simulator_kwargs).sample(n)
    mean, err, _ = likelihood(model, batch)
    truth = batch.truth.double().numpy()
    pull = (mean - truth) / err
    return pull, truth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="models (default: the shipped one)")
    parser.add_argument("--n", type=int, default=4000, help="stamps per flux range")
    parser.add_argument("--softening", type=float, default=1.5,
                        help="S, e-/s: the faint range is 0-3 S (PAUS 1.5, DECam 4)")
    parser.add_argument("--survey", help="survey file of the models (not PAUS)")
    parser.add_argument("--backgrounds", help="background manifest, as in their training")
    parser.add_argument("--seed", type=int, default=40_000_001)
    args = parser.parse_args(argv)
    paths = args.model or [None]
    s = args.softening
    ranges = (("f = 0", (-1e-9 * s, 1e-9 * s)), (f"f in 0-{3 * s:g} e-/s", (0.0, 3.0 * s)))
    print(f"{args.n} simulated stamps per range, seed {args.seed}: pull of flux_like\n")
    print("| model | true flux | median pull | sigma68 pull | inside +-1 |")
    print("| --- | --- | --- | --- | --- |")
    for path in paths:
        model = load_default_model() if path is None else load_model(path)
        label = "shipped" if path is None else str(path)
        kwargs = survey_simulation(argparse.Namespace(model=label, survey=args.survey,
                                                      backgrounds=args.backgrounds,
                                                      background_fraction=None), model)
        for k, (name, rate) in enumerate(ranges):
            pull, _ = pulls(model, args.n, rate, s, args.seed + k, kwargs)
            good = np.isfinite(pull)
            inside = float(np.mean(np.abs(pull[good]) <= 1.0))
            print(f"| {label} | {name} | {np.median(pull[good]):+.3f} | "
                  f"{sigma68(pull[good]):.3f} | {inside:.3f} |")


if __name__ == "__main__":
    main()
