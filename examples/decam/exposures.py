"""The DECam exposures of the legacypipe test patch (``decam-testcase4``) and their files.

Each exposure of the NOIRLab Community Pipeline comes as three images (``*_ooi_*`` the image in
ADU, ``*_oow_*`` its inverse variance, ``*_ood_*`` its data-quality mask) and, under
``calib/``, a PSFEx model (``*-psfex.fits``). ``survey-ccds-1.fits.gz`` gives each exposure's
zero point ``ccdzpt`` (AB magnitude of 1 ADU/s).

Run as a script, it prints one tab-separated line per exposure (image, weight, mask, psf,
band, ccdzpt, exptime) for ``run.sh``::

    python exposures.py DATA_DIR
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from astropy.table import Table

__all__ = ["Exposure", "find_exposures", "nanomaggies_per_unit"]


@dataclass(frozen=True)
class Exposure:
    """One DECam exposure of the test patch: its files, band, zero point and exposure time."""

    image: Path
    weight: Path
    mask: Path
    psf: Path
    band: str
    ccdzpt: float
    exptime: float

    @property
    def name(self) -> str:
        """File name of the image (``c4d_..._ooi_r_ls9.N2.fits``)."""
        return self.image.name


def nanomaggies_per_unit(ccdzpt: float, exptime: float) -> float:
    """Factor turning a flux in ADU into nanomaggies (AB magnitude 22.5 = 1 nanomaggy).

    Parameters
    ----------
    ccdzpt : float
        AB magnitude of 1 ADU/s.
    exptime : float
        Exposure time [s].
    """
    return 10.0 ** (-0.4 * (ccdzpt - 22.5)) / exptime


def find_exposures(data_dir: str | Path) -> list[Exposure]:
    """List the exposures of ``decam-testcase4`` sorted by band then image name.

    Parameters
    ----------
    data_dir : str or Path
        The ``decam-testcase4`` folder.

    Returns
    -------
    list of Exposure

    Raises
    ------
    FileNotFoundError
        If the folder holds no ``*_ooi_*`` image, or an image lacks its weight, mask, PSFEx
        file or survey-ccds row.
    """
    root = Path(data_dir)
    ccds = Table.read(root / "survey-ccds-1.fits.gz")
    rows = {Path(str(f).strip()).name: i for i, f in enumerate(ccds["image_filename"])}
    exposures = []
    for image in sorted((root / "images").glob("**/*_ooi_*.fits")):
        stem, ccd = image.name[: -len(".fits")].split(".")
        calib = root / "calib" / image.parent.relative_to(root / "images") / stem
        files = {
            "weight": image.with_name(image.name.replace("_ooi_", "_oow_")),
            "mask": image.with_name(image.name.replace("_ooi_", "_ood_")),
            "psf": calib / f"{stem}-{ccd}-psfex.fits",
        }
        for what, path in files.items():
            if not path.is_file():
                raise FileNotFoundError(f"{image.name}: no {what} file {path}")
        if image.name not in rows:
            raise FileNotFoundError(f"{image.name}: no row in survey-ccds-1.fits.gz")
        row = ccds[rows[image.name]]
        exposures.append(Exposure(image=image, band=str(row["filter"]).strip(),
                                  ccdzpt=float(row["ccdzpt"]), exptime=float(row["exptime"]),
                                  **files))  # fmt: skip
    if not exposures:
        raise FileNotFoundError(f"no DECam *_ooi_* image under {root / 'images'}")
    return sorted(exposures, key=lambda e: (e.band, e.name))


def main(argv: list[str]) -> int:
    """Print the exposures of ``argv[0]`` as tab-separated lines."""
    for e in find_exposures(argv[0]):
        print("\t".join(str(v) for v in (e.image, e.weight, e.mask, e.psf, e.band, e.ccdzpt,
                                          e.exptime)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
