"""``lumos measure``: one image, or a manifest of images through Dask."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..manifest import is_manifest, measure_manifest
    from ..measure import measure_file

    overrides = {
        "band": args.band,
        "psf_fwhm": args.psf_fwhm,
        "psf_beta": args.psf_beta,
        "pixel_scale": args.pixel_scale,
        "gain": args.gain,
        "camera_state": args.camera_state,
    }
    if is_manifest(args.image):
        table = measure_manifest(
            args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
            scheduler=args.scheduler,
        )  # fmt: skip
        failed = table.meta.get("FAILED", "")
        print(f"wrote {len(table)} rows from {table.meta['NIMAGES']} images to {args.out}"
              + (f" (failed: {failed})" if failed else ""))  # fmt: skip
        return 1 if failed else 0
    table = measure_file(
        args.image, args.catalogue, args.out, method=args.method, model_path=args.model,
        overrides=overrides, workers=args.workers,
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {args.out}")
    return 0
