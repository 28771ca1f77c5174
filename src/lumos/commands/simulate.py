"""``lumos simulate``: TEAHUPOO stamps with truth into an HDF5 file.

``--survey FILE`` simulates that survey's bands, camera, PSF range and sky instead of
PAUS's; ``--backgrounds MANIFEST`` pastes the galaxies onto cutouts of real images
(``--background-fraction`` of the stamps, the rest on the synthetic sky).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LumosError
from ..tableio import announce_overwrite, check_output_path


def training_background(args: argparse.Namespace, survey) -> dict:
    """``Simulator`` keywords for the background (and PSFs) of ``simulate``/``train``.

    PAUS without ``--backgrounds``: ``{}`` (the simulator's default synthetic sky); another
    survey: its :class:`lumos.survey.SurveySky`; with ``--backgrounds MANIFEST``: cutouts of
    the listed real images, mixed with the synthetic sky by ``--background-fraction``
    (:func:`lumos.background_manifest.training_background`). A survey of PSF family
    ``psfex`` adds its :class:`lumos.psf_pool.PSFExPool` as ``psf_factory``.
    """
    from ..background_manifest import training_background as background_source

    backgrounds = getattr(args, "backgrounds", None)
    fraction = getattr(args, "background_fraction", None)
    if fraction is not None and backgrounds is None:
        raise LumosError("--background-fraction needs --backgrounds MANIFEST")
    source = background_source(survey, backgrounds, 1.0 if fraction is None else fraction)
    kwargs = {} if source is None else {"background": source}
    psf_factory = survey.psf_factory()
    if psf_factory is not None:
        kwargs["psf_factory"] = psf_factory
    return kwargs


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_to_file
    from ..survey import load_survey

    out = Path(args.out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise LumosError(f"--out must be an HDF5 file ending in .h5 or .hdf5, got {out.name}")
    check_output_path(out, table=False)
    if args.n <= 0:
        raise LumosError(f"--n must be positive, got {args.n}")
    announce_overwrite("simulate", out)
    survey = load_survey(getattr(args, "survey", None))
    background = training_background(args, survey)
    config = None if survey.is_paus else survey.simulation_config()
    simulate_to_file(args.n, out, seed=args.seed, config=config, progress=True,
                     **background)  # fmt: skip
    print(f"wrote {args.n} simulated stamps (seed {args.seed}) to {out}")
    return 0
