"""Speed and memory of the whole ``lumos measure`` path on the demo CCD.

Simulates the demo field (4096 x 2048 pixels, NB685) with N galaxies, writes it as FITS, then
times ``measure_file`` end to end (read image and catalogue, cut stamps, render profiles, infer,
summarise, write the table) for the network and for forced aperture photometry, each in a fresh
process so that peak memory (max RSS) is measured per method.

Usage::

    .venv/bin/python bench/bench_measure.py [--n 5000] [--model PATH] [--threads 2] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from lumos.measure import measure_file
t0 = time.perf_counter()
table = measure_file({image!r}, {catalogue!r}, {out!r}, method={method!r},
                     model_path={model!r}, progress=False, batch_size={batch},
                     workers={workers})
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({{"seconds": dt, "rows": len(table), "max_rss_mb": rss}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="galaxies in the CCD")
    parser.add_argument("--model", default=None, help="model (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batch", type=int, default=256, help="galaxies per batch")
    parser.add_argument("--workers", type=int, default=None,
                        help="batches measured side by side (default: one per torch thread)")
    args = parser.parse_args()

    from lumos.field import simulate_field

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        field = simulate_field(n_galaxies=args.n, seed=99)
        field.write(tmp)
        print(f"simulated {args.n} galaxies on a 4096 x 2048 CCD in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        rows = []
        for method in ("lumos", "aperture"):
            code = CHILD.format(threads=args.threads, image=str(tmp / "image.fits"),
                                catalogue=str(tmp / "catalogue.fits"),
                                out=str(tmp / f"{method}.fits"), method=method,
                                model=args.model, batch=args.batch,
                                workers=args.workers)  # fmt: skip
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True)  # fmt: skip
            stats = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append((method, stats))
    print()
    print("| method | galaxies | seconds | galaxies/s | peak memory (MB) | torch threads "
          "| workers |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method, s in rows:
        print(f"| {method} | {s['rows']} | {s['seconds']:.1f} | {s['rows'] / s['seconds']:.0f} "
              f"| {s['max_rss_mb']:.0f} | {args.threads} "
              f"| {args.workers or args.threads} |")  # fmt: skip


if __name__ == "__main__":
    main()
