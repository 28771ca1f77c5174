"""Checks and JSON-ready dictionaries shared by the settings dataclasses.

The settings of the network, of training, of fine-tuning and of validation are dataclasses
of plain values and tuples; :func:`settings_to_dict` and :func:`settings_from_dict` are the
one conversion between them and JSON (tuples stored as lists), and
:func:`check_positive_integers` the one check of their count-like fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

import numpy as np

__all__ = ["check_positive_integers", "settings_from_dict", "settings_to_dict"]

T = TypeVar("T")


def check_positive_integers(settings: Any, names: Iterable[str]) -> None:
    """Raise ValueError unless each named field of ``settings`` is an integer >= 1.

    Parameters
    ----------
    settings : dataclass instance
        The settings; the message names its class and the field.
    names : iterable of str
        Fields to check (``bool`` is not accepted as an integer).
    """
    owner = type(settings).__name__
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """A JSON-ready dictionary of a settings dataclass: its fields, tuples as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def settings_from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """Inverse of :func:`settings_to_dict`: ``cls`` built from ``data``, lists as tuples.

    Parameters
    ----------
    cls : type
        The settings dataclass.
    data : mapping
        Field name -> value.
    what : str
        What the settings are, for the message (``"network"``: "unknown network
        configuration keys: ...").

    Raises
    ------
    ValueError
        For keys that are not fields of ``cls``, or values ``cls`` refuses.
    """
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} configuration keys: {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
