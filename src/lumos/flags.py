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
        NaN, infinite or masked pixels elsewhere in the stamp (set to zero).
    BAD_PROFILE
        The catalogue profile parameters (r50, Sersic n, axis ratio, position angle)
        are missing or outside their valid range; the model profile is unreliable.
    BAD_MAGNITUDE
        The catalogue i-band magnitude is missing or not finite.
    OUT_OF_RANGE
        Inputs outside the range the model was trained on (magnitude, size, index).
    OFF_IMAGE
        The position is not finite or the galaxy centre lies outside the image.
    FAILED
        The measurement failed (for example a fit that did not converge); the flux
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
