"""LumosNet: the flux network.

The network maps a :class:`~lumos.stamps.StampBatch` to a K-component Gaussian mixture of
the galaxy flux in image units (electrons for PAUS images). It is two parts:

* the **body** (:meth:`LumosNet.body`): the in-model input normalisation
  (:mod:`lumos.network_inputs`), the convolution blocks on the two image channels, the
  band x camera-state embedding and the hidden dense layers. Its output,
  :class:`BodyOutput`, is the input of the last linear layer together with the per-stamp
  constants the mixture needs;
* the **head** (:meth:`LumosNet.head_raw`): the last linear layer, ``LumosNet.head``, and
  the map of its output to the mixture parameters.

``forward_raw(batch) == head_raw(body(batch))``; fine-tuning the head alone
(:mod:`lumos.transfer`) runs the body once per stamp and the head at every step.
The architecture and the normalisation constants are a
:class:`~lumos.network_config.NetworkConfig`, saved with the weights.

The mixture head predicts the flux *relative to* ``F_ref``: component means
``A / F_ref + u * delta_k`` and sigmas ``sigma_floor + u * softplus(r_k) / log 2`` with
``u = sqrt((e / F_ref)^2 + systematic_scale^2)``, so that the head starts at the optimal
profile-weighted estimate and works with O(1) numbers at every brightness. The mixture is
mapped back to image units with :meth:`GaussianMixture.scale` (a mixture scaled by a
positive constant is again a mixture). Because every step above is homogeneous in the
image units, multiplying the pixels by ``c`` multiplies the output mixture by ``c``.

Normalisation layers: GroupNorm. It normalises each stamp with its own statistics, so the
network has no running statistics (no drift of batch-norm running averages can move every
prediction by a common scale factor), ``eval()`` behaves like ``train()`` apart from
dropout, and an output never depends on the other stamps in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from . import network_ranges
from .mixture import GaussianMixture
from .network_config import NetworkConfig
from .network_inputs import N_SIDE_INPUTS, Preprocessed, clean_i_mag, fallback_profile, preprocess
from .network_ranges import PIXEL_SCALE_TOLERANCE
from .stamps import StampBatch

__all__ = [
    "NetworkConfig",
    "LumosNet",
    "Preprocessed",
    "RawOutput",
    "BodyOutput",
    "PIXEL_SCALE_TOLERANCE",
]


class RawOutput(NamedTuple):
    """The mixture parameters *relative to the reference flux*, and that flux.

    Attributes
    ----------
    log_weights, means, sigmas : torch.Tensor, shape (N, K)
        Log-softmax weights, means and sigmas of the mixture of ``flux / reference``.
    reference : torch.Tensor, shape (N,)
        Reference flux in image units.
    truncated : torch.Tensor, bool, shape (N,)
        Whether the mixture is truncated at zero flux (faint galaxies).
    """

    log_weights: torch.Tensor
    means: torch.Tensor
    sigmas: torch.Tensor
    reference: torch.Tensor
    truncated: torch.Tensor

    def mixture(self) -> GaussianMixture:
        """The mixture in image units (the relative mixture scaled by ``reference``)."""
        relative = GaussianMixture(self.log_weights, self.means, self.sigmas,
                                   truncated=self.truncated)
        return relative.scale(self.reference)


class BodyOutput(NamedTuple):
    """What the head needs, per stamp (rows of a batch).

    Attributes
    ----------
    hidden : torch.Tensor, shape (N, H)
        Output of the dense layers, the input of ``LumosNet.head``.
    base : torch.Tensor, shape (N,)
        Optimal profile-weighted estimate relative to the reference flux.
    unit : torch.Tensor, shape (N,)
        Relative scale of the head's mean offsets and sigmas.
    reference : torch.Tensor, shape (N,)
        Reference flux in image units.
    truncated : torch.Tensor, bool, shape (N,)
        Whether the mixture is truncated at zero flux.
    """

    hidden: torch.Tensor
    base: torch.Tensor
    unit: torch.Tensor
    reference: torch.Tensor
    truncated: torch.Tensor

    def take(self, index) -> BodyOutput:
        """The rows ``index`` (an index tensor, slice or mask)."""
        return BodyOutput(*(t[index] for t in self))

    @staticmethod
    def concat(parts: list[BodyOutput]) -> BodyOutput:
        """The rows of several outputs, in order."""
        return _concat(parts)


def _concat(parts: list):
    """Concatenate NamedTuples of tensors field by field."""
    return type(parts[0])(*(torch.cat(ts) for ts in zip(*parts, strict=True)))


def _gcd_groups(channels: int, groups: int) -> int:
    return math.gcd(int(channels), max(1, int(groups)))


class _ConvBlock(nn.Sequential):
    """Convolution, max-pool, normalisation, ReLU (the published order)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int, pool: int, norm: str,
                 groups: int) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size=kernel, padding=padding),
            nn.MaxPool2d(pool),
        ]
        if norm == "group":
            layers.append(nn.GroupNorm(_gcd_groups(cout, groups), cout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class LumosNet(nn.Module):
    """The LUMOS flux network.

    Parameters
    ----------
    config : NetworkConfig, optional
        Architecture and normalisation constants (default :meth:`NetworkConfig.default`).

    Attributes
    ----------
    features : nn.Sequential
        The convolution blocks.
    embedding : nn.Embedding
        The band x camera-state embedding.
    dense : nn.Sequential
        The hidden dense layers.
    head : nn.Linear
        The last linear layer (3 K outputs: weights, mean offsets, sigmas).

    Notes
    -----
    ``forward(batch)`` returns a :class:`lumos.mixture.GaussianMixture` of the flux in the
    image units of ``batch.pixels``; galaxies fainter than ``config.truncate_threshold``
    get a mixture truncated at zero. In ``eval()`` mode the output is deterministic and
    each row depends only on its own stamp.
    """

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        config = NetworkConfig.default() if config is None else config
        config.validate()
        self.config = config
        #: Free-form training metadata (filled by training and by :func:`load_model`).
        self.metadata: dict[str, Any] = {}
        blocks = []
        cin = 2
        for cout, k, p in zip(config.conv_channels, config.conv_kernels, config.paddings(),
                              strict=True):
            blocks.append(
                _ConvBlock(cin, int(cout), int(k), int(p), config.pool, config.norm,
                           config.norm_groups)
            )
            cin = int(cout)
        self.features = nn.Sequential(*blocks)
        channels, side = config.feature_size()
        self.embedding = nn.Embedding(config.n_band_index, config.embedding_dim)
        width = channels * side * side + N_SIDE_INPUTS + config.embedding_dim
        dense: list[nn.Module] = []
        for w in config.dense:
            dense.append(nn.Linear(width, int(w)))
            if config.dropout > 0:
                dense.append(nn.Dropout(config.dropout))
            dense.append(nn.ReLU(inplace=True))
            width = int(w)
        self.dense = nn.Sequential(*dense)
        k = config.n_components
        self.head = nn.Linear(width, 3 * k)
        with torch.no_grad():
            # Start close to the optimal estimate: small offsets, equal weights, sigma ~ u.
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[k : 2 * k] = torch.linspace(-0.5, 0.5, k)
        self.register_buffer("_fallback_profile", fallback_profile(config.stamp_size),
                             persistent=False)
        if config.channels_last:
            self.to(memory_format=torch.channels_last)

    def with_config(self, config: NetworkConfig) -> LumosNet:
        """A copy with other settings of the same network shapes, its weights and metadata."""
        out = LumosNet(config)
        out.load_state_dict(self.state_dict())
        out.metadata = dict(self.metadata)
        return out

    # -- properties -------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        """Number of mixture components K."""
        return self.config.n_components

    @property
    def sigma_floor(self) -> float:
        """Smallest component sigma relative to the reference flux."""
        return self.config.sigma_floor

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def normalisation_constants(self) -> dict[str, Any]:
        """The input-normalisation constants (also part of :attr:`config`)."""
        c = self.config
        return {
            "background": f"median of valid pixels in a {c.border_width}-pixel border frame",
            "noise": "MAD of adjacent border-pixel differences / sqrt(2) / 0.6745",
            "reference_flux": "e * sqrt(1 + max(A/e, 0)^2), A = sum(P d)/sum(P^2), "
            "e = noise/sqrt(sum(P^2))",
            "border_width": c.border_width,
            "pixel_gain": c.pixel_gain,
            "pixel_softening": c.pixel_softening,
            "i_mag_center": c.i_mag_center,
            "i_mag_scale": c.i_mag_scale,
            "ccd_size": list(c.ccd_size),
            "sigma_floor": c.sigma_floor,
            "systematic_scale": c.systematic_scale,
            "truncate_threshold": c.truncate_threshold,
        }

    # -- inputs -----------------------------------------------------------------------
    def preprocess(self, batch: StampBatch) -> Preprocessed:
        """The normalised inputs of a batch (:func:`lumos.network_inputs.preprocess`)."""
        return preprocess(self.config, batch, self._fallback_profile)

    def clean_i_mag(self, i_mag: torch.Tensor) -> torch.Tensor:
        """The i-band magnitude the network uses: NaN or infinite becomes
        ``config.i_mag_center`` (:func:`lumos.network_inputs.clean_i_mag`)."""
        return clean_i_mag(i_mag, self.config.i_mag_center)

    def truncate_mask(self, i_mag: torch.Tensor) -> torch.Tensor:
        """True where the flux PDF is truncated at zero (``i_mag > truncate_threshold``,
        with a missing magnitude replaced as in :meth:`clean_i_mag`); always False for a
        likelihood model (``config.likelihood``)."""
        if self.config.likelihood:
            return torch.zeros(i_mag.shape, dtype=torch.bool, device=i_mag.device)
        return self.clean_i_mag(i_mag) > self.config.truncate_threshold

    # -- body and head ----------------------------------------------------------------
    def body(self, batch: StampBatch) -> BodyOutput:
        """Everything before the last linear layer.

        Parameters
        ----------
        batch : StampBatch

        Returns
        -------
        BodyOutput
        """
        pre = self.preprocess(batch)
        x = pre.images
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x).flatten(1)
        x = torch.cat([x, pre.side, self.embedding(pre.band)], dim=1)
        truncated = self.truncate_mask(batch.i_mag.to(x.device))
        return BodyOutput(self.dense(x), pre.base, pre.unit, pre.reference, truncated)

    def head_raw(self, body: BodyOutput) -> RawOutput:
        """The last linear layer and the map of its output to mixture parameters.

        Component ``k``: log weight ``log_softmax(x)_k``, mean ``base + unit * x_{K+k}``,
        sigma ``sigma_floor + unit * softplus(x_{2K+k}) / log 2``, times ``sigma_scale``.

        Parameters
        ----------
        body : BodyOutput
            Output of :meth:`body`.

        Returns
        -------
        RawOutput
        """
        c = self.config
        x = self.head(body.hidden)
        k = c.n_components
        log_weights = torch.log_softmax(x[:, :k], dim=1)
        unit = body.unit[:, None]
        means = body.base[:, None] + unit * x[:, k : 2 * k]
        sigmas = c.sigma_floor + unit * F.softplus(x[:, 2 * k :]) / math.log(2.0)
        if c.sigma_scale != 1.0:
            sigmas = sigmas * c.sigma_scale
        return RawOutput(log_weights, means, sigmas, body.reference, body.truncated)

    # -- forward ----------------------------------------------------------------------
    def forward_raw(self, batch: StampBatch) -> RawOutput:
        """Mixture parameters relative to the reference flux (used by training).

        Parameters
        ----------
        batch : StampBatch

        Returns
        -------
        RawOutput
        """
        return self.head_raw(self.body(batch))

    def forward(self, batch: StampBatch) -> GaussianMixture:
        """Flux PDFs of a batch.

        Parameters
        ----------
        batch : StampBatch
            Stamps in image units.

        Returns
        -------
        lumos.mixture.GaussianMixture
            K-component mixtures of the flux in the image units of ``batch.pixels``
            (electrons for PAUS images), truncated at zero for ``i_mag`` fainter than
            ``config.truncate_threshold``.
        """
        return self.forward_raw(batch).mixture()

    @torch.no_grad()
    def _in_chunks(self, fn: Callable, batch: StampBatch, chunk_size: int):
        """``fn`` on chunks of ``chunk_size`` rows moved to the model's device, in
        ``eval()`` mode without gradients, concatenated."""
        was_training = self.training
        self.eval()
        dev = self._fallback_profile.device
        try:
            parts = [fn(batch[i : i + chunk_size].to(dev))
                     for i in range(0, len(batch), chunk_size)]
            if not parts:
                parts = [fn(batch.to(dev))]
        finally:
            self.train(was_training)
        return _concat(parts)

    def raw_in_chunks(self, batch: StampBatch, chunk_size: int = 4096) -> RawOutput:
        """:meth:`forward_raw` in ``eval()`` mode without gradients, ``chunk_size`` rows
        at a time (bounds memory).

        Parameters
        ----------
        batch : StampBatch
        chunk_size : int
            Rows per forward pass.

        Returns
        -------
        RawOutput
            On the model's device.
        """
        return self._in_chunks(self.forward_raw, batch, chunk_size)

    def body_in_chunks(self, batch: StampBatch, chunk_size: int = 1024) -> BodyOutput:
        """:meth:`body` in ``eval()`` mode without gradients, ``chunk_size`` rows at a
        time (the frozen body of :mod:`lumos.transfer`).

        Returns
        -------
        BodyOutput
            On the model's device.
        """
        return self._in_chunks(self.body, batch, chunk_size)

    def predict(self, batch: StampBatch, chunk_size: int = 4096) -> GaussianMixture:
        """Flux PDFs in ``eval()`` mode without gradients, in chunks of ``chunk_size`` rows.

        Parameters
        ----------
        batch : StampBatch
        chunk_size : int
            Rows per forward pass (bounds memory).

        Returns
        -------
        lumos.mixture.GaussianMixture
        """
        return self.raw_in_chunks(batch, chunk_size).mixture()

    # -- training ranges --------------------------------------------------------------
    def range_flags(self, batch: StampBatch) -> torch.Tensor:
        """Per-galaxy ``Flag.BAD_MAGNITUDE`` and ``Flag.OUT_OF_RANGE`` bits for inputs the
        network was not trained on (:func:`lumos.network_ranges.input_range_flags`);
        image-wide inputs are checked by :meth:`observing_range_flags`."""
        return network_ranges.input_range_flags(self.config, batch)

    def max_flux_rate(self) -> float | None:
        """Largest band flux of the training simulations, electrons per second
        (:func:`lumos.network_ranges.max_flux_rate`; None if the model does not record it)."""
        return network_ranges.max_flux_rate(self.metadata)

    def observing_ranges(self) -> dict[str, tuple[float, float]]:
        """PSF and pixel-scale ranges of the training simulations
        (:func:`lumos.network_ranges.observing_ranges`)."""
        return network_ranges.observing_ranges(self.metadata)

    def observing_range_flags(self, psf_fwhm: float, psf_beta: float,
                              pixel_scale: float) -> int:
        """``Flag.OUT_OF_RANGE`` when an image's PSF FWHM (arcsec), Moffat beta or pixel
        scale (arcsec per pixel) lies outside :meth:`observing_ranges`, else 0
        (:func:`lumos.network_ranges.observing_range_flags`)."""
        return network_ranges.observing_range_flags(self.metadata, psf_fwhm, psf_beta,
                                                    pixel_scale)
