"""The normalised inputs of :class:`~lumos.network.LumosNet`, computed inside the model.

The constants live in the :class:`~lumos.network_config.NetworkConfig` saved with the
weights, so training and inference cannot normalise differently.

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
   flux: :func:`clean_i_mag` is the one rule for it), CCD ``(x / 4096, y / 2048)``,
   an 80 x 10 trainable embedding of the band x camera-state index, and three features of
   the reference estimate (``asinh(A / e / 3)``, ``A / F_ref`` and ``log(F_ref / e)``).

Every step is homogeneous in the image units: multiplying the pixels by ``c`` multiplies
``background``, ``noise``, ``A``, ``e`` and ``F_ref`` by ``c`` and leaves the image
channels and side inputs unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .network_config import NetworkConfig
from .stamps import StampBatch

__all__ = ["Preprocessed", "preprocess", "border_stats", "clean_i_mag", "fallback_profile",
           "N_SIDE_INPUTS"]

_MAD_TO_SIGMA = 0.6745
#: Number of side inputs besides the band embedding (:attr:`Preprocessed.side`).
N_SIDE_INPUTS = 6


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


def _nanmedian_rows(x: torch.Tensor) -> torch.Tensor:
    """Median over dim 1 ignoring NaN (NaN where a row has no finite value)."""
    return torch.nanmedian(x, dim=1).values


def fallback_profile(stamp_size: int) -> torch.Tensor:
    """The profile used where a stamp's model profile is missing: a centred Gaussian of
    sigma 2 pixels and unit total flux, shape (S, S)."""
    c = (stamp_size - 1) / 2.0
    a = torch.arange(stamp_size, dtype=torch.float32) - c
    g = torch.exp(-0.5 * (a[:, None] ** 2 + a[None, :] ** 2) / 2.0**2)
    return g / g.sum()


def border_stats(pixels: torch.Tensor, valid: torch.Tensor,
                 border_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Background (median) and noise (MAD of adjacent differences) of the stamp frame.

    Parameters
    ----------
    pixels : torch.Tensor, shape (N, S, S)
        Stamps, sky included.
    valid : torch.Tensor, bool, shape (N, S, S)
        False for missing pixels, which are left out.
    border_width : int
        Width of the frame in pixels.

    Returns
    -------
    background, noise : torch.Tensor, shape (N,)
        Finite; the noise is positive.
    """
    w = border_width
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


def clean_i_mag(i_mag: torch.Tensor, center: float) -> torch.Tensor:
    """The i-band magnitude the network uses: a missing (NaN) or infinite magnitude
    becomes the neutral ``center`` (``NetworkConfig.i_mag_center``).

    Parameters
    ----------
    i_mag : torch.Tensor, shape (N,)
        Catalogue magnitudes, NaN where missing.
    center : float
        The neutral magnitude.

    Returns
    -------
    torch.Tensor, float32, shape (N,)
    """
    return torch.nan_to_num(i_mag.float(), nan=center, posinf=center, neginf=center)


def preprocess(config: NetworkConfig, batch: StampBatch,
               fallback: torch.Tensor) -> Preprocessed:
    """Normalise a batch's inputs (see the module docstring).

    Parameters
    ----------
    config : NetworkConfig
        The normalisation constants.
    batch : StampBatch
        Stamps in image units (sky included), unit-flux profiles and side inputs.
    fallback : torch.Tensor, shape (S, S)
        :func:`fallback_profile`, on the device the inputs are computed on.

    Returns
    -------
    Preprocessed
    """
    c = config
    s = c.stamp_size
    if batch.pixels.shape[1:] != (s, s):
        raise ValueError(
            f"the network expects {s}x{s} stamps, got {tuple(batch.pixels.shape[1:])}"
        )
    dev = fallback.device
    pixels = torch.nan_to_num(batch.pixels.to(dev, torch.float32), nan=0.0, posinf=0.0,
                              neginf=0.0)
    profile = torch.nan_to_num(batch.profile.to(dev, torch.float32), nan=0.0, posinf=0.0,
                               neginf=0.0)
    psum = profile.sum(dim=(1, 2))
    bad_profile = ~(psum > 1e-6)
    profile = torch.where(bad_profile[:, None, None], fallback, profile)
    valid = pixels != 0
    background, noise = border_stats(pixels, valid, c.border_width)
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

    i_mag = clean_i_mag(batch.i_mag.to(dev, torch.float32), c.i_mag_center)
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
