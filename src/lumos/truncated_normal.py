"""Terms of the normal and of the zero-truncated normal distribution, on tensors.

The Gaussian-mixture code evaluates everything in log space: :func:`log_phi` (the standard
normal log density), :func:`truncation_log_norm` (``log Phi(mu / sigma)``, the normaliser
of a component truncated at zero) and :func:`truncated_moments` (mean and variance of
``N(mu, sigma)`` restricted to ``[0, inf)``, stable far into the tail). All are
differentiable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["log_phi", "truncated_moments", "truncation_log_norm"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

# component are computed with Laplace's continued fraction instead of the direct formula.
_CF_SWITCH = 5.0
_CF_DEPTH = 32


def truncated_moments(means: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of N(mu, sigma) truncated to [0, inf), elementwise.

    With a = mu / sigma and lambda = phi(a) / Phi(a) (inverse Mills ratio):
    mean = mu + sigma lambda, var = sigma^2 (1 - lambda (lambda + a)). For a < -5 both
    expressions cancel catastrophically; there, with t = -a, Laplace's continued fraction
    1/R(t) = t + 1/(t + 2/(t + 3/(t + ...))) for the Mills ratio R gives, writing
    D_k = t + (k + 1)/D_{k+1} and C = 1/(t + 2/D_2) = lambda - t,
    mean = sigma C and var = sigma^2 C^2 (t + 4/D_2 - 3/D_3) / D_2 (no cancellation;
    32 levels reach float64 precision for t >= 5). Both branches are differentiable.
    """
    a = means / sigmas
    # Direct branch (clamped so that it never produces inf/NaN values or gradients).
    a_d = torch.clamp(a, min=-_CF_SWITCH)
    lam = torch.exp(log_phi(a_d) - torch.special.log_ndtr(a_d))
    mean = sigmas * (a_d + lam)
    var = sigmas**2 * (1.0 - lam * (lam + a_d))
    use_cf = a < -_CF_SWITCH
    if bool(use_cf.any()):
        t = -a[use_cf]
        s_cf = sigmas[use_cf]
        d = t
        d_next = t
        for k in range(_CF_DEPTH, 1, -1):  # builds D_k for k = DEPTH-1 ... 2
            d_next = d
            d = t + (k + 1) / d
        # after the loop: d = D_2 and d_next = D_3
        c = 1.0 / (t + 2.0 / d)
        mean = mean.index_put((use_cf,), s_cf * c)
        var = var.index_put((use_cf,), s_cf**2 * c * c * (t + 4.0 / d - 3.0 / d_next) / d)
    return mean, var


def log_phi(z: Tensor) -> Tensor:
    """Log of the standard normal density."""
    return -0.5 * z * z - _LOG_SQRT_2PI


def truncation_log_norm(means: Tensor, sigmas: Tensor, truncated: Tensor | None) -> Tensor:
    """``log Phi(mu / sigma)`` for truncated rows, 0 elsewhere ([N, K])."""
    if truncated is None:
        return torch.zeros_like(means)
    lognorm = torch.special.log_ndtr(means / sigmas)
    return torch.where(truncated[:, None], lognorm, torch.zeros_like(lognorm))
