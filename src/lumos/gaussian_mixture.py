"""The batch of one-dimensional Gaussian-mixture flux PDFs, :class:`GaussianMixture`.

One object holds N mixtures of K components (tensors [N, K]) and gives their densities,
CDFs, moments, quantiles, modes and the summaries of a measurement table, without a
per-galaxy loop. The mathematics and the conventions of the summaries are described in
:mod:`lumos.mixture`, which also holds the losses and products and from which the class is
normally imported. Quantiles, modes and summaries are computed by
:mod:`lumos.mixture_summaries`, over row chunks run in parallel threads
(:func:`lumos.chunks.map_chunks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .chunks import CHUNK, map_chunks
from .mixture_summaries import SUMMARY_KEYS, find_peaks, solve_quantiles, summarise
from .stats import P025, P16, P84, P975
from .truncated_normal import log_phi, truncated_moments, truncation_log_norm

__all__ = ["SUMMARY_KEYS", "GaussianMixture", "as_tensor"]


def as_tensor(x, dtype=None, device=None) -> Tensor:
    """``x`` as a tensor (a tensor is cast/moved, anything else converted through NumPy)."""
    if isinstance(x, Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class GaussianMixture:
    """Batch of K-component 1-D Gaussian mixtures in flux units. Torch tensors [N, K].

    Parameters
    ----------
    log_weights : Tensor, shape [N, K]
        Log of the component weights (e.g. the output of ``log_softmax``). They are
        renormalised here (a no-op for log-softmax output, and gradient-neutral).
    means : Tensor, shape [N, K]
        Component means mu_k, in flux units.
    sigmas : Tensor, shape [N, K]
        Component standard deviations sigma_k > 0, in flux units. Rows with non-positive
        or non-finite parameters give NaN summaries (they are not rejected here).
    truncated : Tensor of bool, shape [N], optional
        Rows whose PDF is the mixture of the Gaussians each truncated at flux 0 and
        renormalised on [0, inf) (Eq. 10). ``None`` means no row is truncated. Only
        ``log_prob``, ``cdf`` and the summaries honour it; ``means``/``sigmas`` remain the
        parameters of the untruncated Gaussians.

    Notes
    -----
    Summaries (``quantile``, ``peak``, ``summaries`` ...) are computed without gradients in
    float64; ``log_prob``, ``cdf``, ``mean``, ``variance``, ``std``, ``scale`` and
    ``calibrate`` are differentiable.
    """

    def __init__(
        self,
        log_weights: Tensor,
        means: Tensor,
        sigmas: Tensor,
        truncated: Tensor | None = None,
    ) -> None:
        means = as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        log_weights = as_tensor(log_weights, dtype=means.dtype, device=means.device)
        sigmas = as_tensor(sigmas, dtype=means.dtype, device=means.device)
        if means.ndim != 2:
            raise ValueError(f"means must have shape [N, K], got {tuple(means.shape)}")
        if log_weights.shape != means.shape or sigmas.shape != means.shape:
            raise ValueError(
                "log_weights, means and sigmas must have the same shape [N, K], got "
                f"{tuple(log_weights.shape)}, {tuple(means.shape)}, {tuple(sigmas.shape)}"
            )
        if means.shape[1] < 1:
            raise ValueError("a mixture needs at least one component (K >= 1)")
        if truncated is not None:
            truncated = as_tensor(truncated, device=means.device)
            if truncated.dtype != torch.bool:
                truncated = truncated != 0
            if truncated.shape != (means.shape[0],):
                raise ValueError(
                    f"truncated must have shape [N] = [{means.shape[0]}], "
                    f"got {tuple(truncated.shape)}"
                )
        self.log_weights = log_weights - torch.logsumexp(log_weights, dim=1, keepdim=True)
        self.means = means
        self.sigmas = sigmas
        self.truncated = truncated

    # ------------------------------------------------------------------ containers
    @property
    def weights(self) -> Tensor:
        """Component weights w_k, shape [N, K], summing to 1 per row."""
        return torch.exp(self.log_weights)

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.means.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the parameters."""
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.means.device

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def __repr__(self) -> str:
        n_trunc = 0 if self.truncated is None else int(self.truncated.sum())
        return (
            f"GaussianMixture(N={len(self)}, K={self.n_components}, "
            f"truncated rows={n_trunc}, dtype={self.dtype})"
        )

    def __getitem__(self, rows) -> GaussianMixture:
        """Select rows (int, slice, bool mask or integer index array); keeps [n, K] shape."""
        if isinstance(rows, (int, np.integer)):
            i = int(rows)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"row {rows} out of range for {len(self)} rows")
            rows = slice(i, i + 1)
        elif not isinstance(rows, slice):
            rows = as_tensor(rows, device=self.device)
            if rows.dtype != torch.bool:
                rows = rows.long()
        trunc = None if self.truncated is None else self.truncated[rows]
        return GaussianMixture(
            self.log_weights[rows], self.means[rows], self.sigmas[rows], trunc
        )

    def to(self, *args, **kwargs) -> GaussianMixture:
        """Move/cast the parameters (``Tensor.to`` arguments); ``truncated`` stays bool."""
        means = self.means.to(*args, **kwargs)
        trunc = None if self.truncated is None else self.truncated.to(means.device)
        return GaussianMixture(
            self.log_weights.to(*args, **kwargs), means, self.sigmas.to(*args, **kwargs), trunc
        )

    def detach(self) -> GaussianMixture:
        """A copy detached from the autograd graph."""
        return GaussianMixture(
            self.log_weights.detach(), self.means.detach(), self.sigmas.detach(), self.truncated
        )

    def numpy(self) -> dict[str, np.ndarray]:
        """Parameters as NumPy arrays.

        Returns
        -------
        dict
            ``weight``, ``mean``, ``sigma`` (float arrays [N, K], flux units for the last
            two) and ``truncated`` (bool [N]).
        """
        trunc = (
            np.zeros(len(self), dtype=bool)
            if self.truncated is None
            else self.truncated.detach().cpu().numpy().astype(bool)
        )
        return {
            "weight": self.weights.detach().cpu().numpy(),
            "mean": self.means.detach().cpu().numpy(),
            "sigma": self.sigmas.detach().cpu().numpy(),
            "truncated": trunc,
        }

    @classmethod
    def from_arrays(
        cls, weight, mean, sigma, truncated=None, dtype: torch.dtype = torch.float64
    ) -> GaussianMixture:
        """Build a mixture from arrays of weights (not logs), means and sigmas.

        Parameters
        ----------
        weight, mean, sigma : array_like, shape [N, K] (or [K] for a single row)
            Weights (renormalised per row), means and sigmas in flux units. Components
            of weight exactly 0 are ignored (their mean and sigma may be NaN).
        truncated : array_like of bool, shape [N], optional
            Rows truncated at flux 0.
        dtype : torch.dtype
            Floating-point dtype of the tensors (default float64).
        """
        arrays = []
        for name, value in (("weight", weight), ("mean", mean), ("sigma", sigma)):
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[None, :]
            if arr.ndim != 2:
                raise ValueError(f"{name} must have shape [N, K], got {arr.shape}")
            arrays.append(arr)
        w, m, s = arrays
        if w.shape != m.shape or s.shape != m.shape:
            raise ValueError(
                f"weight, mean and sigma must have equal shapes, got {w.shape}, {m.shape}, "
                f"{s.shape}"
            )
        # components of zero weight may carry NaN parameters (unused slots): neutralise
        unused = w == 0
        m = np.where(unused, 0.0, m)
        s = np.where(unused, 1.0, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            logw = np.log(w)
        trunc = None
        if truncated is not None:
            trunc = torch.as_tensor(np.asarray(truncated, dtype=bool).reshape(-1))
        return cls(
            torch.as_tensor(logw, dtype=dtype),
            torch.as_tensor(m, dtype=dtype),
            torch.as_tensor(s, dtype=dtype),
            trunc,
        )

    # ------------------------------------------------------------------ transforms
    def _log_norm(self) -> Tensor:
        """``log Phi(mu/sigma)`` on truncated rows, 0 elsewhere."""
        return truncation_log_norm(self.means, self.sigmas, self.truncated)

    def effective_log_weights(self) -> Tensor:
        """log of w_k / Phi(mu_k/sigma_k) (truncated rows) or log w_k (other rows)."""
        return self.log_weights - self._log_norm()

    def scale(self, factor) -> GaussianMixture:
        """Multiply the flux axis by ``factor`` (means and sigmas), differentiably.

        Parameters
        ----------
        factor : Tensor or float, shape [N] or scalar
            Positive multiplicative factor per row (e.g. a conversion to electrons).
            NaN factors give NaN rows.
        """
        factor = as_tensor(factor, dtype=self.dtype, device=self.device)
        if factor.ndim == 0:
            factor = factor.expand(len(self))
        if factor.shape != (len(self),):
            raise ValueError(f"factor must be a scalar or have shape [{len(self)}]")
        if bool((factor <= 0).any()):
            raise ValueError("scale factor must be positive")
        f = factor[:, None]
        return GaussianMixture(self.log_weights, self.means * f, self.sigmas * f, self.truncated)

    def calibrate(self, zero_point, zero_point_err=0.0) -> GaussianMixture:
        """Apply a multiplicative zero point to every component.

        mu'_k = zp mu_k and sigma'_k^2 = zp^2 sigma_k^2 + (mu_k zp_err)^2, i.e. the zero
        point uncertainty is propagated to first order per component (the weights and the
        truncation are unchanged; a zero point > 0 keeps flux 0 at 0).

        Parameters
        ----------
        zero_point : float or Tensor [N]
            Multiplicative calibration factor (> 0; NaN gives NaN rows).
        zero_point_err : float or Tensor [N]
            Its 1-sigma uncertainty (>= 0).
        """
        zp = as_tensor(zero_point, dtype=self.dtype, device=self.device)
        err = as_tensor(zero_point_err, dtype=self.dtype, device=self.device)
        zp = zp.expand(len(self)) if zp.ndim == 0 else zp
        err = err.expand(len(self)) if err.ndim == 0 else err
        if zp.shape != (len(self),) or err.shape != (len(self),):
            raise ValueError(
                f"zero_point and zero_point_err must be scalars or have shape [{len(self)}]"
            )
        if bool((zp <= 0).any()) or bool((err < 0).any()):
            raise ValueError("zero_point must be > 0 and zero_point_err >= 0")
        zp, err = zp[:, None], err[:, None]
        means = self.means * zp
        sigmas = torch.sqrt((self.sigmas * zp) ** 2 + (self.means * err) ** 2)
        return GaussianMixture(self.log_weights, means, sigmas, self.truncated)

    # ------------------------------------------------------------------ densities
    def _as_row_values(self, x) -> Tensor:
        x = as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim == 0:
            x = x.expand(len(self))
        if x.shape != (len(self),):
            raise ValueError(
                f"x must be a scalar or have shape [{len(self)}], got {tuple(x.shape)}"
            )
        return x

    def log_prob(self, x) -> Tensor:
        """Log density at one flux value per row (honours ``truncated``).

        Parameters
        ----------
        x : Tensor [N] or float
            Flux in flux units.

        Returns
        -------
        Tensor [N]
            log p(x) in units of log(1/flux); -inf for x < 0 on truncated rows.
        """
        x = self._as_row_values(x)
        z = (x[:, None] - self.means) / self.sigmas
        lp = torch.logsumexp(
            self.effective_log_weights() + log_phi(z) - torch.log(self.sigmas), dim=1
        )
        if self.truncated is not None:
            lp = torch.where(self.truncated & (x < 0), torch.full_like(lp, -math.inf), lp)
        return lp

    def cdf(self, x) -> Tensor:
        """Cumulative distribution P(flux <= x) per row (honours ``truncated``).

        Parameters
        ----------
        x : Tensor [N] or float
            Flux in flux units.
        """
        x = self._as_row_values(x)
        z = (x[:, None] - self.means) / self.sigmas
        plain = (self.weights * torch.special.ndtr(z)).sum(dim=1)
        if self.truncated is None:
            return plain
        # survival of each truncated component: Phi((mu - x)/sigma) / Phi(mu/sigma)
        surv = torch.exp(
            torch.logsumexp(self.effective_log_weights() + torch.special.log_ndtr(-z), dim=1)
        )
        trunc = torch.clamp(1.0 - surv, min=0.0)
        trunc = torch.where(x < 0, torch.zeros_like(trunc), trunc)
        return torch.where(self.truncated, trunc, plain)

    # ------------------------------------------------------------------ moments
    def _component_moments(self) -> tuple[Tensor, Tensor]:
        """Per-component mean and variance of the (possibly truncated) components."""
        var = self.sigmas**2
        if self.truncated is None or not bool(self.truncated.any()):
            return self.means, var
        rows = self.truncated
        tm, tv = truncated_moments(self.means[rows], self.sigmas[rows])
        return self.means.index_put((rows,), tm), var.index_put((rows,), tv)

    def mean(self) -> Tensor:
        """Mixture mean sum_k w_k E_k[f] (Eq. 15), flux units, shape [N]."""
        m, _ = self._component_moments()
        return (self.weights * m).sum(dim=1)

    def variance(self) -> Tensor:
        """Mixture variance including the spread between components (Eq. 16).

        sum_k w_k (var_k + mu_k^2) - mean^2, evaluated as sum_k w_k (var_k + (mu_k - mean)^2)
        to avoid cancellation; flux^2 units, shape [N].
        """
        m, v = self._component_moments()
        w = self.weights
        mean = (w * m).sum(dim=1, keepdim=True)
        return (w * (v + (m - mean) ** 2)).sum(dim=1)

    def std(self) -> Tensor:
        """Mixture standard deviation sqrt(variance), flux units, shape [N]."""
        return torch.sqrt(self.variance())

    # ------------------------------------------------------------------ quantiles
    def quantile(self, p) -> Tensor:
        """Quantiles by vectorised safeguarded Newton root finding on the CDF.

        Parameters
        ----------
        p : float, sequence of floats, or Tensor
            Probability levels in (0, 1): a float gives [N]; a sequence of P floats gives
            [N, P]; a Tensor of shape [N] (one level per row) gives [N]; [N, P] gives [N, P].

        Returns
        -------
        Tensor
            Flux values (no gradient), in the mixture dtype. The absolute tolerance is
            1e-9 of the row's standard deviation. Rows with invalid parameters give NaN.
        """
        n = len(self)
        if isinstance(p, np.ndarray):
            p = torch.from_numpy(np.asarray(p, dtype=np.float64))
        if isinstance(p, Tensor):
            pt = p.detach().to(torch.float64).cpu()
            if pt.ndim == 0:
                pt, squeeze = pt.expand(n)[:, None], True
            elif pt.ndim == 1 and pt.shape[0] == n:
                pt, squeeze = pt[:, None], True
            elif pt.ndim == 2 and pt.shape[0] == n:
                squeeze = False
            else:
                raise ValueError(f"p must be a scalar, [N] or [N, P] tensor, got {tuple(pt.shape)}")
        elif isinstance(p, Sequence):
            pt, squeeze = torch.tensor([list(p)], dtype=torch.float64).expand(n, -1), False
        else:
            pt, squeeze = torch.full((n, 1), float(p), dtype=torch.float64), True
        if bool(((pt <= 0) | (pt >= 1) | torch.isnan(pt)).any()):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        out = map_chunks(
            lambda lo, hi: solve_quantiles(self[lo:hi].float64_cpu(), pt[lo:hi]), n, CHUNK
        )
        q = torch.cat(out) if out else torch.empty((0, pt.shape[1]), dtype=torch.float64)
        q = q.to(dtype=self.dtype, device=self.device)
        return q[:, 0] if squeeze else q

    def median(self) -> Tensor:
        """Median flux, shape [N] (no gradient)."""
        return self.quantile(0.5)

    def peak(self) -> Tensor:
        """Mode of the PDF (highest density; no gradient), shape [N], flux units.

        Correct for multi-modal mixtures: a safeguarded ascent on log p (Newton where the
        log density is concave, with a fall back on the EM fixed point
        x = sum r_k mu_k/s_k^2 / sum r_k/s_k^2, which never decreases the density) is
        started from every component mean, and the converged point with the highest
        density is kept. For mixtures of more than 12 components (e.g. products) only the
        12 tallest components (largest w_k / sigma_k) are used as starts. Truncated rows
        are restricted to flux >= 0 (flux 0 itself is a candidate).
        """
        out = map_chunks(lambda lo, hi: find_peaks(self[lo:hi].float64_cpu()), len(self))
        res = torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
        return res.to(dtype=self.dtype, device=self.device)

    def sigma68(self) -> Tensor:
        """Half width of the central 68.27% interval, (q84 - q16) / 2 (Eq. 14), [N].

        q16 and q84 are the quantiles at Phi(-1) and Phi(+1), so sigma68 == sigma for a
        single Gaussian.
        """
        q = self.quantile([P16, P84])
        return 0.5 * (q[:, 1] - q[:, 0])

    def sigma95(self) -> Tensor:
        """Half width of the central 95% interval, (q97.5 - q2.5) / 2, shape [N].

        Half width, not rescaled to a sigma: a single Gaussian gives 1.95996 sigma, so
        that Eq. 22 gives eta = 0.96 for it.
        """
        q = self.quantile([P025, P975])
        return 0.5 * (q[:, 1] - q[:, 0])

    def eta(self) -> Tensor:
        """Gaussianity, Eq. 22: ``eta = sigma95 / sigma68 - 1``, shape [N].

        0.95996 for any single (untruncated) Gaussian; larger for heavy-tailed PDFs (the
        95% interval reaches into tails that the 68% interval ignores), smaller for
        flat-topped or well-separated bimodal PDFs.
        """
        q = self.quantile([P025, P16, P84, P975])
        return (q[:, 3] - q[:, 0]) / (q[:, 2] - q[:, 1]) - 1.0

    def summaries(
        self, chunk_size: int = 20_000, workers: int | None = None
    ) -> dict[str, np.ndarray]:
        """All point summaries at once, as float64 NumPy arrays of shape [N].

        Keys: ``flux`` (mean), ``flux_err`` (std), ``flux_median``, ``flux_peak``,
        ``flux_q16``, ``flux_q84`` (quantiles at Phi(-1), Phi(+1)), ``flux_q025``,
        ``flux_q975``, ``sigma68``, ``sigma95``, ``eta`` (see the methods of the same
        names). Flux units as the mixture. Rows with invalid parameters give NaN.

        Parameters
        ----------
        chunk_size : int
            Rows processed at once (memory ~ chunk_size * K^2 * 100 bytes; small chunks stay
            in cache and are faster).
        workers : int, optional
            Chunks processed in parallel threads, each with one intra-op thread (much
            faster than intra-op parallelism for these many small operations). Default:
            ``torch.get_num_threads()``.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        return summarise(self, chunk_size, workers)

    # ------------------------------------------------------------------ helpers
    def float64_cpu(self) -> GaussianMixture:
        """Detached float64 CPU copy; unused (zero-weight) components made harmless."""
        m = self.detach().to(device="cpu", dtype=torch.float64)
        unused = m.log_weights == -math.inf
        if bool(unused.any()):
            m = GaussianMixture(
                m.log_weights,
                torch.where(unused, 0.0, m.means),
                torch.where(unused, 1.0, m.sigmas),
                m.truncated,
            )
        return m

    def valid_rows(self) -> Tensor:
        """Rows with finite parameters, sigmas > 0 and at least one positive weight."""
        unused = self.log_weights == -math.inf
        comp_ok = unused | (
            torch.isfinite(self.means) & torch.isfinite(self.sigmas) & (self.sigmas > 0)
        )
        return (
            comp_ok.all(dim=1)
            & ~unused.all(dim=1)
            & ~torch.isnan(self.log_weights).any(dim=1)
            & ~(self.log_weights == math.inf).any(dim=1)
        )
