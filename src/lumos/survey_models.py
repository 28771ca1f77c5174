"""Which survey and bands a model was trained for, and the check before measuring with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .bands import PAUS_BANDS, Band, get_band
from .errors import LumosError
from .survey_description import PAUS_NAME

__all__ = ["model_survey", "check_model_band"]


def model_survey(metadata: Mapping | None) -> dict[str, Any]:
    """The survey a model was trained for, from its metadata (PAUS when not recorded).

    Returns
    -------
    dict
        ``{"name": ..., "bands": {name: {...}}}`` as :meth:`Survey.to_dict` writes it.
    """
    recorded = (metadata or {}).get("survey")
    if isinstance(recorded, Mapping) and recorded.get("name"):
        return dict(recorded)
    return {"name": PAUS_NAME, "bands": {name: {} for name in PAUS_BANDS}}


def check_model_band(metadata: Mapping | None, band: str | Band) -> None:
    """Raise a one-line error unless a model was trained for ``band`` and its survey.

    Parameters
    ----------
    metadata : mapping or None
        The model's training metadata (``model.metadata``).
    band : str or Band
        Band of the image to measure.

    Raises
    ------
    LumosError
        When the band belongs to another survey than the model's, or the model's survey
        has no such band, or the band sits in another network slot than in training.
    """
    band = get_band(band)
    recorded = model_survey(metadata)
    name = str(recorded["name"])
    if band.survey.upper() != name.upper():
        hint = "" if name == PAUS_NAME else f" (give --survey with the {name} survey file)"
        raise LumosError(f"the model was trained for survey {name}, not for {band.survey} "
                         f"images (band {band.name}){hint}")  # fmt: skip
    bands = list(recorded.get("bands") or {})
    if name == PAUS_NAME:
        return  # PAUS models see every band through its PAUS slot
    if band.name not in bands:
        raise LumosError(f"the model was not trained for band {band.name} of survey {name}; "
                         f"its bands are: {', '.join(bands)}")  # fmt: skip
    if bands.index(band.name) != band.number or len(bands) != band.slots:
        raise LumosError(f"band {band.name} of survey {name} is band {band.number + 1} of "
                         f"{band.slots} in the survey file but {bands.index(band.name) + 1} of "
                         f"{len(bands)} in the model")  # fmt: skip
