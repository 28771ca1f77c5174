"""``lumos simulate``: TEAHUPOO stamps with truth into an HDF5 file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_to_file

    out = Path(args.out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise LumosError(f"--out must be an HDF5 file ending in .h5 or .hdf5, got {out.name}")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise LumosError(f"output directory does not exist: {out.parent}")
    if args.n <= 0:
        raise LumosError(f"--n must be positive, got {args.n}")
    simulate_to_file(args.n, out, seed=args.seed, progress=True)
    print(f"wrote {args.n} simulated stamps (seed {args.seed}) to {out}")
    return 0
