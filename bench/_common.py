"""Helpers shared by the benchmark scripts: data locations, robust summaries, timing.

The scripts import lumos as installed (``bash run.sh`` installs the checkout into ``.venv``
in editable mode) and this module as ``_common`` (Python puts the script's folder,
``bench/``, first on the import path).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lumos.stats import sigma68

__all__ = ["ROOT", "SHARED_DATA", "FIELD_DIR", "KIDS_DIR", "FIELD_I_EDGES", "median_sigma68",
           "best_of", "galsim_toysim", "likelihood", "i_bin_header", "run_lumos",
           "measure_folder", "i_bin_counts", "efficient_sigma68"]

#: The repository checkout.
ROOT = Path(__file__).resolve().parents[1]
#: Optional data beside the checkout (``../shared/data``); benches skip what is absent.
SHARED_DATA = ROOT.parent / "shared" / "data"
#: The GalSim-rendered NB685 test exposure.
FIELD_DIR = SHARED_DATA / "field-nb685"
#: KiDS image cutouts used as real backgrounds.
KIDS_DIR = SHARED_DATA / "kids"
#: Catalogue i-magnitude bin edges of the GalSim field checks (issue 12), also used by the
#: benches whose numbers are compared with them.
FIELD_I_EDGES = (18.0, 20.0, 21.0, 22.0, 23.0)


def i_bin_header(first_columns: tuple[str, ...], edges=FIELD_I_EDGES) -> str:
    """A markdown table header (two lines): ``first_columns``, then one column per i bin."""
    heads = " | ".join(f"i {a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True))
    names = " | ".join(first_columns)
    return f"| {names} | {heads} |\n|" + " --- |" * (len(first_columns) + len(edges) - 1)


def i_bin_counts(i_mag, edges=FIELD_I_EDGES) -> str:
    """The number of galaxies in each i bin, comma-separated."""
    i_mag = np.asarray(i_mag, float)
    return ", ".join(str(int(((i_mag >= a) & (i_mag < b)).sum()))
                     for a, b in zip(edges[:-1], edges[1:], strict=True))  # fmt: skip


def efficient_sigma68(rel_sigma: np.ndarray, i_mag: np.ndarray,
                      flux_true: np.ndarray | None = None, n: int = 2000, seed: int = 0,
                      edges=FIELD_I_EDGES) -> list[float]:
    """Sigma68 of (f - f_true) / f_true for an efficient estimator, per i bin of ``edges``
    and over all galaxies (last; NaN with ``flux_true``).

    Each galaxy's relative error is drawn ``n`` times from N(0, ``rel_sigma``) (seeded). With
    ``flux_true`` the estimator is the posterior mean under an oracle prior: in each i bin a
    Gaussian in ln f whose mean is linear in i and whose width ``tau`` is the true fluxes'
    scatter about it, combined with the likelihood in the linear-Gaussian approximation,
    error = w e - (1 - w) d with w = tau^2 / (tau^2 + rel_sigma^2), e the likelihood's draw
    and d the galaxy's true offset from the prior mean (its colour, not a draw).
    """
    rng = np.random.default_rng(seed)
    out = []
    for lo, hi in [*zip(edges[:-1], edges[1:], strict=True), (-np.inf, np.inf)]:
        k = (i_mag >= lo) & (i_mag < hi)
        r = rel_sigma[k]
        err = rng.standard_normal((n, r.size)) * r
        if flux_true is not None and np.isfinite(lo):
            x = np.log(flux_true[k])
            design = np.vstack([np.ones(r.size), i_mag[k]]).T
            d = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
            w = d.var() / (d.var() + r**2)
            err = w * err - (1.0 - w) * d
        elif flux_true is not None:
            out.append(float("nan"))
            continue
        out.append(sigma68(err.ravel()))
    return out


def run_lumos(args: list[str]) -> None:
    """Run one ``lumos`` command quietly; a non-zero exit ends the bench with its command."""
    from lumos.cli import main  # noqa: PLC0415

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(args)
    if status != 0:
        raise SystemExit(f"lumos {' '.join(args)} failed ({status})")


def measure_folder(folder: Path, out: Path, method: str, model: str | None = None,
                   prior: str = "auto", catalogue: Path | None = None):
    """``lumos measure`` of a check field's ``image.fits`` and catalogue, read back as a Table.

    ``model`` and ``prior`` apply to ``method="lumos"``; ``catalogue`` replaces the folder's.
    """
    from astropy.table import Table  # noqa: PLC0415

    args = ["measure", str(folder / "image.fits"), str(catalogue or folder / "catalogue.fits"),
            "--out", str(out), "--method", method, "--workers", "2"]
    if method == "lumos":
        args += ["--prior", prior] + (["--model", model] if model else [])
    run_lumos(args)
    return Table.read(out)


def median_sigma68(x, min_count: int = 2) -> tuple[float, float]:
    """Median and :func:`lumos.stats.sigma68` of the finite values of ``x``.

    Parameters
    ----------
    x : array_like
        Values, e.g. ``(f - f_true) / f_true``.
    min_count : int
        Fewer finite values than this give ``(nan, nan)``.

    Returns
    -------
    (float, float)
        The median (bias) and sigma68 (dispersion).
    """
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < max(min_count, 1):
        return float("nan"), float("nan")
    return float(np.median(x)), sigma68(x)


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time (s) of ``repeat`` calls of ``fn`` (the machine is shared)."""
    times = []
    for _ in range(max(int(repeat), 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def galsim_toysim():
    """The GalSim reference simulation of the tests (``tests/galsim_toysim.py``), as a module."""
    import importlib.util  # noqa: PLC0415

    path = ROOT / "tests" / "galsim_toysim.py"
    spec = importlib.util.spec_from_file_location("galsim_toysim", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def likelihood(model, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A likelihood model's per-exposure ``flux_like``, ``flux_like_err`` and
    ``flux_shared_err`` of a batch of stamps (electrons), as ``lumos measure`` splits them
    (:func:`lumos.bayes.split_shared`)."""
    import torch

    from lumos.bayes import SharedError, split_shared

    with torch.inference_mode():
        mix = model.eval().predict(batch).to(torch.float64)
    curve = SharedError.of(model.config)
    per, shared = split_shared(mix, curve, curve.sizes_of(batch.profile))
    return per.mean().numpy(), per.std().numpy(), shared.numpy()
