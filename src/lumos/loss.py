"""The training loss of :class:`~lumos.network.LumosNet`.

The mixture negative log-likelihood (Eq. 8 of the paper, truncated at zero flux per
Eq. 10 for galaxies fainter than the model's ``truncate_threshold``), averaged over the
batch. It is evaluated on ``truth / F_ref`` with the mixture relative to the model's
reference flux ``F_ref``; this differs from the flux-space NLL by the per-galaxy constant
``log F_ref``, so the gradients are the same and the loss values are independent of the
image units. A likelihood model (``NetworkConfig.likelihood``) is trained with importance
weights (:func:`likelihood_weights`) that divide out the training flux distribution, and its
mixture is fitted where that distribution lives (:func:`likelihood_support`): on positive
fluxes (the Eq. 10 form for every stamp) when they were drawn log-uniform, on the whole line
when they were drawn down to and below zero (``StampBatch.truth_scale > 0``).
"""

from __future__ import annotations

import torch
from torch import nn

from .mixture import GaussianMixture, mixture_nll
from .network import LumosNet, RawOutput
from .stamps import StampBatch

__all__ = ["relative_nll", "likelihood_weights", "likelihood_support", "LIKELIHOOD_WEIGHT_MAX",
           "batch_loss", "RawForward"]

#: Largest importance weight of one stamp in a likelihood model's loss.
LIKELIHOOD_WEIGHT_MAX = 5.0


class RawForward(nn.Module):
    """A LumosNet whose ``forward`` is :meth:`~lumos.network.LumosNet.forward_raw` (a
    tensor-only forward, as DistributedDataParallel needs)."""

    def __init__(self, net: LumosNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: StampBatch) -> RawOutput:
        return self.net.forward_raw(batch)


def relative_nll(raw: RawOutput, truth: torch.Tensor,
                 truncated: torch.Tensor | None = None) -> torch.Tensor:
    """Per-galaxy NLL of ``truth / F_ref`` under the relative mixture (NaN for bad truth).

    Parameters
    ----------
    raw : RawOutput
        Network output relative to the reference flux.
    truth : torch.Tensor, shape (N,)
        True flux, image units.
    truncated : torch.Tensor, bool, shape (N,), optional
        Rows evaluated with the mixture truncated at zero (default ``raw.truncated``).

    Returns
    -------
    torch.Tensor, shape (N,)
    """
    truncated = raw.truncated if truncated is None else truncated
    target = truth.to(raw.means.dtype) / raw.reference
    # The truncated density is zero below 0; a negative truth can only be noise-free 0.
    target = torch.where(truncated, target.clamp_min(0.0), target)
    mix = GaussianMixture(raw.log_weights, raw.means, raw.sigmas, truncated=truncated)
    return mixture_nll(mix, target, truncated)


def likelihood_weights(truth: torch.Tensor, reference: torch.Tensor,
                       scale: torch.Tensor | None = None) -> torch.Tensor:
    """Importance weights that turn the training posterior into the likelihood.

    A network trained by maximum likelihood on pairs (flux f, data d) learns the
    posterior ``p(f | d)``, which carries the training flux distribution ``pi(f)``.
    Weighting each stamp's loss by ``g(d) / pi(f)`` makes the optimum, for every d, the
    normalised likelihood ``p(d | f)`` instead (over the support of ``pi``), for any
    positive ``g``. With ``g(d) = 1 / F_ref(d)`` the weight is
    ``sqrt(f^2 + s^2) / F_ref`` for fluxes drawn with density ``pi(f) ~ 1 / sqrt(f^2 +
    s^2)`` (``SimulationConfig(flux_prior="asinh")``, ``s`` the batch's ``truth_scale``),
    and its limit ``f / F_ref`` for log-uniform fluxes (``s = 0``, ``pi(f) ~ 1 / f``):
    about 1 wherever the galaxy is detected, small for fluxes well below the noise when
    ``s = 0``. Weights are clipped at :data:`LIKELIHOOD_WEIGHT_MAX` and normalised to a
    mean of 1 over the finite rows.

    Parameters
    ----------
    truth, reference : torch.Tensor, shape (N,)
        True flux and the network's reference flux ``F_ref``, image units.
    scale : torch.Tensor, shape (N,), optional
        Softening ``s`` of the training flux distribution, image units (default 0).

    Returns
    -------
    torch.Tensor, shape (N,)
    """
    truth = truth.to(reference.dtype)
    if scale is not None:
        truth = torch.where(scale > 0, torch.hypot(truth, scale.to(reference.dtype)), truth)
    w = (truth / reference).clamp(0.0, LIKELIHOOD_WEIGHT_MAX)
    w = torch.nan_to_num(w, nan=0.0)
    return w / w.mean().clamp_min(1e-12)


def likelihood_support(batch: StampBatch, truncated: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Where a likelihood model's loss is normalised, and the truth's softening.

    Rows drawn log-uniform (positive fluxes, ``truth_scale`` 0 or absent) fit the
    likelihood on ``f > 0`` (the Eq. 10 form; the mixture continues smoothly below zero);
    rows drawn down to and below zero (``truth_scale > 0``) fit it on the whole line.

    Returns
    -------
    truncated : torch.Tensor, bool, shape (N,)
    scale : torch.Tensor or None, shape (N,)
        ``batch.truth_scale`` on ``truncated``'s device.
    """
    scale = batch.truth_scale
    if scale is None:
        return torch.ones_like(truncated), None
    scale = scale.to(truncated.device)
    return ~(scale > 0), scale


def batch_loss(module: nn.Module, batch: StampBatch, likelihood: bool = False) -> torch.Tensor:
    """The loss of a batch with truth (the mean over its rows with a finite NLL).

    Parameters
    ----------
    module : nn.Module
        Returns a :class:`~lumos.network.RawOutput` for a batch (:class:`RawForward`).
    batch : StampBatch
        With ``truth``, on the module's device.
    likelihood : bool
        The loss of a likelihood model: Eq. 10 form for every row, weighted by
        :func:`likelihood_weights`.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    if batch.truth is None:
        raise ValueError("training batches need truth (true fluxes)")
    raw = module(batch)
    truth = batch.truth.to(raw.means.device)
    if likelihood:
        truncated, scale = likelihood_support(batch, raw.truncated)
        nll = relative_nll(raw, truth, truncated)
        good = torch.isfinite(nll)
        if not bool(good.any()):
            raise ValueError("no training row has a finite loss (check truth and pixels)")
        w = likelihood_weights(truth[good], raw.reference[good],
                               None if scale is None else scale[good])  # fmt: skip
        return (w * nll[good]).mean()
    nll = relative_nll(raw, truth)
    good = torch.isfinite(nll)
    if not bool(good.any()):
        raise ValueError("no training row has a finite loss (check truth and pixels)")
    return nll[good].mean()
