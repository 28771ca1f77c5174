"""Consistency of repeated observations: D (Eq. 19) of a model on pairs, and its reference width.

:func:`pair_consistency` measures sigma68 of ``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` on a
:class:`lumos.pairs.PairSet`; :func:`d_reference` measures, by magnitude, the width of D that a
calibrated model has on pairs of its own training domain (below 1 where the two PDFs share
information), so that a transfer run can evaluate its pair loss at that width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .mixture import GaussianMixture
from .pairs import PairSet
from .stats import pair_pull, sigma68

__all__ = ["DReference", "D_REFERENCE_EDGES", "d_reference", "reference_edges", "pair_consistency",
           "consistency_metrics"]

D_REFERENCE_EDGES = (17.0, 18.5, 19.5, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0)


@dataclass(frozen=True)
class DReference:
    """Width of ``D`` (Eq. 19) that a calibrated model shows on pairs of its training domain.

    ``D`` is N(0, 1) only when the two flux errors are independent and Gaussian. The two
    observations of a galaxy share information that is not in the pixels of either: the
    catalogue magnitude (an input; at the faint end it carries most of the information, so
    both PDFs lean on the same prior), the catalogue profile parameters, neighbours fixed on
    the sky, and the truncation at zero flux. All of these make ``D`` narrower than N(0, 1)
    for a model that is calibrated against the truth. The width measured on simulated pairs
    of the training domain (where the model is known to be calibrated) is the value a
    calibrated model should reproduce in a new domain; ``D / width(i)`` is then ~1 wide
    whatever the magnitude and whether or not the PDFs are truncated.

    Attributes
    ----------
    edges : tuple of float
        i-band magnitude bin edges (B + 1).
    width : tuple of float
        sigma68 of D in each bin (B).
    n_pairs : tuple of int
        Pairs behind each width.
    """

    edges: tuple[float, ...]
    width: tuple[float, ...]
    n_pairs: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.edges) != len(self.width) + 1 or len(self.width) != len(self.n_pairs):
            raise ValueError("DReference needs B + 1 edges, B widths and B pair counts")
        if not all(np.isfinite(self.width)) or min(self.width, default=1.0) <= 0:
            raise ValueError(f"DReference widths must be finite and positive: {self.width}")

    def __call__(self, i_mag) -> np.ndarray:
        """Reference width for each i-band magnitude (the nearest bin outside the range)."""
        i_mag = np.asarray(i_mag, dtype=float)
        index = np.clip(np.searchsorted(self.edges, i_mag, side="right") - 1, 0,
                        len(self.width) - 1)  # fmt: skip
        return np.asarray(self.width)[index]

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form."""
        return {"edges": list(self.edges), "width": list(self.width),
                "n_pairs": list(self.n_pairs)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence]) -> DReference:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(float(v) for v in data["edges"]), tuple(float(v) for v in data["width"]),
                   tuple(int(v) for v in data["n_pairs"]))  # fmt: skip


def _d_statistic(m1: GaussianMixture, m2: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """D of Eq. 19 from the mixtures' means and standard deviations, and the truncated rows."""
    f1, f2 = m1.mean().double(), m2.mean().double()
    s1, s2 = m1.std().double(), m2.std().double()
    d = pair_pull(f1.cpu().numpy(), s1.cpu().numpy(), f2.cpu().numpy(), s2.cpu().numpy())
    trunc = torch.zeros(len(d), dtype=torch.bool)
    for m in (m1, m2):
        if m.truncated is not None:
            trunc = trunc | m.truncated.cpu()
    return d, trunc.numpy()


def _calibrated_mixtures(model, pairs: PairSet, chunk_size: int):
    m1 = model.predict(pairs.first, chunk_size).calibrate(pairs.zero_point[:, 0],
                                                          pairs.zero_point_err[:, 0])
    m2 = model.predict(pairs.second, chunk_size).calibrate(pairs.zero_point[:, 1],
                                                           pairs.zero_point_err[:, 1])
    return m1, m2


def reference_edges(model) -> tuple[float, ...]:
    """:data:`D_REFERENCE_EDGES`, extended to the model's magnitude range (its
    ``i_mag_range``; a survey model may reach fainter than 23)."""
    lo, hi = (float(v) for v in model.config.i_mag_range)
    edges = [e for e in D_REFERENCE_EDGES if lo <= e <= hi] or [lo]
    if edges[0] > lo:
        edges.insert(0, lo)
    if edges[-1] < hi:
        edges.append(hi)
    return tuple(edges)


@torch.no_grad()
def d_reference(model, pairs: PairSet, edges: Sequence[float] = D_REFERENCE_EDGES,
                chunk_size: int = 2048, min_pairs: int = 20) -> DReference:
    """Measure :class:`DReference`: the width of D by i magnitude on training-domain pairs.

    Parameters
    ----------
    model : LumosNet
        A model calibrated on the domain of ``pairs`` (typically the model before transfer
        and pairs from :func:`simulate_pairs` with the training simulation settings).
    pairs : PairSet
        Pairs of the training domain (not the held-out pairs being judged).
    edges : sequence of float
        i-band magnitude bin edges.
    chunk_size : int
        Rows per forward pass.
    min_pairs : int
        Bins with fewer pairs take the width of the nearest well-populated bin.

    Returns
    -------
    DReference
    """
    edges = tuple(float(e) for e in edges)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=False)):
        raise ValueError(f"edges must increase and have at least two values, got {edges}")
    m1, m2 = _calibrated_mixtures(model, pairs, chunk_size)
    d, _ = _d_statistic(m1, m2)
    i_mag = pairs.first.i_mag.double().cpu().numpy()
    ok = np.isfinite(d)
    width, count = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = ok & (i_mag >= lo) & (i_mag < hi)
        count.append(int(sel.sum()))
        width.append(sigma68(d[sel]) if sel.sum() >= min_pairs else float("nan"))
    width_arr = np.asarray(width)
    good = np.flatnonzero(np.isfinite(width_arr) & (width_arr > 0))
    if good.size == 0:
        raise ValueError(f"d_reference: no magnitude bin has {min_pairs} pairs with a finite D")
    for b in np.flatnonzero(~np.isin(np.arange(len(width)), good)):
        width_arr[b] = width_arr[good[np.argmin(np.abs(good - b))]]
    return DReference(edges, tuple(float(w) for w in width_arr), tuple(count))


