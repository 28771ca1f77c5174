"""Calibration of a trained model on fresh simulations: sigma scale and shared error.

Fitted after training, on simulations drawn like the model's training set
(:func:`lumos.training.training_simulation`; optionally with other catalogue errors, for a
catalogue better or worse than the training's) from seeds that training and validation
never use; the weights do not change:

* ``sigma_scale``: temperature scaling, every component sigma multiplied by one number
  chosen by maximum likelihood (the training loss, truncated and for a likelihood model
  importance weighted as in training);
* the shared error (likelihood models): the relative error shared by the exposures of one
  galaxy. Each scene is observed twice (:func:`lumos.pairs.simulate_pairs`: its catalogue
  with its errors, its neighbours and its bulge + disk galaxies shared; PSF, offset, sky and
  noise new). By default it is a curve of the exposure's relative likelihood width ``w``
  with a node in each of six equal-count bins of ``w``, whose values make ``sigma68(D)``
  (Eq. 19) of the per-exposure likelihoods (:func:`lumos.bayes.split_shared`) equal to 1
  over each bin's pairs (:func:`shared_error_curve`), optionally times one factor per third
  of the pairs' model-profile sizes (:func:`shared_error_size_factors`); or one number ``c``
  with ``sigma68(D) = 1`` over all pairs (:func:`fit_shared_error`), which is always
  recorded as ``shared_error``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, partial

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from .bayes import split_shared
from .loss import likelihood_support, likelihood_weights
from .mixture import GaussianMixture, mixture_nll
from .network import LumosNet
from .pairs import PairSimulation, simulate_pairs
from .shared_error import SharedError, profile_half_light_radius, relative_width
from .simconfig import CatalogueErrors
from .simulate import Simulator
from .stats import P16, P84, pair_pull, sigma68
from .training import training_simulation

#: The forms of the shared error ``calibrate_model`` fits (``lumos calibrate --shared-error``).
SHARED_ERROR_KINDS = ("curve", "constant", "curve-size")

__all__ = ["SHARED_ERROR_KINDS", "CalibrationResult", "fit_sigma_scale", "fit_shared_error",
           "fit_shared_error_curve", "shared_error_curve", "shared_error_size_factors", "pair_d",
           "calibrate_model"]


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
    shared_error_widths, shared_error_values : tuple of float
        The shared-error curve (:class:`lumos.bayes.SharedError`; empty for a constant).
    d_sigma68_bins : tuple of float
        sigma68 of D with the curve in each of its width bins.
    shared_error_size_edges, shared_error_size_factors : tuple of float
        The curve's factors by profile size (empty unless asked for).
    d_sigma68_sizes : tuple of float
        sigma68 of D in each size bin with them.
    """

    sigma_scale: float
    shared_error: float
    coverage_before: float
    coverage_after: float
    d_sigma68_before: float
    d_sigma68_after: float
    shared_error_widths: tuple[float, ...] = ()
    shared_error_values: tuple[float, ...] = ()
    d_sigma68_bins: tuple[float, ...] = ()
    shared_error_size_edges: tuple[float, ...] = ()
    shared_error_size_factors: tuple[float, ...] = ()
    d_sigma68_sizes: tuple[float, ...] = ()


def _raw(model: LumosNet, batch, chunk: int = 1000):
    return model.raw_in_chunks(batch, chunk)._asdict()


def fit_sigma_scale(model: LumosNet, batch) -> tuple[float, float, float]:
    """Temperature scaling by maximum likelihood on a batch with truth.

    Returns
    -------
    scale, coverage_before, coverage_after : float
    """
    r = _raw(model.eval(), batch)
    lw, mu, sg = (r[k].double() for k in ("log_weights", "means", "sigmas"))
    ref = r["reference"].double()
    target = batch.truth.double() / ref
    if model.config.likelihood:
        trunc, scale = likelihood_support(batch, r["truncated"])
        weights = likelihood_weights(batch.truth.double(), ref, scale)
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


def pair_d(m1: GaussianMixture, m2: GaussianMixture, shared: float | SharedError,
           sizes: tuple | None = None) -> np.ndarray:
    """D (Eq. 19, :func:`lumos.stats.pair_pull`) of each pair's per-exposure likelihoods
    (:func:`lumos.bayes.split_shared` with ``shared``; ``sizes``, the two exposures' profile
    half-light radii, for a shared error that depends on the profile size)."""
    s1, s2 = (None, None) if sizes is None else sizes
    p1, _ = split_shared(m1, shared, s1)
    p2, _ = split_shared(m2, shared, s2)
    return pair_pull(p1.mean().numpy(), p1.std().numpy(), p2.mean().numpy(), p2.std().numpy())


