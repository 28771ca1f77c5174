"""Validation metrics of a :class:`~lumos.network.LumosNet` on a batch with truth."""

from __future__ import annotations

import numpy as np
import torch

from .loss import relative_nll
from .network import LumosNet
from .stamps import StampBatch
from .stats import P16, P84, sigma68

__all__ = ["evaluate", "BRIGHT_LIMIT"]

#: i-band magnitude separating the bright and faint metrics.
BRIGHT_LIMIT = 20.5


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else float("nan")


@torch.no_grad()
def evaluate(model: LumosNet, batch: StampBatch, chunk_size: int = 2048) -> dict[str, float]:
    """Validation metrics of a model on a batch with truth.

    Parameters
    ----------
    model : LumosNet
    batch : StampBatch
        With ``truth`` (true flux, image units).
    chunk_size : int
        Rows per forward pass.

    Returns
    -------
    dict
        ``val_loss`` (mean relative-units NLL, :func:`lumos.loss.relative_nll`),
        ``val_bias`` (median of (mean - truth) / truth), ``val_sigma68``
        (:func:`lumos.stats.sigma68` of that ratio), ``val_coverage68`` (fraction of truths
        between the q16 and q84 quantiles of their PDF, :data:`lumos.stats.P16` and
        :data:`lumos.stats.P84`), and ``val_bias_bright``/``val_sigma68_bright``
        (i < 20.5) and ``val_bias_faint``/``val_sigma68_faint``.
    """
    if batch.truth is None:
        raise ValueError("the validation batch needs truth (true fluxes)")
    raw = model.raw_in_chunks(batch, chunk_size)
    truth_dev = batch.truth.to(raw.means.device)
    mix = raw.mixture()
    nll_t = relative_nll(raw, truth_dev).cpu()
    mean_t = mix.mean().cpu()
    cdf_t = mix.cdf(truth_dev.to(mix.means.dtype)).cpu()
    truth = batch.truth.double().cpu()
    rel = ((mean_t.double() - truth) / truth).numpy()
    ok = (truth > 0).numpy() & np.isfinite(rel)
    i_mag = batch.i_mag.cpu().numpy()
    bright = (i_mag < BRIGHT_LIMIT) & ok
    faint = (i_mag >= BRIGHT_LIMIT) & ok
    finite = torch.isfinite(nll_t)
    c = cdf_t[torch.isfinite(cdf_t)].double()
    return {
        "val_loss": float(nll_t[finite].mean()) if bool(finite.any()) else float("nan"),
        "val_bias": _median(rel[ok]),
        "val_sigma68": sigma68(rel[ok]),
        "val_coverage68": float(((c >= P16) & (c <= P84)).double().mean()) if c.numel()
        else float("nan"),
        "val_bias_bright": _median(rel[bright]),
        "val_sigma68_bright": sigma68(rel[bright]),
        "val_bias_faint": _median(rel[faint]),
        "val_sigma68_faint": sigma68(rel[faint]),
    }
