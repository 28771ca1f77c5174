"""Larger GalSim check fields: the issue-12 checks of the shared GalSim fields on more galaxies.

``field-nb685-repeat`` holds 225 galaxies, 35-104 per i bin, too few for its checks to tell
a calibrated measurement from a miscalibrated one (``bench_field_limits.py``). This bench
renders, with GalSim and not with lumos's renderer, a field in the recipe that
``../shared/data/README.md`` gives for it, with ``--n`` galaxies, and runs the same checks on
it (``bench_pdf_fields.repeat_field``, ``bench_field_limits.repeat_field``):

* shapes: a COSMOS galaxy drawn at random (with replacement) from
  ``cosmos/real_galaxy_23.5_500_fits.fits`` (those of its 500 whose fits are usable:
  :data:`HLR_RANGE`) for each target, drawn as its two-component fit
  (``bulgefit``: an exponential disk and a de Vaucouleurs bulge, each with its own half-light
  radius, axis ratio and position angle, the bulge fraction ``fit_dvc_btt``), circularised
  half-light radii ``0.03 hlr sqrt(q)`` arcsec as GalSim's COSMOS catalogue has them, each
  truncated 15 arcsec from its centre along its major axis (inside the 129-pixel stamp
  drawn, so that the true flux is the light in the image);
* the catalogue entry is that galaxy's COSMOS single-Sersic fit (``sersicfit``: r50, n, q,
  pa), as a deep catalogue describes a real galaxy, at the true position;
* i uniform in 18-23, independent of the shape; NB685 magnitude ``i + c`` with the colour
  ``c`` normal with ``--colour-spread`` mag (default 0.3); electrons ``90 * 10^(-0.4 (m -
  24.5))``;
* one target per 80-pixel cell at a random sub-pixel position; for one in five an
  uncatalogued neighbour (another COSMOS shape, i uniform in 18-23) 4-12 px away;
* four exposures of 90 s with Moffat PSFs (beta 3.5) of FWHM 0.70, 0.80, 0.95 and 1.10
  arcsec, 0.263 arcsec pixels, sky 170-210 e- per pixel with a linear gradient of +-10%,
  Poisson noise and 5 e- read noise, gain 1; no cosmic rays;
* ``truth.fits``: ``flux_true`` and, per exposure, ``crb_sigma``, the Cramer-Rao bound of the
  flux with the true (noiseless, PSF-convolved, pixel-integrated) profile and the sky:
  ``1 / sqrt(sum P^2 / V)`` over the target's 65 x 65 stamp, ``V`` the sky, the galaxy's
  light and the read noise.

These exposures were made by lumos's bench, not by an outside party: they check the method
on an independent renderer and real morphologies; like the shared fields they are never used
to train, calibrate or choose a model.

``--kind sersic`` renders instead a field like ``field-nb685-sersic``: one clean exposure
(PSF FWHM 0.85 arcsec, flat sky, no neighbours) of galaxies that are exactly their
catalogue's single Sersic (COSMOS ``sersicfit``), measured as ``bench_pdf_fields.py``
measures that field.

Usage::

    python bench/bench_galsim_repeat.py [--kind repeat|sersic] [--n 1600] [--seed 71000001]
        [--model PATH] [--prior auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import SHARED_DATA
from astropy.io import fits
from astropy.table import Table
from bench_field_limits import repeat_field as limits_repeat_field
from bench_field_limits import sersic_field as limits_sersic_field
from bench_pdf_fields import repeat_field as pdf_repeat_field
from bench_pdf_fields import single_field
from tqdm.auto import tqdm

from lumos.instrument import PIXEL_SCALE
from lumos.spectra import ZERO_POINT

FWHM = (0.70, 0.80, 0.95, 1.10)
BETA = 3.5
EXPTIME = 90.0
READ_NOISE = 5.0
CELL = 80
DRAW = 129  # odd: the stamp's centre pixel holds the galaxy's nearest pixel centre
STAMP = 65  # the target's stamp of its Cramer-Rao bound
#: Profiles end this far from the centre along the major axis (arcsec): inside the drawn
#: stamp, so that the true flux is the light in the image.
TRUNCATE = 15.0
#: Shapes whose fits are unusable are not drawn: an axis ratio <= 0, a half-light radius
#: outside this range (arcsec, circularised) in either component or the single Sersic.
HLR_RANGE = (0.01, 3.0)


def _cosmos():
    """The COSMOS fits whose single Sersic and both components are usable."""
    with fits.open(SHARED_DATA / "cosmos" / "real_galaxy_23.5_500_fits.fits") as hdul:
        t = hdul[1].data
        fits_ = {"sersic": np.array(t["sersicfit"], float),
                 "bulge": np.array(t["bulgefit"], float),
                 "btt": np.clip(np.array(t["fit_dvc_btt"], float), 0.0, 1.0)}  # fmt: skip
    btt = fits_["btt"]
    ok = np.ones(btt.size, bool)
    for f, used in ((fits_["sersic"], btt >= 0), (fits_["bulge"][:, :8], btt < 1),
                    (fits_["bulge"][:, 8:], btt > 0)):
        q = f[:, 3]
        hlr = 0.03 * f[:, 1] * np.sqrt(np.clip(q, 0.0, None))
        ok &= ~used | ((q > 0) & (hlr >= HLR_RANGE[0]) & (hlr <= HLR_RANGE[1]))
    return {k: v[ok] for k, v in fits_.items()}


def _component(galsim, n: float, fit: np.ndarray):
    """One COSMOS fit component as a Sersic of index ``n`` (1: the disk, 4: the bulge);
    ``fit`` is ``[I_e, hlr (ACS px, major axis), n, q, box, x0, y0, phi]``."""
    q = float(min(fit[3], 1.0))
    hlr = 0.03 * float(fit[1]) * np.sqrt(q)
    try:
        profile = galsim.Sersic(n=n, half_light_radius=hlr, trunc=TRUNCATE * np.sqrt(q))
    except galsim.GalSimError:  # truncation far beyond the light: GalSim cannot solve for it
        profile = galsim.Sersic(n=n, half_light_radius=hlr)
    return profile.shear(q=q, beta=float(fit[7]) * galsim.radians)


def _galaxy(galsim, cosmos: dict, k: int, flux: float):
    """COSMOS galaxy ``k`` as its bulge + disk fit, total ``flux``."""
    btt = float(cosmos["btt"][k])
    parts = []
    if btt < 1.0:
        disk = _component(galsim, 1.0, cosmos["bulge"][k, :8])
        parts.append(disk.withFlux((1.0 - btt) * flux))
    if btt > 0.0:
        bulge = _component(galsim, 4.0, cosmos["bulge"][k, 8:])
        parts.append(bulge.withFlux(btt * flux))
    return galsim.Add(parts) if len(parts) > 1 else parts[0]


def _catalogue_entry(cosmos: dict, k: int) -> tuple[float, float, float, float]:
    """r50 (arcsec, circularised), n, q, pa (degrees CCW from +x) of COSMOS's single Sersic."""
    fit = cosmos["sersic"][k]
    q = float(min(fit[3], 1.0))
    n = float(np.clip(fit[2], 0.3, 6.2))  # GalSim's Sersic range
    return 0.03 * float(fit[1]) * np.sqrt(q), n, q, float(np.degrees(fit[7])) % 180.0


