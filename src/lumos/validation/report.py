"""``report.md`` of a validation run: tables of the metrics with the plots embedded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .metrics import CALIBRATION_TOLERANCES, COVERAGE68, COVERAGE95

__all__ = ["write_report", "render_report", "accuracy_table"]

_DEBLEND_DISTANCES = (0, 1, 2, 3, 4, 6, 8, 10, 12, 15, 20, 25, 30)


def _f(value, fmt: str = ".3f", scale: float = 1.0, none: str = "-") -> str:
    if value is None:
        return none
    return format(value * scale, fmt)


def _pct(value, fmt: str = ".1f") -> str:
    return _f(value, fmt, 100.0)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _section(title: str, text: str, header: Sequence[str], rows: Sequence[Sequence[str]],
             figures: dict[str, str]) -> list[str]:
    """A section of the report: its title, one paragraph, a table and figures (alt text ->
    file name)."""
    lines = [title, "", text, "", *_table(header, rows)]
    for alt, name in figures.items():
        lines += [f"![{alt}]({name})", ""]
    return lines


def _bins(edges: Sequence[float]) -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _labels(m: dict) -> dict:
    return m.get("methods", {})


def accuracy_table(metrics: dict, subset: str = "", experiment: str = "accuracy") -> str:
    """The method x i-bin table: bias and sigma68 (%) per method, then the sigma68 ratios
    of lumos to the best classical method and to the oracle weighted sum (markdown).

    Parameters
    ----------
    metrics : dict
        Metrics of a validation run (``metrics.json``).
    subset : {"", "isolated"}
        All galaxies, or the isolated ones.
    experiment : {"accuracy", "catalogue_errors", "fitted_catalogue", "positions"}
        Exact catalogue, the catalogue with realistic errors, bulge + disk galaxies behind
        fits of their light with those errors, or those errors and position errors.
    """
    suffix = f"_{subset}" if subset else ""
    acc = metrics[experiment]["accuracy" + suffix]
    table = metrics[experiment]["table" + suffix]
    labels = _labels(metrics)
    bins = _bins(acc["mag_bins"])
    rows = []
    for name, v in acc["methods"].items():
        cells = [f"{_pct(b, '+.2f')} / {_pct(s, '.2f')}"
                 for b, s in zip(v["bias"], v["sigma68"], strict=True)]  # fmt: skip
        rows.append([labels.get(name, name)] + cells)
    rows.append(["best classical (by sigma68)"]
                + [labels.get(b, b) if b else "-" for b in table["best_classical"]])  # fmt: skip
    rows.append(["sigma68 lumos / best classical"]
                + [_f(v, ".2f") for v in table["lumos_over_best"]])  # fmt: skip
    rows.append(["sigma68 lumos / oracle (linear limit)"]
                + [_f(v, ".2f") for v in table["lumos_over_oracle"]])  # fmt: skip
    n = acc["methods"][next(iter(acc["methods"]))]["n"]
    rows.append(["galaxies per bin"] + [str(k) for k in n])
    return "\n".join(_table(["method: bias / sigma68 [%]"] + [f"i {b}" for b in bins], rows))


def _header(m: dict) -> list[str]:
    model = m.get("model", {})
    sizes = m.get("sizes", {})
    lines = [
        "# lumos validation report",
        "",
        "Simulation tests of Cabayol et al. (LUMOS, sections 5, 6 and appendix C) on held-out "
        "TEAHUPOO simulations, for the model below and the classical methods of "
        "`lumos.classical` measured on the same galaxies. Fluxes are in electrons.",
        "",
        f"- lumos version: {m.get('lumos_version')}; run mode: **{m.get('mode')}**; "
        f"total runtime {_f(m.get('runtime_s', {}).get('total'), '.0f')} s",
        f"- model: `{model.get('path') or '(in memory)'}`"
        + (f", network `{model['network']}`" if "network" in model else "")
        + (f", {model['epochs_completed']} epochs" if "epochs_completed" in model else "")
        + (f", {model['n_parameters']} parameters" if "n_parameters" in model else ""),
    ]
    if model.get("weights_sha256"):
        lines.append(f"- weights SHA-256: `{model['weights_sha256']}`")
    lines.append("- validation seeds (never used in training): "
                 + ", ".join(f"{k} {v}" for k, v in m.get("seeds", {}).items()))  # fmt: skip
    lines.append("- sizes: " + ", ".join(f"{k} = {v}" for k, v in sizes.items()))
    lines.append("- runtime per experiment [s]: " + ", ".join(
        f"{k} {_f(v, '.0f')}" for k, v in m.get("runtime_s", {}).items() if k != "total"))
    lines += [
        "",
        "Reproduce: `lumos validate --model MODEL --out DIR` (full) or with `--quick` (CI size);"
        " the full run takes about 28 CPU-minutes (20-35 minutes on 2 cores), the quick run"
        " 1-2 minutes.",
        "",
    ]
    return lines


def _quick_note(m: dict) -> list[str]:
    if m.get("mode") != "quick":
        return []
    return ["> Quick run (CI size): small samples, so the numbers below are noisy; run without "
            "`--quick` for the published-size tests.", ""]  # fmt: skip


def _calibration(m: dict, experiment: str = "accuracy",
                 title: str = "## 1. Calibration of the flux PDFs (paper Fig. 6)",
                 pit_plot: bool = True) -> list[str]:  # fmt: skip
    acc = m[experiment]
    lines = [title, ""]
    cal = acc.get("calibration")
    if cal:
        tol = CALIBRATION_TOLERANCES
        ok = cal["checks"]
        rows = [
            ["PIT KS distance to uniform", _f(cal["pit_ks"]), "0",
             f"<= {tol['pit_ks']}", "pass" if ok["pit_ks"] else "**FAIL**"],
            ["68% interval coverage", _f(cal["coverage68"]), f"{COVERAGE68:.3f}",
             f"+- {tol['coverage68']}", "pass" if ok["coverage68"] else "**FAIL**"],
            ["95% interval coverage", _f(cal["coverage95"]), f"{COVERAGE95:.3f}",
             f"+- {tol['coverage95']}", "pass" if ok["coverage95"] else "**FAIL**"],
        ]  # fmt: skip
        lines += [f"{cal['n']} galaxies. The PIT is the CDF of each lumos PDF at the true "
                  "flux (truncation at zero included); calibrated PDFs give a flat histogram. "
                  "Intervals: the central 68.3% (q16-q84) and 95% (q2.5-q97.5) of each "
                  "PDF.", ""]  # fmt: skip
        lines += _table(["metric", "value", "ideal", "tolerance", "check"], rows)
        bins = _bins(acc["accuracy"]["mag_bins"])
        per = cal["per_bin"]
        lines += _table(["i bin"] + bins, [
            ["68% coverage"] + [_f(v, ".2f") for v in per["coverage68"]],
            ["PIT KS"] + [_f(v, ".3f") for v in per["pit_ks"]],
            ["galaxies"] + [str(v) for v in per["n"]],
        ])  # fmt: skip
    cc = acc.get("classical_calibration", {})
    if cc:
        lines += ["Classical methods, Gaussian error bars (PIT = Phi((f_true - f) / flux_err); "
                  "68% coverage = fraction with |f - f_true| <= flux_err):", ""]  # fmt: skip
        lines += _table(["method", "PIT KS", "68% coverage"],
                        [[_labels(m).get(k, k), _f(v["pit_ks"]), _f(v["coverage68"])]
                         for k, v in cc.items()])  # fmt: skip
    if pit_plot:
        lines += ["![PIT histogram](pit.png)", ""]
    return lines


def _accuracy_section(m: dict, experiment: str, title: str, intro: str, plot: str,
                      alt: str) -> list[str]:
    """A calibration + accuracy section of another simulation (sections 8, 10 and 12)."""
    e = m[experiment]
    lines = _calibration(m, experiment, title, pit_plot=False)
    lines[2:2] = [intro, ""]
    lines += [f"{e['n_common']} of {e['n_galaxies']} galaxies measured by every method:", "",
              accuracy_table(m, experiment=experiment), "", f"![{alt}]({plot})", ""]
    return lines


def _catalogue_errors(m: dict) -> list[str]:
    err = m["catalogue_errors"].get("errors", {})
    intro = (
        "Real external catalogues measure r50, n, q and pa with errors, and real galaxies are "
        "not single Sersic profiles. Here every method (the lumos profile channel, the "
        "apertures, the profile fit, the weights) is given catalogue parameters with "
        f"Gaussian errors: {100 * err.get('r50_frac', 0):g}% in r50, "
        f"{100 * err.get('n_frac', 0):g}% in n, {err.get('q_sigma', 0):g} in q, "
        f"{err.get('pa_sigma', 0):g} degrees in pa, {100 * err.get('psf_fwhm_frac', 0):g}% "
        f"in the PSF FWHM and {err.get('i_mag_sigma', 0):g} mag in i "
        "(`CatalogueErrors.realistic()`); everything else as in sections 1-2."
    )
    return _accuracy_section(m, "catalogue_errors",
                             "## 8. Calibration and accuracy with catalogue errors", intro,
                             "accuracy_catalogue_errors.png",
                             "bias and sigma68 against magnitude, catalogue errors")


def _fitted_catalogue(m: dict) -> list[str]:
    intro = (
        "Catalogues from deeper imaging describe a galaxy by the single Sersic profile that "
        "fits its light. Here every galaxy is a bulge (n = 4) + disk (n = 1) with its own "
        "sizes, axis ratios and misaligned position angles, and its catalogue entry is the "
        "least-squares single-Sersic fit of that light (`lumos.bulgedisk`), with the errors "
        "of section 8 on top (`SimulationConfig(two_component_fraction=1, "
        "two_component_model=\"fit\")`); everything else as in sections 1-2."
    )
    return _accuracy_section(m, "fitted_catalogue",
                             "## 10. Bulge + disk galaxies behind the single-Sersic fits of "
                             "their light", intro, "accuracy_fitted_catalogue.png",
                             "bias and sigma68 against magnitude, fitted catalogue")


def _positions(m: dict) -> list[str]:
    err = m["positions"].get("errors", {})
    intro = (
        "Forced photometry centres each method's profile or aperture where the catalogue "
        "puts the galaxy; an astrometric tie and an exposure's WCS are off by a fraction of "
        "a pixel. Here the catalogue of section 8 also has Gaussian position errors of "
        f"{err.get('position_sigma', 0):g} pixels in x and in y "
        "(`CatalogueErrors.position_sigma`; the light stays at the truth), for every method; "
        "everything else as in section 8."
    )
    return _accuracy_section(m, "positions",
                             "## 12. Calibration and accuracy with catalogue position errors",
                             intro, "accuracy_positions.png",
                             "bias and sigma68 against magnitude, position errors")


def _accuracy(m: dict) -> list[str]:
    acc = m["accuracy"]
    lines = [
        "## 2. Accuracy against i magnitude (paper Fig. 7)",
        "",
        f"{acc['n_common']} of {acc['n_galaxies']} held-out galaxies measured by every method "
        "(the comparison set). Bias = median of (f - f_true)/f_true, sigma68 = half the "
        "q16-q84 range of it (68.27%, Eq. 14); lumos uses the PDF mean. The oracle weighted "
        "sum uses the true profile, background and flux: the best any linear method can do. "
        "Unusable measurements per method: "
        + ", ".join(f"{_labels(m).get(k, k)} {v}" for k, v in acc["failures"].items()) + ".",
        "",
        accuracy_table(m),
    ]
    if "accuracy_isolated" in acc:
        lines += [
            f"Isolated galaxies only ({acc['n_isolated']}: no neighbour centred in the stamp, "
            "no close neighbour, no cosmic ray or defect in the central 10 x 10 pixels, no "
            "saturated star), where the oracle is the linear limit proper:",
            "",
            accuracy_table(m, "isolated"),
        ]
    lines += [
        "![bias and sigma68 against magnitude](accuracy_vs_mag.png)",
        "",
        "![measured against true flux](flux_vs_truth.png)",
        "",
    ]
    return lines


def _deblending(m: dict) -> list[str]:
    d = m["deblending"]
    dist = d["distance_px"]
    keep = [k for k, v in enumerate(dist) if int(v) in _DEBLEND_DISTANCES]
    rows = [[_labels(m).get(name, name)] + [_pct(b[k], "+.1f") for k in keep]
            for name, b in d["bias"].items()]  # fmt: skip
    lines = [
        "## 3. Deblending (paper Fig. 8)",
        "",
        f"An i = {d['target_i_mag']:g} target (median {d['target_flux_e']:.0f} e-) at the "
        f"stamp centre and an i = {d['neighbour_i_mag']:g} neighbour (median "
        f"{d['neighbour_flux_e']:.0f} e-) moved in one-pixel steps; NB685 fluxes from "
        f"{d.get('spectrum', 'population colours')}, 90 s, artefact-free synthetic sky, the "
        f"project renderer; the catalogue holds the target only. {d['n_pairs']} shape pairs x "
        f"{d['n_realisations']} noise realisations per distance; 'isolated' is the same "
        "target without the neighbour. Median bias [%]:",
        "",
    ]
    isolated = d.get("isolated_bias", {})
    header = ["method"] + [f"{int(dist[k])} px" for k in keep]
    if isolated:
        header.append("isolated")
        rows = [row + [_pct(isolated.get(name, float("nan")), "+.1f")]
                for row, name in zip(rows, d["bias"], strict=True)]  # fmt: skip
    lines += _table(header, rows)
    far = dist[-1] if dist else 0

    def _from(v):
        return f"{v:g} px" if v <= far else f"not within {far:g} px"

    lines += ["Distance from which on |bias| < 5%: "
              + ", ".join(f"{_labels(m).get(k, k)} {_from(v)}"
                          for k, v in d["distance_bias_below_5pct"].items()) + ".", ""]  # fmt: skip
    lines += ["![bias against neighbour distance](deblending.png)", ""]
    return lines


def _artefacts(m: dict) -> list[str]:
    a = m["artefacts"]
    sets = a["sets"]
    methods = list(next(iter(sets.values())))
    rows = []
    for kind, res in sets.items():
        rows.append([kind.replace("_", " ")] + [
            f"{_pct(res[k]['outlier_3sigma'])} / {_pct(res[k]['outlier_50pct'])}"
            for k in methods])  # fmt: skip
    return _section(
        "## 4. Artefacts and outliers",
        f"{a['n']} galaxies observed on an artefact-free sky (clean), then the same images hit "
        "by cosmic rays on the target, a scattered-light edge, or an uncatalogued neighbour "
        "3-12 pixels away; 'any' pools the three. Outliers [%]: |f - f_true| > 3 flux_err / "
        "|f - f_true| > 50% (the paper reports 10% for aperture photometry and 2% for lumos "
        "on PAUS data).",
        ["set"] + [_labels(m).get(k, k) for k in methods], rows,
        {"outlier fractions": "artefacts.png"},
    )


def _repeats(m: dict) -> list[str]:
    r = m["repeats"]
    bins = _bins(r["mag_bins"])
    rows = [[_labels(m).get(k, k), _f(v["sigma68_D"], ".2f"), _f(v["median_D"], "+.3f"),
             _pct(v["frac_abs_D_gt_3"], ".2f"), _pct(v["frac_abs_D_gt_5"], ".2f")]
            + [_f(x, ".2f") for x in v["sigma68_D_per_bin"]]
            for k, v in r["methods"].items()]  # fmt: skip
    return _section(
        "## 5. Repeated observations (paper Eq. 19, Figs. 11-12)",
        f"{r['n']} galaxies observed twice (same band and flux; independent PSF, CCD position, "
        "offset, noise and artefacts). D = (f1 - f2) / sqrt(s1^2 + s2^2) has sigma68 = 1 for "
        "calibrated, independent errors. The lumos PDFs of the two observations also share the "
        "catalogue magnitude (an input that acts as a prior, strongest at the faint end), the "
        "catalogue profile and, for i > 20.5, the truncation at zero, so a calibrated lumos "
        "gives sigma68(D) < 1, falling with magnitude (section 1 checks its calibration against "
        "the truth directly); the classical methods use the pixels only. For a likelihood model "
        "the row `lumos likelihood` uses `flux_like` / `flux_like_err`, which hold only what "
        "differs between exposures: there sigma68(D) = 1 is the target.",
        ["method", "sigma68(D)", "median D", "abs(D) > 3 [%]", "abs(D) > 5 [%]"]
        + [f"sigma68 i {b}" for b in bins], rows,
        {"width of D against magnitude": "repeats_width.png",
         "distribution of D": "repeats_distribution.png"},
    )  # fmt: skip


def _sensitivity(m: dict) -> list[str]:
    s = m["sensitivity"]
    tol = s["tolerance"]
    methods = list(next(iter(tol.values())))
    rows = []
    for param, res in tol.items():
        cells = []
        for k in methods:
            v = res[k]
            cells.append(f"{100 * v['value']:.1f}%" if v["reached"]
                         else f"> {100 * v['value']:.0f}%")  # fmt: skip
        unit = " (of the sky level)" if param == "background" else ""
        rows.append([param.replace("_", " ") + unit] + cells)
    lo, hi = s["i_mag_range"]
    return _section(
        "## 6. Sensitivity to catalogue errors (paper appendix C, Table 1)",
        f"{s['n']} galaxies with i = {lo:g}-{hi:g}; the same images are measured with one input "
        "wrong (profile parameters: in the model profile and shape given to each method, not in "
        "the image; background: a constant offset under the galaxy, in units of the sky level). "
        f"Error in each input that shifts the median flux by {100 * s['error_level']:.0f}% "
        "(either sign; larger = more robust; '>' = not reached in the tested range):",
        ["input"] + [_labels(m).get(k, k) for k in methods], rows,
        {"flux response to catalogue errors": "sensitivity.png"},
    )


def _snr(m: dict) -> list[str]:
    s = m["snr_colours"]
    bins = _bins(s["mag_bins"])
    snr = s["snr"]
    rows = []
    for k in ("lumos", "aperture"):
        if k in snr:
            rows.append([f"median SNR {_labels(m).get(k, k)}"]
                        + [_f(v, ".1f") for v in snr[k]["median_per_bin"]])  # fmt: skip
    if "lumos_over_aperture" in snr:
        rows.append(["SNR ratio lumos / aperture"]
                    + [_f(v, ".2f") for v in snr["lumos_over_aperture"]])  # fmt: skip
    col = s["colour"]
    crow = [[_labels(m).get(k, k), _f(v["sigma68"], ".3f"), _f(v["median"], "+.3f"),
             _pct(v["fraction_measured"], ".1f")] + [_f(x, ".3f") for x in v["sigma68_per_bin"]]
            for k, v in col.items()]  # fmt: skip
    lines = [
        "## 7. Signal-to-noise per band (paper Fig. 13) and narrow-band colours (Fig. 10)",
        "",
        f"{s['n']} galaxies observed in two adjacent narrow bands (two exposures). "
        "SNR = flux / flux_err of each exposure, medians per i bin (all bands):",
        "",
    ]
    lines += _table(["i bin"] + bins, rows)
    lines += ["![SNR per filter tray and SNR ratio](snr.png)", "",
              "Measured minus true colour of adjacent bands, -2.5 log10((f1/f2)/(t1/t2)) "
              "[mag], for galaxies with both fluxes positive:", ""]  # fmt: skip
    lines += _table(["method", "sigma68 [mag]", "median [mag]", "measured [%]"]
                    + [f"sigma68 i {b}" for b in bins], crow)  # fmt: skip
    lines += ["![colour errors](colours.png)", ""]
    return lines


def _coadds(m: dict) -> list[str]:
    r = m["coadds"]
    bins = _bins(r["mag_bins"])
    like = r.get("likelihood_model", False)
    lines = [
        "## 9. Co-adds of repeated exposures and leakage of the catalogue magnitude",
        "",
        f"{r['n']} galaxies observed {r['n_exposures']} times (as in section 5). Aperture "
        "photometry is co-added by inverse variance (Eq. 21); "
        + ("lumos (a likelihood model) multiplies the exposures' likelihoods and applies the "
           "shared error and the population prior once (`lumos.bayes.coadd_likelihoods`); "
           "D is computed from `flux_like`." if like else
           "lumos (a posterior model) by inverse variance of its PDF means; its D is computed "
           "from the posteriors, which share the catalogue prior.")
        + " Coverage: fraction of truths inside the 68% interval.",
        "",
    ]
    rows = []
    for k, v in r["methods"].items():
        rows.append([_labels(m).get(k, k), _f(v["coverage68"], ".3f"), _f(v["sigma68_D"], ".2f")]
                    + [f"{_f(c, '.2f')} / {_pct(s)} / {_pct(b, '+.1f')}"
                       for c, s, b in zip(v["coverage68_per_bin"], v["sigma68_per_bin"],
                                          v["bias_per_bin"], strict=True)])  # fmt: skip
    lines += _table(["method", "co-add coverage", "sigma68(D)"]
                    + [f"i {b}: coverage / sigma68 [%] / bias [%]" for b in bins], rows)
    lines += ["", "Leakage: the first exposure measured again with every catalogue i magnitude "
              "shifted (median absolute relative change of the flux; the pixels are the "
              "same). The likelihood must not move; the posterior moves with the population "
              "prior, which `lumos measure --prior auto` replaces by a prior learnt from the "
              "measured galaxies (then a common shift of all magnitudes cancels).", ""]
    rows = []
    for shift, entry in r["leakage"].items():
        for key, values in entry.items():
            rows.append([f"`{key}`, i_mag {shift}"] + [_pct(v, ".2f") for v in values])
    lines += _table(["quantity"] + [f"i {b} [%]" for b in bins], rows)
    lines += [""]
    return lines


def _zero_flux(m: dict) -> list[str]:
    r = m["zero_flux"]
    bins = _bins(r["mag_bins"])
    like = r.get("likelihood_model", False)
    lines = [
        "## 11. No galaxy: measurements at zero flux",
        "",
        f"{r['n']} catalogued galaxies observed as in section 1 but without light of their own "
        "(a drop-out in the band, or a source that is not there): their stamps hold the sky, "
        "its artefacts and the neighbours. A measurement centred on the pixels has pulls of "
        "median 0 and sigma68 1; "
        + ("for lumos the pull of its likelihood, `flux_like / flux_like_err` (the posterior "
           "is truncated at zero by the prior)" if like else
           "for lumos the pull of its posterior, `flux / flux_err`")
        + ", for aperture photometry `flux / flux_err`.",
        "",
    ]
    rows = []
    for k, v in r["methods"].items():
        rows.append([_labels(m).get(k, k), str(v["n"]), _f(v["median_pull"], "+.3f"),
                     _f(v["sigma68_pull"], ".3f"), _f(v["inside_1"], ".3f"),
                     _f(v["above_3"], ".3f")]
                    + [f"{_f(a, '+.2f')} / {_f(b, '.2f')}"
                       for a, b in zip(v["median_pull_per_bin"], v["sigma68_pull_per_bin"],
                                       strict=True)])  # fmt: skip
    lines += _table(["method", "rows", "median pull", "sigma68 pull", "inside +-1", "above 3"]
                    + [f"i {b}: median / sigma68" for b in bins], rows)
    lines += [""]
    return lines


def render_report(metrics: dict) -> str:
    """The markdown text of a validation report from its (JSON-ready) metrics."""
    lines = _header(metrics) + _quick_note(metrics)
    sections = (("accuracy", _calibration), ("accuracy", _accuracy),
                ("deblending", _deblending), ("artefacts", _artefacts),
                ("repeats", _repeats), ("sensitivity", _sensitivity),
                ("snr_colours", _snr), ("catalogue_errors", _catalogue_errors),
                ("coadds", _coadds), ("fitted_catalogue", _fitted_catalogue),
                ("zero_flux", _zero_flux), ("positions", _positions))  # fmt: skip
    for key, fn in sections:
        if key in metrics:
            lines += fn(metrics)
    return "\n".join(lines).rstrip() + "\n"


def write_report(metrics: dict, path: str | Path) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.write_text(render_report(metrics))
    return path