def _unit_width_root(width: Callable[[float], float], hi: float, xtol: float) -> float:
    """The ``x`` in [0, ``hi``] with ``width(x) = 1``, for a sigma68(D) that widens as ``x``
    grows (more of the error called shared): 0 if D is 1 or wider at 0, ``hi`` if it is
    still 1 or narrower there."""
    if width(0.0) >= 1.0:
        return 0.0
    if width(hi) <= 1.0:
        return float(hi)
    return float(brentq(lambda x: width(x) - 1.0, 0.0, hi, xtol=xtol))


def _unit_width_c(m1: GaussianMixture, m2: GaussianMixture, hi: float = 0.5
                  ) -> tuple[float, float, float]:
    """``c`` with sigma68(D) = 1 on these pairs (0 if D is already wide enough, at most ``hi``),
    and sigma68(D) with no shared error and with that ``c``."""

    @cache
    def width(c: float) -> float:
        return float(sigma68(pair_d(m1, m2, c)))

    c = _unit_width_root(width, hi, xtol=1e-4)
    return c, width(0.0), width(c)


def _pair_mixtures(model: LumosNet, first, second) -> tuple[GaussianMixture, GaussianMixture]:
    with torch.inference_mode():
        m1 = model.eval().predict(first).to(torch.float64)
        m2 = model.predict(second).to(torch.float64)
    return m1, m2


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
    return _unit_width_c(*_pair_mixtures(model, first, second))


def fit_shared_error_curve(model: LumosNet, first, second, bins: int = 6
                           ) -> tuple[SharedError, list[float]]:
    """The shared error as a curve of the exposures' relative likelihood width.

    :func:`shared_error_curve` of the model's likelihoods of the two observations.

    Parameters
    ----------
    model, first, second
        As for :func:`fit_shared_error`.
    bins : int
        Number of width bins (at least 1; each should hold a few hundred pairs).

    Returns
    -------
    curve : SharedError
    d_sigma68 : list of float
        sigma68 of D in each bin with the curve.
    """
    return shared_error_curve(*_pair_mixtures(model, first, second), bins)


def shared_error_curve(m1: GaussianMixture, m2: GaussianMixture, bins: int = 6,
                       constant: float | None = None, passes: int = 3
                       ) -> tuple[SharedError, list[float]]:
    """The shared-error curve of two exposures' likelihoods of the same galaxies.

    The pairs are split into ``bins`` equal-count bins of their width ``sqrt(w1 w2)``
    (``w = std / |mean|``, :func:`lumos.bayes.relative_width`). The curve has a node at
    each bin's median width; the node's value ``c_k`` is the one for which sigma68 of D
    (Eq. 19, :func:`pair_d`) over the bin's pairs is 1 with the whole curve applied (each
    exposure takes ``c`` at its own width, :class:`lumos.bayes.SharedError`). D widens
    as ``c_k`` grows, so each node is a one-dimensional root; the nodes are solved in turn,
    ``passes`` times over, because a node also moves its neighbours' bins. Where D is 1
    or wider with nothing shared, ``c_k = 0``: the pairs show no shared error there (the
    exposures' own widths already hold their differences). ``c_k`` is at most ``0.95``
    of the node's width. Bins whose median width exceeds 1 (S/N below 1, where the pairs
    cannot define an error relative to the flux) give no node; the curve is constant
    beyond its last node. ``constant`` (default: fitted with :func:`fit_shared_error`'s
    rule) is recorded as the curve's ``constant``. Each node is fitted exactly, without
    smoothing: beside a bin that shows nothing shared, a node compensates the interpolation
    toward it, and with a few hundred pairs per bin such nodes carry the bins' noise (use
    thousands of pairs per bin; ``lumos calibrate`` defaults to 16,000 pairs).

    Parameters
    ----------
    m1, m2 : GaussianMixture
        The two exposures' likelihoods, one row per galaxy.
    bins : int
        Width bins (at least 1).
    constant : float, optional
    passes : int
        Sweeps over the nodes (at least 1).

    Returns
    -------
    curve : SharedError
    d_sigma68 : list of float
        sigma68 of D in each bin with the curve.

    Raises
    ------
    ValueError
        If ``bins`` or ``passes`` is below 1, or fewer pairs than bins have a finite width.
    """
    bins, passes = int(bins), int(passes)
    if bins < 1 or passes < 1:
        raise ValueError(f"bins and passes must be at least 1, got {bins} and {passes}")
    w = np.sqrt(relative_width(m1) * relative_width(m2))
    good = np.isfinite(w) & (w > 0)
    if int(good.sum()) < bins:
        raise ValueError(f"{int(good.sum())} pairs with a finite width for {bins} bins")
    order = np.flatnonzero(good)[np.argsort(w[good], kind="stable")]
    members = [torch.from_numpy(m) for m in np.array_split(order, bins)]
    pairs = [(m1[m], m2[m]) for m in members]
    medians = np.array([float(np.median(w[m.numpy()])) for m in members])
    used = max(1, int((medians <= 1.0).sum()))
    nodes = np.maximum.accumulate(medians[:used] * (1.0 + 1e-9 * np.arange(used)))
    values = np.zeros(used)

    def curve(v: np.ndarray) -> SharedError:
        return SharedError(0.0, tuple(nodes.tolist()), tuple(float(x) for x in v))

    def width(k: int, value: float) -> float:
        v = values.copy()
        v[k] = value
        return float(sigma68(pair_d(*pairs[k], curve(v))))

    for _ in range(passes):
        for k in range(used):
            values[k] = _unit_width_root(partial(width, k), min(0.95 * nodes[k], 0.99), 1e-5)
    if constant is None:
        constant = _unit_width_c(m1, m2)[0]
    best = curve(values)
    return (SharedError(float(constant), best.widths, best.values),
            [float(sigma68(pair_d(a, b, best))) for a, b in pairs])


