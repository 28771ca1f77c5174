"""Background sources for the TEAHUPOO simulator.

A simulated galaxy is pasted onto a *background*: the sky level, its noise and whatever
else real exposures contain (scattered light, cosmic rays, defects, saturated stars,
neighbours). Every source implements :class:`BackgroundSource` and returns a
:class:`BackgroundSample` in electrons, including the sky level.

* :class:`SyntheticSky`: a PAUCam-like sky with a band- and camera-state-dependent
  scattered-light pattern, Poisson and read noise, cosmic rays, hot pixels, bad columns
  and saturated stars; also renders a full CCD (:meth:`SyntheticSky.render_ccd`).
* :class:`RealImageBackground`: cutouts of real images rescaled to a target sky noise.
* :class:`CompositeBackground`: a random mixture of sources.
* :func:`robust_sigma`: the noise estimator used throughout.

Example
-------
>>> import numpy as np
>>> from lumos.backgrounds import SyntheticSky
>>> sky = SyntheticSky()
>>> rng = np.random.default_rng(0)
>>> s = sky.sample(4, 60, np.array([25] * 4), np.full((4, 2), 1000.0), np.full(4, 90.0), rng)
>>> s.pixels.shape
(4, 60, 60)
"""

from lumos.sky import *  # noqa: F403 - this module is the public face of lumos.sky
from lumos.sky import __all__  # noqa: F401
