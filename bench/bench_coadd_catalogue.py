"""Benchmark: are a likelihood model's co-adds calibrated, and how does the catalogue matter?

Simulates pairs of exposures of one scene (:func:`lumos.pairs.simulate_pairs`) drawn like the
model's training (its catalogue errors and bulge + disk galaxies behind fits of their light),
with the same galaxies and no catalogue errors (entries that are exact fits of the light, as
from much deeper imaging) and with an exact single-Sersic catalogue; writes each exposure's
likelihood columns as ``lumos measure`` does (:func:`lumos.bayes.fill_likelihood`), co-adds the two
exposures (:func:`lumos.bayes.coadd_likelihoods`, no prior) and prints, per i bin, the
fraction of truths inside ``flux_like +- hypot(flux_like_err, flux_shared_err)`` for one
exposure and for the co-add, and inside the co-add's q16-q84. Calibrated intervals hold
0.683. The seed default, 60000001, is used by no training, calibration or validation.

Run: ``.venv/bin/python bench/bench_coadd_catalogue.py [--model PATH] [--pairs 3000]
[--seed 60000001]``
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch
from astropy.table import Table

from lumos.bayes import SharedError, coadd_likelihoods, fill_likelihood
from lumos.model_io import load_default_model, load_model
from lumos.pairs import PairSimulation, simulate_pairs
from lumos.simconfig import CatalogueErrors
from lumos.training import training_simulation

BINS = ((17.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0))


def exposure_table(model, batch, i_mag: np.ndarray) -> Table:
    """One exposure's likelihood columns, electrons, as ``lumos measure`` writes them."""
    n, k = len(i_mag), model.config.n_components
    with torch.inference_mode():
        mix = model.predict(batch)
    t = Table({"id": np.arange(n), "band": np.full(n, "NB685"), "i_mag": i_mag,
               "flags": np.zeros(n, int)})  # fmt: skip
    for name in ("flux_like", "flux_like_err", "flux_shared_err"):
        t[name] = np.zeros(n)
    for name in ("like_weight", "like_mean", "like_sigma"):
        t[name] = np.zeros((n, k))
    curve = SharedError.of(model.config)
    fill_likelihood(t, slice(None), mix, curve, 1.0, curve.sizes_of(batch.profile))
    return t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model (default: the shipped one)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=60_000_001)
    args = parser.parse_args(argv)
    model = (load_default_model() if args.model is None else load_model(args.model)).eval()
    sim = replace(training_simulation(model), flux_prior="population")
    variants = (("like the training", sim),
                ("fits of the light, no catalogue errors",
                 replace(sim, catalogue_errors=CatalogueErrors())),
                ("exact single-Sersic catalogue",
                 replace(sim, catalogue_errors=CatalogueErrors(), two_component_fraction=0.0)))
    heads = " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
    print(f"{args.pairs} simulated pairs per catalogue, seed {args.seed}: 68% coverage\n")
    print(f"| catalogue | interval | {heads} | all |")
    print("| --- | --- |" + " --- |" * (len(BINS) + 1))
    for label, s in variants:
        pairs = simulate_pairs(args.pairs, seed=args.seed, config=PairSimulation(simulation=s))
        truth = pairs.truth.double().numpy()
        i_mag = np.asarray(pairs.first.i_mag, float)
        tables = [exposure_table(model, b, i_mag) for b in (pairs.first, pairs.second)]
        co = coadd_likelihoods(tables, prior="none")
        co.sort("id")
        one = tables[0]
        e1 = np.hypot(one["flux_like_err"], one["flux_shared_err"])
        ec = np.hypot(co["flux_like_err"], co["flux_shared_err"])
        rows = (("one exposure, likelihood +- total error",
                 np.abs(np.asarray(one["flux_like"]) - truth) <= e1),
                ("co-add of 2, likelihood +- total error",
                 np.abs(np.asarray(co["flux_like"]) - truth) <= ec),
                ("co-add of 2, q16-q84 (no prior)",
                 (np.asarray(co["flux_q16"]) <= truth) & (truth <= np.asarray(co["flux_q84"]))))
        for name, inside in rows:
            per = [inside[(i_mag >= lo) & (i_mag < hi)].mean() for lo, hi in BINS]
            print(f"| {label} | {name} | " + " | ".join(f"{v:.3f}" for v in per)
                  + f" | {inside.mean():.3f} |")


if __name__ == "__main__":
    main()
