"""Accuracy and calibration of models when the catalogue's profile parameters are wrong.

The model-profile channel is drawn from catalogue parameters. This script draws held-out
TEAHUPOO stamps (seeds 30000001+, used nowhere else) with an exact catalogue, with
``CatalogueErrors.realistic()`` (10% r50, 15% n, 0.05 q, 5 deg pa, 3% PSF FWHM, 0.03 mag i),
with twice those errors, and with realistic errors where half the galaxies are a bulge + disk
behind their single-Sersic catalogue entry, and prints for each model the bias and sigma68 of
(f - f_true)/f_true (PDF mean) and the 68% coverage of the PDFs' q16-q84 intervals, by i bin.

Usage::

    .venv/bin/python bench/bench_catalogue_errors.py [--models A,B] [--n 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from lumos.stats import sigma68

BINS = ((17.0, 19.0), (19.0, 20.5), (20.5, 22.0), (22.0, 23.0))


def main(argv: list[str] | None = None) -> None:
    from lumos.model_io import default_model_path, load_model
    from lumos.simulate import CatalogueErrors, SimulationConfig, Simulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated model paths (default: the shipped model)")
    parser.add_argument("--n", type=int, default=10_000, help="stamps per condition")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = args.models.split(",") if args.models else [str(default_model_path())]
    models = {p: load_model(p).eval() for p in paths}
    real = CatalogueErrors.realistic()
    double = CatalogueErrors(**{k: 2 * v for k, v in dataclasses.asdict(real).items()})
    conditions = (("exact", CatalogueErrors(), 0.0), ("realistic", real, 0.0),
                  ("2x realistic", double, 0.0), ("realistic, 50% bulge + disk", real, 0.5))
    head = " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
    print("cells: bias % / sigma68 % / 68% coverage\n")
    print(f"| catalogue | model | all | {head} |")
    print("| --- | --- | --- |" + " --- |" * len(BINS))
    for k, (label, errors, two) in enumerate(conditions):
        t0 = time.perf_counter()
        sim = SimulationConfig(catalogue_errors=errors, two_component_fraction=two)
        batch = Simulator(sim, seed=30_000_001 + k).sample(args.n)
        truth = batch.truth.double().numpy()
        i_mag = batch.i_mag.double().numpy()
        for path, model in models.items():
            with torch.inference_mode():
                mix = model.predict(batch)
            s = mix.summaries()
            f = np.asarray(s["flux"], dtype=float)
            inside = (truth >= np.asarray(s["flux_q16"])) & (truth <= np.asarray(s["flux_q84"]))
            rel = (f - truth) / truth
            cells = [f"{100 * np.median(rel):+.2f} / {100 * sigma68(rel):.2f} / "
                     f"{inside.mean():.3f}"]  # fmt: skip
            for lo, hi in BINS:
                sel = (i_mag >= lo) & (i_mag < hi)
                cells.append(f"{100 * np.median(rel[sel]):+.2f} / {100 * sigma68(rel[sel]):.2f}"
                             f" / {inside[sel].mean():.3f}")  # fmt: skip
            print(f"| {label} | {path} | " + " | ".join(cells) + " |")
        print(f"<!-- {label}: {args.n} stamps in {time.perf_counter() - t0:.0f} s -->")


if __name__ == "__main__":
    main()