def _draw(galsim, image, obj, x: float, y: float) -> np.ndarray:
    """Add ``obj`` at 0-based pixel position (x, y) to ``image``; returns the central
    ``STAMP`` x ``STAMP`` pixels of the stamp drawn."""
    ix, iy = int(np.rint(x)), int(np.rint(y))
    h = DRAW // 2
    bounds = galsim.BoundsI(ix - h + 1, ix + h + 1, iy - h + 1, iy + h + 1)  # 1-based
    stamp = obj.drawImage(nx=DRAW, ny=DRAW, scale=PIXEL_SCALE, offset=(x - ix, y - iy))
    stamp.setOrigin(bounds.xmin, bounds.ymin)
    overlap = bounds & image.bounds
    if overlap.isDefined():
        image[overlap] += stamp[overlap]
    c, k = DRAW // 2, STAMP // 2
    return stamp.array[c - k:c + k + 1, c - k:c + k + 1]


def _sersic(galsim, cosmos: dict, k: int, flux: float):
    """COSMOS galaxy ``k`` as exactly its catalogue entry: the single Sersic fit."""
    r50, n, q, pa = _catalogue_entry(cosmos, k)
    try:
        profile = galsim.Sersic(n=n, half_light_radius=r50, trunc=TRUNCATE * np.sqrt(q))
    except galsim.GalSimError:
        profile = galsim.Sersic(n=n, half_light_radius=r50)
    return profile.shear(q=q, beta=pa * galsim.degrees).withFlux(flux)


