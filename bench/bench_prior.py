"""Benchmark: are posteriors calibrated with each prior on lumos's own simulations?

Simulates held-out stamps in the 40 PAUS bands (about 300 galaxies per band, the size of a
field's catalogue per band), catalogue entries with realistic errors, either bulge + disk
galaxies behind single-Sersic fits of their light (``--kind fitted``, as validation
experiment 10) or the training mix (``--kind mix``: 60% of them); measures them with a
likelihood model and applies each prior to the likelihoods (:func:`lumos.bayes.apply_prior`):
``none`` (flat on positive fluxes), ``population`` (the simulation's own colours: the true
prior here), ``empirical`` (deconvolved from the measured likelihoods, what ``auto`` picks
for a field: one Gaussian per band and i bin), the empirical prior with up to three
components chosen by BIC (``lumos prior --components 3``) and its smooth form (one Gaussian
per band following i, ``lumos prior --form smooth``). Prints, per catalogue i bin, the
68% coverage of the posterior and the median relative half-width ``(q84 - q16) / 2
f_true``, and the sigma68 of the likelihood's pull ``(flux_like - f_true) /
sqrt(flux_like_err^2 + flux_shared_err^2)``, on which the
deconvolution rests. The seed default, 61000001, is used by no training, calibration or
validation.

Run: ``.venv/bin/python bench/bench_prior.py [--model PATH] [--n 12000] [--kind fitted|mix]
[--seed 61000001] [--i-shift MAG]``. With ``--i-shift`` every catalogue magnitude is moved
before the priors are applied, as if the galaxies' colours differed from the simulation's by
that many magnitudes: the population prior is then wrong, the empirical prior learns it.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import FIELD_I_EDGES, i_bin_header
from astropy.table import Table, vstack

from lumos.bands import band_names
from lumos.bayes import LIKELIHOOD_COLUMNS, apply_prior
from lumos.model_io import load_default_model, load_model
from lumos.prior import empirical_prior
from lumos.simconfig import CatalogueErrors, SimulationConfig
from lumos.simulate import Simulator
from lumos.stats import sigma68
from lumos.validation.measuring import measure_lumos
from lumos.validation.scenes import exposure_times, observation_from_simulation

#: Catalogue i-magnitude bins of the report (those of the GalSim field checks).
I_EDGES = FIELD_I_EDGES
CHUNK = 2000


def likelihood_table(model, n: int, kind: str, seed: int) -> Table:
    """Measured likelihoods (electrons per second) of ``n`` simulated stamps, with truth."""
    frac = 1.0 if kind == "fitted" else 0.6
    cfg = SimulationConfig(catalogue_errors=CatalogueErrors.realistic(),
                           two_component_fraction=frac, two_component_model="fit")  # fmt: skip
    sim = Simulator(cfg, seed=seed)
    names = np.array(band_names())
    parts = []
    for start in range(0, n, CHUNK):
        batch, extras = sim.sample_with_context(min(CHUNK, n - start), context_size=100)
        obs = observation_from_simulation(batch, extras)
        res = measure_lumos(model, obs)
        per_s = exposure_times(np.asarray(obs.band, int))
        t = Table({"flags": res["flags"], "band": names[np.asarray(obs.band, int)],
                   "i_mag": obs.i_mag, "flux_true": obs.truth / per_s})  # fmt: skip
        for name in LIKELIHOOD_COLUMNS:
            v = np.asarray(res[name], float)
            t[name] = v / (per_s[:, None] if v.ndim == 2 else per_s)
        parts.append(t)
    return vstack(parts)


def coverage_by_bin(table: Table) -> list[tuple[float, float, int]]:
    """(68% coverage, median relative half-width, galaxies) of the posterior per i bin."""
    im = np.asarray(table["i_mag"], float)
    f = np.asarray(table["flux_true"], float)
    lo, hi = np.asarray(table["flux_q16"], float), np.asarray(table["flux_q84"], float)
    inside = (f >= lo) & (f <= hi)
    width = 0.5 * (hi - lo) / f
    out = []
    for a, b in zip(I_EDGES[:-1], I_EDGES[1:], strict=True):
        s = (im >= a) & (im < b) & np.isfinite(lo)
        out.append((float(inside[s].mean()), float(np.median(width[s])), int(s.sum())))
    return out


def pull_width_by_bin(table: Table) -> list[float]:
    """sigma68 of the likelihood's pull (own and shared error) per i bin."""
    im = np.asarray(table["i_mag"], float)
    err = np.hypot(np.asarray(table["flux_like_err"], float),
                   np.asarray(table["flux_shared_err"], float))
    pull = (np.asarray(table["flux_like"], float) - np.asarray(table["flux_true"], float)) / err
    out = []
    for a, b in zip(I_EDGES[:-1], I_EDGES[1:], strict=True):
        s = (im >= a) & (im < b) & np.isfinite(pull)
        out.append(sigma68(pull[s]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a likelihood model (default: the shipped one)")
    parser.add_argument("--n", type=int, default=12_000, help="simulated galaxies")
    parser.add_argument("--kind", choices=("fitted", "mix"), default="fitted")
    parser.add_argument("--seed", type=int, default=61_000_001)
    parser.add_argument("--i-shift", type=float, default=0.0,
                        help="add this to every catalogue i magnitude before the priors "
                        "(colours that differ from the simulation's by that many magnitudes; "
                        "the rows stay binned by the unshifted magnitude)")
    args = parser.parse_args(argv)
    model = (load_default_model() if args.model is None else load_model(args.model)).eval()
    base = likelihood_table(model, args.n, args.kind, args.seed)
    print(f"{args.n} simulated galaxies ({args.kind}), seed {args.seed}, "
          f"{args.model or 'shipped model'}, catalogue i shifted by {args.i_shift:+g} mag: "
          "68% coverage / median half-width\n")
    print(i_bin_header(("prior",)))
    priors = [("none", "none"), ("population", "population"),
              ("empirical (one Gaussian)", "empirical")]
    if not args.i_shift:  # a learnt prior follows a shift: the one-Gaussian row shows it
        usable = base[base["flags"] == 0]
        err = np.hypot(usable["flux_like_err"], np.nan_to_num(usable["flux_shared_err"]))
        priors.append(("empirical, up to 3 components (BIC)",
                       empirical_prior(usable["flux_like"], err, usable["i_mag"],
                                       usable["band"], k=3)))  # fmt: skip
        priors.append(("empirical, smooth in i (--form smooth)",
                       empirical_prior(usable["flux_like"], err, usable["i_mag"],
                                       usable["band"], form="smooth")))  # fmt: skip
    shifted = base.copy()
    shifted["i_mag"] = shifted["i_mag"] + args.i_shift
    for name, prior in priors:
        table = apply_prior(shifted.copy(), prior, exposure_time=1.0)
        table["i_mag"] = base["i_mag"]
        cells = [f"{c:.3f} / {100 * w:.1f}%" for c, w, _ in coverage_by_bin(table)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    cells = [f"{w:.3f}" for w in pull_width_by_bin(base)]
    print("| likelihood pull sigma68 | " + " | ".join(cells) + " |")
    counts = ", ".join(str(n) for *_, n in coverage_by_bin(table))
    print(f"\ngalaxies per bin: {counts}")


if __name__ == "__main__":
    main()
