"""Plots for reports: measured against true flux, PIT histograms, accuracy against magnitude."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .metrics import MAG_BINS, binned_accuracy

__all__ = ["plot_flux_vs_truth", "plot_pit", "plot_accuracy_vs_mag"]


def _pyplot():
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
