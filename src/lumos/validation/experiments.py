"""The validation suite: the paper's simulation tests for any model (``lumos validate``).

:func:`run_validation` reproduces the simulation tests of Cabayol et al. (LUMOS; sections 5,
6 and appendix C) on held-out simulations, for a model and every classical method of
:mod:`lumos.classical` on the same galaxies, and writes ``metrics.json``, PNG plots and a
``report.md`` that embeds them. The experiments (one module each):

1. calibration: PIT histogram (Fig. 6), 68% and 95% interval coverage, PIT KS distance
   (:mod:`~lumos.validation.accuracy`);
2. accuracy: bias and sigma68 of ``(f - f_true) / f_true`` against i magnitude (Fig. 7) for
   lumos, aperture, profile fit, weighted sum, the oracle weighted sum (the linear limit)
   and sep AUTO, and the method x i-bin ratio table (:mod:`~lumos.validation.accuracy`);
3. deblending: an i = 22 target and an i = 20 neighbour moved across the stamp (Fig. 8;
   :mod:`~lumos.validation.deblend`);
4. artefacts: outlier fractions with cosmic rays, scattered light and neighbours injected
   (:mod:`~lumos.validation.artefacts`);
5. repeated observations: width and tails of ``D`` (Eq. 19, Figs. 11-12;
   :mod:`~lumos.validation.repeats`);
6. sensitivity to catalogue errors: the parameter error giving a 10% flux error (appendix C,
   Table 1; :mod:`~lumos.validation.sensitivity`);
7. SNR per band and lumos/aperture SNR ratio (Fig. 13) and narrow-band colour widths
   (Fig. 10; :mod:`~lumos.validation.snr`);
8. calibration and accuracy when every method is given a catalogue with realistic errors
   (:meth:`lumos.simulate.CatalogueErrors.realistic`: 10% in r50, 15% in n, 0.05 in q,
   5 degrees in pa, 3% in the PSF FWHM, 0.03 mag in i), as real external catalogues are
   (:mod:`~lumos.validation.accuracy` on those simulations);
9. co-adds of four exposures and the leakage of the catalogue magnitude
   (:mod:`~lumos.validation.coadds`);
10. bulge + disk galaxies behind the single-Sersic fits of their light, with those errors;
11. catalogued galaxies without light (:mod:`~lumos.validation.zero_flux`);
12. the errors of section 8 and catalogue positions off by :data:`POSITION_ERROR` pixels in
    x and in y (twice the shipped model's training), as an astrometric tie and a WCS are.

Held-out data
    Every experiment draws its own simulations from a fixed, documented validation seed
    :data:`SEEDS` (``10_000_001 + k``). Training draws from seeds derived from its base
    seed by :func:`lumos.training.derive_seed` (63-bit hashes) and validates on
    :func:`lumos.training.validation_seed`; :func:`check_seeds` verifies that none of the
    seeds here equals a seed recorded in the model's metadata.

Sizes and runtime (:class:`ValidationSizes`; measured with the default-size network)
    ``quick`` (``lumos validate --quick``, for CI): 1000 galaxies for calibration and
    accuracy, 2 pairs x 31 distances x 12 realisations for deblending, 4 x 200 artefact
    stamps, 200 pairs of repeated observations, 24 galaxies x 46 catalogue perturbations and
    200 two-band galaxies: 86 s of CPU time including model loading, i.e. about 1-2 minutes
    on 2 idle cores (189 s wall on a shared, loaded machine).
    ``full`` (the default): 20 000 galaxies for calibration and accuracy (1600-6700 per
    i bin), 20 x 31 x 40 deblending stamps, 4 x 2000 artefact stamps, 4000 repeated pairs,
    200 galaxies x 72 perturbations and 4000 two-band galaxies: 1670 s (28 minutes) of CPU
    time, about 20-35 minutes on 2 cores (35 minutes measured on a shared machine; the
    accuracy set's simulation is half of it). Each run's ``report.md`` records its runtime.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..model_io import model_paths, sha256_file
from ..settings import check_positive_integers
from ..simconfig import CatalogueErrors, SimulationConfig
from ..training import validation_seed
from .accuracy import run_accuracy
from .artefacts import run_artefacts
from .coadds import run_coadds
from .deblend import run_deblending
from .measuring import CLASSICAL, METHOD_LABELS
from .metrics import gaussian_pit
from .plots import (
    plot_accuracy_vs_mag,
    plot_colour_errors,
    plot_deblending,
    plot_flux_vs_truth,
    plot_outliers,
    plot_pair_pull_distribution,
    plot_pair_pull_width,
    plot_pit,
    plot_sensitivity,
    plot_snr,
)
from .repeats import run_repeats
from .report import write_report
from .sensitivity import run_sensitivity
from .snr import run_snr_colours
from .zero_flux import run_zero_flux

__all__ = [
    "EXPERIMENTS",
    "SEEDS",
    "ValidationSizes",
    "check_seeds",
    "run_validation",
    "to_json",
]

#: Experiments in report order.
EXPERIMENTS = ("accuracy", "deblending", "artefacts", "repeats", "sensitivity", "snr_colours",
               "catalogue_errors", "coadds", "fitted_catalogue", "zero_flux",
               "positions")  # fmt: skip
#: Catalogue position error of experiment 12, pixels per axis (twice the shipped model's
#: training: a stress test).
POSITION_ERROR = 0.3

#: Fixed validation seeds, one per experiment: ``10_000_001 + k``.
SEEDS = {name: 10_000_001 + k for k, name in enumerate(EXPERIMENTS)}


@dataclass(frozen=True)
class ValidationSizes:
    """How many galaxies each experiment uses.

    Attributes
    ----------
    accuracy : int
        Galaxies of the calibration and accuracy set (experiments 1-2).
    deblend_pairs, deblend_realisations, deblend_max_distance : int
        Target/neighbour pairs, noise realisations per pair and distance, and the largest
        distance in pixels (experiment 3).
    artefacts : int
        Galaxies per artefact set (experiment 4).
    repeats : int
        Pairs of exposures (experiment 5).
    sensitivity : int
        Galaxies of the sensitivity experiment (6).
    sensitivity_grid, background_grid : tuple of float
        Relative profile-parameter errors and background errors (fractions of the sky level)
        tested, each with both signs.
    snr_colours : int
        Galaxies observed in two adjacent bands (experiment 7).
    catalogue_errors : int
        Galaxies of the accuracy set with catalogue errors (experiment 8).
    coadds : int
        Galaxies observed four times for the co-add and leakage tests (experiment 9).
    fitted_catalogue : int
        Bulge + disk galaxies behind the single-Sersic fits of their light, with catalogue
        errors (experiment 10).
    zero_flux : int
        Catalogued galaxies without flux (experiment 11).
    positions : int
        Galaxies of the accuracy set with catalogue errors and catalogue positions off by
        :data:`POSITION_ERROR` pixels per axis (experiment 12).
    """

    accuracy: int = 20_000
    deblend_pairs: int = 20
    deblend_realisations: int = 40
    deblend_max_distance: int = 30
    artefacts: int = 2000
    repeats: int = 4000
    sensitivity: int = 200
    sensitivity_grid: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    background_grid: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    snr_colours: int = 4000
    catalogue_errors: int = 10_000
    coadds: int = 2000
    fitted_catalogue: int = 10_000
    zero_flux: int = 4000
    positions: int = 10_000

    def __post_init__(self) -> None:
        # every count (the fields annotated ``int``) is a positive integer
        check_positive_integers(self, [f.name for f in fields(self) if f.type in ("int", int)])
        for name in ("sensitivity_grid", "background_grid"):
            grid = getattr(self, name)
            if len(grid) == 0 or not all(np.isfinite(v) and v > 0 for v in grid):
                raise ValueError(f"ValidationSizes.{name} must hold positive numbers")

    @classmethod
    def full(cls) -> ValidationSizes:
        """The full run (about 28 CPU-minutes: 20-35 minutes on 2 CPU cores)."""
        return cls()

    @classmethod
    def quick(cls) -> ValidationSizes:
        """A CI-sized run (about 1.5 CPU-minutes: 1-2 minutes on 2 CPU cores)."""
        return cls(
            accuracy=1000,
            deblend_pairs=2,
            deblend_realisations=12,
            artefacts=200,
            repeats=200,
            sensitivity=24,
            sensitivity_grid=(0.05, 0.1, 0.25, 0.5, 0.75),
            background_grid=(0.01, 0.03, 0.1),
            snr_colours=200,
            catalogue_errors=500,
            coadds=200,
            fitted_catalogue=500,
            zero_flux=200,
            positions=500,
        )


def check_seeds(model) -> None:
    """Raise ValueError if a validation seed equals a seed recorded with the model.

    The model's metadata (written by ``lumos train`` and ``lumos calibrate``)
    records the training base seed, the seed of its held-out validation stamps and the seed of
    its calibration set.
    """
    meta = getattr(model, "metadata", None) or {}
    used = set()
    if isinstance(meta.get("validation_seed"), int):
        used.add(int(meta["validation_seed"]))
    calibration = meta.get("calibration")
    if isinstance(calibration, dict) and isinstance(calibration.get("seed"), int):
        used.add(int(calibration["seed"]))
    training = meta.get("training")
    if isinstance(training, dict) and isinstance(training.get("seed"), int):
        used.add(int(training["seed"]))
        used.add(validation_seed(int(training["seed"])))
    clash = sorted(set(SEEDS.values()) & used)
    if clash:
        raise ValueError(f"validation seeds {clash} were used to train this model")


def to_json(value):
    """A JSON-ready copy: NumPy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def _describe_model(model, model_path: str | Path | None) -> dict:
    meta = getattr(model, "metadata", None) or {}
    out = {"path": None if model_path is None else str(model_path)}
    for key in ("network", "epochs_completed", "validation_seed", "validation_size"):
        if key in meta:
            out[key] = meta[key]
    n_par = getattr(model, "n_parameters", None)
    if n_par is not None:
        out["n_parameters"] = int(n_par() if callable(n_par) else n_par)
    if model_path is not None:
        try:
            out["weights_sha256"] = sha256_file(model_paths(model_path)[0])
        except (OSError, ValueError):
            pass
    return out


