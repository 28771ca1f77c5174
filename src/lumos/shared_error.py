"""The relative flux error shared by every exposure of a galaxy, and what it depends on.

A likelihood model's mixture holds all of an exposure's error. Part of it is shared by every
exposure of the galaxy (its catalogue profile and that catalogue's errors, its position, its
neighbours): :class:`SharedError` says how much, as a fraction ``c`` of the flux, from the
exposure's own precision (the relative width :func:`relative_width`) and, optionally, from
the size of its model profile (:func:`profile_half_light_radius`). :func:`lumos.bayes.split_shared`
takes it out of each exposure's likelihood; co-adds add it back once. Fitted by
:mod:`lumos.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import torch

from .mixture import GaussianMixture

__all__ = ["SharedError", "relative_width", "profile_half_light_radius"]


def profile_half_light_radius(profile: torch.Tensor) -> np.ndarray:
    """Radius (pixels) about the stamp centre that holds half of each model profile's light.

    Parameters
    ----------
    profile : torch.Tensor, shape (N, S, S)
        Model-profile stamps (the network's profile channel), centred on the stamp.

    Returns
    -------
    numpy.ndarray, float64, shape (N,)
        The smallest pixel-centre radius whose enclosed sum reaches half the stamp's sum
        (NaN for a profile without positive light).
    """
    prof = torch.as_tensor(profile).detach().cpu().double().numpy()
    n = prof.shape[0]
    radius, order = _radial_order(int(prof.shape[-1]))
    cum = np.cumsum(prof.reshape(n, -1)[:, order], axis=1)
    total = cum[:, -1:]
    out = radius[np.argmax(cum >= 0.5 * total, axis=1)].astype(float)
    out[~(total[:, 0] > 0)] = np.nan
    return out


@cache
def _radial_order(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre radii about the centre of a ``size`` x ``size`` stamp, increasing, and the
    flat pixel indices in that order (one per stamp size: every chunk of a measurement
    asks for the same)."""
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - (size - 1) / 2, y - (size - 1) / 2).ravel()
    order = np.argsort(r, kind="stable")
    radius = r[order]
    radius.setflags(write=False)
    order.setflags(write=False)
    return radius, order


def relative_width(mixture: GaussianMixture) -> np.ndarray:
    """``w = std / |mean|`` of each row of a likelihood mixture, float64, shape (N,)."""
    mean = mixture.mean().to(torch.float64)
    return (mixture.std().to(torch.float64) / mean.abs().clamp_min(1e-300)).numpy()


