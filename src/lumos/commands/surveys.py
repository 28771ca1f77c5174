"""The survey of a trained model, for commands that simulate stamps like its training."""

from __future__ import annotations

import argparse

from ..errors import LumosError


def survey_simulation(args: argparse.Namespace, model, label: str | None = None) -> dict:
    """Check the model's survey against ``--survey`` and return the simulator's background.

    A model trained for another survey than PAUS needs its survey file, of the same name;
    the simulated stamps then get that survey's sky (or ``--backgrounds``), as in training.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments (``survey``, ``backgrounds``, ... where it has them).
    model : LumosNet
        The trained model (its ``metadata`` records the survey).
    label : str, optional
        How errors name the model (default ``args.model``).

    Returns
    -------
    dict
        Keyword arguments of :class:`lumos.simulate.Simulator` (its background).
    """
    from ..survey import load_survey, model_survey
    from .simulate import training_background

    label = label or str(args.model)
    trained = str(model_survey(getattr(model, "metadata", None))["name"])
    path = getattr(args, "survey", None)
    if path is None:
        if trained.upper() != "PAUS":
            raise LumosError(f"{label} was trained for survey {trained}: give --survey "
                             "with its survey file")  # fmt: skip
        survey = load_survey(None)
    else:
        survey = load_survey(path)
        if survey.name.upper() != trained.upper():
            raise LumosError(f"{label} was trained for survey {trained}, not for "
                             f"{survey.name} ({path})")  # fmt: skip
    kwargs = training_background(args, survey)
    kwargs.pop("psf_factory", None)  # the recorded simulation draws the training's PSFs
    return kwargs
