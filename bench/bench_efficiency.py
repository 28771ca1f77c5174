"""Benchmark: lumos's precision on exact single-Sersic galaxies, split into noise and shape.

With an exact catalogue lumos is 1.2-1.5x the Cramer-Rao bound at i 18-21 on GalSim's
exact-Sersic fields (``bench_galsim_repeat.py --kind sersic``). This bench asks where the
excess comes from, on lumos's own renderer: ``--n`` TEAHUPOO galaxies in one band (default
NB685), single Sersic, PSF FWHM 0.85 arcsec and beta 3.5, no neighbours, the clean synthetic
sky (:func:`lumos.validation.scenes.clean_sky`), each observed *twice* with the same PSF,
offset and catalogue and new noise. For ``e1``, ``e2`` the two relative errors
``(f - f_true) / f_true`` of a galaxy, per i bin:

* ``sigma68``: of ``e1`` (the scatter a field shows);
* ``noise``: sigma68 of ``(e1 - e2) / sqrt(2)``, what changes with the noise;
* ``shape``: ``sqrt(sigma68^2 - noise^2)``, what a galaxy keeps from one noise draw to the
  next (a bias that depends on its shape and flux), 0 where the noise holds it all;

for lumos's ``flux_like`` (no prior), aperture photometry and the oracle weighted sum (the
true profile, sky and flux: the best linear estimate, at the Cramer-Rao bound for these
isolated galaxies); and two bounds (:func:`bounds`): the Cramer-Rao bound with the profile
known, and with its size, index, axis ratio, angle, PSF width and position fitted from the
same pixels under Gaussian priors as wide as the training's catalogue errors, what a flux
measured by a method that does not trust the catalogue profile more than the training did
cannot beat. ``--catalogue realistic`` gives both observations one catalogue with the
training's errors (:meth:`lumos.simconfig.CatalogueErrors.realistic`) instead of the truth.
The seed default, 73000001, is used by no training, calibration or validation.

Run: ``.venv/bin/python bench/bench_efficiency.py [--model PATH] [--n 8000] [--band NB685]
[--catalogue exact|realistic] [--seed 73000001]``
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import FIELD_I_EDGES, efficient_sigma68, i_bin_counts, i_bin_header

from lumos.bands import PAUS_BANDS
from lumos.model_io import load_default_model, load_model
from lumos.simconfig import CatalogueErrors, apply_catalogue_errors
from lumos.stats import sigma68
from lumos.validation.draws import experiment_targets
from lumos.validation.measuring import measure_all
from lumos.validation.scenes import clean_sky, observe, render_profiles

METHODS = (("lumos", "flux_like"), ("aperture", "flux"), ("weighted_oracle", "flux"))
#: The profile parameters a catalogue gets wrong, their finite-difference steps and the
#: training's errors in them (``CatalogueErrors.realistic()`` and stage 7's 0.15 px
#: position error): ln r50, ln n, q, pa (degrees), ln PSF FWHM, x and y offsets (pixels).
NUISANCE = (("ln r50", 0.02, 0.10), ("ln n", 0.02, 0.15), ("q", 0.01, 0.05),
            ("pa", 1.0, 5.0), ("ln fwhm", 0.02, 0.03), ("dx", 0.05, 0.15), ("dy", 0.05, 0.15))


def _profiles(t, k: int, step: float) -> np.ndarray:
    """Unit-flux profiles of targets ``t`` with nuisance parameter ``k`` moved by ``step``."""
    r50, n, q, pa, fwhm = t.r50.copy(), t.n.copy(), t.q.copy(), t.pa.copy(), t.psf_fwhm.copy()
    offset = t.offset.copy()
    if k == 0:
        r50 = r50 * np.exp(step)
    elif k == 1:
        n = n * np.exp(step)
    elif k == 2:
        q = np.clip(q + step, 0.05, 1.0)
    elif k == 3:
        pa = pa + step
    elif k == 4:
        fwhm = fwhm * np.exp(step)
    else:
        offset[:, k - 5] += step
    return render_profiles(r50, n, q, pa, fwhm, t.psf_beta, offset)


def bounds(targets, obs, read_noise: float, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Relative Cramer-Rao bounds of each galaxy's flux: with the profile known, and with its
    :data:`NUISANCE` parameters fitted too under Gaussian priors of the training's errors.

    The Fisher matrix of (f, theta) from the noiseless model ``f P(theta) + sky`` with pixel
    variance ``sky + f P + read_noise^2`` (derivatives by central differences), plus the
    priors' precision on theta; the bound is ``sqrt((I^-1)_ff)``.
    """
    n = len(targets)
    exact, marginal = np.empty(n), np.empty(n)
    prior = np.diag([0.0] + [1.0 / s**2 for _, _, s in NUISANCE])
    for lo in range(0, n, chunk):
        t = targets[lo:lo + chunk]
        f = t.flux.astype(float)[:, None]
        p0 = obs.profile_true[lo:lo + chunk].reshape(len(t), -1).astype(float)
        sky = np.asarray(obs.cutouts.true_background[lo:lo + chunk], float).reshape(len(t), -1)
        var = sky + f * p0 + read_noise**2
        grads = [p0]
        for k, (_, h, _) in enumerate(NUISANCE):
            up = _profiles(t, k, h).reshape(len(t), -1).astype(float)
            down = _profiles(t, k, -h).reshape(len(t), -1).astype(float)
            grads.append(f * (up - down) / (2.0 * h))
        g = np.stack(grads, axis=1)  # (m, 1 + K, pixels)
        fisher = np.einsum("mip,mjp->mij", g / var[:, None, :], g)
        exact[lo:lo + chunk] = 1.0 / np.sqrt(fisher[:, 0, 0])
        marginal[lo:lo + chunk] = np.sqrt(np.linalg.inv(fisher + prior)[:, 0, 0])
    return exact / targets.flux, marginal / targets.flux


