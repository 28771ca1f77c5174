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


def check_prior(prior: str) -> None:
    """One-line error for a ``--prior`` that is neither a known name nor a file."""
    from pathlib import Path

    from ..bayes import PRIOR_CHOICES
    from ..errors import LumosError

    if prior not in PRIOR_CHOICES and not Path(prior).is_file():
        raise LumosError(f"--prior {prior!r}: choose {', '.join(PRIOR_CHOICES)} or give an "
                         "existing prior table")


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
    """Load ``--survey`` (registering its bands) and fill the image metadata it gives.

    The survey's pixel scale (without a WCS), gain and read noise stand in for header
    keywords the image lacks (options and header keywords come first), and the flux unit is
    ``adu`` when the survey's gain is not 1; a header band such as DECam's
    ``"r DECam SDSS c0002 6415.0 1480.0"`` is read by its first word. Returns the completed
    overrides.
    """
    from ..errors import LumosError
    from ..imageio import DEFAULT_KEYWORDS, read_image
    from ..survey import load_survey

    survey = load_survey(args.survey)
    if args.band is not None:
        overrides["band"] = survey.band(args.band).name
    if overrides.get("camera_state") is not None:
        survey.band_index(survey.bands[0].name, overrides["camera_state"])
    _, header, wcs = read_image(args.image)
    keys = {**DEFAULT_KEYWORDS, **keywords}
    fallback = {"gain": survey.gain, "read_noise": survey.read_noise}
    if wcs is None:
        fallback["pixel_scale"] = survey.pixel_scale
    if survey.gain != 1.0:
        fallback["unit"] = "adu"
    for item, value in fallback.items():
        if overrides.get(item) is None and keys.get(item) not in header:
            overrides[item] = value
    if overrides.get("band") is None and keys["band"] in header:
        value = str(header[keys["band"]]).strip()
        try:
            overrides["band"] = survey.band(value).name
        except LumosError:
            first = value.split()[0] if value.split() else value
            overrides["band"] = survey.band(first).name  # e.g. DECam's "r DECam SDSS c0002"
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..errors import LumosError
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
    check_prior(getattr(args, "prior", "auto"))
    keywords = _pairs(getattr(args, "keyword", []), "--keyword", tuple(DEFAULT_KEYWORDS))
    columns = _pairs(getattr(args, "column", []), "--column")
    files = _pixel_files(args)
    if getattr(args, "survey", None) is not None:
        if is_manifest(args.image):
            raise LumosError("--survey works with one image at a time, not with a manifest")
        overrides = _survey_defaults(args, overrides, keywords)
    announce_overwrite("measure", args.out)
    if is_manifest(args.image):
        if files:
            names = ", ".join("--" + name.removesuffix("_path") for name in files)
            raise LumosError(f"{names}: give each image's files in the manifest's psf, weight "
                             "and mask columns")  # fmt: skip
        table = measure_manifest(
            args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
            scheduler=args.scheduler, keywords=keywords or None, columns=columns or None,
        )  # fmt: skip
        failed = table.meta.get("FAILED", "")
        print(f"wrote {len(table)} rows from {table.meta['NIMAGES']} images to {args.out}"
              + (f" (failed: {failed})" if failed else ""))  # fmt: skip
        return 1 if failed else 0
    table = measure_file(
        args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
        overrides=overrides, keywords=keywords or None, columns=columns or None,
        workers=args.workers, prior=getattr(args, "prior", "auto"), **files,
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {args.out}")
    return 0
