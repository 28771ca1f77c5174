"""Benchmark the Sersic renderer against GalSim: accuracy and speed on the same galaxies.

Random galaxies: n 0.3-6.2 (quantised to 0.05, for GalSim's caches), r50 0.05-5 arcsec
log-uniform, q 0.2-1 (a fraction 0.1-0.2), any position angle, sub-pixel offsets, Moffat
PSF FWHM 0.6-1.3 arcsec, beta 2.5-5; 60x60 stamps at 0.263 arcsec/pixel; unit flux.

Accuracy: relative difference of the stamp sums, and the largest pixel difference divided
by the peak of the GalSim stamp. Speed: GalSim ``drawImage`` (caches warm: every n drawn
once before timing) versus ``SersicRenderer.render`` on the same galaxies.

Usage::

    .venv/bin/python bench/bench_render.py [--n 1000] [--seed 1] [--threads 1 2]
        [--reference default|strict] [--corners]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from lumos.instrument import PIXEL_SCALE
from lumos.profiles import SersicRenderer
from lumos.psf import MoffatPSF


def random_galaxies(count: int, rng: np.random.Generator, q_min: float = 0.2) -> dict:
    """Random profile and PSF parameters spanning the validated ranges."""
    n = np.round(rng.uniform(0.3, 6.2, count) / 0.05) * 0.05
    n = np.clip(n, 0.3, 6.2)
    q = rng.uniform(q_min, 1.0, count)
    flat = rng.random(count) < 0.05
    q[flat] = rng.uniform(0.1, 0.2, flat.sum())
    return {
        "r50": np.exp(rng.uniform(np.log(0.05), np.log(5.0), count)),
        "n": n,
        "q": q,
        "pa": rng.uniform(0, 180, count),
        "offset": rng.uniform(-0.5, 0.5, (count, 2)),
        "fwhm": rng.uniform(0.6, 1.3, count),
        "beta": rng.uniform(2.5, 5.0, count),
    }


def corner_galaxies() -> dict:
    """Parameter corners: large, flat, high-n galaxies (wrap-around), tiny ones, extremes."""
    rows = []
    for r50 in (0.05, 1.0, 5.0):
        for n in (0.3, 1.0, 4.0, 6.2):
            for q in (0.1, 1.0):
                for fwhm, beta in ((0.6, 2.5), (1.3, 5.0)):
                    rows.append((r50, n, q, 33.0, fwhm, beta))
    arr = np.array(rows)
    count = len(rows)
    rng = np.random.default_rng(7)
    return {"r50": arr[:, 0], "n": arr[:, 1], "q": arr[:, 2], "pa": arr[:, 3],
            "offset": rng.uniform(-0.5, 0.5, (count, 2)), "fwhm": arr[:, 4],
            "beta": arr[:, 5]}


def galsim_stamps(g: dict, size: int, strict: bool) -> tuple[np.ndarray, float, float]:
    """Draw the galaxies with GalSim; returns (stamps, wall seconds, CPU seconds)."""
    import galsim

    warnings.simplefilter("ignore", galsim.GalSimFFTSizeWarning)
    gsp = (galsim.GSParams(folding_threshold=1e-3, maxk_threshold=1e-4,
                           maximum_fft_size=12288) if strict else None)
    out = np.empty((len(g["r50"]), size, size))
    # warm the Sersic caches
    for n in np.unique(g["n"]):
        galsim.Convolve(galsim.Sersic(float(n), half_light_radius=1.0, gsparams=gsp),
                        galsim.Moffat(3.0, fwhm=1.0), gsparams=gsp).drawImage(
            nx=8, ny=8, scale=PIXEL_SCALE)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(g["r50"])):
        gal = galsim.Sersic(float(g["n"][i]), half_light_radius=float(g["r50"][i]),
                            gsparams=gsp)
        gal = gal.shear(q=float(g["q"][i]), beta=float(g["pa"][i]) * galsim.degrees)
        psf = galsim.Moffat(beta=float(g["beta"][i]), fwhm=float(g["fwhm"][i]), gsparams=gsp)
        img = galsim.Convolve(gal, psf, gsparams=gsp).drawImage(
            nx=size, ny=size, scale=PIXEL_SCALE, offset=tuple(g["offset"][i]), method="auto")
        out[i] = img.array
    return out, time.perf_counter() - t0, time.process_time() - c0


def lumos_stamps(g: dict, size: int, repeat: int = 3, **kwargs
                 ) -> tuple[np.ndarray, float, float]:
    """Draw with the lumos renderer; returns (stamps, best wall s, best CPU s of ``repeat``)."""
    renderer = SersicRenderer(size=size, pixel_scale=PIXEL_SCALE, **kwargs)
    psf = MoffatPSF(g["fwhm"], g["beta"])
    renderer.render(g["r50"][:8], g["n"][:8], g["q"][:8], g["pa"][:8],
                    psf[torch.arange(min(8, len(psf)))])  # tables, grids
    wall = cpu = np.inf
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = renderer.render(g["r50"], g["n"], g["q"], g["pa"], psf, offset=g["offset"])
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return out.double().numpy(), wall, cpu


def accuracy(ours: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per galaxy: relative stamp-sum difference, max |pixel difference| / reference peak."""
    flux_err = np.abs(ours.sum(axis=(1, 2)) / ref.sum(axis=(1, 2)) - 1)
    pix_err = np.abs(ours - ref).max(axis=(1, 2)) / ref.max(axis=(1, 2))
    return flux_err, pix_err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch thread counts to time lumos with")
    parser.add_argument("--size", type=int, default=60)
    parser.add_argument("--reference", choices=["default", "strict"], default="default")
    parser.add_argument("--corners", action="store_true", help="also run the corner set")
    parser.add_argument("--fold", type=float, default=1.5)
    parser.add_argument("--fft-size", type=int, default=None)
    args = parser.parse_args()

    sets = {"random": random_galaxies(args.n, np.random.default_rng(args.seed))}
    if args.corners:
        sets["corners"] = corner_galaxies()
    print(f"torch {torch.__version__}, stamp {args.size}x{args.size}, "
          f"reference GalSim {args.reference} gsparams, n quantised to 0.05; "
          f"rates in stamps/s from wall time (CPU time in brackets); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    for name, g in sets.items():
        torch.set_num_threads(1)
        ref, gs_wall, gs_cpu = galsim_stamps(g, args.size, args.reference == "strict")
        count = len(g["r50"])
        ours = None
        for threads in args.threads:
            torch.set_num_threads(threads)
            ours, wall, cpu = lumos_stamps(g, args.size, fold=args.fold, fft_size=args.fft_size)
            rows.append((name, count, threads, count / gs_wall, count / gs_cpu, count / wall,
                         count / cpu, gs_wall / wall))
        fe, pe = accuracy(ours, ref)
        print(f"\n[{name}] {count} galaxies: accuracy against GalSim")
        print("| quantity | median | 99th pct | max | fraction within spec |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| rel. stamp-flux error | {np.median(fe):.2e} | {np.quantile(fe, 0.99):.2e} "
              f"| {fe.max():.2e} | {np.mean(fe < 5e-3):.1%} within 0.5% |")
        print(f"| max pixel error / peak | {np.median(pe):.2e} | {np.quantile(pe, 0.99):.2e} "
              f"| {pe.max():.2e} | {np.mean(pe < 1e-2):.1%} within 1% |")
        for i in np.argsort(fe)[-2:][::-1]:
            print(f"  worst flux: r50={g['r50'][i]:.3f} n={g['n'][i]:.2f} q={g['q'][i]:.2f} "
                  f"fwhm={g['fwhm'][i]:.2f} beta={g['beta'][i]:.2f}: flux {fe[i]:.2e} "
                  f"pixel {pe[i]:.2e}")
    print("\n| set | N | torch threads | GalSim stamps/s | lumos stamps/s | speed ratio (wall) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, count, threads, gw, gc, lw, lc, ratio in rows:
        print(f"| {name} | {count} | {threads} | {gw:.1f} ({gc:.1f}) | {lw:.0f} ({lc:.0f}) "
              f"| {ratio:.0f}x |")
    torch.set_num_threads(1)
    g = sets["random"]
    compact = dict(g, r50=np.exp(np.random.default_rng(2).uniform(np.log(0.1), np.log(1.5),
                                                                  len(g["r50"]))))
    _, wall, cpu = lumos_stamps(compact, args.size, repeat=2)
    print(f"lumos {args.size}x{args.size}, typical sizes (r50 0.1-1.5 arcsec), 1 thread: "
          f"{len(g['r50']) / wall:.0f} stamps/s ({len(g['r50']) / cpu:.0f} CPU)")
    for size in (96, 100):
        _, wall, cpu = lumos_stamps(g, size, repeat=2)
        print(f"lumos {size}x{size} stamps, 1 thread: {len(g['r50']) / wall:.0f} stamps/s "
              f"({len(g['r50']) / cpu:.0f} CPU)")


if __name__ == "__main__":
    main()
