"""Measure an :class:`~lumos.validation.scenes.Observation` with lumos and the classical methods.

Every method returns the same columns -- ``flux``, ``flux_err`` (electrons) and ``flags`` --
plus, for lumos, the PDF quantiles and the PIT value ``CDF(true flux)``, so that the
experiments compare methods in one loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..bayes import SharedError, predict_posterior, split_shared
from ..classical import measure_classical
from ..flags import UNUSABLE, Flag
from .scenes import Observation, Targets, observe

__all__ = [
    "CLASSICAL",
    "METHOD_LABELS",
    "measure_lumos",
    "measure_classical_methods",
    "measure_all",
    "observe_and_measure",
    "usable",
]

#: Classical methods of the comparison, in plotting order.
CLASSICAL = ("aperture", "modelfit", "weighted", "weighted_oracle", "sep_auto")

#: Labels used in plots and tables.
METHOD_LABELS = {
    "lumos": "lumos",
    "aperture": "aperture",
    "modelfit": "profile fit",
    "weighted": "weighted sum",
    "weighted_oracle": "oracle weighted (linear limit)",
    "sep_auto": "sep AUTO",
    "lumos_like": "lumos likelihood (flux_like)",
}


def _predict(model, batch):
    """The model's flux mixtures of a batch (``model.predict`` when it exists); for a
    likelihood model the posterior with the population prior
    (:func:`lumos.bayes.predict_posterior`)."""
    if getattr(getattr(model, "config", None), "likelihood", False):
        return predict_posterior(model, batch)
    predict = getattr(model, "predict", None)
    if callable(predict):
        return predict(batch)
    return model(batch)


def measure_lumos(model, obs: Observation, chunk_size: int = 1024) -> dict[str, np.ndarray]:
    """Flux PDFs of the stamps of an observation, summarised.

    Parameters
    ----------
    model : LumosNet or any object with ``predict(batch)`` (or ``__call__``) returning a
        :class:`lumos.mixture.GaussianMixture`
        The model under validation.
    obs : Observation
        Stamps with truth.
    chunk_size : int
        Stamps per forward pass.

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux`` (PDF mean), ``flux_err`` (PDF standard deviation), ``flux_median``,
        ``flux_q16``, ``flux_q84``, ``flux_q025``, ``flux_q975`` (electrons), ``pit``
        (``CDF(true flux)``, honouring the truncation at zero) and ``flags``; for a
        likelihood model also the likelihood columns of :mod:`lumos.bayes`
        (``flux_like``, ``flux_like_err``, ``flux_shared_err``, ``like_weight``,
        ``like_mean``, ``like_sigma``), the posterior taking the population prior.
    """
    keys = ("flux", "flux_err", "flux_median", "flux_q16", "flux_q84", "flux_q025",
            "flux_q975")  # fmt: skip
    likelihood = getattr(getattr(model, "config", None), "likelihood", False)
    like_keys = ("flux_like", "flux_like_err", "flux_shared_err", "like_weight", "like_mean",
                 "like_sigma") if likelihood else ()  # fmt: skip
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys + like_keys + ("pit", "flags")}
    batch = obs.batch
    truth = torch.as_tensor(obs.truth, dtype=torch.float64)
    with torch.inference_mode():
        for lo in range(0, len(batch), chunk_size):
            sub = batch[lo : lo + chunk_size]
            if likelihood:
                like = model.predict(sub).to(torch.float64)
                mix = predict_posterior(model, sub, likelihood=like)
                curve = SharedError.of(model.config)
                per, shared = split_shared(like, curve, curve.sizes_of(sub.profile))
                arrays = per.numpy()
                for k, v in (("flux_like", per.mean().numpy()), ("flux_like_err",
                             per.std().numpy()), ("flux_shared_err", shared.numpy()),
                             ("like_weight", arrays["weight"]), ("like_mean", arrays["mean"]),
                             ("like_sigma", arrays["sigma"])):  # fmt: skip
                    parts[k].append(np.asarray(v, dtype=float))
            else:
                mix = _predict(model, sub)
            summary = mix.summaries()
            for k in keys:
                parts[k].append(np.asarray(summary[k], dtype=float))
            cdf = mix.cdf(truth[lo : lo + chunk_size].to(mix.means.dtype))
            parts["pit"].append(cdf.detach().cpu().double().numpy())
            flags = sub.flags.cpu().numpy().astype(np.int64)
            range_flags = getattr(model, "range_flags", None)
            if callable(range_flags):
                flags = flags | np.asarray(range_flags(sub).cpu().numpy(), dtype=np.int64)
            parts["flags"].append(flags)
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    bad = ~np.isfinite(out["flux"]) | ~np.isfinite(out["flux_err"])
    out["flags"] = out["flags"].astype(np.int64) | np.where(bad, int(Flag.FAILED), 0)
    return out


def measure_classical_methods(
    obs: Observation, methods: Sequence[str] = CLASSICAL
) -> dict[str, dict[str, np.ndarray]]:
    """Measure an observation with classical methods.

    Parameters
    ----------
    obs : Observation
        Context cutouts with truth (the oracle uses the true profile, sky and flux).
    methods : sequence of str
        Names from :data:`lumos.classical.METHODS`.

    Returns
    -------
    dict
        Method name -> ``{"flux", "flux_err", "flags"}`` (electrons).
    """
    out = {}
    for method in methods:
        options = {"true_profile": obs.profile_true} if method == "weighted_oracle" else {}
        res = measure_classical(method, obs.cutouts, **options)
        out[method] = {k: np.asarray(res[k]) for k in ("flux", "flux_err", "flags")}
    return out


def measure_all(
    model, obs: Observation, methods: Sequence[str] = CLASSICAL, lumos: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Lumos (first, when ``lumos``) and the classical ``methods`` on one observation."""
    out = {"lumos": measure_lumos(model, obs)} if lumos else {}
    out.update(measure_classical_methods(obs, methods))
    return out


def observe_and_measure(
    model,
    targets: Targets,
    background,
    rng: np.random.Generator,
    methods: Sequence[str] = ("aperture",),
    chunk: int = 1000,
) -> dict[str, dict[str, np.ndarray]]:
    """Observe galaxies (:func:`lumos.validation.scenes.observe`) and measure them with lumos
    and ``methods``, ``chunk`` galaxies at a time (bounds memory).

    Returns
    -------
    dict
        Method -> measurement columns, one row per target.
    """
    parts = []
    for lo in range(0, len(targets), chunk):
        obs = observe(targets[lo : lo + chunk], background, rng)
        parts.append(measure_all(model, obs, methods))
    return {name: {k: np.concatenate([p[name][k] for p in parts]) for k in parts[0][name]}
            for name in parts[0]}  # fmt: skip


def usable(result: dict[str, np.ndarray]) -> np.ndarray:
    """Rows with a finite flux and error and no unusable flag, bool [N]."""
    flags = np.asarray(result["flags"], dtype=np.int64)
    return (
        np.isfinite(result["flux"])
        & np.isfinite(result["flux_err"])
        & ((flags & int(UNUSABLE)) == 0)
    )
