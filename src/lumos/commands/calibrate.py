"""``lumos calibrate``: sigma scale (and shared error) of a trained model on fresh simulations."""

from __future__ import annotations

import argparse
import time

from ..errors import LumosError
from .surveys import survey_simulation


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate_model
    from ..model_io import load_model, save_model
    from ..simconfig import CatalogueErrors

    if args.n < 100 or args.pairs < 100:
        raise LumosError("--n and --pairs must be at least 100")
    model = load_model(args.model)
    simulator_kwargs = survey_simulation(args, model)
    previous = None
    if getattr(args, "recalibrate", False):
        previous = dict(model.metadata or {}).get("calibration")
        model = model.with_config(model.config.uncalibrated())
    if model.config.sigma_scale != 1.0:
        raise LumosError(f"{args.model} is already calibrated (sigma_scale "
                         f"{model.config.sigma_scale:g}); calibrate the trained model or "
                         f"give --recalibrate")  # fmt: skip
    t0 = time.perf_counter()
    print(f"lumos calibrate: {args.n} stamps and {args.pairs} pairs, seed {args.seed}")
    catalogue = getattr(args, "catalogue_errors", "as-trained")
    errors = None if catalogue == "as-trained" else CatalogueErrors.named(catalogue)
    out, res = calibrate_model(model, n=args.n, n_pairs=args.pairs, seed=args.seed,
                               simulator_kwargs=simulator_kwargs, shared=args.shared_error,
                               catalogue_errors=errors)  # fmt: skip
    print(f"lumos calibrate: sigma scale {res.sigma_scale:.4f} (68% coverage "
          f"{res.coverage_before:.3f} -> {res.coverage_after:.3f})")
    if model.config.likelihood:
        if res.shared_error_widths:
            nodes = ", ".join(f"{w:.3f}: {c:.4f}" for w, c in
                              zip(res.shared_error_widths, res.shared_error_values, strict=True))
            print(f"lumos calibrate: shared error by relative width {{{nodes}}} (sigma68 of D "
                  f"on pairs {res.d_sigma68_before:.3f} -> {res.d_sigma68_after:.3f}; per width "
                  f"bin {', '.join(f'{d:.3f}' for d in res.d_sigma68_bins)})")
            if res.shared_error_size_factors:
                factors = ", ".join(f"{g:.3f}" for g in res.shared_error_size_factors)
                edges = ", ".join(f"{e:.2f}" for e in res.shared_error_size_edges)
                by_size = ", ".join(f"{d:.3f}" for d in res.d_sigma68_sizes)
                print(f"lumos calibrate: times {factors} by profile half-light radius (edges "
                      f"{edges} px; sigma68 of D per size bin {by_size}; the width bins above "
                      f"are the curve's alone)")
        else:
            print(f"lumos calibrate: shared error {res.shared_error:.4f} (sigma68 of D on "
                  f"pairs {res.d_sigma68_before:.3f} -> {res.d_sigma68_after:.3f})")
    training = dict(out.metadata)
    training["calibration"] = {
        "command": f"lumos calibrate {args.model} --out {args.out} --n {args.n} "
                   f"--pairs {args.pairs} --seed {args.seed} "
                   f"--shared-error {args.shared_error}"
                   + (" --recalibrate" if getattr(args, "recalibrate", False) else "")
                   + (f" --catalogue-errors {catalogue}" if catalogue != "as-trained" else "")
                   + "".join(
                       f" --{k.replace('_', '-')} {getattr(args, k)}"
                       for k in ("survey", "backgrounds", "background_fraction")
                       if getattr(args, k, None) is not None),
        "seed": args.seed, "n": args.n, "pairs": args.pairs, "catalogue_errors": catalogue,
        "sigma_scale": res.sigma_scale, "shared_error": res.shared_error,
        "shared_error_widths": list(res.shared_error_widths),
        "shared_error_values": list(res.shared_error_values),
        "d_sigma68_bins": list(res.d_sigma68_bins),
        "shared_error_size_edges": list(res.shared_error_size_edges),
        "shared_error_size_factors": list(res.shared_error_size_factors),
        "d_sigma68_sizes": list(res.d_sigma68_sizes),
        "coverage68_before": res.coverage_before, "coverage68_after": res.coverage_after,
        "d_sigma68_before": res.d_sigma68_before, "d_sigma68_after": res.d_sigma68_after,
        "seconds": time.perf_counter() - t0, "source_model": str(args.model),
    }  # fmt: skip
    if previous is not None:
        training["calibration"]["previous"] = previous
    save_model(out, args.out, training=training)
    print(f"lumos calibrate: wrote {args.out}")
    return 0
