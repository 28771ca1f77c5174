"""Classical photometry baselines of the LUMOS paper (section 3), on context cutouts.

Every method takes a :class:`ContextCutouts` (cutouts with the sky, validity mask, catalogue
shape and the unit-flux PSF-convolved model profile) and returns ``flux``, ``flux_err`` and
``flags`` (plus extras), one row per galaxy:

* ``aperture``: PAUS forced elliptical aperture photometry (MEMBA, section 3.2);
* ``modelfit``: amplitude fit of the fixed Sersic model, Poisson chi-square (section 3.1);
* ``weighted``: optimal weighted pixel sum (section 3.3, Appendix A);
* ``weighted_oracle``: the same with the true background and flux (the linear limit);
* ``sep_auto``: SExtractor AUTO photometry through sep (an external peer).

:func:`measure_classical` dispatches on the method name.
"""

from .aperture import APERTURE_FRACTION, aperture_photometry, aperture_semi_major
from .background import AnnulusBackground, annulus_background
from .common import CONTEXT_SIZE, ContextCutouts
from .measure import METHODS, measure_classical
from .modelfit import fit_amplitude, fit_amplitude_nelder_mead, modelfit_photometry
from .sep_auto import sep_auto_cutouts, sep_auto_photometry
from .weighted import cramer_rao_sigma, weighted_photometry

__all__ = [
    "APERTURE_FRACTION",
    "CONTEXT_SIZE",
    "METHODS",
    "AnnulusBackground",
    "ContextCutouts",
    "annulus_background",
    "aperture_photometry",
    "aperture_semi_major",
    "cramer_rao_sigma",
    "fit_amplitude",
    "fit_amplitude_nelder_mead",
    "measure_classical",
    "modelfit_photometry",
    "sep_auto_cutouts",
    "sep_auto_photometry",
    "weighted_photometry",
]
