"""lumos: galaxy flux probability distributions from images with a neural network.

An implementation of LUMOS (Cabayol et al., "Estimating galaxy photometry with deep
learning", PAU Survey): for every catalogued galaxy in an image, a 5-component Gaussian
mixture describing p(flux | data).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