def split(e1: np.ndarray, e2: np.ndarray) -> tuple[float, float, float]:
    """(sigma68 of ``e1``, its noise part, its per-galaxy part) of two observations' errors."""
    ok = np.isfinite(e1) & np.isfinite(e2)
    total = sigma68(e1[ok]) if ok.sum() > 2 else float("nan")
    noise = sigma68((e1[ok] - e2[ok]) / np.sqrt(2.0)) if ok.sum() > 2 else float("nan")
    return total, noise, float(np.sqrt(max(total**2 - noise**2, 0.0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a likelihood model (default: the shipped one)")
    parser.add_argument("--n", type=int, default=8000, help="galaxies")
    parser.add_argument("--band", default="NB685")
    parser.add_argument("--catalogue", choices=("exact", "realistic"), default="exact")
    parser.add_argument("--seed", type=int, default=73_000_001)
    args = parser.parse_args(argv)
    model = (load_default_model() if args.model is None else load_model(args.model)).eval()
    band = np.full(args.n, tuple(PAUS_BANDS).index(args.band))
    rng, targets, _ = experiment_targets("efficiency", args.n, args.seed, band=band,
                                         psf_fwhm_range=(0.85, 0.85),
                                         psf_beta_range=(3.5, 3.5))  # fmt: skip
    catalogue = None
    if args.catalogue == "realistic":
        t = targets
        catalogue = apply_catalogue_errors(CatalogueErrors.realistic(), t.r50, t.n, t.q, t.pa,
                                           t.i_mag, t.psf_fwhm, rng)  # fmt: skip
    sky = clean_sky()
    rel = {name: [] for name, _ in METHODS}
    for _ in range(2):
        obs = observe(targets, sky, rng, catalogue=catalogue)
        measured = measure_all(model, obs, ("aperture", "weighted_oracle"))
        for name, column in METHODS:
            flux = np.asarray(measured[name][column], float)
            rel[name].append(flux / targets.flux - 1.0)
    crb, crb_marginal = bounds(targets, obs, float(getattr(sky, "read_noise", 5.0)))
    i_mag = targets.i_mag
    print(f"{args.n} single-Sersic galaxies in {args.band}, PSF 0.85 arcsec, clean sky, "
          f"{args.catalogue} catalogue, each observed twice; seed {args.seed}; "
          f"{args.model or 'shipped model'}\n")
    print(i_bin_header(("method", "quantity")))
    edges = FIELD_I_EDGES
    cells = {}
    for name, _ in METHODS:
        e1, e2 = rel[name]
        parts = [split(e1[k], e2[k]) for k in
                 ((i_mag >= lo) & (i_mag < hi) for lo, hi in zip(edges[:-1], edges[1:],
                                                                  strict=True))]  # fmt: skip
        cells[name] = parts
        for j, label in enumerate(("sigma68", "noise", "shape")):
            print(f"| {name} | {label} | " + " | ".join(f"{p[j]:.4f}" for p in parts) + " |")
    for j, label in enumerate(("sigma68", "noise")):
        ratio = [a[j] / b[j] for a, b in zip(cells["lumos"], cells["weighted_oracle"],
                                             strict=True)]  # fmt: skip
        print(f"| lumos / oracle | {label} | " + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    limits = {}
    for label, rel_bound in (("Cramer-Rao, profile known", crb),
                             ("Cramer-Rao, profile fitted within the training's errors",
                              crb_marginal)):
        limits[label] = efficient_sigma68(rel_bound, i_mag, n=200)[:-1]
        print(f"| bound | {label} | " + " | ".join(f"{v:.4f}" for v in limits[label]) + " |")
    a, b = limits.values()
    print("| bound | ratio fitted / known | " + " | ".join(f"{y / x:.3f}" for x, y in zip(a, b,
                                                                                        strict=True))
          + " |")
    print(f"\ngalaxies per bin: {i_bin_counts(i_mag)}")


if __name__ == "__main__":
    main()
