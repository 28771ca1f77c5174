"""Per-galaxy quality flags: one documented bit mask shared by every method.

A problem with one galaxy never removes its row or stops a run; it sets a bit here.
"""

from __future__ import annotations

import enum

__all__ = ["Flag", "describe_flags"]


class Flag(enum.IntFlag):
    """Bits of the ``flags`` column.

    Attributes
    ----------
    EDGE
        The stamp extends beyond the image; missing pixels were padded with zeros.
    MASKED_CORE
        NaN, infinite or masked pixels within the central region (radius 8 pixels)
        of the stamp; they were set to zero.
    MASKED
        NaN, infinite or masked pixels elsewhere in the stamp that together carry at
        least 1% (``lumos.stamps.MASKED_LIGHT_FRACTION``) of the galaxy's model-profile
        light (set to zero). Bad pixels where the model puts less light (a bad column or
        cosmic ray far from the galaxy) are set to zero without this flag; a row whose
        profile cannot be drawn gets it for any bad pixel in the stamp.
    BAD_PROFILE
        The catalogue profile parameters (r50, Sersic n, axis ratio, position angle)
        are missing or outside their valid range; the model profile is unreliable.
    BAD_MAGNITUDE
        The catalogue i-band magnitude is missing or not finite; the network then uses
        its neutral magnitude (``NetworkConfig.i_mag_center``) and does not truncate the
        PDF at zero flux (:meth:`lumos.network.LumosNet.clean_i_mag`).
    OUT_OF_RANGE
        Network inputs outside the range the model was trained on: per galaxy, an i-band
        magnitude outside ``NetworkConfig.i_mag_range`` or a band x camera state not
        trained on; per image, a PSF FWHM or Moffat beta outside the training
        simulation's ranges or a pixel scale more than 5% from its pixel scale (from the
        ``simulation_config`` recorded in the model file; models without it check only
        the per-galaxy inputs).
    OFF_IMAGE
        The position is not finite or the galaxy centre lies outside the image; the row
        is not measured and its flux columns hold NaN.
    FAILED
        The measurement failed: no usable (finite, unmasked, on-image) pixel within the
        central region (radius 8 pixels), or a fit that did not converge; the flux
        columns hold NaN.
    """

    EDGE = 1
    MASKED_CORE = 2
    MASKED = 4
    BAD_PROFILE = 8
    BAD_MAGNITUDE = 16
    OUT_OF_RANGE = 32
    OFF_IMAGE = 64
    FAILED = 128


#: Flags after which a flux must not be used for science (co-adds leave these out).
UNUSABLE = Flag.MASKED_CORE | Flag.OFF_IMAGE | Flag.FAILED


def describe_flags(value: int) -> list[str]:
    """Return the names of the bits set in a flag value.

    Parameters
    ----------
    value : int
        A value of the ``flags`` column.

    Returns
    -------
    list of str
        Names of the set bits, lowest first (empty for 0).
    """
    return [f.name for f in Flag if int(value) & int(f)]
