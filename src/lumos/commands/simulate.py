"""``lumos simulate``: TEAHUPOO stamps with truth into an HDF5 file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError
from ..tableio import announce_overwrite, check_output_path


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_to_file

    out = Path(args.out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise LumosError(f"--out must be an HDF5 file ending in .h5 or .hdf5, got {out.name}")
    check_output_path(out, table=False)
    if args.n <= 0:
        raise LumosError(f"--n must be positive, got {args.n}")
    announce_overwrite("simulate", out)
    simulate_to_file(args.n, out, seed=args.seed, progress=True)
    print(f"wrote {args.n} simulated stamps (seed {args.seed}) to {out}")
    return 0
