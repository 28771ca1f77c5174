"""``lumos validate``: the paper's simulation tests for a model, into a report directory.

Writes ``metrics.json``, PNG plots and ``report.md`` to ``--out`` and exits with status 1
when the model fails the calibration checks (see
:mod:`lumos.validation.experiments` for the experiments, their sizes and runtimes:
``--quick`` takes a minute or two on 2 CPU cores, the full run 20-35 minutes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LumosError
from ..tableio import announce_overwrite, check_output_path

#: Exit status when the report is written but the model fails the calibration checks.
EXIT_CHECKS_FAILED = 1


def run(args: argparse.Namespace) -> int:
    from ..model_io import default_model_path, load_default_model, load_model
    from ..validation.experiments import run_validation

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LumosError(f"--out must be a directory, got the file {out}")
    if out.is_dir():
        check_output_path(out / "metrics.json", table=False)
    announce_overwrite("validate", out)
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
    passed = True
    if cal:
        passed = bool(cal["checks"]["all"])
        status = "passed" if passed else "FAILED"
        print(
            f"lumos validate: calibration checks {status} (PIT KS {cal['pit_ks']:.3f}, "
            f"68% coverage {cal['coverage68']:.3f}, 95% coverage {cal['coverage95']:.3f})"
        )
    print(f"lumos validate: report written to {out / 'report.md'}")
    if not passed:
        failed = [name for name, ok in cal["checks"].items() if name != "all" and not ok]
        print(f"lumos validate: the model fails the calibration checks ({', '.join(failed)})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CHECKS_FAILED
    return 0
