"""Plots for reports: measured against true flux, PIT histograms, accuracy against magnitude."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..instrument import PIXEL_SCALE
from ..stats import P16, P84, sigma68
from .metrics import MAG_BINS, binned_accuracy

__all__ = [
    "plot_flux_vs_truth",
    "plot_pit",
    "plot_accuracy_vs_mag",
    "plot_deblending",
    "plot_outliers",
    "plot_pair_pull_width",
    "plot_pair_pull_distribution",
    "plot_sensitivity",
    "plot_snr",
    "plot_colour_errors",
]


def _pyplot():
    # matplotlib (about 0.5 s to import) only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_flux_vs_truth(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]], unit: str, path: str | Path
) -> Path:
    """Scatter of measured against true flux, one panel per method.

    Parameters
    ----------
    results : mapping
        Method name -> (measured flux, true flux).
    unit : str
        Flux unit for the axis labels.
    path : str or Path
        Output PNG.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4.2), squeeze=False)
    for ax, (name, (flux, truth)) in zip(axes[0], results.items(), strict=True):
        ok = np.isfinite(flux) & (truth > 0)
        ax.loglog(truth[ok], np.clip(flux[ok], truth[ok].min() / 10, None), ".", ms=2, alpha=0.5)
        lims = [truth[ok].min() * 0.8, truth[ok].max() * 1.2]
        ax.plot(lims, lims, "k-", lw=0.8)
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        ax.set_xlabel(f"true flux [{unit}]")
        ax.set_ylabel(f"measured flux [{unit}]")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_pit(pits: Mapping[str, np.ndarray], path: str | Path, bins: int = 20) -> Path:
    """PIT histograms (flat for calibrated PDFs) with the uniform expectation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, pit in pits.items():
        pit = np.asarray(pit)[np.isfinite(pit)]
        ax.hist(pit, bins=bins, range=(0, 1), density=True, histtype="step", lw=1.8, label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xlabel("PIT = CDF(true flux)")
    ax.set_ylabel("density")
    ax.set_xlim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_accuracy_vs_mag(
    results: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    bins: np.ndarray = MAG_BINS,
) -> Path:
    """Bias and sigma68 of (f - f_true)/f_true against i magnitude, one line per method.

    Parameters
    ----------
    results : mapping
        Method name -> (i magnitude, measured flux, true flux).
    path : str or Path
        Output PNG.
    bins : array_like
        Magnitude bin edges.
    """
    plt = _pyplot()
    fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, (mag, flux, truth) in results.items():
        acc = binned_accuracy(mag, flux, truth, bins)
        centre = 0.5 * (np.asarray(acc["mag_lo"]) + np.asarray(acc["mag_hi"]))
        ax_b.plot(centre, 100 * np.asarray(acc["bias"]), "o-", label=name)
        ax_s.plot(centre, 100 * np.asarray(acc["sigma68"]), "o-", label=name)
    ax_b.axhline(0, color="k", lw=0.8)
    ax_b.set_xlabel("i magnitude")
    ax_b.set_ylabel("median (f - f_true) / f_true [%]")
    ax_s.set_xlabel("i magnitude")
    ax_s.set_ylabel("sigma68 of (f - f_true) / f_true [%]")
    ax_s.set_yscale("log")
    for ax in (ax_b, ax_s):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _save(fig, path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _centres(bins) -> np.ndarray:
    bins = np.asarray(bins, dtype=float)
    return 0.5 * (bins[:-1] + bins[1:])


def plot_deblending(
    distance: np.ndarray,
    rel_error: Mapping[str, np.ndarray],
    path: str | Path,
    pixel_scale: float = PIXEL_SCALE,
    title: str = "",
) -> Path:
    """Bias of the target's flux against the neighbour's distance (Fig. 8).

    Parameters
    ----------
    distance : array_like, shape (D,)
        Neighbour distance, pixels.
    rel_error : mapping
        Method -> ``(f - f_true) / f_true``, shape (D, R).
    path : str or Path
        Output PNG.
    pixel_scale : float
        Arcsec per pixel (for the top axis).
    title : str
        Figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for name, rel in rel_error.items():
        rel = np.asarray(rel, dtype=float)
        med = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in rel])
        lo = np.array([np.nanpercentile(r, 100 * P16) if np.isfinite(r).any() else np.nan
                       for r in rel])  # fmt: skip
        hi = np.array([np.nanpercentile(r, 100 * P84) if np.isfinite(r).any() else np.nan
                       for r in rel])  # fmt: skip
        (line,) = ax.plot(distance, 100 * med, "o-", ms=3, label=f"{name} (median)")
        ax.fill_between(distance, 100 * lo, 100 * hi, color=line.get_color(), alpha=0.2,
                        label=f"{name} (16-84%)")  # fmt: skip
    ax.axhline(0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("distance of the i=20 neighbour from the i=22 target [pixels]")
    ax.set_ylabel("(f - f_true) / f_true [%]")
    ax.set_xlim(distance.min(), distance.max())
    sec = ax.secondary_xaxis("top", functions=(lambda x: x * pixel_scale,
                                               lambda x: x / pixel_scale))  # fmt: skip
    sec.set_xlabel("distance [arcsec]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_outliers(sets: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | Path) -> Path:
    """Grouped bars of the outlier fractions per artefact set and method.

    Parameters
    ----------
    sets : mapping
        Set name -> method -> ``{"outlier_3sigma", "outlier_50pct"}`` (fractions).
    path : str or Path
        Output PNG.
    """
    plt = _pyplot()
    kinds = list(sets)
    methods = list(next(iter(sets.values())))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    width = 0.8 / len(methods)
    x = np.arange(len(kinds))
    for ax, key, label in zip(axes, ("outlier_3sigma", "outlier_50pct"),
                              ("|f - f_true| > 3 flux_err", "|f - f_true| > 50% f_true"),
                              strict=True):  # fmt: skip
        for k, m in enumerate(methods):
            vals = [100 * sets[kind][m][key] for kind in kinds]
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(x, [k.replace("_", " ") for k in kinds])
        ax.set_ylabel("outliers [% of galaxies]")
        ax.set_title(f"outliers: {label}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_pair_pull_width(
    bins: np.ndarray, widths: Mapping[str, np.ndarray], path: str | Path
) -> Path:
    """sigma68 of D = (f1 - f2) / sqrt(s1^2 + s2^2) against i magnitude (Fig. 11)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for name, w in widths.items():
        ax.plot(_centres(bins), w, "o-", label=name)
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="calibrated errors")
    ax.set_xlabel("i magnitude")
    ax.set_ylabel("sigma68 of D = (f1 - f2) / sqrt(s1^2 + s2^2)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_pair_pull_distribution(pulls: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Histogram of D on a log scale with the unit normal (Fig. 12)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    edges = np.linspace(-10, 10, 81)
    for name, d in pulls.items():
        d = np.asarray(d, dtype=float)
        d = np.clip(d[np.isfinite(d)], -9.99, 9.99)
        ax.hist(d, bins=edges, density=True, histtype="step", lw=1.6, label=name)
    x = np.linspace(-10, 10, 400)
    ax.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), "k--", lw=0.9, label="N(0, 1)")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.0)
    ax.set_xlabel("D = (f1 - f2) / sqrt(s1^2 + s2^2)  (clipped to +-10)")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_sensitivity(
    grids: Mapping[str, np.ndarray],
    response: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    units: Mapping[str, str] | None = None,
    level: float = 0.10,
) -> Path:
    """Median relative flux change against the catalogue error, one panel per parameter."""
    plt = _pyplot()
    params = list(grids)
    ncol = 3
    nrow = int(np.ceil(len(params) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False)
    for ax, p in zip(axes.ravel(), params, strict=False):
        g = 100 * np.asarray(grids[p], dtype=float)
        for name, r in response[p].items():
            ax.plot(g, 100 * np.asarray(r, dtype=float), "o-", ms=3, label=name)
        ax.axhspan(-100 * level, 100 * level, color="0.85", zorder=0)
        ax.axhline(0, color="k", lw=0.6)
        unit = (units or {}).get(p, "relative error")
        ax.set_xlabel(f"{p} error [% ({unit})]")
        ax.set_ylabel("median (f - f_0) / f_true [%]")
        top = max((np.nanmax(np.abs(np.asarray(r, dtype=float))) for r in response[p].values()
                   if np.isfinite(np.asarray(r, dtype=float)).any()), default=0.0)  # fmt: skip
        lim = float(np.clip(110 * top, 2 * 100 * level, 100))
        ax.set_ylim(-lim, lim)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(params):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def plot_snr(snr: Mapping, bins: np.ndarray, trays: list[str], path: str | Path,
             reference: str = "aperture") -> Path:  # fmt: skip
    """Median SNR per filter tray against i magnitude and the lumos / reference ratio (Fig. 13).

    Parameters
    ----------
    snr : mapping
        The ``snr`` metrics of :func:`lumos.validation.snr.run_snr_colours`.
    bins : array_like
        i-magnitude bin edges.
    trays : list of str
        Tray labels.
    path : str or Path
        Output PNG.
    reference : str
        Method compared with lumos.
    """
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    c = _centres(bins)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, tray in enumerate(trays):
        col = colours[k % len(colours)]
        for name, ls in (("lumos", "-"), (reference, "--")):
            if name in snr:
                ax1.plot(c, snr[name]["median_per_tray_bin"][k], ls, color=col, marker="o", ms=3,
                         label=f"{tray} {name}")  # fmt: skip
        key = f"lumos_over_{reference}_per_tray_bin"
        if key in snr:
            ax2.plot(c, snr[key][k], "o-", color=col, ms=3, label=tray)
    key = f"lumos_over_{reference}"
    if key in snr:
        ax2.plot(c, snr[key], "k-", lw=2.2, label="all bands")
    ax1.set_yscale("log")
    ax1.set_xlabel("i magnitude")
    ax1.set_ylabel("median SNR = flux / flux_err")
    ax1.set_title(f"solid: lumos, dashed: {reference}", fontsize=10)
    ax1.legend(fontsize=6, ncol=2)
    ax2.axhline(1.0, color="k", lw=0.8, ls=":")
    ax2.set_xlabel("i magnitude")
    ax2.set_ylabel(f"median SNR lumos / median SNR {reference}")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_colour_errors(
    colour_error: Mapping[str, np.ndarray], i_mag: np.ndarray, path: str | Path,
    split: float = 21.0,
) -> Path:  # fmt: skip
    """Histograms of measured minus true narrow-band colours (Fig. 10), bright and faint."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    edges = np.linspace(-1.0, 1.0, 81)
    i_mag = np.asarray(i_mag, dtype=float)
    for ax, sel, label in ((axes[0], i_mag < split, f"i < {split:g}"),
                           (axes[1], i_mag >= split, f"i >= {split:g}")):  # fmt: skip
        for name, d in colour_error.items():
            v = np.asarray(d, dtype=float)[sel]
            v = v[np.isfinite(v)]
            ax.hist(np.clip(v, -0.999, 0.999), bins=edges, histtype="step", lw=1.6,
                    label=f"{name}: sigma68 = {sigma68(v):.3f} mag")  # fmt: skip
        ax.set_xlabel("measured - true colour, adjacent narrow bands [mag] (clipped to +-1)")
        ax.set_ylabel("galaxies per bin")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
