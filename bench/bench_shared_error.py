"""Benchmark: does the shared error split a model's likelihood right, per i bin?

Simulates fresh pairs of exposures of one scene, drawn like the model's training
(:func:`lumos.pairs.simulate_pairs` with the model's recorded simulation: catalogue errors,
bulge + disk galaxies and neighbours shared, PSF, offset, sky and noise new), and prints
sigma68 of D (Eq. 19) of the per-exposure likelihoods (``flux_like`` / ``flux_like_err``,
:func:`lumos.bayes.split_shared`) overall and per i bin for: no shared error, one constant
(``--constant``, and the model's recorded ``shared_error``), and the model's shared-error curve.
D of unit width in every bin is what the split should give. The seed default, 30000001, is
used by no training, calibration or validation.

Run: ``.venv/bin/python bench/bench_shared_error.py [--model PATH] [--pairs 4000]
[--seed 30000001] [--constant 0.0437]``
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from lumos.bayes import SharedError
from lumos.calibration import pair_d
from lumos.model_io import load_default_model, load_model
from lumos.pairs import PairSimulation, simulate_pairs
from lumos.stats import sigma68
from lumos.training import training_simulation

BINS = ((17.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model (default: the shipped one)")
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=30_000_001)
    parser.add_argument("--constant", type=float, default=0.0437,
                        help="a constant shared error to compare (default: the first "
                        "calibration of the shipped weights)")  # fmt: skip
    args = parser.parse_args(argv)
    model = load_default_model() if args.model is None else load_model(args.model)
    sim = replace(training_simulation(model), flux_prior="population")
    pairs = simulate_pairs(args.pairs, seed=args.seed, config=PairSimulation(simulation=sim))
    with torch.inference_mode():
        m1 = model.eval().predict(pairs.first).to(torch.float64)
        m2 = model.predict(pairs.second).to(torch.float64)
    i_mag = np.asarray(pairs.first.i_mag)
    heads = " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
    print(f"{args.pairs} simulated pairs, seed {args.seed}: sigma68 of D from flux_like\n")
    print(f"| shared error | all | {heads} |")
    print("| --- | --- |" + " --- |" * len(BINS))
    rows = (("none", 0.0), (f"one constant, {args.constant:g}", args.constant),
            (f"the model's constant, {model.config.shared_error:.4f}", model.config.shared_error),
            ("the model's curve", SharedError.of(model.config)))  # fmt: skip
    for name, shared in rows:
        d = pair_d(m1, m2, shared)
        per_bin = [sigma68(d[(i_mag >= lo) & (i_mag < hi)]) for lo, hi in BINS]
        print(f"| {name} | {sigma68(d):.3f} | " + " | ".join(f"{v:.3f}" for v in per_bin) + " |")


if __name__ == "__main__":
    main()
