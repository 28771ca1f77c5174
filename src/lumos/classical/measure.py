"""One entry point for every classical method: ``measure_classical(method, cutouts)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from ..flags import Flag
from .aperture import aperture_photometry
from .common import ContextCutouts
from .modelfit import modelfit_photometry
from .sep_auto import sep_auto_cutouts
from .weighted import weighted_photometry

__all__ = ["METHODS", "measure_classical"]

#: Names accepted by :func:`measure_classical` (and ``lumos measure --method``).
METHODS = ("aperture", "modelfit", "weighted", "weighted_oracle", "sep_auto")


def _oracle(cutouts: ContextCutouts, **options) -> dict[str, np.ndarray]:
    return weighted_photometry(cutouts, background="oracle", **options)


_DISPATCH: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "aperture": aperture_photometry,
    "modelfit": modelfit_photometry,
    "weighted": weighted_photometry,
    "weighted_oracle": _oracle,
    "sep_auto": sep_auto_cutouts,
}


def measure_classical(method: str, cutouts: ContextCutouts, **options) -> dict[str, np.ndarray]:
    """Measure fluxes of context cutouts with one of the classical methods.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`: ``"aperture"`` (PAUS forced elliptical aperture, 62.5% of the
        model light), ``"modelfit"`` (amplitude fit of the fixed Sersic model, Eq. 3),
        ``"weighted"`` (optimal weighted pixel sum, annulus background), ``"weighted_oracle"``
        (the same with the true background and flux: simulations only) and ``"sep_auto"``
        (SExtractor AUTO through sep).
    cutouts : ContextCutouts
        Context cutouts (sky included) with the model profiles.
    **options
        Passed to the method's function (see :func:`aperture_photometry`,
        :func:`modelfit_photometry`, :func:`weighted_photometry`, :func:`sep_auto_cutouts`).

    Returns
    -------
    dict of str to numpy.ndarray
        ``flux`` and ``flux_err`` (float64, image units), ``flags`` (int64 bits of
        :class:`lumos.flags.Flag`), one value per input row, plus method-specific extras.
        A galaxy that cannot be measured gets NaN and ``Flag.FAILED``; bad *input* (wrong
        method, wrong shapes, missing truth for the oracle) raises ValueError.
    """
    if method not in _DISPATCH:
        raise ValueError(f"unknown classical method {method!r}; choose one of {METHODS}")
    if not isinstance(cutouts, ContextCutouts):
        raise ValueError(f"cutouts must be a ContextCutouts, got {type(cutouts).__name__}")
    func = _DISPATCH[method]
    target = weighted_photometry if method == "weighted_oracle" else func
    accepted = set(inspect.signature(target).parameters) - {"cutouts"}
    if method == "weighted_oracle":
        accepted.discard("background")  # fixed to "oracle"
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    n = len(cutouts)
    if n == 0:
        return {
            "flux": np.zeros(0),
            "flux_err": np.zeros(0),
            "flags": np.zeros(0, dtype=np.int64),
        }
    out = func(cutouts, **options)
    out["flux"] = np.asarray(out["flux"], dtype=np.float64)
    out["flux_err"] = np.asarray(out["flux_err"], dtype=np.float64)
    flags = np.asarray(out["flags"], dtype=np.int64)
    bad = ~np.isfinite(out["flux"]) | ~np.isfinite(out["flux_err"])
    flags[bad] |= int(Flag.FAILED)
    out["flags"] = flags
    out["flux"][bad] = np.nan
    out["flux_err"][bad] = np.nan
    return out
