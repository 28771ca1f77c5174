"""Benchmark: how far does a catalogue position error move the flux?

Forced photometry centres the model profile (lumos's profile channel, the aperture, the
profile fit) where the catalogue puts the galaxy; an astrometric tie or an exposure's WCS
off by a fraction of a pixel moves it. This bench simulates held-out stamps like each
model's training (its recorded simulation) with catalogue positions off by a Gaussian of
``sigma`` pixels in x and in y (``CatalogueErrors.position_sigma``; everything else as
trained), and prints, per true-flux range, the median ``flux_like / f_true - 1`` of lumos's
likelihood and of aperture photometry on the same stamps, and the 68% coverage of the
likelihood interval (its own and shared errors). The seed default, 62000001, is used by no
training, calibration or validation.

Run: ``.venv/bin/python bench/bench_position.py [--model PATH ...] [--n 3000]
[--sigmas 0 0.15 0.3 0.5] [--survey FILE --backgrounds MANIFEST] [--seed 62000001]``
(``--survey`` and ``--backgrounds`` for models trained with them, e.g. ``lumos-decam``; the
flux ranges are then in that survey's units).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from lumos.commands.surveys import survey_simulation
from lumos.model_io import load_default_model, load_model
from lumos.simulate import Simulator
from lumos.streams import training_simulation
from lumos.validation.measuring import measure_all
from lumos.validation.scenes import observation_from_simulation

#: True-flux ranges reported, electrons (about i 21-22, 19.5-21 and brighter in NB685).
FLUX_RANGES = ((1500.0, 5000.0), (5000.0, 15000.0), (15000.0, np.inf))


def measure(model, sigma: float, n: int, seed: int,
            simulator_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """lumos's likelihood and aperture photometry on ``n`` stamps with position errors."""
    base = training_simulation(model)
    errors = replace(base.catalogue_errors, position_sigma=float(sigma))
    sim = replace(base, catalogue_errors=errors, flux_prior="loguniform",
                  flux_range=(10.0, 1000.0))  # fmt: skip
    batch, extras = Simulator(sim, seed=seed, **(simulator_kwargs or {})).sample_with_context(
        n, context_size=100)
    obs = observation_from_simulation(batch, extras)
    res = measure_all(model, obs, ("aperture",))
    lum, ap = res["lumos"], res["aperture"]
    err = np.hypot(lum["flux_like_err"], lum["flux_shared_err"])
    return {"truth": obs.truth, "lumos": lum["flux_like"], "lumos_err": err,
            "aperture": ap["flux"]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="models (default: the shipped one)")
    parser.add_argument("--n", type=int, default=3000, help="stamps per position error")
    parser.add_argument("--sigmas", type=float, nargs="*", default=[0.0, 0.15, 0.3, 0.5],
                        help="position errors, pixels per axis")
    parser.add_argument("--survey", help="survey file of the models (not PAUS)")
    parser.add_argument("--backgrounds", help="background manifest, as in their training")
    parser.add_argument("--seed", type=int, default=62_000_001)
    args = parser.parse_args(argv)
    heads = " | ".join(f"{lo:g}-{hi:g} e-" for lo, hi in FLUX_RANGES)
    print(f"{args.n} simulated stamps per position error, seed {args.seed}: median "
          f"flux / f_true - 1 [%] (lumos flux_like / aperture), lumos 68% coverage\n")
    print(f"| model | sigma [px] | {heads} | lumos coverage |")
    print("| --- | --- |" + " --- |" * len(FLUX_RANGES) + " --- |")
    for path in args.model or [None]:
        model = (load_default_model() if path is None else load_model(path)).eval()
        label = "shipped" if path is None else str(path)
        kwargs = survey_simulation(argparse.Namespace(model=label, survey=args.survey,
                                                      backgrounds=args.backgrounds,
                                                      background_fraction=None), model)
        for sigma in args.sigmas:
            m = measure(model, sigma, args.n, args.seed, kwargs)
            t = m["truth"]
            cells = []
            for lo, hi in FLUX_RANGES:
                s = (t >= lo) & (t < hi) & np.isfinite(m["lumos"]) & np.isfinite(m["aperture"])
                cells.append(f"{100 * np.median(m['lumos'][s] / t[s] - 1):+.2f} / "
                             f"{100 * np.median(m['aperture'][s] / t[s] - 1):+.2f}")
            ok = np.isfinite(m["lumos"]) & (t > 0)
            cover = float(np.mean(np.abs(m["lumos"][ok] - t[ok]) <= m["lumos_err"][ok]))
            print(f"| {label} | {sigma:g} | " + " | ".join(cells) + f" | {cover:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
