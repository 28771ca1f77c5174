"""Background sources for simulated stamps (also exported by :mod:`lumos.backgrounds`).

Modules: :mod:`~lumos.sky.base` (sample type, protocol, artefact bits),
:mod:`~lumos.sky.noise` (robust noise estimate), :mod:`~lumos.sky.synthetic` (PAUCam-like
synthetic sky), :mod:`~lumos.sky.scattered` (its scattered-light pattern),
:mod:`~lumos.sky.artefacts` (cosmic rays, defects, saturated stars),
:mod:`~lumos.sky.real` (cutouts of real images), :mod:`~lumos.sky.composite` (mixtures),
:mod:`~lumos.sky.flat` (a flat sky with Gaussian noise).
"""

from lumos.sky.base import (
    Artefact,
    BackgroundSample,
    BackgroundSource,
)
from lumos.sky.composite import CompositeBackground
from lumos.sky.flat import FlatSky
from lumos.sky.noise import robust_sigma
from lumos.sky.real import RealImageBackground
from lumos.sky.synthetic import ScatteredLight, SyntheticSky

__all__ = [
    "Artefact",
    "BackgroundSample",
    "BackgroundSource",
    "SyntheticSky",
    "FlatSky",
    "ScatteredLight",
    "RealImageBackground",
    "CompositeBackground",
    "robust_sigma",
]
