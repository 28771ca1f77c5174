"""LumosNet: the flux network, its configuration and its in-model input normalisation.

The network maps a :class:`~lumos.stamps.StampBatch` to a K-component Gaussian mixture of
the galaxy flux in image units (electrons for PAUS images). Everything it needs to
normalise its inputs happens *inside* the model, with its constants kept in the
:class:`NetworkConfig` that is saved with the weights, so training and inference cannot
normalise differently.

Input normalisation (per stamp, all vectorised):

1. Pixels that are exactly zero are treated as missing (``cut_stamps`` pads and masks
   with zeros). Missing pixels are left out of every statistic and set to 0 after the
   background subtraction.
2. Background ``b``: the median of the valid pixels in a frame of ``border_width`` pixels
   along the stamp edge (the stamps include the sky).
3. Noise ``s``: the median absolute deviation (about zero) of differences of adjacent
   border pixels, divided by ``sqrt(2) * 0.6745`` (robust against sky gradients and
   sources in the frame). Fallback: the plain border MAD.
4. Profile-weighted optimal amplitude ``A = sum(P d) / sum(P^2)`` of the background
   subtracted pixels ``d`` with the model profile ``P`` (unit total flux), its
   background-noise error ``e = s / sqrt(sum(P^2))`` and signal-to-noise ``A / e``.
5. Reference flux ``F_ref = e * sqrt(1 + max(A / e, 0)^2)`` (about ``A`` for bright
   galaxies, ``e`` for faint ones; always positive).
6. Image channels: ``asinh``-compressed ``pixel_gain * d / F_ref`` and
   ``pixel_gain * P``, so the convolutional layers see a galaxy of unit flux whatever
   its brightness.
7. Side inputs: ``(i_mag - i_mag_center) / i_mag_scale`` (a missing or infinite
   magnitude enters as ``i_mag_center``, the neutral value, and is not truncated at zero
   flux: :meth:`LumosNet.clean_i_mag` is the one rule for it), CCD ``(x / 4096, y / 2048)``,
   an 80 x 10 trainable embedding of the band x camera-state index, and three features of
   the reference estimate (``asinh(A / e / 3)``, ``A / F_ref`` and ``log(F_ref / e)``).

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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .bands import N_BAND_INDEX
from .flags import Flag
from .instrument import CCD_HEIGHT, CCD_WIDTH
from .mixture import GaussianMixture
from .stamps import STAMP_SIZE, StampBatch

__all__ = [
    "NetworkConfig",
    "LumosNet",
    "Preprocessed",
    "RawOutput",
]

_MAD_TO_SIGMA = 0.6745
_NORMS = ("group", "none")
#: Relative tolerance around the training pixel scale before ``OUT_OF_RANGE`` is set.
PIXEL_SCALE_TOLERANCE = 0.05


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and normalisation constants of a :class:`LumosNet`.

    Everything here is saved in the model file, so a loaded model normalises its inputs
    exactly as it did in training.

    Parameters
    ----------
    conv_channels : tuple of int
        Output channels of the convolution blocks (one block per entry).
    conv_kernels : tuple of int
        Kernel size of each block's convolution.
    conv_padding : tuple of int or None
        Zero padding of each convolution; None pads ``kernel // 2`` ("same" for odd kernels).
    pool : int
        Max-pool size (and stride) after each convolution.
    norm : {"group", "none"}
        Normalisation in the convolution blocks: GroupNorm (per stamp, no running
        statistics) or none.
    norm_groups : int
        Number of GroupNorm groups (reduced to a divisor of the channel count).
    dense : tuple of int
        Widths of the hidden dense layers.
    dropout : float
        Dropout probability after each hidden dense layer (training only).
    n_components : int
        Number of Gaussians in the mixture (K = 5 in the paper).
    embedding_dim : int
        Size of the band x camera-state embedding.
    n_band_index : int
        Number of band x camera-state indices (80 for PAUS).
    stamp_size : int
        Stamp side in pixels.
    channels_last : bool
        Run the convolutions in ``channels_last`` memory format (faster on CPU).
    border_width : int
        Width in pixels of the stamp frame used for the background and noise estimates.
    pixel_gain : float
        Multiplies the unit-flux image channels before the ``asinh`` compression.
    pixel_softening : float
        Scale ``a`` of the compression ``a * asinh(x / a)`` (linear for ``|x| << a``).
    i_mag_center, i_mag_scale : float
        The i-band magnitude enters as ``(i_mag - i_mag_center) / i_mag_scale``.
    ccd_size : tuple of float
        CCD size (x, y) in pixels; ``ccd_xy`` enters divided by it.
    sigma_floor : float
        Smallest component sigma relative to the reference flux (dimensionless).
    systematic_scale : float
        Relative scale added in quadrature to the optimal-estimate error to set the unit
        of the head's mean offsets and sigmas (dimensionless).
    truncate_threshold : float
        Galaxies fainter than this i-band magnitude get a mixture truncated at zero flux
        (Eq. 10 of the paper), in training and inference alike.
    i_mag_range : tuple of float
        i-band magnitude range of the training set; outside it ``range_flags`` sets
        ``Flag.OUT_OF_RANGE``.
    band_indices : tuple of int or None
        Band x camera-state indices seen in training (None: all of them).
    sigma_scale : float
        Multiplier of every component sigma, fitted after training by maximum likelihood on
        a held-out calibration set (temperature scaling; 1 during training).
    likelihood : bool
        The network predicts the likelihood of the flux given this exposure's pixels and
        model profile alone: the i-band magnitude side input is held at zero (the network
        cannot see it) and the output mixture is never truncated (the truncation at zero
        flux is part of the prior, :mod:`lumos.prior`). Such a model is trained with
        fluxes drawn independently of the galaxy's shape and magnitude and importance
        weights that remove the training flux distribution (:mod:`lumos.training`).
    shared_error : float
        For a likelihood model: the relative flux error shared by every exposure of a
        galaxy (catalogue-profile mismatch and catalogue errors), fitted after training
        on simulated pairs of exposures. The mixture's width holds it; the per-exposure
        likelihood (:func:`lumos.bayes.split_shared`) removes it so that differences
        between exposures are N(0, 1), and co-adds add it back once.
    shared_error_widths, shared_error_values : tuple of float
        Optionally, the shared error as a curve of the exposure's relative likelihood
        width (nodes and values of :class:`lumos.bayes.SharedError`; empty: the constant
        ``shared_error``).
    """

    conv_channels: tuple[int, ...] = (16, 32, 64, 64, 32)
    conv_kernels: tuple[int, ...] = (5, 3, 3, 3, 3)
    conv_padding: tuple[int, ...] | None = (2, 1, 2, 2, 2)
    pool: int = 2
    norm: str = "group"
    norm_groups: int = 8
    dense: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.0
    n_components: int = 5
    embedding_dim: int = 10
    n_band_index: int = N_BAND_INDEX
    stamp_size: int = STAMP_SIZE
    channels_last: bool = True
    border_width: int = 4
    pixel_gain: float = 20.0
    pixel_softening: float = 4.0
    i_mag_center: float = 20.0
    i_mag_scale: float = 2.0
    ccd_size: tuple[float, float] = (float(CCD_WIDTH), float(CCD_HEIGHT))
    sigma_floor: float = 1e-3
    systematic_scale: float = 0.02
    truncate_threshold: float = 20.5
    i_mag_range: tuple[float, float] = (17.0, 23.0)
    band_indices: tuple[int, ...] | None = field(default=None)
    sigma_scale: float = 1.0
    likelihood: bool = False
    shared_error: float = 0.0
    shared_error_widths: tuple[float, ...] = ()
    shared_error_values: tuple[float, ...] = ()

    @classmethod
    def default(cls) -> NetworkConfig:
        """The lighter default network (about 30 MFLOP per stamp)."""
        return cls()

    @classmethod
    def paper(cls) -> NetworkConfig:
        """The published LUMOS design (Cabayol et al.), with GroupNorm for batch norm.

        Five blocks of convolution (32-64-128-64-32 channels, kernels 9-7-5-3-2, the
        published zero padding 4-4-3-3-2), 2x2 max-pool and normalisation; dense layers
        2000-1000-100 with 2% dropout; about 0.4 GFLOP per stamp.
        """
        return cls(
            conv_channels=(32, 64, 128, 64, 32),
            conv_kernels=(9, 7, 5, 3, 2),
            conv_padding=(4, 4, 3, 3, 2),
            dense=(2000, 1000, 100),
            dropout=0.02,
        )

    @classmethod
    def tiny(cls) -> NetworkConfig:
        """A very small network for tests and smoke runs."""
        return cls(
            conv_channels=(4, 8, 8, 8, 8),
            conv_kernels=(3, 3, 3, 3, 3),
            conv_padding=None,
            norm_groups=2,
            dense=(32, 16),
        )

    # -- validation and (de)serialisation --------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        n = len(self.conv_channels)
        if n == 0:
            raise ValueError("conv_channels must list at least one convolution block")
        if len(self.conv_kernels) != n:
            raise ValueError(
                f"conv_kernels has {len(self.conv_kernels)} entries, conv_channels has {n}"
            )
        if self.conv_padding is not None and len(self.conv_padding) != n:
            raise ValueError(
                f"conv_padding has {len(self.conv_padding)} entries, conv_channels has {n}"
            )
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if any(int(c) < 1 for c in self.conv_channels) or any(int(d) < 1 for d in self.dense):
            raise ValueError("channel counts and dense widths must be positive")
        if self.n_components < 1:
            raise ValueError(f"n_components must be positive, got {self.n_components}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be positive, got {self.sigma_scale}")
        if not 0.0 <= self.shared_error < 1.0:
            raise ValueError(f"shared_error must be in [0, 1), got {self.shared_error}")
        if len(self.shared_error_widths) != len(self.shared_error_values):
            raise ValueError("shared_error_widths and shared_error_values differ in length")
        if self.sigma_floor <= 0 or self.systematic_scale < 0:
            raise ValueError("sigma_floor must be > 0 and systematic_scale >= 0")
        if not 0 < 2 * self.border_width < self.stamp_size:
            raise ValueError(f"border_width {self.border_width} does not fit the stamp")
        if self.i_mag_range[0] >= self.i_mag_range[1]:
            raise ValueError(f"i_mag_range must be increasing, got {self.i_mag_range}")
        if self.band_indices is not None and any(
            not 0 <= int(b) < self.n_band_index for b in self.band_indices
        ):
            raise ValueError(f"band_indices must lie in [0, {self.n_band_index})")
        self.feature_size()  # raises if the stamp shrinks to nothing

    def paddings(self) -> tuple[int, ...]:
        """Padding of every convolution."""
        if self.conv_padding is None:
            return tuple(int(k) // 2 for k in self.conv_kernels)
        return tuple(int(p) for p in self.conv_padding)

    def feature_size(self) -> tuple[int, int]:
        """(channels, side) of the last convolution block's output."""
        side = self.stamp_size
        for k, p in zip(self.conv_kernels, self.paddings(), strict=True):
            side = (side + 2 * p - int(k) + 1) // self.pool
            if side < 1:
                raise ValueError(
                    f"the convolution blocks shrink a {self.stamp_size}-pixel stamp to nothing"
                )
        return int(self.conv_channels[-1]), side

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network configuration keys: {', '.join(unknown)}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes) -> NetworkConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)