def render(folder: Path, n: int, seed: int, colour_spread: float = 0.3,
           kind: str = "repeat") -> None:
    """Write ``folder/e1..e4`` (``image.fits``, ``catalogue.fits``, ``truth.fits``).

    ``kind="sersic"`` writes ``folder/e1`` only, like ``field-nb685-sersic``: one exposure
    (PSF FWHM 0.85 arcsec), each galaxy exactly its catalogue's single Sersic (``n`` within
    GalSim's 0.3-6.2; shapes whose profile GalSim cannot integrate are left out), no
    neighbours, a flat sky.
    """
    import galsim  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    cosmos = _cosmos()
    ncos = cosmos["btt"].size
    side = int(np.ceil(np.sqrt(n)))
    size = side * CELL
    cell = np.arange(n)
    x = (cell % side) * CELL + CELL / 2 + rng.uniform(-0.5, 0.5, n)
    y = (cell // side) * CELL + CELL / 2 + rng.uniform(-0.5, 0.5, n)
    sersic = kind == "sersic"
    fwhms = (0.85,) if sersic else FWHM
    i_mag = rng.uniform(18.0, 23.0, n)
    nb_mag = i_mag + colour_spread * rng.standard_normal(n)
    flux = EXPTIME * 10.0 ** (-0.4 * (nb_mag - ZERO_POINT))
    unit = {}  # one GalSim object per COSMOS shape: its Sersic tables are computed once
    usable = np.arange(ncos)
    if sersic:  # shapes whose single Sersic GalSim cannot integrate are left out
        for k in tqdm(range(ncos), desc="Sersic profiles", unit="shape", leave=False):
            try:
                obj = _sersic(galsim, cosmos, k, 1.0)
                obj.maxk, obj.stepk  # noqa: B018 - evaluated here to fail here
            except (galsim.GalSimError, RuntimeError):
                continue
            unit[k] = obj
        usable = np.array(sorted(unit))
    shape = usable[rng.integers(0, usable.size, n)]
    entries = np.array([_catalogue_entry(cosmos, k) for k in shape])
    has_neighbour = (rng.random(n) < 0.2) & (not sersic)
    dist, angle = rng.uniform(4.0, 12.0, n), rng.uniform(0.0, 2.0 * np.pi, n)
    nx, ny = x + dist * np.cos(angle), y + dist * np.sin(angle)
    n_shape = usable[rng.integers(0, usable.size, n)]
    n_flux = EXPTIME * 10.0 ** (-0.4 * (rng.uniform(18.0, 23.0, n) - ZERO_POINT))
    catalogue = Table({"id": np.arange(1, n + 1), "x": x, "y": y, "i_mag": i_mag,
                       "r50": entries[:, 0], "sersic_n": entries[:, 1], "q": entries[:, 2],
                       "pa": entries[:, 3]})  # fmt: skip
    crb = np.empty((len(fwhms), n))

    def galaxy(k: int, total: float):
        if k not in unit:
            unit[k] = (_sersic if sersic else _galaxy)(galsim, cosmos, k, 1.0)
        return unit[k].withFlux(total)

    for e, fwhm in enumerate(fwhms):
        psf = galsim.Moffat(beta=BETA, fwhm=fwhm)
        image = galsim.ImageF(size, size, scale=PIXEL_SCALE)
        models = []
        for j in tqdm(range(n), desc=f"GalSim e{e + 1}", unit="gal", leave=False):
            target = galsim.Convolve(galaxy(shape[j], flux[j]), psf)
            models.append(_draw(galsim, image, target, x[j], y[j]) / flux[j])
            if has_neighbour[j]:
                other = galsim.Convolve(galaxy(n_shape[j], n_flux[j]), psf)
                _draw(galsim, image, other, nx[j], ny[j])
        light = image.array.astype(float)
        sky_level = rng.uniform(170.0, 210.0)
        gy, gx = np.mgrid[0:size, 0:size] / size - 0.5
        grad = rng.uniform(-0.2, 0.2, 2) * (not sersic)
        sky = sky_level * (1.0 + grad[0] * gx + grad[1] * gy)
        mean = sky + light
        counts = rng.poisson(np.clip(mean, 0.0, None)) \
            + READ_NOISE * rng.standard_normal(mean.shape)  # fmt: skip
        h = STAMP // 2
        for j in range(n):
            ix, iy = int(np.rint(x[j])), int(np.rint(y[j]))
            v = mean[iy - h:iy + h + 1, ix - h:ix + h + 1] + READ_NOISE**2
            crb[e, j] = 1.0 / np.sqrt(np.sum(models[j] ** 2 / v))
        out = folder / f"e{e + 1}"
        out.mkdir(parents=True, exist_ok=True)
        header = fits.Header({"BUNIT": "electron", "EXPTIME": EXPTIME, "GAIN": 1.0,
                              "FILTER": "NB685", "PSFFWHM": fwhm, "PSFBETA": BETA,
                              "PIXSCALE": PIXEL_SCALE, "RDNOISE": READ_NOISE})  # fmt: skip
        fits.PrimaryHDU(counts.astype(np.float32), header).writeto(out / "image.fits",
                                                                   overwrite=True)
        catalogue.write(out / "catalogue.fits", overwrite=True)
        Table({"id": catalogue["id"], "flux_true": flux, "nb_mag": nb_mag,
               "crb_sigma": crb[e], "neighbour": has_neighbour.astype(int)}).write(
            out / "truth.fits", overwrite=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1600, help="catalogued galaxies")
    parser.add_argument("--seed", type=int, default=71_000_001)
    parser.add_argument("--colour-spread", type=float, default=0.3, help="NB685 - i, mag")
    parser.add_argument("--kind", choices=("repeat", "sersic"), default="repeat",
                        help="four exposures of bulge + disk galaxies (field-nb685-repeat), or "
                        "one clean exposure of exact single-Sersic ones (field-nb685-sersic)")
    parser.add_argument("--model", help="model (default: the shipped one)")
    parser.add_argument("--prior", default="auto", help="prior of lumos measure / coadd")
    parser.add_argument("--draws", type=int, default=2000, help="ideal-measurement draws")
    parser.add_argument("--keep", type=Path, help="write the exposures here (else a temp dir)")
    args = parser.parse_args()
    if not (SHARED_DATA / "cosmos").is_dir():
        raise SystemExit(f"{SHARED_DATA / 'cosmos'} is absent: nothing to render")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.keep or tmp / f"galsim-{args.kind}"
        render(root, args.n, args.seed, args.colour_spread, args.kind)
        print(f"GalSim {args.kind} field: {args.n} galaxies, seed {args.seed}, colour spread "
              f"{args.colour_spread} mag; model {args.model or 'shipped'}, prior {args.prior}")
        if args.kind == "sersic":
            single_field(tmp, root.name, args.model, args.prior, root / "e1")
        else:
            pdf_repeat_field(tmp, args.model, args.prior, root)
        print("\nideal measurement (unbiased, Cramer-Rao errors) on the same galaxies\n")
        print("| criterion | band | median | 68% of realisations | fraction inside |")
        print("|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        if args.kind == "sersic":
            limits_sersic_field(tmp, args.draws, rng, root / "e1")
        else:
            limits_repeat_field(tmp, args.draws, rng, root)


if __name__ == "__main__":
    main()
