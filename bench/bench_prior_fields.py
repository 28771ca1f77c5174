"""Benchmark: the empirical prior's forms on field-sized sets of repeated exposures.

A field's catalogue holds a few hundred galaxies per band, and ``--prior auto`` learns the prior
from them alone. This bench simulates ``--fields`` fields of ``--n`` galaxies in one band
(default NB685; TEAHUPOO galaxies, the realistic catalogue errors of the training, one
catalogue shared by the four exposures, each exposure with its own PSF, offsets and noise),
measures each exposure with a likelihood model and prints, per catalogue i bin and pooled over
the fields, for the binned (one Gaussian per i bin) and the smooth (one Gaussian following i,
:func:`lumos.deconvolution.fit_linear_gaussian`) empirical prior: the 68% coverage of each
exposure's posterior (``lumos measure --prior auto [--prior-form smooth]``), and the 68%
coverage and sigma68 of ``(flux - f_true) / f_true`` of the four-exposure co-add
(``lumos coadd --prior auto [--prior-form smooth]``).
Beside them, on the same exposures, the sigma68 of aperture photometry's inverse-variance
co-add (Eq. 21) and of lumos's co-added likelihood alone (``flux_like`` of the co-add, no
prior), as ``bench_pdf_fields.py`` prints them for the GalSim field.

The galaxies' colours are the population's (``--colours population``) or replaced, to ask
how each form copes when the real colours differ from the simulation's, by
``f = K S(i) exp(s z + g (i - 20.5))`` with ``S(i) = 10^(-0.4 (i - 20))``, ``K`` the
population's median colour, ``z`` standard normal: ``narrow`` (s = 0.05), ``medium``
(0.15), ``trend`` (0.15, and 0.3 mag of colour change over 5 mag: g = 0.3 ln 10 / 12.5 per mag),
``broad`` (0.4). The seeds default, 64600001 onwards, are used by no training, calibration or
validation.

Run: ``.venv/bin/python bench/bench_prior_fields.py [--model PATH] [--fields 40] [--n 225]
[--band NB685] [--colours population|narrow|medium|trend|broad] [--seed 64600001]``
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import FIELD_I_EDGES, i_bin_counts, i_bin_header
from astropy.table import Table

from lumos.backgrounds import SyntheticSky
from lumos.bands import PAUS_BANDS
from lumos.bayes import apply_prior, coadd_likelihoods
from lumos.coadd import inverse_variance_coadd
from lumos.flags import UNUSABLE
from lumos.model_io import load_default_model, load_model
from lumos.prior import EMPIRICAL_FORMS, PriorChoice, magnitude_scale
from lumos.simconfig import CatalogueErrors, apply_catalogue_errors
from lumos.stats import sigma68
from lumos.validation.draws import experiment_targets
from lumos.validation.measuring import measure_all
from lumos.validation.scenes import another_exposure, observe

#: Catalogue i-magnitude bins of the report (those of the GalSim field checks).
I_EDGES = FIELD_I_EDGES
#: (scatter in ln flux, change of ln flux per magnitude of i) of each colour scenario.
COLOURS = {"population": None, "narrow": (0.05, 0.0), "medium": (0.15, 0.0),
           "trend": (0.15, 0.3 * np.log(10.0) / 2.5 / 5.0), "broad": (0.4, 0.0)}
FORMS = tuple(sorted(EMPIRICAL_FORMS))  # binned, smooth
LIKELIHOOD = ("flux_like", "flux_like_err", "flux_shared_err", "like_weight", "like_mean",
              "like_sigma")


def field_tables(model, n: int, band: int, colours: str, seed: int):
    """The four exposures' likelihood tables of one simulated field, its truth, and the
    aperture-photometry inverse-variance co-add of the same exposures."""
    rng, first, _ = experiment_targets("prior-fields", n, seed, band=np.full(n, band))
    if COLOURS[colours] is not None:
        scatter, slope = COLOURS[colours]
        scale = magnitude_scale(first.i_mag)
        k = np.median(first.flux / scale)
        z = rng.standard_normal(n)
        first = first.replace(flux=k * scale * np.exp(scatter * z + slope * (first.i_mag - 20.5)))
    errors = CatalogueErrors.realistic()
    catalogue = apply_catalogue_errors(errors, first.r50, first.n, first.q, first.pa,
                                       first.i_mag, first.psf_fwhm, rng)  # fmt: skip
    sky = SyntheticSky()
    tables, aperture = [], []
    for k in range(4):
        exposure = first if k == 0 else another_exposure(first, rng)
        cat = dict(catalogue)
        cat["psf_fwhm"] = exposure.psf_fwhm * np.exp(errors.psf_fwhm_frac
                                                     * rng.standard_normal(n))  # fmt: skip
        measured = measure_all(model, observe(exposure, sky, rng, catalogue=cat), ("aperture",))
        res = measured["lumos"]
        aperture.append(measured["aperture"])
        t = Table({"id": np.arange(n), "band": np.full(n, tuple(PAUS_BANDS)[band]),
                   "i_mag": first.i_mag, "flags": res["flags"]})  # fmt: skip
        for name in LIKELIHOOD:
            t[name] = res[name]
        t.meta.update({"EXPTIME": 0.0, "GAIN": 1.0})
        tables.append(t)
    flux = np.array([a["flux"] for a in aperture])
    err = np.array([a["flux_err"] for a in aperture])
    ok = np.array([(a["flags"] & int(UNUSABLE)) == 0 for a in aperture]) & np.isfinite(flux) \
        & np.isfinite(err) & (err > 0)  # fmt: skip
    group = np.broadcast_to(np.arange(n), flux.shape).ravel()
    ivar = inverse_variance_coadd(group, flux.ravel(), err.ravel(), ok.ravel(), n)[0]
    return tables, first.i_mag, first.flux, ivar


def _per_bin(i_mag, values, fn) -> list[float]:
    return [float(fn(values[(i_mag >= a) & (i_mag < b)]))
            for a, b in zip(I_EDGES[:-1], I_EDGES[1:], strict=True)]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a likelihood model (default: the shipped one)")
    parser.add_argument("--fields", type=int, default=40)
    parser.add_argument("--n", type=int, default=225, help="galaxies per field")
    parser.add_argument("--band", default="NB685")
    parser.add_argument("--colours", choices=tuple(COLOURS), default="population")
    parser.add_argument("--seed", type=int, default=64_600_001, help="seed of the first field")
    args = parser.parse_args(argv)
    model = (load_default_model() if args.model is None else load_model(args.model)).eval()
    band = tuple(PAUS_BANDS).index(args.band)
    keep = {f: {"single": [], "coadd": [], "rel": []} for f in FORMS}
    i_single, i_coadd, rel_aperture, rel_like = [], [], [], []
    for field in range(args.fields):
        tables, i_mag, truth, ivar = field_tables(model, args.n, band, args.colours,
                                                  args.seed + field)  # fmt: skip
        i_single += [i_mag] * len(tables)
        i_coadd.append(i_mag)
        rel_aperture.append((ivar - truth) / truth)
        for form in FORMS:
            choice = PriorChoice("auto", form)
            for t in tables:
                p = apply_prior(t.copy(), choice)
                keep[form]["single"].append((p["flux_q16"] <= truth) & (truth <= p["flux_q84"]))
            co = coadd_likelihoods(tables, prior=choice)
            co.sort("id")
            keep[form]["coadd"].append((co["flux_q16"] <= truth) & (truth <= co["flux_q84"]))
            keep[form]["rel"].append((np.asarray(co["flux"]) - truth) / truth)
            if form == FORMS[0]:  # the likelihood co-add does not depend on the prior
                rel_like.append((np.asarray(co["flux_like"]) - truth) / truth)
    i_single, i_coadd = np.concatenate(i_single), np.concatenate(i_coadd)
    print(f"{args.fields} fields x {args.n} galaxies in {args.band}, 4 exposures, colours "
          f"{args.colours}, seeds {args.seed}+, {args.model or 'shipped model'}, prior auto "
          "(empirical)\n")
    print(i_bin_header(("empirical prior", "quantity")))
    for form in FORMS:
        rows = (("one exposure, 68% coverage", i_single, keep[form]["single"], np.mean, "{:.3f}"),
                ("co-add of 4, 68% coverage", i_coadd, keep[form]["coadd"], np.mean, "{:.3f}"),
                ("co-add of 4, sigma68", i_coadd, keep[form]["rel"], sigma68, "{:.4f}"))
        for name, i_mag, values, fn, fmt in rows:
            cells = _per_bin(i_mag, np.concatenate(values).astype(float), fn)
            print(f"| {form} | {name} | " + " | ".join(fmt.format(c) for c in cells) + " |")
    for name, values in (("aperture, co-add of 4 (Eq. 21), sigma68", rel_aperture),
                         ("lumos likelihood alone, co-add of 4, sigma68", rel_like)):
        cells = _per_bin(i_coadd, np.concatenate(values), sigma68)
        print(f"| - | {name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    print(f"\ngalaxies per bin: {i_bin_counts(i_coadd, I_EDGES)}")


if __name__ == "__main__":
    main()
