"""Benchmark of the classical photometry baselines: speed and the paper's Fig. 7 rows.

Prints

* speed: galaxies per second of the aperture photometry and the vectorised profile fit
  (one process, and two worker processes each measuring half of the rows);
* accuracy per i-band magnitude bin 18-19, ..., 22-23 on simulations with known truth:
  the bias (median) and sigma68 of (f - f_true) / f_true, the sigma68 of the pulls
  (f - f_true) / flux_err (1 for calibrated errors), and the median error over the
  Cramer-Rao bound of the true profile, sky and flux.

Simulations: ``--sim toy`` (default) draws Sersic * Moffat galaxies with GalSim
(``tests/galsim_toysim.py``; NB685, 90 s, sky 190 e-/pixel, read noise 5 e-, PSF FWHM 0.85
arcsec, beta 3.5); ``--sim lumos`` uses the project simulator :mod:`lumos.simulate` (TEAHUPOO
population, NB685, flat sky, no neighbours unless ``--neighbours``).

Run: ``.venv/bin/python bench/bench_classical.py [--n 5000] [--sim toy|lumos] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import FIELD_DIR, galsim_toysim

from lumos.classical import ContextCutouts, cramer_rao_sigma, measure_classical
from lumos.flags import Flag
from lumos.stats import sigma68

BINS = [(18.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0)]

#: (label, method, options) rows of the accuracy table.
ROWS = [
    ("aperture", "aperture", {}),
    ("modelfit (Eq. 3 chi2)", "modelfit", {}),
    ("modelfit (loglike)", "modelfit", {"objective": "loglike"}),
    ("weighted (annulus)", "weighted", {}),
    ("weighted oracle", "weighted_oracle", {}),
    ("sep AUTO", "sep_auto", {}),
]

_SHARED: dict = {}  # cutouts inherited by forked workers (no pickling of the pixels)


def toy_simulation(n: int, seed: int, n_profiles: int):
    """GalSim simulation: cutouts, true i magnitudes, true profiles, true sky per pixel."""
    sim = galsim_toysim().simulate_cutouts(n, seed=seed, n_profiles=n_profiles, size=100)
    c = sim.cutouts
    return c, sim.i_mag, c.profile, np.full(len(c), 190.0)


def lumos_simulation(n: int, seed: int, neighbours: bool):
    """The project simulator (TEAHUPOO), NB685 on a flat sky, as ContextCutouts."""
    from lumos.simulate import FlatSky, SimulationConfig, Simulator

    kwargs = {} if neighbours else {"close_neighbour_fraction": 0.0, "random_neighbours": 0.0}
    cfg = SimulationConfig(bands=("NB685",), **kwargs)
    read_noise = 5.0
    sim = Simulator(
        cfg, seed=seed, background=FlatSky(sky_rate=190.0 / 90.0, read_noise=read_noise)
    )
    batch, ex = sim.sample_with_context(n, context_size=100)
    c = ContextCutouts(
        pixels=ex.pixels,
        valid=ex.valid,
        offset=batch.offset.numpy(),
        r50=ex.r50_catalogue,
        n=ex.n_catalogue,
        q=ex.q_catalogue,
        pa=ex.pa_catalogue,
        profile=ex.profile_catalogue,
        gain=1.0,
        read_noise=read_noise,
        truth=ex.true_flux,
        true_background=ex.sky_model,
    )
    return c, ex.i_mag, ex.profile_true, ex.sky_model


def field_cutouts(folder: Path):
    """The shared PAUS-like NB685 field (GalSim bulge + disk galaxies, an independent renderer):
    context cutouts with single-Sersic model profiles of the catalogue drawn by GalSim."""
    import warnings

    from astropy.io import fits
    from astropy.table import Table

    from lumos.stamps import cut_stamps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = fits.getdata(folder / "image.fits").astype(np.float32)
        header = fits.getheader(folder / "image.fits")
    cat = Table.read(folder / "catalogue.fits")
    truth = Table.read(folder / "truth.fits")
    if not np.array_equal(np.asarray(cat["id"]), np.asarray(truth["id"])):
        raise SystemExit("field-nb685: catalogue and truth rows differ")
    cut = cut_stamps(image, np.asarray(cat["x"]), np.asarray(cat["y"]), size=100)
    r50, n, q, pa = (np.asarray(cat[k], dtype=float) for k in ("r50", "sersic_n", "q", "pa"))
    profile = galsim_toysim().draw_profiles(
        r50,
        n,
        q,
        pa,
        cut.offset,
        psf_fwhm=float(header["PSFFWHM"]),
        psf_beta=float(header["PSFBETA"]),
        size=100,
    )
    c = ContextCutouts.from_stamp_cut(
        cut,
        profile,
        r50,
        n,
        q,
        pa,
        gain=float(header["GAIN"]),
        read_noise=float(header["RDNOISE"]),
        pixel_scale=float(header["PIXSCALE"]),
    )
    c.truth = np.asarray(truth["flux_true"], dtype=float)
    return c, np.asarray(cat["i_mag"], dtype=float), np.asarray(truth["neighbour"]) > 0


def field_table(folder: Path) -> None:
    """Fig. 7 rows on the shared NB685 field, galaxies with and without a close neighbour."""
    t = time.perf_counter()
    cutouts, i_mag, neighbour = field_cutouts(folder)
    print(
        f"field-nb685: {len(cutouts)} galaxies, profiles drawn in {time.perf_counter() - t:.1f} s"
    )
    print("single-Sersic model of bulge+disk galaxies; bias = median, s68, pull = sigma68 of pulls")
    head = " | ".join(f"{lo:.0f}-{hi:.0f}".center(19) for lo, hi in BINS)
    print(f"{'method':28s} | {head}")
    for label, method, options in ROWS:
        if method == "weighted_oracle":
            continue
        out = measure_classical(method, cutouts, **options)
        rel = (out["flux"] - cutouts.truth) / cutouts.truth
        pull = (out["flux"] - cutouts.truth) / out["flux_err"]
        ok = (out["flags"] & int(Flag.FAILED)) == 0
        for name, group in (("isolated", ~neighbour), ("neighbour", neighbour)):
            cells = []
            for lo, hi in BINS:
                sel = ok & group & (i_mag >= lo) & (i_mag < hi)
                if sel.sum() < 5:
                    cells.append(f"{'-':>19s}")
                    continue
                r, pl = rel[sel], pull[sel]
                cells.append(f"{np.median(r):+6.3f} {sigma68(r):6.3f} {sigma68(pl):5.2f}")
            print(f"{label[:18] + ' ' + name:28s} | " + " | ".join(cells))


def _work(method: str, start: int, stop: int) -> int:
    out = measure_classical(method, _SHARED["cutouts"][start:stop])
    return int(np.isfinite(out["flux"]).sum())


def speed(cutouts: ContextCutouts, method: str, repeat: int = 2) -> tuple[float, float]:
    """Galaxies per second in one process and with two forked worker processes."""
    n = len(cutouts)
    best1 = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        measure_classical(method, cutouts)
        best1 = min(best1, time.perf_counter() - t)
    _SHARED["cutouts"] = cutouts
    best2 = np.inf
    try:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            pool.submit(_work, method, 0, 2).result()  # start the workers
            for _ in range(repeat):
                t = time.perf_counter()
                futures = [
                    pool.submit(_work, method, 0, n // 2),
                    pool.submit(_work, method, n // 2, n),
                ]
                for f in futures:
                    f.result()
                best2 = min(best2, time.perf_counter() - t)
    except (OSError, ValueError) as exc:  # no fork on this platform
        print(f"  (two-process timing unavailable: {exc})")
    return n / best1, n / best2


def accuracy_table(cutouts, i_mag, true_profile, true_sky) -> None:
    """Print the Fig. 7 rows for every classical method."""
    truth = cutouts.truth
    crb = cramer_rao_sigma(true_profile, truth, true_sky, cutouts.read_noise, cutouts.gain)
    head = " | ".join(f"{lo:.0f}-{hi:.0f}".center(27) for lo, hi in BINS)
    print(f"{'method':24s} | {head}")
    print(
        f"{'':24s} | "
        + " | ".join(f"{'bias':>6s} {'s68':>6s} {'pull':>5s} {'/CRB':>5s}" for _ in BINS)
    )
    for label, method, options in ROWS:
        if method == "weighted_oracle":
            options = {**options, "true_profile": true_profile}
        t = time.perf_counter()
        out = measure_classical(method, cutouts, **options)
        dt = time.perf_counter() - t
        rel = (out["flux"] - truth) / truth
        pull = (out["flux"] - truth) / out["flux_err"]
        ok = (out["flags"] & int(Flag.FAILED)) == 0
        cells = []
        for lo, hi in BINS:
            sel = ok & (i_mag >= lo) & (i_mag < hi)
            if sel.sum() < 10:
                cells.append(f"{'-':>6s} {'-':>6s} {'-':>5s} {'-':>5s}")
                continue
            cells.append(
                f"{np.median(rel[sel]):+6.3f} {sigma68(rel[sel]):6.3f} "
                f"{sigma68(pull[sel]):5.2f} {np.median(out['flux_err'][sel] / crb[sel]):5.2f}"
            )
        failed = int((~ok).sum())
        print(f"{label:24s} | " + " | ".join(cells) + f"   ({dt:.1f} s, {failed} failed)")
    print(
        "bias = median (f - f_true)/f_true; s68 = sigma68 of it; pull = sigma68 of "
        "(f - f_true)/flux_err; /CRB = median flux_err / Cramer-Rao bound"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="galaxies in the accuracy table")
    parser.add_argument("--speed-n", type=int, default=2000, help="galaxies in the timings")
    parser.add_argument("--profiles", type=int, default=64, help="distinct GalSim shapes (toy)")
    parser.add_argument("--sim", choices=("toy", "lumos"), default="toy")
    parser.add_argument("--neighbours", action="store_true", help="lumos sim: keep neighbours")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small run (1000 galaxies)")
    parser.add_argument(
        "--field", action="store_true", help="also measure ../shared/data/field-nb685"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.speed_n, args.profiles = 1000, 1000, 24

    print(f"bench_classical: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    if args.sim == "toy":
        cutouts, i_mag, true_profile, true_sky = toy_simulation(args.n, args.seed, args.profiles)
    else:
        cutouts, i_mag, true_profile, true_sky = lumos_simulation(
            args.n, args.seed, args.neighbours
        )
    print(f"simulated {len(cutouts)} galaxies ({args.sim}) in {time.perf_counter() - t:.1f} s")

    print("\n== speed (galaxies/s; 100x100 context cutouts, annulus background included) ==")
    sub = cutouts[: min(args.speed_n, len(cutouts))]
    for method in ("aperture", "modelfit", "weighted", "sep_auto"):
        one, two = speed(sub, method)
        print(f"{method:10s} {one:8.0f} /s in 1 process   {two:8.0f} /s in 2 processes")

    print("\n== accuracy per i-band magnitude bin (paper Fig. 7 rows) ==")
    accuracy_table(cutouts, i_mag, true_profile, true_sky)

    if args.field:
        folder = FIELD_DIR
        print("\n== the shared NB685 field (independent GalSim bulge+disk renderer) ==")
        if (folder / "image.fits").is_file():
            field_table(folder)
        else:
            print(f"skipped: {folder} is not available")


if __name__ == "__main__":
    main()
