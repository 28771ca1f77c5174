"""Calibration of a trained model on fresh simulations: sigma scale and shared error.

Two numbers are fitted after training, on simulations drawn like the model's training set
(:func:`lumos.training.training_simulation`) from seeds that training and validation never
use; the weights do not change:

* ``sigma_scale``: temperature scaling, every component sigma multiplied by one number
  chosen by maximum likelihood (the training loss, truncated and for a likelihood model
  importance weighted as in training);
* ``shared_error`` (likelihood models): the relative error shared by two exposures of one
  galaxy. Each galaxy is observed twice with one catalogue (its errors shared, the PSF,
  offsets, sky and noise new, :func:`lumos.pairs.simulate_pairs`), and ``c`` is the
  value for which ``D`` (Eq. 19) of the per-exposure likelihoods
  (:func:`lumos.bayes.split_shared`) has ``sigma68(D) = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from .bayes import split_shared
from .mixture import GaussianMixture, mixture_nll
from .network import LumosNet
from .stats import P16, P84, sigma68

__all__ = ["CalibrationResult", "fit_sigma_scale", "fit_shared_error", "calibrate_model"]


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_model` fitted and measured.

    Attributes
    ----------
    sigma_scale : float
    shared_error : float
    coverage_before, coverage_after : float
        68% coverage of the truth on the calibration stamps.
    d_sigma68_before, d_sigma68_after : float
        sigma68 of D on the simulated pairs with the full and with the per-exposure
        errors (NaN for a posterior model).
    """

    sigma_scale: float
    shared_error: float
    coverage_before: float
    coverage_after: float
    d_sigma68_before: float
    d_sigma68_after: float


def _raw(model: LumosNet, batch, chunk: int = 1000):
    return model.raw_in_chunks(batch, chunk)._asdict()


def fit_sigma_scale(model: LumosNet, batch) -> tuple[float, float, float]:
    """Temperature scaling by maximum likelihood on a batch with truth.

    Returns
    -------
    scale, coverage_before, coverage_after : float
    """
    from .loss import likelihood_weights

    r = _raw(model.eval(), batch)
    lw, mu, sg = (r[k].double() for k in ("log_weights", "means", "sigmas"))
    ref = r["reference"].double()
    target = batch.truth.double() / ref
    if model.config.likelihood:
        trunc = torch.ones_like(r["truncated"])
        weights = likelihood_weights(batch.truth.double(), ref)
        # coverage is measured on the untruncated likelihood, as it is reported
        cover_trunc = torch.zeros_like(trunc)
    else:
        trunc = r["truncated"]
        weights = torch.ones_like(target)
        cover_trunc = trunc

    def nll(s: float) -> float:
        values = mixture_nll(GaussianMixture(lw, mu, sg * s, truncated=trunc), target, trunc)
        good = torch.isfinite(values)
        return float((weights[good] * values[good]).sum() / weights[good].sum())

    def coverage(s: float) -> float:
        m = GaussianMixture(lw, mu, sg * s, truncated=cover_trunc)
        lo, hi = m.quantile(P16), m.quantile(P84)
        w = weights / weights.mean()
        inside = ((target >= lo) & (target <= hi)).double()
        return float((w * inside).sum() / w.sum())

    fit = minimize_scalar(nll, bounds=(0.3, 3.0), method="bounded", options={"xatol": 1e-4})
    scale = float(fit.x)
    return scale, coverage(1.0), coverage(scale)


def _pair_d(m1: GaussianMixture, m2: GaussianMixture, c: float) -> np.ndarray:
    p1, _ = split_shared(m1, c)
    p2, _ = split_shared(m2, c)
    d = (p1.mean() - p2.mean()) / torch.sqrt(p1.variance() + p2.variance())
    return d.numpy()


def fit_shared_error(model: LumosNet, first, second) -> tuple[float, float, float]:
    """The shared relative error that makes sigma68 of D on pairs equal to 1.

    Parameters
    ----------
    model : LumosNet
        A likelihood model (its ``sigma_scale`` applied).
    first, second : StampBatch
        The two observations of each galaxy.

    Returns
    -------
    c, d_sigma68_before, d_sigma68_after : float
        ``c`` is 0 when D is already at least 1 wide without a shared error.
    """
    with torch.inference_mode():
        m1 = model.eval().predict(first).to(torch.float64)
        m2 = model.predict(second).to(torch.float64)

    def width(c: float) -> float:
        return sigma68(_pair_d(m1, m2, c))

    before = width(0.0)
    if before >= 1.0:
        return 0.0, before, before
    hi = 0.5
    if width(hi) < 1.0:
        return hi, before, width(hi)
    c = float(brentq(lambda v: width(v) - 1.0, 0.0, hi, xtol=1e-4))
    return c, before, width(c)


def calibrate_model(model: LumosNet, n: int = 8000, n_pairs: int = 4000,
                    seed: int = 20_000_001, simulator_kwargs: dict | None = None,
                    ) -> tuple[LumosNet, CalibrationResult]:
    """Fit ``sigma_scale`` (and ``shared_error`` for a likelihood model).

    Parameters
    ----------
    model : LumosNet
        An uncalibrated model (``sigma_scale`` 1) with its training simulation in its
        metadata.
    n : int
        Calibration stamps for the sigma scale.
    n_pairs : int
        Simulated pairs for the shared error.
    seed : int
        Seed of the calibration simulations (pairs use ``seed + 1``).
    simulator_kwargs : dict, optional
        :class:`lumos.simulate.Simulator` keywords of the training (``background``, e.g.
        another survey's sky or real cutouts); the pairs get the same ``background``.

    Returns
    -------
    model : LumosNet
        A calibrated copy, in ``eval()`` mode, with the input model's metadata.
    result : CalibrationResult
    """
    from .pairs import PairSimulation, simulate_pairs
    from .simulate import Simulator
    from .training import training_simulation

    if model.config.sigma_scale != 1.0:
        raise ValueError("the model is already calibrated (sigma_scale != 1)")
    sim = training_simulation(model)
    kwargs = dict(simulator_kwargs or {})
    batch = Simulator(sim, seed=seed, **kwargs).sample(int(n))
    scale, cov0, cov1 = fit_sigma_scale(model, batch)
    out = LumosNet(model.config.replace(sigma_scale=scale))
    out.load_state_dict(model.state_dict())
    out.metadata = dict(getattr(model, "metadata", {}) or {})
    shared, d0, d1 = 0.0, float("nan"), float("nan")
    if model.config.likelihood:
        from dataclasses import replace

        pair_sim = replace(sim, flux_prior="population")
        pairs = simulate_pairs(int(n_pairs), seed=seed + 1,
                               config=PairSimulation(simulation=pair_sim),
                               background=kwargs.get("background"))  # fmt: skip
        shared, d0, d1 = fit_shared_error(out, pairs.first, pairs.second)
        calibrated = LumosNet(out.config.replace(shared_error=shared))
        calibrated.load_state_dict(out.state_dict())
        calibrated.metadata = out.metadata
        out = calibrated
    return out.eval(), CalibrationResult(scale, shared, cov0, cov1, d0, d1)
