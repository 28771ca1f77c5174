"""Survey descriptions: the camera, bands, PSF range and population a model is built for.

The public names of four modules of one job each:

* :mod:`lumos.survey_description`: :class:`Survey` (with its band registration,
  :meth:`Survey.register`), :class:`SurveyBand`, :class:`SurveyPSF` and the built-in
  :func:`paus_survey`;
* :mod:`lumos.survey_file`: the TOML schema of a survey file and its reader,
  :func:`load_survey` and :func:`survey_from_dict`;
* :mod:`lumos.survey_models`: the survey a model was trained for (:func:`model_survey`)
  and :func:`check_model_band`;
* :mod:`lumos.survey_sky`: :class:`SurveySky`, a survey's synthetic flat sky.
"""

from __future__ import annotations

from . import survey_description
from .survey_description import *  # noqa: F403  (its __all__)
from .survey_file import load_survey, survey_from_dict
from .survey_models import check_model_band, model_survey
from .survey_sky import SurveySky

__all__ = [
    *survey_description.__all__,
    "load_survey",
    "survey_from_dict",
    "model_survey",
    "check_model_band",
    "SurveySky",
]
