"""``lumos measure``: one image, or a manifest of images through Dask.

``--survey FILE`` makes that survey's bands measurable (and its gain, read noise and pixel
scale the defaults for keywords the image lacks); the model must have been trained for the
image's survey and band (:func:`lumos.survey.check_model_band`).
"""

from __future__ import annotations

import argparse


def _pairs(values: list[str], option: str, allowed: tuple[str, ...] | None = None) -> dict:
    """``["a=B", ...]`` -> ``{"a": "B"}``, with a one-line error for a malformed item."""
    from ..errors import LumosError

    out = {}
    for value in values or []:
        name, sep, target = value.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise LumosError(f"{option} expects NAME=VALUE, got {value!r}")
        if allowed is not None and name not in allowed:
            raise LumosError(f"{option} {value!r}: unknown item {name!r}; "
                             f"choose from {', '.join(allowed)}")  # fmt: skip
        out[name] = target
    return out


def prior_choice(args: argparse.Namespace):
    """``--prior`` and ``--prior-form`` as the ``prior`` of measure and co-add.

    Returns the name (or prior table path) itself, or a :class:`lumos.prior.PriorChoice`
    when ``--prior-form`` is given; a name that is neither known nor a file, or a form
    for a prior that is not learnt, is a one-line error.
    """
    from pathlib import Path

    from ..bayes import PRIOR_CHOICES
    from ..errors import LumosError
    from ..prior import PriorChoice

    prior = getattr(args, "prior", None) or "auto"
    form = getattr(args, "prior_form", None)
    if prior not in PRIOR_CHOICES and not Path(prior).is_file():
        raise LumosError(f"--prior {prior!r}: choose {', '.join(PRIOR_CHOICES)} or give an "
                         "existing prior table")
    if form is None:
        return prior
    if prior not in ("auto", "empirical"):
        raise LumosError(f"--prior-form {form} applies to a prior learnt from the measured "
                         f"galaxies (--prior auto or empirical), not to --prior {prior}")
    return PriorChoice(prior, form)


def lumos_only_options(args: argparse.Namespace, names=("model", "prior", "prior_form")):
    """The options among ``names`` given on the command line (not None), as ``--name``."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]


def _check_method_options(args: argparse.Namespace) -> None:
    """One-line error for options of the lumos method given with a classical one."""
    from ..errors import LumosError

    given = lumos_only_options(args)
    if args.method != "lumos" and given:
        raise LumosError(f"{', '.join(given)}: for --method lumos, not --method {args.method}")


def _check_manifest_options(files: dict, overrides: dict) -> None:
    """One-line error for one-image options given with a manifest (they would be ignored)."""
    from ..errors import LumosError
    from ..manifest import MANIFEST_COLUMNS

    if files:
        names = ", ".join("--" + name.removesuffix("_path") for name in files)
        raise LumosError(f"{names}: give each image's files in the manifest's psf, weight "
                         "and mask columns")  # fmt: skip
    given = [name for name, value in overrides.items() if value is not None]
    if given:
        options = {"exposure_time": "exptime"}
        names = ", ".join("--" + options.get(n, n).replace("_", "-") for n in given)
        raise LumosError(f"{names}: options of one image; give each image's values in the "
                         f"manifest's columns ({', '.join(MANIFEST_COLUMNS)}) or its header "
                         "keywords (--keyword)")  # fmt: skip


def _pixel_files(args: argparse.Namespace) -> dict:
    """``--psf``, ``--weight`` and ``--mask`` as ``measure_file`` keywords (given ones only)."""
    from ..errors import LumosError

    psf = getattr(args, "psf", None)
    if psf is not None and (args.psf_fwhm is not None or args.psf_beta is not None):
        raise LumosError("give either --psf FILE or --psf-fwhm/--psf-beta, not both")
    given = {"psf_path": psf, "weight_path": getattr(args, "weight", None),
             "mask_path": getattr(args, "mask", None)}  # fmt: skip
    return {key: value for key, value in given.items() if value is not None}


def _survey_defaults(args: argparse.Namespace, overrides: dict, keywords: dict) -> dict:
    """Load ``--survey`` (registering its bands) and fill the image metadata it gives
    (:meth:`lumos.survey.Survey.image_overrides`). Returns the completed overrides."""
    from ..imageio import read_image
    from ..survey import load_survey

    survey = load_survey(args.survey)
    _, header, wcs = read_image(args.image)
    return survey.image_overrides(header, wcs is not None, overrides, keywords)


def run(args: argparse.Namespace) -> int:
    from ..imageio import DEFAULT_KEYWORDS
    from ..manifest import is_manifest, measure_manifest
    from ..measure import measure_file
    from ..tableio import announce_overwrite, check_output_path

    check_output_path(args.out)

    overrides = {
        "band": args.band,
        "psf_fwhm": args.psf_fwhm,
        "psf_beta": args.psf_beta,
        "pixel_scale": args.pixel_scale,
        "gain": args.gain,
        "camera_state": args.camera_state,
        "exposure_time": getattr(args, "exptime", None),
        "read_noise": getattr(args, "read_noise", None),
    }
    prior = prior_choice(args)
    _check_method_options(args)
    keywords = _pairs(getattr(args, "keyword", []), "--keyword", tuple(DEFAULT_KEYWORDS))
    columns = _pairs(getattr(args, "column", []), "--column")
    files = _pixel_files(args)
    if getattr(args, "survey", None) is not None and not is_manifest(args.image):
        overrides = _survey_defaults(args, overrides, keywords)
    manifest = is_manifest(args.image)
    if manifest:
        _check_manifest_options(files, overrides)
    announce_overwrite("measure", args.out)
    if manifest:
        table = measure_manifest(
            args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
            scheduler=args.scheduler, n_workers=args.workers, keywords=keywords or None,
            columns=columns or None, survey=getattr(args, "survey", None), prior=prior,
        )  # fmt: skip
        failed = table.meta.get("FAILED", "")
        print(f"wrote {len(table)} rows from {table.meta['NIMAGES']} images to {args.out}"
              + (f" (failed: {failed})" if failed else ""))  # fmt: skip
        return 1 if failed else 0
    table = measure_file(
        args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
        overrides=overrides, keywords=keywords or None, columns=columns or None,
        workers=args.workers, prior=prior, **files,
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {args.out}")
    return 0
