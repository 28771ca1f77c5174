"""The deblending experiment with population colours and with a flat spectrum.

Runs :func:`lumos.validation.deblend.run_deblending` (validation seed 10000002, as ``lumos
validate``) twice: NB685 fluxes from the population's colours, and a flat spectrum (NB685
magnitude = i magnitude). Prints the median bias of lumos and aperture photometry for the
target alone ("isolated") and the distance from which |bias| < 5%. The flat-spectrum isolated
row measures how far the catalogue-magnitude prior pulls a galaxy whose colour is off the
population's.

Usage::

    .venv/bin/python bench/bench_deblend_colours.py [--model PATH] [--pairs 20] [--realisations 40]
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import torch

    from lumos.model_io import load_default_model, load_model
    from lumos.validation.deblend import run_deblending

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the shipped one)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--realisations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model) if args.model else load_default_model()
    print("| spectrum | lumos isolated bias | aperture isolated bias | lumos within 5% from "
          "| aperture within 5% from |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for flat in (False, True):
        m = run_deblending(model, args.pairs, args.realisations, 10_000_002, 30,
                           methods=("aperture",), flat_spectrum=flat).metrics  # fmt: skip
        iso, far = m["isolated_bias"], m["distance_bias_below_5pct"]
        print(f"| {m['spectrum']} | {100 * iso['lumos']:+.1f}% | {100 * iso['aperture']:+.1f}% "
              f"| {far['lumos']:g} px | {far['aperture']:g} px |")


if __name__ == "__main__":
    main()
