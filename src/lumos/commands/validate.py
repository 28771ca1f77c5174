"""``lumos validate``: the paper's simulation tests for a model, into a report directory.

Writes ``metrics.json``, PNG plots and ``report.md`` to ``--out`` (see
:mod:`lumos.validation.experiments` for the experiments, their sizes and runtimes:
``--quick`` takes a minute or two on 2 CPU cores, the full run 20-35 minutes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..model_io import default_model_path, load_default_model, load_model
    from ..validation.experiments import run_validation

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LumosError(f"--out must be a directory, got the file {out}")
    if args.model:
        model = load_model(args.model)
        path = args.model
    else:
        model = load_default_model()
        path = default_model_path()
    def progress(msg: str) -> None:
        print(f"lumos validate: {msg}", flush=True)

    metrics = run_validation(model, out, quick=bool(args.quick), model_path=path,
                             progress=progress)
    cal = metrics.get("accuracy", {}).get("calibration")
    if cal:
        status = "passed" if cal["checks"]["all"] else "FAILED"
        print(
            f"lumos validate: calibration checks {status} (PIT KS {cal['pit_ks']:.3f}, "
            f"68% coverage {cal['coverage68']:.3f}, 95% coverage {cal['coverage95']:.3f})"
        )
    print(f"lumos validate: report written to {out / 'report.md'}")
    return 0
