"""Architecture and input-normalisation constants of :class:`~lumos.network.LumosNet`.

A :class:`NetworkConfig` is saved with the weights in every model file, so a loaded model
builds the same layers and normalises its inputs exactly as it did in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .bands import N_BAND_INDEX
from .instrument import CCD_HEIGHT, CCD_WIDTH
from .settings import Settings
from .shared_error import SharedError
from .stamps import STAMP_SIZE

__all__ = ["NetworkConfig", "NORMS"]

#: Normalisations of the convolution blocks.
NORMS = ("group", "none")


@dataclass(frozen=True)
class NetworkConfig(Settings, kind="network"):
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
        width (nodes and values of :class:`lumos.shared_error.SharedError`; empty: the
        constant ``shared_error``).
    shared_error_size_edges, shared_error_size_factors : tuple of float
        Optionally, factors of the shared error by bins of the model profile's size
        (:class:`lumos.shared_error.SharedError`; empty: no size dependence).
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
    shared_error_size_edges: tuple[float, ...] = ()
    shared_error_size_factors: tuple[float, ...] = ()

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
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if any(int(c) < 1 for c in self.conv_channels) or any(int(d) < 1 for d in self.dense):
            raise ValueError("channel counts and dense widths must be positive")
        if self.n_components < 1:
            raise ValueError(f"n_components must be positive, got {self.n_components}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be positive, got {self.sigma_scale}")
        SharedError.of(self)  # the shared-error fields are checked where they are defined
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys and invalid settings raise ValueError."""
        config = super().from_dict(data)
        config.validate()
        return config

    def replace(self, **changes) -> NetworkConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)

    def uncalibrated(self) -> NetworkConfig:
        """A copy without the calibration fitted after training (sigma scale 1, no shared
        error): what training starts from and what :mod:`lumos.calibration` fits."""
        return replace(self, sigma_scale=1.0, shared_error=0.0, shared_error_widths=(),
                       shared_error_values=(), shared_error_size_edges=(),
                       shared_error_size_factors=())
