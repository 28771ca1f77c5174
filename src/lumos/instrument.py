"""PAUCam geometry: the pixel scale and the CCD size, defined once for the whole package."""

from __future__ import annotations

__all__ = ["PIXEL_SCALE", "CCD_WIDTH", "CCD_HEIGHT", "CCD_SIZE", "CCD_SHAPE"]

#: PAUCam pixel scale, arcsec per pixel.
PIXEL_SCALE = 0.263
#: PAUCam CCD width (x) in pixels.
CCD_WIDTH = 4096
#: PAUCam CCD height (y) in pixels.
CCD_HEIGHT = 2048
#: CCD size as ``(x, y)`` = ``(width, height)``, the order of ``ccd_xy`` positions.
CCD_SIZE = (CCD_WIDTH, CCD_HEIGHT)
#: CCD size as a numpy image shape ``(rows, columns)`` = ``(height, width)``.
CCD_SHAPE = (CCD_HEIGHT, CCD_WIDTH)