def run_validation(
    model,
    out_dir: str | Path,
    sizes: ValidationSizes | None = None,
    quick: bool = False,
    experiments: Sequence[str] = EXPERIMENTS,
    methods: Sequence[str] = CLASSICAL,
    model_path: str | Path | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Run the validation experiments and write ``metrics.json``, plots and ``report.md``.

    Parameters
    ----------
    model : LumosNet or compatible
        The model under validation: ``predict(batch)`` (or ``model(batch)``) returning a
        :class:`lumos.mixture.GaussianMixture` of the flux in electrons.
    out_dir : str or Path
        Output directory (created).
    sizes : ValidationSizes, optional
        Experiment sizes (default :meth:`ValidationSizes.full`, or
        :meth:`ValidationSizes.quick` when ``quick``).
    quick : bool
        Use the quick sizes (ignored when ``sizes`` is given).
    experiments : sequence of str
        Which of :data:`EXPERIMENTS` to run.
    methods : sequence of str
        Classical methods of the accuracy and artefact experiments.
    model_path : str or Path, optional
        The model file (recorded in the metrics with its checksum).
    progress : callable or None
        Receives one-line progress messages (default ``print``).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (NaN written as null).
    """
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {EXPERIMENTS}")
    bad = sorted(set(methods) - set(CLASSICAL))
    if bad:
        raise ValueError(f"unknown classical method(s) {bad}; choose from {CLASSICAL}")
    mode = "custom" if sizes is not None else ("quick" if quick else "full")
    sizes = sizes or (ValidationSizes.quick() if quick else ValidationSizes.full())
    check_seeds(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    metrics: dict = {
        "lumos_version": __version__,
        "mode": mode,
        "model": _describe_model(model, model_path),
        "sizes": asdict(sizes),
        "seeds": {k: v for k, v in SEEDS.items() if k in experiments},
        "methods": {m: METHOD_LABELS[m] for m in ("lumos", *methods)},
        "runtime_s": {},
    }
    plots: dict[str, list[str]] = {}
    runners = {
        "accuracy": _accuracy,
        "deblending": _deblending,
        "artefacts": _artefacts,
        "repeats": _repeats,
        "sensitivity": _sensitivity,
        "snr_colours": _snr_colours,
        "catalogue_errors": _catalogue_errors,
        "coadds": _coadds,
        "fitted_catalogue": _fitted_catalogue,
        "zero_flux": _zero_flux,
        "positions": _positions,
    }
    for name in EXPERIMENTS:
        if name not in experiments:
            continue
        t0 = time.perf_counter()
        m, files = runners[name](model, sizes, SEEDS[name], tuple(methods), out, progress)
        metrics[name] = m
        plots[name] = files
        metrics["runtime_s"][name] = round(time.perf_counter() - t0, 2)
        if progress:
            progress(f"{name}: done in {metrics['runtime_s'][name]:.0f} s")
    metrics["runtime_s"]["total"] = round(time.perf_counter() - t_start, 2)
    metrics["plots"] = plots
    clean = to_json(metrics)
    (out / "metrics.json").write_text(json.dumps(clean, indent=1) + "\n")

    write_report(clean, out / "report.md")
    if progress:
        progress(f"validation written to {out} ({metrics['runtime_s']['total']:.0f} s)")
    return clean


# --- one runner per experiment: metrics and plot files ------------------------------------


def _labelled(by_method: dict) -> dict:
    """Re-key a method -> value mapping by the methods' plot labels."""
    return {METHOD_LABELS.get(k, k): v for k, v in by_method.items()}


def _accuracy(model, sizes, seed, methods, out, progress):
    res = run_accuracy(model, sizes.accuracy, seed, methods, progress=progress)
    cal = res.metrics.get("calibration", {})
    c = res.common
    pits = {}
    if "lumos" in res.results:
        pits[f"lumos (KS {cal['pit_ks']:.3f}, 68%: {cal['coverage68']:.2f})"] = (
            res.results["lumos"]["pit"][c]
        )
    if "aperture" in res.results:
        ap = res.results["aperture"]
        pits["aperture (Gaussian error)"] = gaussian_pit(ap["flux"][c], ap["flux_err"][c],
                                                         res.truth[c])  # fmt: skip
    plot_pit(pits, out / "pit.png")
    plot_accuracy_vs_mag(
        {METHOD_LABELS[k]: (res.i_mag[c], r["flux"][c], res.truth[c])
         for k, r in res.results.items()},  # fmt: skip
        out / "accuracy_vs_mag.png",
    )
    shown = [k for k in ("lumos", "aperture", "weighted_oracle") if k in res.results]
    plot_flux_vs_truth({METHOD_LABELS[k]: (res.results[k]["flux"][c], res.truth[c])
                        for k in shown}, "e-", out / "flux_vs_truth.png")  # fmt: skip
    return res.metrics, ["pit.png", "accuracy_vs_mag.png", "flux_vs_truth.png"]


def _accuracy_with(model, n, seed, methods, out, progress, config, plot: str):
    """Experiment 1-2's measurement on another simulation, with its accuracy plot."""
    res = run_accuracy(model, n, seed, methods, config=config, progress=progress)
    c = res.common
    plot_accuracy_vs_mag(
        {METHOD_LABELS[k]: (res.i_mag[c], r["flux"][c], res.truth[c])
         for k, r in res.results.items()},  # fmt: skip
        out / plot,
    )
    return {**res.metrics, "errors": asdict(config.catalogue_errors)}, [plot]


def _catalogue_errors(model, sizes, seed, methods, out, progress):
    config = SimulationConfig(catalogue_errors=CatalogueErrors.realistic())
    return _accuracy_with(model, sizes.catalogue_errors, seed, methods, out, progress, config,
                          "accuracy_catalogue_errors.png")  # fmt: skip


def _fitted_catalogue(model, sizes, seed, methods, out, progress):
    config = SimulationConfig(catalogue_errors=CatalogueErrors.realistic(),
                              two_component_fraction=1.0, two_component_model="fit")
    return _accuracy_with(model, sizes.fitted_catalogue, seed, methods, out, progress, config,
                          "accuracy_fitted_catalogue.png")  # fmt: skip


def _positions(model, sizes, seed, methods, out, progress):
    errors = replace(CatalogueErrors.realistic(), position_sigma=POSITION_ERROR)
    config = SimulationConfig(catalogue_errors=errors)
    return _accuracy_with(model, sizes.positions, seed, methods, out, progress, config,
                          "accuracy_positions.png")  # fmt: skip


def _deblending(model, sizes, seed, methods, out, progress):
    res = run_deblending(model, sizes.deblend_pairs, sizes.deblend_realisations, seed,
                         sizes.deblend_max_distance, progress=progress)  # fmt: skip
    title = "i = 22 target at the centre, i = 20 neighbour (NB685, 90 s)"
    plot_deblending(res.distance, _labelled(res.rel_error), out / "deblending.png", title=title)
    return res.metrics, ["deblending.png"]


def _artefacts(model, sizes, seed, methods, out, progress):
    res = run_artefacts(model, sizes.artefacts, seed, methods, progress=progress)
    plot_outliers({k: _labelled(v) for k, v in res.metrics["sets"].items()},
                  out / "artefacts.png")  # fmt: skip
    return res.metrics, ["artefacts.png"]


def _repeats(model, sizes, seed, methods, out, progress):
    res = run_repeats(model, sizes.repeats, seed, progress=progress)
    m = res.metrics
    plot_pair_pull_width(np.asarray(m["mag_bins"]),
                         _labelled({k: v["sigma68_D_per_bin"] for k, v in m["methods"].items()}),
                         out / "repeats_width.png")  # fmt: skip
    plot_pair_pull_distribution(_labelled(res.pull), out / "repeats_distribution.png")
    return m, ["repeats_width.png", "repeats_distribution.png"]


def _coadds(model, sizes, seed, methods, out, progress):
    return run_coadds(model, sizes.coadds, seed, progress=progress), []


def _zero_flux(model, sizes, seed, methods, out, progress):
    return run_zero_flux(model, sizes.zero_flux, seed, progress=progress), []


def _sensitivity(model, sizes, seed, methods, out, progress):
    res = run_sensitivity(model, sizes.sensitivity, seed, sizes.sensitivity_grid,
                          sizes.background_grid, progress=progress)  # fmt: skip
    plot_sensitivity(res.grids, {k: _labelled(v) for k, v in res.response.items()},
                     out / "sensitivity.png", res.metrics["units"])  # fmt: skip
    return res.metrics, ["sensitivity.png"]


def _snr_colours(model, sizes, seed, methods, out, progress):
    res = run_snr_colours(model, sizes.snr_colours, seed, progress=progress)
    m = res.metrics
    plot_snr(m["snr"], np.asarray(m["mag_bins"]), m["trays"], out / "snr.png")
    plot_colour_errors(_labelled(res.colour_error), res.i_mag, out / "colours.png")
    return m, ["snr.png", "colours.png"]
