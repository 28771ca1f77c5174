"""Experiment 3: deblending (paper Fig. 8).

An i = 22 target galaxy sits at the stamp centre and an i = 20 galaxy is moved across the
stamp in one-pixel steps, from on top of the target (distance 0) to ``max_distance``
pixels away, along a random direction per target/neighbour pair. Both are rendered with the
project renderer (:mod:`lumos.profiles`) through the same Moffat PSF in NB685 (90 s), with
Poisson shot noise on the artefact-free synthetic sky at the CCD centre. Shapes, redshifts
and spectra are drawn from the TEAHUPOO population at i = 22 and i = 20, so the NB685 flux
of each galaxy follows the population's colours (``flat_spectrum=True`` gives both the
NB685 magnitude equal to the i magnitude instead: at i = 22 that is brighter in NB685 than
most galaxies, and lumos, which uses the catalogue magnitude as a prior, pulls it towards
the typical colour; the isolated row measures that shift). The catalogue (model profile,
shape) is the target's only, as for a neighbour missing from the catalogue or a blend.

For each distance, ``n_realisations`` noise realisations of each of ``n_pairs`` pairs are
measured by lumos and aperture photometry; the bias is the median of
``(f - f_true) / f_true`` over all of them (with its 16-84% range). The same realisations
of the target alone (no neighbour) give the ``isolated_bias`` baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..bands import get_band
from ..instrument import CCD_SIZE
from ..population import PopulationConfig, galaxy_band_fluxes, sample_shapes, sample_spectra
from ..stats import P16, P84
from .measuring import measure_all
from .scenes import Targets, clean_sky, exposure_times, make_observation, render_profiles

__all__ = ["DeblendResult", "run_deblending", "TARGET_MAG", "NEIGHBOUR_MAG"]

#: i magnitude of the central target and of the moving neighbour.
TARGET_MAG = 22.0
NEIGHBOUR_MAG = 20.0
_ZERO_POINT = 24.5
_BAND = "NB685"


@dataclass
class DeblendResult:
    """Bias against the neighbour's distance.

    Attributes
    ----------
    distance : numpy.ndarray
        Neighbour distance from the target, pixels.
    rel_error : dict of str to numpy.ndarray
        Method -> ``(f - f_true) / f_true``, shape (n_distances, n_pairs * n_realisations).
    metrics : dict
        JSON-ready summary.
    """

    distance: np.ndarray
    rel_error: dict[str, np.ndarray]
    metrics: dict


def run_deblending(
    model,
    n_pairs: int,
    n_realisations: int,
    seed: int,
    max_distance: int = 30,
    methods: tuple[str, ...] = ("aperture",),
    progress: Callable[[str], None] | None = None,
    flat_spectrum: bool = False,
) -> DeblendResult:
    """Measure a target with a neighbour moved across the stamp.

    Parameters
    ----------
    model : LumosNet or compatible
        The model under validation.
    n_pairs : int
        Target/neighbour shape pairs.
    n_realisations : int
        Noise realisations per pair and distance.
    seed : int
        Random seed.
    max_distance : int
        Largest distance, pixels (distances 0, 1, ..., max_distance).
    methods : tuple of str
        Classical methods compared with lumos.
    progress : callable, optional
        One-line progress messages.
    flat_spectrum : bool
        NB685 magnitudes equal to the i magnitudes instead of the population's colours.

    Returns
    -------
    DeblendResult
    """
    if n_pairs < 1 or n_realisations < 1 or max_distance < 1:
        raise ValueError("n_pairs, n_realisations and max_distance must be positive")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    band = get_band(_BAND).number
    exptime = float(exposure_times(np.array([band]))[0])
    t_r50, t_n, t_q, t_z = sample_shapes(np.full(n_pairs, TARGET_MAG), rng)
    n_r50, n_n, n_q, n_z = sample_shapes(np.full(n_pairs, NEIGHBOUR_MAG), rng)
    f_t = exptime * _nb_flux(TARGET_MAG, t_n, t_z, rng, flat_spectrum)
    f_n = exptime * _nb_flux(NEIGHBOUR_MAG, n_n, n_z, rng, flat_spectrum)
    t_pa, n_pa = rng.uniform(0, 180, n_pairs), rng.uniform(0, 180, n_pairs)
    angle = rng.uniform(0, 2 * np.pi, n_pairs)
    fwhm = rng.uniform(0.7, 1.1, n_pairs)
    beta = rng.uniform(2.5, 5.0, n_pairs)
    state = rng.integers(0, 2, n_pairs)
    distance = np.arange(max_distance + 1, dtype=float)
    nd = distance.size + 1  # the last row: the target alone
    sky = clean_sky()
    errors: dict[str, list[np.ndarray]] = {}
    for p in range(n_pairs):
        target = render_profiles(t_r50[p], t_n[p], t_q[p], t_pa[p], fwhm[p], beta[p],
                                 np.zeros((1, 2)))  # fmt: skip
        pos = np.append(distance, 0.0)[:, None] * np.array([np.cos(angle[p]),
                                                             np.sin(angle[p])])[None, :]
        rep = np.ones(nd)
        flux_n = np.append(rep[1:] * f_n[p], 0.0)
        neighbour = render_profiles(rep * n_r50[p], rep * n_n[p], rep * n_q[p], rep * n_pa[p],
                                    rep * fwhm[p], rep * beta[p], pos, flux=flux_n)  # fmt: skip
        sources = (target * np.float32(f_t[p]) + neighbour)[:, None]  # (nd, 1, C, C)
        sources = np.broadcast_to(sources, (nd, n_realisations) + target.shape[1:])
        m = nd * n_realisations
        sources = sources.reshape((m,) + target.shape[1:])
        ones = np.ones(m)
        targets = Targets(
            r50=ones * t_r50[p], n=ones * t_n[p], q=ones * t_q[p], pa=ones * t_pa[p],
            flux=ones * f_t[p], i_mag=ones * TARGET_MAG, band=(ones * band).astype(np.int64),
            camera_state=(ones * state[p]).astype(np.int64), psf_fwhm=ones * fwhm[p],
            psf_beta=ones * beta[p], offset=np.zeros((m, 2)),
            ccd_xy=np.tile(np.asarray(CCD_SIZE, dtype=float) / 2, (m, 1)),
        )  # fmt: skip
        profile = np.broadcast_to(target, (m,) + target.shape[1:])
        obs = make_observation(targets, sources, profile, profile, sky, rng)
        res = measure_all(model, obs, methods)
        for name, r in res.items():
            rel = ((r["flux"] - f_t[p]) / f_t[p]).reshape(nd, n_realisations)
            errors.setdefault(name, []).append(rel)
        if progress:
            progress(f"deblending: pair {p + 1}/{n_pairs} ({m} stamps)")
    stacked = {name: np.concatenate(v, axis=1) for name, v in errors.items()}
    rel_error = {name: v[:-1] for name, v in stacked.items()}
    isolated = {name: v[-1] for name, v in stacked.items()}
    metrics = _metrics(distance, rel_error, n_pairs, n_realisations, f_t, f_n)
    metrics["spectrum"] = "flat (NB685 = i)" if flat_spectrum else "population colours"
    metrics["isolated_bias"] = {name: float(np.nanmedian(v)) for name, v in isolated.items()}
    return DeblendResult(distance, rel_error, metrics)


def _nb_flux(i_mag: float, sersic_n: np.ndarray, z: np.ndarray, rng: np.random.Generator,
             flat: bool) -> np.ndarray:
    """NB685 flux (e-/s) of galaxies of magnitude ``i_mag``: population colours or flat."""
    n = sersic_n.size
    if flat:
        return np.full(n, 10 ** (-0.4 * (i_mag - _ZERO_POINT)))
    cfg = PopulationConfig()
    weights, strength = sample_spectra(sersic_n, rng, cfg)
    return galaxy_band_fluxes(np.full(n, i_mag), z, weights, strength, [_BAND],
                              cfg.flux_max)[:, 0]  # fmt: skip


def _metrics(distance, rel_error, n_pairs, n_realisations, f_t, f_n) -> dict:
    out = {
        "distance_px": distance.tolist(),
        "n_pairs": int(n_pairs),
        "n_realisations": int(n_realisations),
        "target_i_mag": TARGET_MAG,
        "neighbour_i_mag": NEIGHBOUR_MAG,
        "target_flux_e": float(np.median(f_t)),
        "neighbour_flux_e": float(np.median(f_n)),
        "bias": {},
        "q16": {},
        "q84": {},
        "distance_bias_below_5pct": {},
    }
    for name, rel in rel_error.items():
        med = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in rel])
        q16 = np.array([np.nanpercentile(r, 100 * P16) if np.isfinite(r).any() else np.nan
                        for r in rel])  # fmt: skip
        q84 = np.array([np.nanpercentile(r, 100 * P84) if np.isfinite(r).any() else np.nan
                        for r in rel])  # fmt: skip
        out["bias"][name] = med.tolist()
        out["q16"][name] = q16.tolist()
        out["q84"][name] = q84.tolist()
        # the smallest distance from which on |bias| stays below 5% (max_distance + 1: never)
        bad = np.flatnonzero(~(np.abs(med) < 0.05))
        first_good = 0 if bad.size == 0 else int(bad[-1]) + 1
        out["distance_bias_below_5pct"][name] = (
            float(distance[first_good]) if first_good < distance.size
            else float(distance[-1] + 1)
        )  # fmt: skip
    return out
