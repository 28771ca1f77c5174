"""The ``lumos`` command line.

Every sub-command reports a user mistake as one line on standard error and a non-zero exit
status, never as a Python traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import LumosError

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors say which command they belong to."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


#: Forms of a prior learnt from measurements (``lumos.prior.EMPIRICAL_FORMS``, kept here so
#: that building the parser imports no numerical module).
PRIOR_FORMS = ("binned", "smooth")


def _simulation_inputs(p: argparse.ArgumentParser, survey_help: str) -> None:
    """``--survey``, ``--backgrounds`` and ``--background-fraction`` (simulate and train)."""
    p.add_argument("--survey", metavar="FILE", help=survey_help)
    p.add_argument("--backgrounds", metavar="MANIFEST",
                   help="table of real images (path, band or 'any', optional camera_state, "
                   "hdu, psf_fwhm) whose random cutouts are the stamps' backgrounds")
    p.add_argument("--background-fraction", type=float,
                   help="fraction of stamps on real backgrounds, the rest on synthetic sky "
                   "(default 1 with --backgrounds)")


def _schedule(p: argparse.ArgumentParser, epochs: tuple[int, str], batch: tuple[int, str],
              lr: float, lr_step: int) -> None:
    """``--epochs``, ``--batch-size``, ``--lr`` and ``--lr-step`` (train and transfer)."""
    p.add_argument("--epochs", type=int, default=epochs[0], help=epochs[1])
    p.add_argument("--batch-size", type=int, default=batch[0], help=batch[1])
    p.add_argument("--lr", type=float, default=lr, help="initial Adam learning rate")
    p.add_argument("--lr-step", type=int, default=lr_step, help="epochs between /10 decays")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lumos`` command."""
    parser = _Parser(
        prog="lumos",
        description=(
            "Galaxy flux probability distributions from images with a neural network "
            "(LUMOS, PAU Survey)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lumos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="simulate a PAUS-like CCD and measure it end to end")
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--n-galaxies", type=int, default=3000, help="galaxies in the field")
    p.add_argument("--seed", type=int, default=2024, help="random seed")

    p = sub.add_parser("measure", help="measure galaxy flux PDFs in an image (or a manifest)")
    p.add_argument("image", help="FITS image, or a manifest: a text file naming one image per "
                   "line, or a table with a path (or image) column")  # fmt: skip
    p.add_argument("catalogue", help="catalogue (FITS, Parquet, CSV or ECSV)")
    p.add_argument("--out", required=True, help="output table (.fits, .parquet, .ecsv; .csv "
                   "without the PDF vector columns)")  # fmt: skip
    p.add_argument("--band", help="band name, e.g. NB685 (default: FILTER header keyword)")
    p.add_argument("--psf-fwhm", type=float, help="PSF FWHM in arcsec (default: header)")
    p.add_argument("--psf-beta", type=float, help="Moffat beta of the PSF (default: header or 3.5)")
    p.add_argument("--pixel-scale", type=float, help="arcsec per pixel (default: header)")
    p.add_argument("--gain", type=float, help="e-/ADU (default: header or 1)")
    p.add_argument("--camera-state", type=int, choices=(0, 1), help="0 before, 1 after")
    p.add_argument("--exptime", type=float, help="exposure time in s (default: header EXPTIME)")
    p.add_argument("--read-noise", type=float, help="read noise in e- (default: header RDNOISE)")
    p.add_argument("--prior", default=None,
                   help="flux prior of a likelihood model's posterior (--method lumos): auto "
                   "(default; learnt from the measured galaxies where a band has >= 100, else "
                   "the simulation population), population, empirical, none, or a prior table")
    p.add_argument("--prior-form", choices=PRIOR_FORMS, default=None,
                   help="form of the prior learnt from the measured galaxies (auto, empirical): "
                   "binned (default: one Gaussian per band and i bin) or smooth (one Gaussian "
                   "per band following i; see lumos prior --form)")
    p.add_argument("--keyword", action="append", default=[], metavar="ITEM=KEY",
                   help="read ITEM (band, psf_fwhm, psf_beta, pixel_scale, gain, "
                   "exposure_time, read_noise, camera_state, zero_point, unit) from header "
                   "keyword KEY; repeatable, e.g. --keyword band=FILTNAME")  # fmt: skip
    p.add_argument("--column", action="append", default=[], metavar="NAME=COLUMN",
                   help="catalogue column holding NAME (id, x, y, ra, dec, r50, sersic_n, q, "
                   "pa, i_mag); repeatable, e.g. --column r50=FLUX_RADIUS")  # fmt: skip
    p.add_argument(
        "--method",
        default="lumos",
        choices=("lumos", "aperture", "modelfit", "weighted"),
        help="measurement method (default lumos)",
    )
    p.add_argument("--psf", metavar="FILE",
                   help="the image's PSF: a PSFEx model or a FITS PSF image (centred, "
                   "pixel-integrated), used instead of --psf-fwhm/--psf-beta")  # fmt: skip
    p.add_argument("--weight", metavar="FILE",
                   help="inverse-variance map of the image (same shape, image units); "
                   "weight 0 = no data")  # fmt: skip
    p.add_argument("--mask", metavar="FILE",
                   help="bad-pixel mask of the image (same shape; non-zero = bad)")
    p.add_argument("--model", help="lumos model file (default: the shipped model)")
    p.add_argument("--survey", metavar="FILE",
                   help="survey description (TOML) of the image (or of every image of a "
                   "manifest): its bands can then be measured (default PAUS)")  # fmt: skip
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (manifests)")
    p.add_argument("--workers", type=int,
                   help="batches measured side by side in one image, or for a manifest the "
                   "images measured side by side on the local Dask cluster (default: one per "
                   "core)")

    p = sub.add_parser("simulate", help="write TEAHUPOO simulated stamps to HDF5")
    p.add_argument("--n", type=int, required=True, help="number of stamps")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _simulation_inputs(p, "survey description (TOML) to simulate (default PAUS)")

    p = sub.add_parser("train", help="train a lumos model on on-the-fly simulations")
    p.add_argument("--out", required=True, help="output model (NAME or NAME.safetensors)")
    p.add_argument("--checkpoints",
                   help="checkpoint directory (default OUT-checkpoints, next to the model)")
    p.add_argument("--hours", type=float, help="stop after the first epoch past this wall time")
    p.add_argument("--seed", type=int, default=1, help="training seed")
    p.add_argument("--config", default="default", choices=("default", "paper", "tiny"),
                   help="network configuration")  # fmt: skip
    _schedule(p, epochs=(120, "number of epochs"), batch=(500, "stamps per step"), lr=1e-4,
              lr_step=40)
    p.add_argument("--samples-per-epoch", type=int, default=100_000, help="stamps per epoch")
    p.add_argument("--val-size", type=int, default=5000, help="held-out validation stamps")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh: remove the checkpoints of an earlier run")
    p.add_argument("--start", help="continue from this model's weights (fine-tuning)")
    p.add_argument("--catalogue-errors", choices=("none", "realistic"), default="none",
                   help="errors of the profile-channel catalogue in the training simulation")
    p.add_argument("--position-error", type=float, default=0.0, metavar="PIXELS",
                   help="error of the catalogue positions in the training simulation, pixels "
                   "in x and in y (an astrometric tie and a WCS: e.g. 0.15)")
    p.add_argument("--two-component-fraction", type=float, default=0.0,
                   help="fraction of bulge + disk galaxies behind single-Sersic catalogue "
                   "entries")
    p.add_argument("--two-component-model", choices=("matched", "fit"), default="matched",
                   help="bulge + disk galaxies matched to the catalogue's single Sersic "
                   "(matched), or with their own component shapes and a catalogue that is the "
                   "single-Sersic fit of their light (fit)")
    p.add_argument("--likelihood", action="store_true",
                   help="train a likelihood model: no catalogue magnitude input, fluxes drawn "
                   "log-uniform, importance-weighted loss")
    p.add_argument("--flux-softening", type=float, metavar="S",
                   help="with --likelihood: draw the training fluxes with density ~ 1 / "
                   "sqrt(f^2 + S^2) from -4 S to the survey's largest training flux (e-/s; S "
                   "about a faint galaxy's flux error), so that the likelihood is learnt at, "
                   "around and below zero flux (default: log-uniform in the survey's "
                   "flux_range)")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: the cores not used by --data-workers)")
    p.add_argument("--data-workers", type=int, default=1,
                   help="processes simulating the next batches while the network trains "
                   "(0: simulate in the training process; the run does not depend on it)")
    _simulation_inputs(p, "survey description (TOML) to train for (default PAUS); recorded "
                       "in the model file")

    p = sub.add_parser("prior", help="write a flux-prior table (population, or learnt from tables)")
    p.add_argument("tables", nargs="*",
                   help="measurement tables of a likelihood model to learn the prior from "
                   "(none: the TEAHUPOO population prior)")
    p.add_argument("--out", required=True, help="output prior table (.ecsv or .fits)")
    p.add_argument("--n", type=int, default=100_000, help="population galaxies drawn")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--components", type=int, default=None,
                   help="most Gaussian components per band and i bin of a prior learnt from "
                   "tables (default 1, chosen by BIC up to this number)")
    p.add_argument("--form", choices=PRIOR_FORMS, default=None,
                   help="form of a prior learnt from tables: binned (default: components per "
                   "i bin) or smooth (one Gaussian per band whose mean and log-width are "
                   "linear in i, fitted to all its galaxies, widened by the fit's uncertainty)")

    p = sub.add_parser("calibrate", help="fit a trained model's sigma scale (and shared error)")
    p.add_argument("model", help="trained, uncalibrated model")
    p.add_argument("--out", required=True, help="output model (NAME or NAME.safetensors)")
    p.add_argument("--n", type=int, default=8000, help="calibration stamps")
    p.add_argument("--pairs", type=int, default=16000,
                   help="simulated pairs for the shared error of a likelihood model (its "
                   "curve has a node per sixth of them; 4000 left nodes of noise)")
    p.add_argument("--seed", type=int, default=20_000_001, help="calibration seed")
    p.add_argument("--recalibrate", action="store_true",
                   help="undo the model's calibration first (calibration never changes the "
                   "weights) and fit it again")
    p.add_argument("--shared-error", choices=("curve", "constant", "curve-size"),
                   default="curve",
                   help="shared error of a likelihood model: a curve of the exposure's "
                   "relative likelihood width (default), one number, or that curve times a "
                   "factor for each third of the model profiles' sizes")
    p.add_argument("--catalogue-errors", choices=("as-trained", "none", "realistic"),
                   default="as-trained",
                   help="catalogue errors of the calibration simulations: those of the "
                   "training (default), none (a catalogue whose profiles are exact fits of "
                   "the light, e.g. from much deeper imaging) or realistic")
    p.add_argument("--survey", metavar="FILE",
                   help="survey file of a model trained with --survey (the same survey)")
    p.add_argument("--backgrounds", metavar="MANIFEST",
                   help="real-image backgrounds of the calibration stamps, as in training")
    p.add_argument("--background-fraction", type=float,
                   help="fraction of stamps on real backgrounds (default 1 with --backgrounds)")

    p = sub.add_parser("transfer", help="unsupervised transfer learning on pairs of exposures")
    p.add_argument("tables", nargs="+", help="measurement tables with repeated observations")
    p.add_argument("--model", help="starting model (default: the shipped model)")
    p.add_argument("--out", required=True, help="output model file")
    p.add_argument("--images", help="manifest of the measured images (path column; optional "
                   "catalogue, band, psf_fwhm, gain... columns)")  # fmt: skip
    p.add_argument("--catalogue", help="catalogue for images that have no other")
    p.add_argument("--zero-points", help="table of zero points (image or band, zp, zp_err)")
    p.add_argument("--pairing", default="consecutive", choices=("consecutive", "all"),
                   help="how to pair repeated observations")  # fmt: skip
    p.add_argument("--max-pairs", type=int, default=4, help="pairs per galaxy and band")
    _schedule(p, epochs=(100, "passes over the pairs"), batch=(256, "pairs per step"), lr=1e-5,
              lr_step=50)
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of pairs held out")
    p.add_argument("--sim-pool", type=int,
                   help="draw this many simulated stamps once and reuse them (faster)")  # fmt: skip
    p.add_argument("--checkpoints", help="checkpoint directory (default OUT-transfer-checkpoints)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--hours", type=float, help="stop after the first epoch past this wall time")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--reference-pairs", type=int, default=2000,
                   help="simulated training-domain pairs giving the calibrated width of D "
                   "(0: skip)")  # fmt: skip
    p.add_argument("--survey", metavar="FILE",
                   help="survey file of a model trained with --survey (the same survey): its "
                   "bands, and its sky for the simulated stamps")  # fmt: skip

    p = sub.add_parser("coadd", help="co-add per-exposure measurements per galaxy and band")
    p.add_argument("tables", nargs="+", help="measurement tables")
    p.add_argument("--out", required=True, help="output table")
    p.add_argument("--zero-points", help="table of zero points (image or band, zp, zp_err)")
    p.add_argument("--prior", default=None,
                   help="prior of the likelihood co-add: auto (default), population, "
                   "empirical, none or a prior table (tables of a likelihood model only)")
    p.add_argument("--prior-form", choices=PRIOR_FORMS, default=None,
                   help="form of the prior learnt from the co-added likelihoods (auto, "
                   "empirical): binned (default) or smooth")

    p = sub.add_parser("validate", help="validate a model on held-out simulations")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a small run (minutes)")
    return parser


def _not_yet(name: str):
    def run(args: argparse.Namespace) -> int:
        raise LumosError(f"'lumos {name}' is not available in lumos {__version__} yet")

    return run


def _handler(command: str):
    """Import the implementation of a command lazily (keeps ``lumos --help`` fast)."""
    try:
        module = importlib.import_module(f"lumos.commands.{command}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("lumos.commands"):
            return _not_yet(command)
        raise
    return module.run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lumos`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(_handler(args.command)(args) or 0)
    except LumosError as exc:
        print(f"lumos {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"lumos {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"lumos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