def shared_error_size_factors(m1: GaussianMixture, m2: GaussianMixture, size1, size2,
                              curve: SharedError, bins: int = 3, passes: int = 3
                              ) -> tuple[SharedError, list[float]]:
    """The shared error ``curve`` times one factor per bin of the model profile's size.

    The pairs are split into ``bins`` equal-count bins of ``sqrt(size1 size2)`` (the two
    exposures' profile half-light radii, :func:`lumos.shared_error.profile_half_light_radius`);
    in each, one factor ``g`` of the curve is solved for sigma68 of D over the bin's pairs
    to be 1, each exposure split with the factor of its own size's bin (as measurements
    are), so that the bins are solved in turn, ``passes`` times over, with the others'
    current factors. D widens as ``g`` grows; ``g`` is 0 where D is 1 or wider with nothing
    shared and at most 3. The shape of the curve in
    width is kept: three numbers say how much more a large galaxy shares than a compact
    one, which a curve fitted per size bin could not say without its nodes chasing one
    another's noise.

    Parameters
    ----------
    m1, m2 : GaussianMixture
        The two exposures' likelihoods, one row per galaxy.
    size1, size2 : array_like, shape (N,)
        The two exposures' profile half-light radii (pixels).
    curve : SharedError
        The shared error without size dependence (:func:`shared_error_curve`).
    bins : int
        Size bins (at least 1).
    passes : int
        Sweeps over the bins.

    Returns
    -------
    shared : SharedError
        ``curve`` with ``size_edges`` and ``size_factors``.
    d_sigma68 : list of float
        sigma68 of D in each size bin with it.

    Raises
    ------
    ValueError
        If ``bins`` is below 1, or fewer pairs than bins have a finite size.
    """
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    s1, s2 = np.asarray(size1, float), np.asarray(size2, float)
    r = np.sqrt(s1 * s2)
    good = np.isfinite(r) & (r > 0)
    if int(good.sum()) < bins:
        raise ValueError(f"{int(good.sum())} pairs with a finite profile size for {bins} bins")
    edges = np.unique(np.quantile(r[good], np.linspace(0.0, 1.0, bins + 1))[1:-1])
    which = np.searchsorted(edges, r, side="right")
    factors = np.ones(edges.size + 1)
    members = [np.flatnonzero(good & (which == k)) for k in range(edges.size + 1)]
    subsets = [((m1[torch.from_numpy(rows)], m2[torch.from_numpy(rows)]), (s1[rows], s2[rows]))
               for rows in members]  # fmt: skip

    def width(k: int, g: float) -> float:
        trial = factors.copy()
        trial[k] = g
        pairs, sizes = subsets[k]
        return float(sigma68(pair_d(*pairs, curve.with_size_factors(edges, trial), sizes)))

    for _ in range(int(passes)):  # a pair's exposures may fall in neighbouring size bins
        for k in range(edges.size + 1):
            factors[k] = _unit_width_root(partial(width, k), 3.0, 1e-4)
    shared = curve.with_size_factors(edges, factors)
    d = pair_d(m1, m2, shared, (s1, s2))
    return shared, [float(sigma68(d[rows])) for rows in members]


