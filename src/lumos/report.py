"""Short markdown reports with plots: measured against true fluxes for several methods."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.table import Table, join

from .flags import UNUSABLE
from .instrument import CCD_HEIGHT, CCD_WIDTH, PIXEL_SCALE
from .validation.metrics import (
    binned_accuracy,
    interval_coverage,
    pit_ks_distance,
    pit_values,
)
from .validation.plots import plot_accuracy_vs_mag, plot_flux_vs_truth, plot_pit

__all__ = ["write_demo_report"]


def _matched(catalogue: Table, truth: Table, table: Table) -> Table:
    """Measurements joined with the truth; binned by the true i magnitude when known."""
    # binned by the truth's i magnitude when it has one, else by the catalogue's
    table = table[[c for c in table.colnames if c != "i_mag"]]
    merged = join(table, truth, keys="id", join_type="inner")
    if "i_mag" not in truth.colnames:
        merged = join(merged, catalogue["id", "i_mag"], keys="id", join_type="inner")
    usable = (np.asarray(merged["flags"]) & int(UNUSABLE)) == 0
    return merged[usable & np.isfinite(np.asarray(merged["flux"], dtype=float))]


def write_demo_report(
    out: str | Path,
    catalogue: Table,
    truth: Table,
    tables: Mapping[str, Table],
    timings: Mapping[str, float],
    catalogue_note: str = "",
) -> Path:
    """Write plots and ``report.md`` comparing methods against the truth.

    Parameters
    ----------
    out : str or Path
        Output directory.
    catalogue : astropy.table.Table
        Catalogue with ``id`` and ``i_mag``.
    truth : astropy.table.Table
        ``id`` and ``flux_true`` (and the true ``i_mag``, used instead of the catalogue's).
    tables : mapping
        Method name -> measurement table.
    timings : mapping
        Step name -> seconds.
    catalogue_note : str
        A sentence on the catalogue given to the methods (e.g. its errors).

    Returns
    -------
    Path
        The report file.
    """
    out = Path(out)
    matched = {name: _matched(catalogue, truth, t) for name, t in tables.items()}
    unit = "e-"
    plot_flux_vs_truth(
        {k: (np.asarray(m["flux"]), np.asarray(m["flux_true"])) for k, m in matched.items()},
        unit, out / "flux_vs_truth.png",
    )  # fmt: skip
    pits = {
        k: pit_values(m["pdf_weight"], m["pdf_mean"], m["pdf_sigma"], m["flux_true"])
        for k, m in matched.items()
    }
    plot_pit(pits, out / "pit.png")
    plot_accuracy_vs_mag(
        {k: (np.asarray(m["i_mag"]), np.asarray(m["flux"]), np.asarray(m["flux_true"]))
         for k, m in matched.items()},
        out / "sigma68_vs_mag.png",
    )  # fmt: skip

    lines = [
        "# lumos demo report",
        "",
        f"A simulated PAUS-like NB685 exposure ({CCD_WIDTH} x {CCD_HEIGHT} pixels, "
        f"{PIXEL_SCALE} arcsec/pixel, "
        "90 s, Moffat PSF FWHM 0.85 arcsec): synthetic sky with scattered light, read noise, "
        "cosmic rays, hot pixels and columns and saturated stars; TEAHUPOO galaxies "
        "(COSMOS-like Sersic profiles, i = 17-23) at random positions with photon noise. "
        "Fluxes in electrons; truth known for every galaxy." + (
            f" {catalogue_note}" if catalogue_note else ""),
        "",
        "| step | seconds |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += ["", "## Calibration", "", "| method | galaxies | PIT KS distance | 68% coverage |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for name, m in matched.items():
        cov = interval_coverage(m["flux_q16"], m["flux_q84"], m["flux_true"])
        lines.append(f"| {name} | {len(m)} | {pit_ks_distance(pits[name]):.3f} | {cov:.3f} |")
    lines += ["", "## Accuracy: bias and sigma68 of (f - f_true)/f_true by i magnitude", ""]
    accs = {name: binned_accuracy(m["i_mag"], m["flux"], m["flux_true"])
            for name, m in matched.items()}  # fmt: skip
    header = "| i mag | " + " | ".join(f"{n} bias | {n} sigma68" for n in accs) + " |"
    lines += [header, "|" + " --- |" * (1 + 2 * len(accs))]
    first = next(iter(accs.values()))
    for i in range(len(first)):
        row = f"| {first['mag_lo'][i]:.0f}-{first['mag_hi'][i]:.0f} |"
        for acc in accs.values():
            row += f" {100 * acc['bias'][i]:+.2f}% | {100 * acc['sigma68'][i]:.2f}% |"
        lines.append(row)
    lines += [
        "",
        "![measured vs true flux](flux_vs_truth.png)",
        "",
        "![PIT histogram](pit.png)",
        "",
        "![accuracy against magnitude](sigma68_vs_mag.png)",
        "",
        "Rows flagged unusable (off the image, masked core, failed) are left out of the "
        "statistics; every catalogue row is present in the tables.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