class Preprocessed(NamedTuple):
    """The normalised network inputs of a batch (see the module docstring).

    Attributes
    ----------
    images : torch.Tensor, shape (N, 2, S, S)
        Compressed unit-flux stamp and profile channels.
    side : torch.Tensor, shape (N, 6)
        i-band magnitude, CCD x and y, and three reference-estimate features (the band
        embedding is added by the network).
    band : torch.Tensor, int64, shape (N,)
        Band x camera-state index clamped to the embedding range.
    reference : torch.Tensor, shape (N,)
        Reference flux ``F_ref`` in image units (> 0).
    base : torch.Tensor, shape (N,)
        Optimal profile-weighted estimate relative to the reference, ``A / F_ref``.
    unit : torch.Tensor, shape (N,)
        Relative scale ``u`` of the head's mean offsets and sigmas.
    background : torch.Tensor, shape (N,)
        Background level (image units per pixel).
    noise : torch.Tensor, shape (N,)
        Background noise per pixel (image units).
    optimal_flux, optimal_error : torch.Tensor, shape (N,)
        Profile-weighted optimal flux ``A`` and its background-noise error (image units).
    """

    images: torch.Tensor
    side: torch.Tensor
    band: torch.Tensor
    reference: torch.Tensor
    base: torch.Tensor
    unit: torch.Tensor
    background: torch.Tensor
    noise: torch.Tensor
    optimal_flux: torch.Tensor
    optimal_error: torch.Tensor


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