def calibrate_model(model: LumosNet, n: int = 8000, n_pairs: int = 16000,
                    seed: int = 20_000_001, simulator_kwargs: dict | None = None,
                    shared: str = "curve", catalogue_errors: CatalogueErrors | None = None
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
        Simulated pairs for the shared error (six equal-count width bins of them).
    seed : int
        Seed of the calibration simulations (pairs use ``seed + 1``).
    simulator_kwargs : dict, optional
        :class:`lumos.simulate.Simulator` keywords of the training (``background``, e.g.
        another survey's sky or real cutouts); the pairs get the same ``background``.
    shared : {"curve", "constant", "curve-size"}
        The shared error as a curve of the relative likelihood width
        (:func:`fit_shared_error_curve`), one number (:func:`fit_shared_error`), or that
        curve times a factor per bin of the model profile's size
        (:func:`shared_error_size_factors`).
    catalogue_errors : CatalogueErrors, optional
        The catalogue errors of the calibration simulations (default: the training's). A
        catalogue better or worse than the training's shares less or more between
        exposures; calibrating for it gives intervals that hold for it.

    Returns
    -------
    model : LumosNet
        A calibrated copy, in ``eval()`` mode, with the input model's metadata.
    result : CalibrationResult
    """
    if model.config.sigma_scale != 1.0:
        raise ValueError("the model is already calibrated (sigma_scale != 1)")
    sim = training_simulation(model)
    if catalogue_errors is not None:
        sim = replace(sim, catalogue_errors=catalogue_errors)
    kwargs = dict(simulator_kwargs or {})
    batch = Simulator(sim, seed=seed, **kwargs).sample(int(n))
    scale, cov0, cov1 = fit_sigma_scale(model, batch)
    out = model.with_config(model.config.replace(sigma_scale=scale))
    if shared not in SHARED_ERROR_KINDS:
        raise ValueError(f"shared must be one of {', '.join(SHARED_ERROR_KINDS)}, got "
                         f"{shared!r}")  # fmt: skip
    shared_c, d0, d1 = 0.0, float("nan"), float("nan")
    extra: dict = {}
    if model.config.likelihood:
        pair_sim = replace(sim, flux_prior="population")
        pairs = simulate_pairs(int(n_pairs), seed=seed + 1,
                               config=PairSimulation(simulation=pair_sim),
                               background=kwargs.get("background"))  # fmt: skip
        m1, m2 = _pair_mixtures(out, pairs.first, pairs.second)
        shared_c, d0, d1 = _unit_width_c(m1, m2)
        changes = {"shared_error": shared_c}
        if shared in ("curve", "curve-size"):
            curve, bins = shared_error_curve(m1, m2, 6, constant=shared_c)
            changes.update(shared_error_widths=curve.widths, shared_error_values=curve.values)
            extra = {"shared_error_widths": curve.widths,
                     "shared_error_values": curve.values, "d_sigma68_bins": tuple(bins)}
            sizes = None
            if shared == "curve-size":
                sizes = (profile_half_light_radius(pairs.first.profile),
                         profile_half_light_radius(pairs.second.profile))
                curve, by_size = shared_error_size_factors(m1, m2, *sizes, curve)
                changes.update(shared_error_size_edges=curve.size_edges,
                               shared_error_size_factors=curve.size_factors)
                extra.update(shared_error_size_edges=curve.size_edges,
                             shared_error_size_factors=curve.size_factors,
                             d_sigma68_sizes=tuple(by_size))
            d1 = sigma68(pair_d(m1, m2, curve, sizes))
        out = out.with_config(out.config.replace(**changes))
    return out.eval(), CalibrationResult(scale, shared_c, cov0, cov1, d0, d1, **extra)
