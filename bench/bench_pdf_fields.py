"""Honest PDFs on exposures lumos did not simulate: the GalSim fields of ../shared/data.

Everything is measured through the command line (``lumos measure``, ``lumos coadd``), with
the model given by ``--model`` (default the shipped one) and aperture photometry beside it:

1. ``field-nb685-repeat`` (225 galaxies, 4 exposures, PSF FWHM 0.70-1.10 arcsec): 68%
   coverage of the posterior (q16-q84) and of the likelihood interval
   (``flux_like +- hypot(flux_like_err, flux_shared_err)``) per i bin; sigma68 of D
   (Eq. 19) over the 6 pairs from ``flux_like`` / ``flux_like_err`` (aperture: ``flux`` /
   ``flux_err``); the co-add of the four exposures (``lumos coadd``): 68% coverage, sigma68
   and median bias of (f - f_true) / f_true against aperture's inverse-variance co-add, and
   the sigma68 of lumos's co-added likelihood alone (its mean without the prior, and Eq. 21 of
   ``flux_like``), which separates the pixels' precision from the prior's; and two limits
   from the truth: the Cramer-Rao bound of an unbiased co-add (``crb_sigma`` of each
   exposure's truth table, the bound with the true profile and sky, combined in inverse
   variance) and that bound's likelihood times an oracle prior (one Gaussian in ln f per i
   bin, its mean linear in i, fitted to the true fluxes), what no method without better
   knowledge of the galaxies can beat.
2. Leakage: every catalogue ``i_mag`` shifted by +-0.5 mag, exposure e1 measured again:
   median |change| of ``flux_like`` and ``flux`` per i bin.
3. ``field-nb685-sersic`` and ``field-nb685``: sigma68 and median bias per i bin of lumos
   and aperture, and the Cramer-Rao limit of an unbiased measurement.

These fields check the method; nothing is trained, calibrated or chosen on them.

Usage::

    python bench/bench_pdf_fields.py [--model PATH] [--prior auto]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import FIELD_I_EDGES, SHARED_DATA, efficient_sigma68, measure_folder, run_lumos
from astropy.table import Table

from lumos.stats import P16, P84, sigma68

DATA = SHARED_DATA
BINS = tuple(zip(FIELD_I_EDGES[:-1], FIELD_I_EDGES[1:], strict=True))


def _bins(values: np.ndarray, i_mag: np.ndarray, fn) -> list[float]:
    return [fn(values[(i_mag >= lo) & (i_mag < hi)]) for lo, hi in BINS]


def _fmt(values, pattern="{:.3f}") -> str:
    return " | ".join(pattern.format(v) for v in values)


def _header(title: str) -> None:
    print(f"\n{title}\n| quantity | " + " | ".join(f"i {lo:g}-{hi:g}" for lo, hi in BINS)
          + " | all |\n|---|" + "---|" * (len(BINS) + 1))


def _row(name: str, per_bin, overall, pattern="{:.3f}") -> None:
    print(f"| {name} | {_fmt(per_bin, pattern)} | {pattern.format(overall)} |")


def _median_bias(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def _s68(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return sigma68(x) if x.size > 2 else float("nan")


def _bootstrap_row(name: str, stat, i_mag: np.ndarray, n: int = 2000, seed: int = 0) -> None:
    """68% interval of ``stat(indices)`` over resamples of the galaxies of each i bin.

    Each resample draws a bin's galaxies with replacement, every galaxy with all its rows
    (its exposures), so the interval shows what the number of galaxies can decide.
    """
    rng = np.random.default_rng(seed)
    cells = []
    for lo, hi in [*BINS, (-np.inf, np.inf)]:
        sel = np.flatnonzero((i_mag >= lo) & (i_mag < hi))
        vals = [stat(rng.choice(sel, sel.size)) for _ in range(n)] if sel.size else [np.nan]
        cells.append(f"{np.nanquantile(vals, P16):.3f}-{np.nanquantile(vals, P84):.3f}")
    print(f"| {name} | " + " | ".join(cells) + " |")


def repeat_field(tmp: Path, model: str | None, prior: str, root: Path | None = None) -> None:
    """The repeat-field tables; ``root`` holds e1..e4 (default ``field-nb685-repeat``)."""
    root = DATA / "field-nb685-repeat" if root is None else root
    truth = Table.read(root / "e1" / "truth.fits")
    truth.sort("id")
    ft = np.asarray(truth["flux_true"], float)
    tabs = {"lumos": [], "aperture": []}
    paths = {"lumos": [], "aperture": []}
    for e in ("e1", "e2", "e3", "e4"):
        for method in tabs:
            out = tmp / f"repeat-{e}-{method}.fits"
            t = measure_folder(root / e, out, method, model, prior)
            t.sort("id")
            tabs[method].append(t)
            paths[method].append(str(out))
    lum = tabs["lumos"]
    im = np.asarray(lum[0]["i_mag"], float)
    n = len(ft)
    _header(f"{root.name}, single exposures (4 x {n} rows) and pairs (6 x {n})")
    cov = np.mean([((t["flux_q16"] <= ft) & (ft <= t["flux_q84"])).astype(float)
                   for t in lum], axis=0)  # fmt: skip
    _row("lumos posterior 68% coverage", _bins(cov, im, np.mean), cov.mean())
    _bootstrap_row("  its bootstrap 68% interval (galaxies)", lambda k: cov[k].mean(), im)
    err = [np.hypot(t["flux_like_err"], t["flux_shared_err"]) for t in lum]
    cov_l = np.mean([(np.abs(t["flux_like"] - ft) <= e).astype(float)
                     for t, e in zip(lum, err, strict=True)], axis=0)  # fmt: skip
    _row("lumos likelihood 68% coverage", _bins(cov_l, im, np.mean), cov_l.mean())
    ap = tabs["aperture"]
    cov_a = np.mean([(np.abs(t["flux"] - ft) <= t["flux_err"]).astype(float) for t in ap],
                    axis=0)  # fmt: skip
    _row("aperture 68% coverage", _bins(cov_a, im, np.mean), cov_a.mean())
    rel_a = (np.asarray(ap[0]["flux"], float) - ft) / ft
    crb_1 = np.asarray(truth["crb_sigma"], float) / ft
    for name, keep in (("aperture (e1) sigma68 / Cramer-Rao limit", np.ones(n, bool)),
                       ("  galaxies without a neighbour", np.asarray(truth["neighbour"]) == 0)):
        limit = efficient_sigma68(crb_1[keep], im[keep])
        mine = [*_bins(rel_a[keep], im[keep], _s68), _s68(rel_a[keep])]
        ratio = [a / b for a, b in zip(mine, limit, strict=True)]
        _row(name, ratio[:-1], ratio[-1])
    for name, key, ekey, ts in (("lumos D (flux_like)", "flux_like", "flux_like_err", lum),
                                ("aperture D", "flux", "flux_err", ap)):
        d = np.array([(ts[a][key] - ts[b][key]) / np.hypot(ts[a][ekey], ts[b][ekey])
                      for a in range(4) for b in range(a + 1, 4)])  # fmt: skip
        per = [_s68(d[:, (im >= lo) & (im < hi)].ravel()) for lo, hi in BINS]
        _row(f"sigma68 of {name}", per, _s68(d.ravel()))
    out_l, out_a = tmp / "coadd-lumos.fits", tmp / "coadd-aperture.fits"
    run_lumos(["coadd", *paths["lumos"], "--out", str(out_l), "--prior", prior])
    run_lumos(["coadd", *paths["aperture"], "--out", str(out_a)])
    cl, ca = Table.read(out_l), Table.read(out_a)
    cl.sort("id")
    ca.sort("id")
    imc = np.asarray(cl["i_mag"], float)
    _header(f"{root.name}, co-add of 4 exposures (prior: {cl.meta.get('PRIOR')})")
    cc = ((cl["flux_q16"] <= ft) & (ft <= cl["flux_q84"])).astype(float)
    _row("lumos co-add 68% coverage", _bins(cc, imc, np.mean), cc.mean())
    _bootstrap_row("  its bootstrap 68% interval (galaxies)", lambda k: cc[k].mean(), imc)
    ca_cov = (np.abs(ca["flux_ivar"] - ft) <= ca["flux_ivar_err"]).astype(float)
    _row("aperture ivar co-add 68% coverage", _bins(ca_cov, imc, np.mean), ca_cov.mean())
    rl = (np.asarray(cl["flux"], float) - ft) / ft
    ra = (np.asarray(ca["flux_ivar"], float) - ft) / ft
    s_l, s_a = _bins(rl, imc, _s68), _bins(ra, imc, _s68)
    _row("lumos co-add sigma68", s_l, _s68(rl))
    _row("aperture ivar co-add sigma68", s_a, _s68(ra))
    _row("ratio lumos / aperture", [a / b for a, b in zip(s_l, s_a, strict=True)],
         _s68(rl) / _s68(ra))  # fmt: skip
    _bootstrap_row("  its bootstrap 68% interval (galaxies)",
                   lambda k: _s68(rl[k]) / _s68(ra[k]), imc)  # fmt: skip
    for name, column in (("lumos likelihood co-add sigma68 (no prior)", "flux_like"),
                         ("lumos ivar co-add of flux_like sigma68 (Eq. 21)", "flux_ivar")):
        r = (np.asarray(cl[column], float) - ft) / ft
        s_r = _bins(r, imc, _s68)
        _row(name, s_r, _s68(r))
        _row("  its ratio to aperture", [a / b for a, b in zip(s_r, s_a, strict=True)],
             _s68(r) / _s68(ra))  # fmt: skip
    crb = []
    for e in ("e1", "e2", "e3", "e4"):
        t = Table.read(root / e / "truth.fits")
        t.sort("id")
        crb.append(np.asarray(t["crb_sigma"], float))
    crb = np.array(crb)
    crb_rel = 1.0 / np.sqrt((1.0 / crb**2).sum(axis=0)) / ft
    for name, limit in (
            ("Cramer-Rao limit of an unbiased co-add", efficient_sigma68(crb_rel, imc)),
            ("  that likelihood x oracle colour prior", efficient_sigma68(crb_rel, imc, ft))):
        _row(name, limit[:-1], limit[-1])
        _row("  its ratio to aperture", [a / b for a, b in zip(limit, s_a, strict=False)],
             limit[-1] / _s68(ra))  # fmt: skip
    _row("lumos co-add bias", _bins(rl, imc, _median_bias), _median_bias(rl), "{:+.4f}")
    _row("aperture co-add bias", _bins(ra, imc, _median_bias), _median_bias(ra), "{:+.4f}")


def leakage(tmp: Path, model: str | None, prior: str) -> None:
    folder = DATA / "field-nb685-repeat" / "e1"
    cat = Table.read(folder / "catalogue.fits")
    base = measure_folder(folder, tmp / "leak-0.fits", "lumos", model, prior)
    im = np.asarray(base["i_mag"], float)
    _header("leakage: every catalogue i_mag shifted, e1; median |relative change|")
    for shift in (-0.5, 0.5):
        shifted = cat.copy()
        shifted["i_mag"] = shifted["i_mag"] + shift
        path = tmp / f"cat{shift:+.1f}.fits"
        shifted.write(path, overwrite=True)
        t = measure_folder(folder, tmp / f"leak{shift:+.1f}.fits", "lumos", model, prior, path)
        for key in ("flux_like", "flux"):
            rel = np.abs(np.asarray(t[key], float) / np.asarray(base[key], float) - 1.0)
            _row(f"{key}, i_mag {shift:+.1f}", _bins(rel, im, _median_bias), _median_bias(rel),
                 "{:.4f}")  # fmt: skip


def single_field(tmp: Path, name: str, model: str | None, prior: str,
                 folder: Path | None = None) -> None:
    """One exposure's accuracy; ``folder`` holds it (default ``DATA / name``)."""
    folder = DATA / name if folder is None else folder
    truth = Table.read(folder / "truth.fits")
    truth.sort("id")
    ft = np.asarray(truth["flux_true"], float)
    catalogue = Table.read(folder / "catalogue.fits")
    catalogue.sort("id")
    im = np.asarray(catalogue["i_mag"], float)
    rel = {}
    for method in ("lumos", "aperture"):
        t = measure_folder(folder, tmp / f"{name}-{method}.fits", method, model, prior)
        t.sort("id")
        rel[method] = (np.asarray(t["flux"], float) - ft) / ft
    _header(f"{name}: (f - f_true) / f_true")
    for method, r in rel.items():
        _row(f"{method} sigma68", _bins(r, im, _s68), _s68(r))
    for method, r in rel.items():
        _row(f"{method} bias", _bins(r, im, _median_bias), _median_bias(r), "{:+.4f}")
    limit = efficient_sigma68(np.asarray(truth["crb_sigma"], float) / ft, im)
    _row("Cramer-Rao limit (unbiased)", limit[:-1], limit[-1])
    lum, ap = _bins(rel["lumos"], im, _s68), _bins(rel["aperture"], im, _s68)
    _row("ratio lumos / aperture", [a / b for a, b in zip(lum, ap, strict=True)],
         _s68(rel["lumos"]) / _s68(rel["aperture"]))  # fmt: skip
    _bootstrap_row("  its bootstrap 68% interval (galaxies)",
                   lambda k: _s68(rel["lumos"][k]) / _s68(rel["aperture"][k]), im)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model (default: the shipped one)")
    parser.add_argument("--prior", default="auto", help="prior of lumos measure / coadd")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: nothing to measure")
    print(f"model: {args.model or 'shipped'}; prior: {args.prior}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repeat_field(tmp, args.model, args.prior)
        leakage(tmp, args.model, args.prior)
        single_field(tmp, "field-nb685-sersic", args.model, args.prior)
        single_field(tmp, "field-nb685", args.model, args.prior)


if __name__ == "__main__":
    main()