@dataclass(frozen=True)
class SharedError:
    """The relative flux error shared by every exposure of a galaxy, ``c``.

    ``sigma_shared = c |f|``. ``c`` is one number (``constant``), or, when ``widths`` is
    given, a curve of the exposure's relative likelihood width ``w = std / |mean|`` (its
    own precision: photon noise, sky, PSF and the profile; the catalogue magnitude plays no
    part): ``c(w)`` is linear in ``log w`` between the nodes ``(widths[k], values[k])`` and
    constant beyond the first and the last. When ``size_factors`` are given, that ``c`` is
    multiplied by the factor of the exposure's profile-size bin (``size_edges`` are the
    inner edges; a size equal to an edge belongs to the bin above it), at most 0.99: a
    large galaxy shares more of its flux than a compact one of the same precision (its
    catalogue profile's errors move more of its light). The size is the half-light radius of
    the exposure's model profile in pixels (:func:`profile_half_light_radius`).

    Parameters
    ----------
    constant : float
        ``c`` when no curve is given, in [0, 1).
    widths : tuple of float
        Increasing relative widths of the nodes (> 0).
    values : tuple of float
        ``c`` at the nodes, each in [0, 1).
    size_edges : tuple of float
        Increasing inner edges of the size bins (pixels, > 0).
    size_factors : tuple of float
        One factor (>= 0) per size bin (``len(size_edges) + 1``); empty: no size dependence.
    """

    constant: float = 0.0
    widths: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    size_edges: tuple[float, ...] = ()
    size_factors: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.constant < 1.0:
            raise ValueError(f"shared error must be in [0, 1), got {self.constant}")
        if len(self.widths) != len(self.values):
            raise ValueError(f"shared-error curve has {len(self.widths)} widths and "
                             f"{len(self.values)} values")  # fmt: skip
        w = np.asarray(self.widths, float)
        if w.size and (np.any(~(w > 0)) or np.any(np.diff(w) <= 0)):
            raise ValueError(f"shared-error widths must be positive and increasing, got "
                             f"{list(self.widths)}")  # fmt: skip
        if any(not 0.0 <= v < 1.0 for v in self.values):
            raise ValueError(f"shared-error values must be in [0, 1), got {list(self.values)}")
        if self.size_factors or self.size_edges:
            e = np.asarray(self.size_edges, float)
            if np.any(~(e > 0)) or np.any(np.diff(e) <= 0):
                raise ValueError(f"shared-error size edges must be positive and increasing, "
                                 f"got {list(self.size_edges)}")  # fmt: skip
            if len(self.size_factors) != len(self.size_edges) + 1:
                raise ValueError(f"shared error has {len(self.size_factors)} size factors for "
                                 f"{len(self.size_edges) + 1} size bins")  # fmt: skip
            if any(not (np.isfinite(f) and f >= 0.0) for f in self.size_factors):
                raise ValueError(f"shared-error size factors must be finite and >= 0, got "
                                 f"{list(self.size_factors)}")  # fmt: skip

    @property
    def needs_size(self) -> bool:
        """True when :meth:`relative` needs each row's profile size."""
        return bool(self.size_factors)

    def sizes_of(self, profile: torch.Tensor) -> np.ndarray | None:
        """The ``size`` :meth:`relative` needs for these model-profile stamps (N, S, S):
        their half-light radii when the shared error depends on size, else None."""
        return profile_half_light_radius(profile) if self.needs_size else None

    def with_size_factors(self, edges, factors) -> SharedError:
        """A copy whose ``c`` is multiplied by ``factors`` in the size bins of ``edges``."""
        return replace(self, size_edges=tuple(float(e) for e in edges),
                       size_factors=tuple(float(f) for f in factors))

    @classmethod
    def of(cls, config) -> SharedError:
        """The shared error a model's :class:`lumos.network.NetworkConfig` records."""
        return cls(float(config.shared_error),
                   tuple(getattr(config, "shared_error_widths", ()) or ()),
                   tuple(getattr(config, "shared_error_values", ()) or ()),
                   tuple(getattr(config, "shared_error_size_edges", ()) or ()),
                   tuple(getattr(config, "shared_error_size_factors", ()) or ()))  # fmt: skip

    def relative(self, mixture: GaussianMixture, size=None) -> torch.Tensor:
        """``c`` of each row of a likelihood mixture, shape (N,), float64.

        Parameters
        ----------
        mixture : GaussianMixture
        size : array_like, shape (N,), optional
            Each row's profile half-light radius in pixels; required with size factors.

        Raises
        ------
        ValueError
            With size factors but no ``size``, or a ``size`` of another length.
        """
        n = mixture.means.shape[0]
        if self.widths:
            rel = relative_width(mixture)
            x = np.log(np.clip(np.nan_to_num(rel, nan=1.0, posinf=1e6), 1e-12, 1e12))
            c = np.interp(x, np.log(np.asarray(self.widths, float)),
                          np.asarray(self.values, float))  # fmt: skip
        else:
            c = np.full(n, float(self.constant))
        if self.size_factors:
            if size is None:
                raise ValueError("this shared error depends on the profile size: pass size")
            size = np.asarray(size, float).reshape(-1)
            if size.size != n:
                raise ValueError(f"size has {size.size} rows for {n} likelihoods")
            k = np.searchsorted(np.asarray(self.size_edges, float), np.nan_to_num(size),
                                side="right")  # fmt: skip
            c = np.minimum(c * np.asarray(self.size_factors, float)[k], 0.99)
        return torch.from_numpy(np.asarray(c, float))
