"""Benchmark: the full validation of a model (``lumos validate``) and its method x i-bin table.

Runs :func:`lumos.validation.experiments.run_validation` on a model (default: the shipped one)
and prints

* the calibration of the lumos PDFs (PIT KS distance, 68% and 95% coverage, checks);
* the method x i-bin table: bias (median) and sigma68 of (f - f_true)/f_true for lumos and
  every classical method, the best practical classical method per bin and the sigma68 ratios
  lumos / best classical and lumos / oracle weighted sum (the linear limit), for all
  galaxies and for isolated ones;
* the headline numbers of the other experiments (deblending, outliers, repeated
  observations, sensitivity, SNR ratio, colour widths) and the runtime of each experiment.

The report (``report.md``, plots, ``metrics.json``) goes to ``--out``.

Run: ``.venv/bin/python bench/bench_validation.py [--model PATH] [--out DIR] [--quick]
[--only accuracy ...]`` (the full run takes about half an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lumos.validation.experiments import EXPERIMENTS, run_validation


def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def print_table(acc: dict, table: dict, title: str) -> None:
    """Print one method x i-bin table (bias / sigma68 in %)."""
    bins = acc["mag_bins"]
    heads = [f"i {lo:g}-{hi:g}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]
    print(f"\n{title}")
    print(f"{'method (bias / sigma68 %)':34s} | " + " | ".join(f"{h:>15s}" for h in heads))
    for name, v in acc["methods"].items():
        cells = [f"{_fmt(b, '+.2f', 100)} / {_fmt(s, '.2f', 100)}"
                 for b, s in zip(v["bias"], v["sigma68"], strict=True)]  # fmt: skip
        print(f"{name:34s} | " + " | ".join(f"{c:>15s}" for c in cells))
    print(f"{'best classical':34s} | "
          + " | ".join(f"{str(b):>15s}" for b in table["best_classical"]))  # fmt: skip
    print(f"{'sigma68 lumos / best classical':34s} | "
          + " | ".join(f"{_fmt(v, '.2f'):>15s}" for v in table["lumos_over_best"]))  # fmt: skip
    print(f"{'sigma68 lumos / oracle':34s} | "
          + " | ".join(f"{_fmt(v, '.2f'):>15s}" for v in table["lumos_over_oracle"]))  # fmt: skip
    n = acc["methods"][next(iter(acc["methods"]))]["n"]
    print(f"{'galaxies':34s} | " + " | ".join(f"{k:>15d}" for k in n))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--out", help="report directory (default: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="the CI-sized run")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run these experiments")
    args = parser.parse_args(argv)

    from lumos.model_io import default_model_path, load_default_model, load_model

    if args.model:
        model, path = load_model(args.model), args.model
    else:
        model, path = load_default_model(), default_model_path()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lumos-validation-"))
    print(f"bench_validation: {os.cpu_count()} CPUs visible, load average "
          f"{os.getloadavg()[0]:.1f}; model {path}; output {out}")  # fmt: skip
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    m = run_validation(model, out, quick=args.quick, experiments=args.only or EXPERIMENTS,
                       model_path=path, progress=lambda s: print(f"  {s}", flush=True))  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"\nmode {m['mode']}: {wall:.0f} s wall, {cpu:.0f} s CPU; per experiment [s]: "
          + ", ".join(f"{k} {v:.0f}" for k, v in m["runtime_s"].items() if k != "total"))

    if "accuracy" in m:
        a = m["accuracy"]
        cal = a["calibration"]
        print(f"\n== calibration ({cal['n']} galaxies): PIT KS {cal['pit_ks']:.3f}, 68% coverage "
              f"{cal['coverage68']:.3f}, 95% coverage {cal['coverage95']:.3f}; checks "
              f"{'passed' if cal['checks']['all'] else 'FAILED'} {cal['checks']}")  # fmt: skip
        print_table(a["accuracy"], a["table"],
                    f"== accuracy, all {a['n_common']} galaxies (paper Fig. 7) ==")  # fmt: skip
        if "accuracy_isolated" in a:
            print_table(a["accuracy_isolated"], a["table_isolated"],
                        f"== accuracy, {a['n_isolated']} isolated galaxies ==")  # fmt: skip
    if "deblending" in m:
        d = m["deblending"]
        print("\n== deblending: median bias [%] at 0/2/4/6/8/10/15/20 px ==")
        for name, b in d["bias"].items():
            vals = [b[k] for k in (0, 2, 4, 6, 8, 10, 15, 20) if k < len(b)]
            beyond = d["distance_bias_below_5pct"][name]
            print(f"{name:10s} " + " ".join(_fmt(v, "+8.1f", 100) for v in vals)
                  + f"   |bias| < 5% beyond {beyond:g} px")  # fmt: skip
    if "artefacts" in m:
        print("\n== outliers [%]: >3 flux_err / >50% ==")
        for kind, res in m["artefacts"]["sets"].items():
            cells = [f"{k} {_fmt(v['outlier_3sigma'], '.1f', 100)}/"
                     f"{_fmt(v['outlier_50pct'], '.1f', 100)}" for k, v in res.items()]
            print(f"{kind:16s} " + "  ".join(cells))
    if "repeats" in m:
        print("\n== repeated observations: sigma68(D), |D|>5 [%] ==")
        for k, v in m["repeats"]["methods"].items():
            tail = _fmt(v["frac_abs_D_gt_5"], ".2f", 100)
            print(f"{k:10s} {_fmt(v['sigma68_D'], '.2f')}  {tail}")
    if "sensitivity" in m:
        print("\n== sensitivity: input error giving a 10% flux error (Table 1) ==")
        for param, res in m["sensitivity"]["tolerance"].items():
            print(f"{param:12s} " + "  ".join(
                f"{k} {'' if v['reached'] else '>'}{100 * v['value']:.1f}%"
                for k, v in res.items()))  # fmt: skip
    if "snr_colours" in m:
        s = m["snr_colours"]
        print("\n== SNR lumos / aperture per i bin: "
              + " ".join(_fmt(v, ".2f") for v in s["snr"].get("lumos_over_aperture", [])))
        print("== colour sigma68 [mag]: " + ", ".join(
            f"{k} {_fmt(v['sigma68'], '.3f')}" for k, v in s["colour"].items()))  # fmt: skip
    print(f"\nreport: {out / 'report.md'}")


if __name__ == "__main__":
    main()
