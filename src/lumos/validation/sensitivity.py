"""Experiment 6: sensitivity to profile-parameter errors (paper appendix C, Table 1).

Galaxies of i = 18-21 (TEAHUPOO population, random band, PSF and CCD position) are observed
once on the artefact-free synthetic sky with their true profile. The *same* images are then
measured again with one catalogue input wrong by a relative error ``delta``:

``r50``, ``sersic_n``, ``psf_fwhm``
    multiplied by ``1 + delta`` (n clipped to the renderer's 0.3-6.2);
``ellipticity``
    ``e = 1 - q`` multiplied by ``1 + delta`` (q clipped to 0.05-1);

each time re-rendering the model-profile channel (lumos) and the model profile and shape
the classical methods use -- the image is untouched. ``background`` is the one input every
method estimates itself from the image (lumos from the stamp border, the classical methods
from a 30-45 pixel annulus): its error is applied as what a wrong background does, a
constant ``-delta x sky level`` under the galaxy (within 26 pixels, inside both the lumos
border frame and the annulus), so ``delta`` is in units of the local sky level.

The response is the median over galaxies of ``(f_delta - f_0) / f_true`` (paired with the
unperturbed measurement ``f_0`` of the same image, so the noise cancels). The tolerance of
a method to a parameter is the smallest ``|delta|`` (either sign, interpolated) whose
response reaches 10% -- Table 1's "error that propagates to a 10% flux error".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..population import POPULATION_Q_RANGE, PopulationConfig
from ..profiles import SERSIC_N_RANGE
from .draws import experiment_targets
from .measuring import measure_all
from .metrics import tolerance_for_error
from .scenes import CONTEXT, clean_sky, observe, render_profiles

__all__ = ["SensitivityResult", "run_sensitivity", "PARAMETERS", "ERROR_LEVEL"]

#: Perturbed inputs, in report order.
PARAMETERS = ("r50", "sersic_n", "ellipticity", "psf_fwhm", "background")
#: The flux error whose parameter error is reported (10%).
ERROR_LEVEL = 0.10
_DISC_RADIUS = 26.0
_CHUNK = 64  # galaxies per batch of perturbed measurements (bounds memory)


@dataclass
class SensitivityResult:
    """Flux response to catalogue errors.

    Attributes
    ----------
    grids : dict of str to numpy.ndarray
        Parameter -> signed perturbations tested.
    response : dict
        Parameter -> method -> median relative flux change at each perturbation.
    metrics : dict
        JSON-ready tolerances and responses.
    """

    grids: dict[str, np.ndarray]
    response: dict[str, dict[str, np.ndarray]]
    metrics: dict


def _signed(grid: Sequence[float], max_negative: float) -> np.ndarray:
    g = np.asarray(sorted(set(float(abs(v)) for v in grid if v != 0)))
    return np.concatenate([-g[g <= max_negative][::-1], g])


def _perturbed_shapes(targets, param: str, delta: float) -> tuple[np.ndarray, ...]:
    """Catalogue r50, n, q and PSF FWHM with one of them wrong by ``delta``."""
    t = targets
    r50, n, q, fwhm = t.r50, t.n, t.q, t.psf_fwhm
    if param == "r50":
        r50 = t.r50 * (1 + delta)
    elif param == "sersic_n":
        n = np.clip(t.n * (1 + delta), *SERSIC_N_RANGE)
    elif param == "ellipticity":
        q = np.clip(1.0 - (1.0 - t.q) * (1 + delta), *POPULATION_Q_RANGE)
    elif param == "psf_fwhm":
        fwhm = t.psf_fwhm * (1 + delta)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(param)
    return r50, n, q, fwhm


def _perturbed(obs, targets, param: str, deltas: np.ndarray):
    """The observation repeated once per ``delta``, each copy with its perturbed profile."""
    t = targets
    shapes = [_perturbed_shapes(t, param, float(d)) for d in deltas]
    r50, n, q, fwhm = (np.concatenate([s[k] for s in shapes]) for k in range(4))
    k = len(deltas)
    profile = render_profiles(r50, n, q, np.tile(t.pa, k), fwhm, np.tile(t.psf_beta, k),
                              np.tile(t.offset, (k, 1)))  # fmt: skip
    rep = obs[np.tile(np.arange(len(obs)), k)]
    return rep.with_profile(profile, r50=r50, n=n, q=q)


def _background_offset(obs, deltas: np.ndarray):
    """The observation repeated once per ``delta``, each copy with ``-delta x sky`` within
    26 pixels of the centre."""
    c = obs.cutouts
    size = c.size
    g = np.arange(size) - (size - 1) / 2.0
    disc = (g[None, :] ** 2 + g[:, None] ** 2 < _DISC_RADIUS**2).astype(np.float32)
    level = np.asarray(c.true_background, dtype=np.float32).reshape(len(c), -1).mean(axis=1)
    pixels = np.concatenate([c.pixels - np.float32(d) * level[:, None, None] * disc[None]
                             for d in deltas]).astype(np.float32)  # fmt: skip
    rep = obs[np.tile(np.arange(len(obs)), len(deltas))]
    return rep.with_pixels(pixels)


def run_sensitivity(
    model,
    n: int,
    seed: int,
    grid: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    background_grid: Sequence[float] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
    methods: tuple[str, ...] = ("aperture", "modelfit", "weighted"),
    mag_range: tuple[float, float] = (18.0, 21.0),
    progress: Callable[[str], None] | None = None,
) -> SensitivityResult:
    """Measure the flux response to wrong catalogue inputs.

    Parameters
    ----------
    model, seed, methods, progress
        As in :func:`~lumos.validation.accuracy.run_accuracy`.
    n : int
        Number of galaxies (each measured with every perturbation).
    grid : sequence of float
        Relative errors tested for the profile parameters (each with both signs; negative
        ones only up to -0.75).
    background_grid : sequence of float
        Background errors tested, in units of the sky level (both signs).
    mag_range : tuple of float
        i-magnitude range of the galaxies.

    Returns
    -------
    SensitivityResult
    """
    rng, targets, _ = experiment_targets(
        "sensitivity", n, seed, population=PopulationConfig(mag_range=mag_range, mag_slope=0.0)
    )
    base = observe(targets, clean_sky(), rng, size=CONTEXT)
    ref = measure_all(model, base, methods)
    truth = targets.flux
    grids = {p: _signed(grid, 0.75) for p in PARAMETERS[:-1]}
    grids["background"] = _signed(background_grid, np.inf)
    response: dict[str, dict[str, np.ndarray]] = {}
    for param in PARAMETERS:
        g = grids[param]
        changes: dict[str, list[np.ndarray]] = {name: [] for name in ref}
        for lo in range(0, n, _CHUNK):
            rows = slice(lo, min(lo + _CHUNK, n))
            m = rows.stop - rows.start
            if param == "background":
                obs = _background_offset(base[rows], g)
            else:
                obs = _perturbed(base[rows], targets[rows], param, g)
            for name, r in measure_all(model, obs, methods).items():
                f0 = ref[name]["flux"][rows]
                changes[name].append((r["flux"].reshape(g.size, m) - f0[None]) / truth[None, rows])
        response[param] = {}
        for name, parts in changes.items():
            change = np.concatenate(parts, axis=1)
            response[param][name] = np.array(
                [np.nanmedian(row) if np.isfinite(row).any() else np.nan for row in change]
            )
        if progress:
            progress(f"sensitivity: {param} done ({grids[param].size} perturbations)")
    return SensitivityResult(grids, response, _metrics(grids, response, n, mag_range))


def _metrics(grids, response, n, mag_range) -> dict:
    out: dict = {
        "n": int(n),
        "i_mag_range": list(mag_range),
        "error_level": ERROR_LEVEL,
        "units": {p: ("fraction of the sky level" if p == "background" else "relative error")
                  for p in grids},  # fmt: skip
        "grid": {p: g.tolist() for p, g in grids.items()},
        "response": {p: {m: v.tolist() for m, v in r.items()} for p, r in response.items()},
        "tolerance": {},
    }
    for param, res in response.items():
        g = grids[param]
        out["tolerance"][param] = {}
        for name, r in res.items():
            neg, neg_ok = tolerance_for_error(g[g < 0], r[g < 0], ERROR_LEVEL)
            pos, pos_ok = tolerance_for_error(g[g > 0], r[g > 0], ERROR_LEVEL)
            cands = [v for v, ok in ((neg, neg_ok), (pos, pos_ok)) if ok]
            out["tolerance"][param][name] = {
                "value": float(min(cands)) if cands else float(max(neg, pos)),
                "reached": bool(cands),
                "negative": neg,
                "negative_reached": neg_ok,
                "positive": pos,
                "positive_reached": pos_ok,
            }
    return out
