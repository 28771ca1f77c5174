"""``lumos measure``: one image, or a manifest of images through Dask."""

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
    keywords = _pairs(getattr(args, "keyword", []), "--keyword", tuple(DEFAULT_KEYWORDS))
    columns = _pairs(getattr(args, "column", []), "--column")
    announce_overwrite("measure", args.out)
    if is_manifest(args.image):
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
        workers=args.workers,
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {args.out}")
    return 0
