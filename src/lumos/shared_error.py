"""The relative flux error shared by every exposure of a galaxy, and what it depends on.

A likelihood model's mixture holds all of an exposure's error. Part of it is shared by every
exposure of the galaxy (its catalogue profile and that catalogue's errors, its position, its
neighbours): :class:`SharedError` says how much, as a fraction ``c`` of the flux, from the
exposure's own precision (the relative width :func:`relative_width`) and, for a table, from
the size of its model profile (:func:`profile_half_light_radius`). :func:`lumos.bayes.split_shared`
takes it out of each exposure's likelihood; co-adds add it back once. Fitted by
:mod:`lumos.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    n, size = prof.shape[0], prof.shape[-1]
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - (size - 1) / 2, y - (size - 1) / 2).ravel()
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(prof.reshape(n, -1)[:, order], axis=1)
    total = cum[:, -1:]
    out = r[order][np.argmax(cum >= 0.5 * total, axis=1)].astype(float)
    out[~(total[:, 0] > 0)] = np.nan
    return out


def relative_width(mixture: GaussianMixture) -> np.ndarray:
    """``w = std / |mean|`` of each row of a likelihood mixture, float64, shape (N,)."""
    mean = mixture.mean().to(torch.float64)
    return (mixture.std().to(torch.float64) / mean.abs().clamp_min(1e-300)).numpy()


@dataclass(frozen=True)
class SharedError:
    """The relative flux error shared by every exposure of a galaxy, ``c``.

    ``sigma_shared = c |f|``. ``c`` is one number (``constant``); or, when ``widths`` is
    given, a curve of the exposure's relative likelihood width ``w = std / |mean|`` (its
    own precision: photon noise, sky, PSF and the profile; the catalogue magnitude plays no
    part): ``c(w)`` is linear in ``log w`` between the nodes ``(widths[k], values[k])`` and
    constant beyond the first and the last; or, when ``table`` is given, a step function of
    the profile's size and of ``w``: ``table[s * W + k]`` for the size bin ``s`` of
    ``size_edges`` and the width bin ``k`` of ``width_edges`` (``W = len(width_edges) + 1``;
    a value equal to an edge belongs to the bin above it). The size is the half-light
    radius of the exposure's model profile in pixels
    (:func:`lumos.network_inputs.profile_half_light_radius`).

    Parameters
    ----------
    constant : float
        ``c`` when neither a curve nor a table is given, in [0, 1).
    widths : tuple of float
        Increasing relative widths of the nodes (> 0).
    values : tuple of float
        ``c`` at the nodes, each in [0, 1).
    size_edges, width_edges : tuple of float
        Increasing inner edges of the table's size bins (pixels) and width bins (> 0).
    table : tuple of float
        ``c`` per (size bin, width bin), size-major, each in [0, 1); empty: no table.
    """

    constant: float = 0.0
    widths: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    size_edges: tuple[float, ...] = ()
    width_edges: tuple[float, ...] = ()
    table: tuple[float, ...] = ()

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
        if self.table or self.size_edges or self.width_edges:
            if self.widths:
                raise ValueError("a shared error is a curve or a table, not both")
            for name, edges in (("size", self.size_edges), ("width", self.width_edges)):
                e = np.asarray(edges, float)
                if np.any(~(e > 0)) or np.any(np.diff(e) <= 0):
                    raise ValueError(f"shared-error {name} edges must be positive and "
                                     f"increasing, got {list(edges)}")  # fmt: skip
            cells = (len(self.size_edges) + 1) * (len(self.width_edges) + 1)
            if len(self.table) != cells:
                raise ValueError(f"shared-error table has {len(self.table)} values for "
                                 f"{cells} cells")  # fmt: skip
            if any(not 0.0 <= v < 1.0 for v in self.table):
                raise ValueError(f"shared-error table values must be in [0, 1), got "
                                 f"{list(self.table)}")  # fmt: skip

    @property
    def needs_size(self) -> bool:
        """True for a table: :meth:`relative` needs each row's profile size."""
        return bool(self.table)

    def sizes_of(self, profile: torch.Tensor) -> np.ndarray | None:
        """The ``size`` :meth:`relative` needs for these model-profile stamps (N, S, S):
        their half-light radii for a table, else None (nothing to compute)."""
        return profile_half_light_radius(profile) if self.needs_size else None

    @classmethod
    def of(cls, config) -> SharedError:
        """The shared error a model's :class:`lumos.network.NetworkConfig` records."""
        return cls(float(config.shared_error),
                   tuple(getattr(config, "shared_error_widths", ()) or ()),
                   tuple(getattr(config, "shared_error_values", ()) or ()),
                   tuple(getattr(config, "shared_error_size_edges", ()) or ()),
                   tuple(getattr(config, "shared_error_width_edges", ()) or ()),
                   tuple(getattr(config, "shared_error_table", ()) or ()))  # fmt: skip

    def relative(self, mixture: GaussianMixture, size=None) -> torch.Tensor:
        """``c`` of each row of a likelihood mixture, shape (N,), float64.

        Parameters
        ----------
        mixture : GaussianMixture
        size : array_like, shape (N,), optional
            Each row's profile half-light radius in pixels; required by a table.

        Raises
        ------
        ValueError
            For a table without ``size``, or a ``size`` of another length.
        """
        n = mixture.means.shape[0]
        rel = relative_width(mixture) if (self.widths or self.table) else None
        if self.table:
            if size is None:
                raise ValueError("this shared error depends on the profile size: pass size")
            size = np.asarray(size, float).reshape(-1)
            if size.size != n:
                raise ValueError(f"size has {size.size} rows for {n} likelihoods")
            s = np.searchsorted(np.asarray(self.size_edges, float), np.nan_to_num(size),
                                side="right")  # fmt: skip
            k = np.searchsorted(np.asarray(self.width_edges, float),
                                np.nan_to_num(rel, nan=1e12, posinf=1e12), side="right")
            cells = np.asarray(self.table, float)
            return torch.from_numpy(cells[s * (len(self.width_edges) + 1) + k])
        if not self.widths:
            return torch.full((n,), float(self.constant), dtype=torch.float64)
        x = np.log(np.clip(np.nan_to_num(rel, nan=1.0, posinf=1e6), 1e-12, 1e12))
        c = np.interp(x, np.log(np.asarray(self.widths, float)),
                      np.asarray(self.values, float))  # fmt: skip
        return torch.from_numpy(c)