def consistency_metrics(m1: GaussianMixture, m2: GaussianMixture, truth: Tensor | None,
                 zp: Tensor, i_mag: Tensor | None = None,
                 reference: DReference | None = None) -> dict[str, float]:
    d, trunc = _d_statistic(m1, m2)
    f1, f2 = m1.mean().double(), m2.mean().double()
    ok = np.isfinite(d)
    out = {
        "n_pairs": int(ok.sum()),
        "sigma68_D": sigma68(d[ok]),
        "median_D": float(np.median(d[ok])) if ok.any() else float("nan"),
        "mean_abs_D": float(np.mean(np.abs(d[ok]))) if ok.any() else float("nan"),
    }
    for name, sel in (("untruncated", ok & ~trunc), ("truncated", ok & trunc)):
        out[f"n_pairs_{name}"] = int(sel.sum())
        out[f"sigma68_D_{name}"] = sigma68(d[sel])
        out[f"median_D_{name}"] = float(np.median(d[sel])) if sel.any() else float("nan")
    if reference is not None and i_mag is not None:
        d_ref = d / reference(i_mag.double().cpu().numpy())
        out["sigma68_Dref"] = sigma68(d_ref[ok])
        for name, sel in (("untruncated", ok & ~trunc), ("truncated", ok & trunc)):
            out[f"sigma68_Dref_{name}"] = sigma68(d_ref[sel])
    if truth is not None:
        true1 = (truth.double().cpu() * zp[:, 0].double().cpu()).numpy()
        true2 = (truth.double().cpu() * zp[:, 1].double().cpu()).numpy()
        rel = np.concatenate([(f1.cpu().numpy() - true1) / true1,
                              (f2.cpu().numpy() - true2) / true2])
        good = np.isfinite(rel) & (np.concatenate([true1, true2]) > 0)
        out["bias"] = float(np.median(rel[good])) if good.any() else float("nan")
        out["sigma68_rel"] = sigma68(rel[good])
    return out


@torch.no_grad()
def pair_consistency(model, pairs: PairSet, chunk_size: int = 2048,
                     reference: DReference | None = None) -> dict[str, float]:
    """Agreement of a model's flux PDFs between the two observations of every pair.

    With ``f`` the mixture mean and ``s`` its standard deviation (after the zero-point
    calibration), ``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` (paper Eq. 19) is N(0, 1) for
    calibrated, unbiased Gaussian-like PDFs with independent errors. What the two
    observations share (the catalogue magnitude the network uses as a prior, the
    catalogue profile, neighbours, the truncation at zero for faint galaxies) makes D
    narrower than that even for a calibrated model; give a :class:`DReference` measured on
    training-domain pairs (:func:`d_reference`) to also get ``D / width(i)``, whose width
    is 1 for a model as well calibrated as in its training domain.

    Parameters
    ----------
    model : LumosNet
        Anything with ``predict(batch) -> GaussianMixture`` (flux units of the stamps).
    pairs : PairSet
    chunk_size : int
        Rows per forward pass.
    reference : DReference, optional
        Training-domain widths of D by magnitude.

    Returns
    -------
    dict
        ``n_pairs`` (pairs with a finite D), ``sigma68_D`` (:func:`lumos.stats.sigma68`
        of D), ``median_D``, ``mean_abs_D``; ``n_pairs_*``, ``sigma68_D_*`` and
        ``median_D_*`` for the ``untruncated`` and ``truncated`` (i > the model's
        ``truncate_threshold``) pairs separately; with ``reference`` also ``sigma68_Dref``,
        ``sigma68_Dref_untruncated`` and ``sigma68_Dref_truncated`` (widths of
        ``D / width(i)``); for simulated pairs (with truth) also ``bias`` (median of
        (f - f_true) / f_true over both observations) and ``sigma68_rel`` (its sigma68).
    """
    if len(pairs) == 0:
        raise ValueError("pair_consistency needs at least one pair")
    m1, m2 = _calibrated_mixtures(model, pairs, chunk_size)
    return consistency_metrics(m1, m2, pairs.truth, pairs.zero_point, pairs.first.i_mag, reference)
