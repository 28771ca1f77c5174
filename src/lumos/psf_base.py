"""What every PSF and the renderer share: the PSF protocol and per-galaxy tensor helpers.

A PSF is *batched*: it holds one set of parameters per galaxy and gives its Fourier
transform for all of them at once (:class:`PSF`). The helpers convert arguments to 1-d
per-galaxy tensors and broadcast them (:func:`as_tensor_1d`, :func:`broadcast_named`,
:func:`to_batch`), select the PSFs of some galaxies (:func:`psf_index`,
:func:`select_psf`) and interpolate tabulated transforms (:func:`cubic_rows`,
:func:`lerp_rows`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["PSF", "as_tensor_1d", "broadcast_named", "cubic_rows", "lerp_rows", "psf_index",
           "select_psf", "to_batch"]


@runtime_checkable
class PSF(Protocol):
    """A batch of PSFs, one per galaxy, described by its Fourier transform."""

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        """Fourier transform at ``(kx, ky)`` (radians/arcsec), broadcast to ``[N, ...]``.

        Equal to 1 at ``k = 0``.
        """
        ...

    def __len__(self) -> int:
        """Number of PSFs in the batch (1 broadcasts to any number of galaxies)."""
        ...


def as_tensor_1d(value, name: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """Convert a float, list, array or tensor to a 1-d CPU tensor.

    Parameters
    ----------
    value : float, sequence, numpy.ndarray or torch.Tensor
        Scalar or 1-d values.
    name : str
        Argument name used in error messages.
    dtype : torch.dtype
        Output dtype.

    Returns
    -------
    torch.Tensor
        Shape ``[N]`` (``N = 1`` for a scalar).

    Raises
    ------
    ValueError
        If the input has more than one dimension or cannot be converted to numbers.
    """
    try:
        t = torch.as_tensor(np.asarray(value, dtype=np.float64) if not torch.is_tensor(value)
                            else value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}") from exc
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real numbers")
    t = t.detach().to(device="cpu", dtype=dtype)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-d, got shape {tuple(t.shape)}")
    return t


def broadcast_named(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Broadcast named 1-d tensors to a common length (1 broadcasts), naming mismatches."""
    n = max(t.shape[0] for t in tensors.values())
    out = {}
    for name, t in tensors.items():
        if t.shape[0] not in (1, n):
            lengths = ", ".join(f"{k}={v.shape[0]}" for k, v in tensors.items())
            raise ValueError(f"shape mismatch: {name} has length {t.shape[0]} ({lengths})")
        out[name] = t.expand(n).contiguous()
    return out


def to_batch(k: Tensor, n: int) -> Tensor:
    """Expand wavenumbers to a leading batch dimension ``n``.

    A tensor whose first dimension is 1 or ``n`` is broadcast along it; any other tensor
    (including a scalar) is taken as shared by all galaxies and gets a new leading axis.
    """
    if k.ndim == 0 or k.shape[0] not in (1, n):
        k = k.unsqueeze(0)
    return k.expand((n,) + tuple(k.shape[1:]))


def cubic_rows(table: Tensor, pos: Tensor) -> Tensor:
    """Catmull-Rom interpolation between rows of a table with one ghost row at each end.

    Parameters
    ----------
    table : torch.Tensor, shape (R + 2, T)
        Rows ``0..R-1`` of the grid stored at ``1..R``; rows 0 and R+1 are ghosts.
    pos : torch.Tensor, shape (N,)
        Fractional row positions in ``[0, R - 1]`` (grid units, without the ghost).

    Returns
    -------
    torch.Tensor, shape (N, T)
    """
    n_rows = table.shape[0] - 2
    pos = pos.to(torch.float64).clamp(0.0, n_rows - 1.0)
    i0 = pos.floor().clamp(max=n_rows - 2).to(torch.long)
    t = (pos - i0).to(table.dtype)[:, None]
    p0, p1, p2, p3 = table[i0], table[i0 + 1], table[i0 + 2], table[i0 + 3]
    t2 = t * t
    t3 = t2 * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def lerp_rows(rows: Tensor, u: Tensor) -> Tensor:
    """Linear interpolation of per-galaxy rows at fractional positions ``u``.

    Parameters
    ----------
    rows : torch.Tensor, shape (N, T)
    u : torch.Tensor, shape (N, P)
        Positions in grid units; clamped to ``[0, T - 1]``.

    Returns
    -------
    torch.Tensor, shape (N, P)
    """
    last = rows.shape[1] - 1
    u = u.clamp(0.0, last - 1e-3)
    i = u.floor()
    frac = u - i
    il = i.to(torch.long)
    lo = torch.gather(rows, 1, il)
    hi = torch.gather(rows, 1, il + 1)
    return torch.lerp(lo, hi, frac.to(rows.dtype))


def psf_index(psf: PSF, index: Tensor) -> Tensor:
    """Index into a PSF batch for the selected galaxies (a PSF of length 1 broadcasts)."""
    return torch.zeros_like(index) if len(psf) == 1 else index


def select_psf(psf: PSF, index: Tensor) -> PSF:
    """PSFs of the selected galaxies (``__getitem__`` when available)."""
    getitem = getattr(psf, "__getitem__", None)
    if getitem is not None:
        return getitem(index)
    return _SubsetPSF(psf, index)


class _SubsetPSF:
    """Selection of galaxies from a PSF that only implements the minimal protocol."""

    def __init__(self, psf: PSF, index: Tensor) -> None:
        self.psf = psf
        self.index = index

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def kvalue(self, kx: Tensor, ky: Tensor) -> Tensor:
        full = self.psf.kvalue(kx, ky)
        return full[self.index] if full.shape[0] == len(self.psf) else full.expand(
            len(self), *full.shape[1:])