def _nanmedian_rows(x: torch.Tensor) -> torch.Tensor:
    """Median over dim 1 ignoring NaN (NaN where a row has no finite value)."""
    return torch.nanmedian(x, dim=1).values


class LumosNet(nn.Module):
    """The LUMOS flux network.

    Parameters
    ----------
    config : NetworkConfig, optional
        Architecture and normalisation constants (default :meth:`NetworkConfig.default`).

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
        width = channels * side * side + 6 + config.embedding_dim
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
        c = (config.stamp_size - 1) / 2.0
        a = torch.arange(config.stamp_size, dtype=torch.float32) - c
        g = torch.exp(-0.5 * (a[:, None] ** 2 + a[None, :] ** 2) / 2.0**2)
        self.register_buffer("_fallback_profile", g / g.sum(), persistent=False)
        if config.channels_last:
            self.to(memory_format=torch.channels_last)

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

    # -- preprocessing ----------------------------------------------------------------
    def _border_stats(self, pixels: torch.Tensor, valid: torch.Tensor):
        """Background (median) and noise (MAD of adjacent differences) of the frame."""
        w = self.config.border_width
        nan = torch.tensor(float("nan"), dtype=pixels.dtype, device=pixels.device)
        x = torch.where(valid, pixels, nan)
        n = x.shape[0]
        strips_h = [x[:, :w, :], x[:, -w:, :]]  # top, bottom: differences along x
        strips_v = [x[:, w:-w, :w], x[:, w:-w, -w:]]  # left, right: differences along y
        border = torch.cat([s.reshape(n, -1) for s in strips_h + strips_v], dim=1)
        diffs = [s[:, :, 1:] - s[:, :, :-1] for s in strips_h]
        diffs += [s[:, 1:, :] - s[:, :-1, :] for s in strips_v]
        diff = torch.cat([d.reshape(n, -1) for d in diffs], dim=1)
        background = _nanmedian_rows(border)
        # Differences remove a smooth sky gradient, so their median is ~0 and the MAD is
        # the median of their absolute values (one sort fewer than the textbook MAD).
        noise = _nanmedian_rows(diff.abs()) / (_MAD_TO_SIGMA * math.sqrt(2.0))
        bad = ~torch.isfinite(noise) | (noise <= 0)
        if bool(bad.any()):  # constant or mostly empty frames: the plain border MAD
            plain = _nanmedian_rows((border[bad] - background[bad, None]).abs()) / _MAD_TO_SIGMA
            noise = noise.clone()
            noise[bad] = plain
        background = torch.nan_to_num(background, nan=0.0)
        # A scale-covariant last resort for constant or empty frames.
        scale = pixels.abs().amax(dim=(1, 2))
        floor = 1e-6 * scale + torch.finfo(pixels.dtype).tiny
        noise = torch.nan_to_num(noise, nan=0.0).maximum(floor)
        return background, noise

    def preprocess(self, batch: StampBatch) -> Preprocessed:
        """Normalise a batch's inputs (see the module docstring).

        Parameters
        ----------
        batch : StampBatch
            Stamps in image units (sky included), unit-flux profiles and side inputs.

        Returns
        -------
        Preprocessed
        """
        c = self.config
        s = c.stamp_size
        if batch.pixels.shape[1:] != (s, s):
            raise ValueError(
                f"the network expects {s}x{s} stamps, got {tuple(batch.pixels.shape[1:])}"
            )
        dev = self._fallback_profile.device
        pixels = torch.nan_to_num(batch.pixels.to(dev, torch.float32), nan=0.0, posinf=0.0,
                                  neginf=0.0)
        profile = torch.nan_to_num(batch.profile.to(dev, torch.float32), nan=0.0, posinf=0.0,
                                   neginf=0.0)
        psum = profile.sum(dim=(1, 2))
        bad_profile = ~(psum > 1e-6)
        profile = torch.where(bad_profile[:, None, None], self._fallback_profile, profile)
        valid = pixels != 0
        background, noise = self._border_stats(pixels, valid)
        d = torch.where(valid, pixels - background[:, None, None], 0.0)
        pv = profile * valid
        p2 = (pv * profile).sum(dim=(1, 2)).clamp_min(1e-12)
        optimal = (pv * d).sum(dim=(1, 2)) / p2
        error = noise / p2.sqrt()
        snr = optimal / error
        reference = error * torch.sqrt(1.0 + snr.clamp_min(0.0) ** 2)
        base = optimal / reference
        rel_error = error / reference
        unit = torch.sqrt(rel_error**2 + c.systematic_scale**2)

        a = c.pixel_softening
        img = c.pixel_gain * d / reference[:, None, None]
        prof = c.pixel_gain * profile
        images = torch.stack([a * torch.asinh(img / a), a * torch.asinh(prof / a)], dim=1)

        i_mag = self.clean_i_mag(batch.i_mag.to(dev, torch.float32))
        i_feat = ((i_mag - c.i_mag_center) / c.i_mag_scale).clamp(-5.0, 5.0)
        if c.likelihood:
            i_feat = torch.zeros_like(i_feat)
        ccd = torch.nan_to_num(batch.ccd_xy.to(dev, torch.float32), nan=0.0)
        ccd = ccd / torch.tensor(c.ccd_size, dtype=torch.float32, device=dev)
        side = torch.stack(
            [
                i_feat,
                ccd[:, 0].clamp(-1.0, 2.0),
                ccd[:, 1].clamp(-1.0, 2.0),
                torch.asinh(snr / 3.0),
                base.clamp(-5.0, 1.0),
                torch.log(reference / error),
            ],
            dim=1,
        )
        band = batch.band_idx.to(dev).long().clamp(0, c.n_band_index - 1)
        return Preprocessed(
            images=images,
            side=side,
            band=band,
            reference=reference,
            base=base,
            unit=unit,
            background=background,
            noise=noise,
            optimal_flux=optimal,
            optimal_error=error,
        )

    def clean_i_mag(self, i_mag: torch.Tensor) -> torch.Tensor:
        """The i-band magnitude the network uses: a missing (NaN) or infinite magnitude
        becomes the neutral ``config.i_mag_center``.

        Parameters
        ----------
        i_mag : torch.Tensor, shape (N,)
            Catalogue magnitudes, NaN where missing.

        Returns
        -------
        torch.Tensor, float32, shape (N,)
        """
        c = self.config.i_mag_center
        return torch.nan_to_num(i_mag.float(), nan=c, posinf=c, neginf=c)

    def truncate_mask(self, i_mag: torch.Tensor) -> torch.Tensor:
        """True where the flux PDF is truncated at zero (``i_mag > truncate_threshold``,
        with a missing magnitude replaced as in :meth:`clean_i_mag`); always False for a
        likelihood model (``config.likelihood``)."""
        if self.config.likelihood:
            return torch.zeros(i_mag.shape, dtype=torch.bool, device=i_mag.device)
        return self.clean_i_mag(i_mag) > self.config.truncate_threshold

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
        c = self.config
        pre = self.preprocess(batch)
        x = pre.images
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x).flatten(1)
        x = torch.cat([x, pre.side, self.embedding(pre.band)], dim=1)
        log_weights, means, sigmas = self.mixture_head(self.dense(x), pre.base, pre.unit)
        truncated = self.truncate_mask(batch.i_mag.to(x.device))
        return RawOutput(log_weights, means, sigmas, pre.reference, truncated)

    def mixture_head(self, hidden: torch.Tensor, base: torch.Tensor, unit: torch.Tensor):
        """The last linear layer and the map of its output to mixture parameters.

        Parameters
        ----------
        hidden : torch.Tensor, shape (N, H)
            Input of :attr:`head` (output of the dense layers).
        base, unit : torch.Tensor, shape (N,)
            Reference-relative optimal estimate and unit (:class:`Preprocessed`).

        Returns
        -------
        tuple of torch.Tensor, each (N, K)
            Log weights, means and sigmas relative to the reference flux
            (``sigma_scale`` applied).
        """
        c = self.config
        x = self.head(hidden)
        k = c.n_components
        log_weights = torch.log_softmax(x[:, :k], dim=1)
        unit = unit[:, None]
        means = base[:, None] + unit * x[:, k : 2 * k]
        sigmas = c.sigma_floor + unit * F.softplus(x[:, 2 * k :]) / math.log(2.0)
        if c.sigma_scale != 1.0:
            sigmas = sigmas * c.sigma_scale
        return log_weights, means, sigmas

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
        raw = self.forward_raw(batch)
        relative = GaussianMixture(raw.log_weights, raw.means, raw.sigmas,
                                   truncated=raw.truncated)
        return relative.scale(raw.reference)

    @torch.no_grad()
    def predict(self, batch: StampBatch, chunk_size: int = 4096) -> GaussianMixture:
        """Evaluate in ``eval()`` mode without gradients, in chunks of ``chunk_size`` rows.

        Parameters
        ----------
        batch : StampBatch
        chunk_size : int
            Rows per forward pass (bounds memory).

        Returns
        -------
        lumos.mixture.GaussianMixture
        """
        was_training = self.training
        self.eval()
        try:
            parts = [self.forward_raw(batch[i : i + chunk_size])
                     for i in range(0, len(batch), chunk_size)]
        finally:
            self.train(was_training)
        if not parts:
            parts = [self.forward_raw(batch)]
        ref = torch.cat([p.reference for p in parts])
        relative = GaussianMixture(
            torch.cat([p.log_weights for p in parts]),
            torch.cat([p.means for p in parts]),
            torch.cat([p.sigmas for p in parts]),
            truncated=torch.cat([p.truncated for p in parts]),
        )
        return relative.scale(ref)

    def range_flags(self, batch: StampBatch) -> torch.Tensor:
        """Per-galaxy flags for inputs the network was not trained on.

        ``Flag.BAD_MAGNITUDE`` where the i-band magnitude is missing or infinite (the
        network then uses :meth:`clean_i_mag`); ``Flag.OUT_OF_RANGE`` where it lies outside
        ``config.i_mag_range``, or the band x camera-state index is outside the embedding or
        not among ``config.band_indices``. Image-wide inputs (PSF, pixel scale) are checked
        by :meth:`observing_range_flags`.

        Parameters
        ----------
        batch : StampBatch

        Returns
        -------
        torch.Tensor, int64, shape (N,)
            Bits of :class:`~lumos.flags.Flag` per galaxy.
        """
        c = self.config
        i_mag = batch.i_mag.double()
        lo, hi = c.i_mag_range
        missing = ~torch.isfinite(i_mag)
        out = ~missing & ((i_mag < lo) | (i_mag > hi))
        band = batch.band_idx.long()
        out |= (band < 0) | (band >= c.n_band_index)
        if c.band_indices is not None:
            allowed = torch.tensor(sorted(set(int(b) for b in c.band_indices)), dtype=torch.long,
                                   device=band.device)
            out |= ~torch.isin(band, allowed)
        return out.long() * int(Flag.OUT_OF_RANGE) | missing.long() * int(Flag.BAD_MAGNITUDE)

    def _training_simulation(self) -> dict | None:
        """``metadata["simulation_config"]`` of the model file (None if it has none)."""
        sim = (getattr(self, "metadata", None) or {}).get("simulation_config")
        return sim if isinstance(sim, dict) else None

    def max_flux_rate(self) -> float | None:
        """Largest band flux of the training simulations, electrons per second.

        ``flux_range[1]`` of a log-uniform training flux distribution, else the
        population's ``flux_max``, from ``metadata["simulation_config"]``; None for a model
        that does not record it.
        """
        sim = self._training_simulation()
        if sim is None:
            return None
        if sim.get("flux_prior") == "loguniform" and isinstance(sim.get("flux_range"),
                                                                  list | tuple):
            return float(sim["flux_range"][1])
        pop = sim.get("population")
        if isinstance(pop, dict) and isinstance(pop.get("flux_max"), int | float):
            return float(pop["flux_max"])
        return None

    def observing_ranges(self) -> dict[str, tuple[float, float]]:
        """PSF and pixel-scale ranges of the training simulations.

        Read from ``metadata["simulation_config"]`` (the
        :class:`~lumos.simulate.SimulationConfig` saved in the model file): the PSF FWHM
        range (arcsec), the Moffat beta range and the pixel scale, widened by
        :data:`PIXEL_SCALE_TOLERANCE` on either side (the simulations use one scale).

        Returns
        -------
        dict
            ``{"psf_fwhm": (lo, hi), "psf_beta": (lo, hi), "pixel_scale": (lo, hi)}``,
            only the items the model records (empty for a model without that metadata).
        """
        sim = self._training_simulation()
        if sim is None:
            return {}
        out: dict[str, tuple[float, float]] = {}
        for item in ("psf_fwhm", "psf_beta"):
            value = sim.get(f"{item}_range")
            if isinstance(value, list | tuple) and len(value) == 2:
                out[item] = (float(value[0]), float(value[1]))
        scale = sim.get("pixel_scale")
        if isinstance(scale, int | float):
            t = PIXEL_SCALE_TOLERANCE
            out["pixel_scale"] = (float(scale) * (1.0 - t), float(scale) * (1.0 + t))
        return out

    def observing_range_flags(self, psf_fwhm: float, psf_beta: float,
                              pixel_scale: float) -> int:
        """``Flag.OUT_OF_RANGE`` when an image's PSF or pixel scale lies outside
        :meth:`observing_ranges` (0 for a model that records no ranges).

        Parameters
        ----------
        psf_fwhm : float
            Moffat PSF FWHM, arcsec.
        psf_beta : float
            Moffat beta.
        pixel_scale : float
            Arcsec per pixel.

        Returns
        -------
        int
            ``int(Flag.OUT_OF_RANGE)`` or 0, for every galaxy of the image.
        """
        values = {"psf_fwhm": psf_fwhm, "psf_beta": psf_beta, "pixel_scale": pixel_scale}
        for item, (lo, hi) in self.observing_ranges().items():
            if not lo <= float(values[item]) <= hi:
                return int(Flag.OUT_OF_RANGE)
        return 0

