"""Checks and JSON-ready dictionaries shared by the settings dataclasses.

The settings of the network, of training, of fine-tuning and of validation are dataclasses
of plain values and tuples; :func:`settings_to_dict` and :func:`settings_from_dict` are the
one conversion between them and JSON (tuples stored as lists), which a :class:`Settings`
dataclass has as its ``to_dict`` and ``from_dict``. :func:`check_positive_integers` is the
one check of their count-like fields and :func:`check_optimiser` of the optimiser settings
that training and fine-tuning share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

import numpy as np

__all__ = ["Settings", "check_optimiser", "check_positive_integers", "settings_from_dict",
           "settings_to_dict"]

T = TypeVar("T")
S = TypeVar("S", bound="Settings")


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


def check_optimiser(settings: Any) -> None:
    """Raise ValueError unless ``settings`` has a positive ``learning_rate``, an ``lr_decay``
    in (0, 1] and a ``max_grad_norm`` that is positive or None."""
    if not settings.learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {settings.learning_rate}")
    if not 0 < settings.lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {settings.lr_decay}")
    if settings.max_grad_norm is not None and not settings.max_grad_norm > 0:
        raise ValueError(
            f"max_grad_norm must be positive or None, got {settings.max_grad_norm}"
        )


class Settings:
    """Base of a settings dataclass: :meth:`to_dict` and :meth:`from_dict`.

    A subclass names what it configures, for the messages of :meth:`from_dict`:
    ``class TrainingConfig(Settings, kind="training")``.
    """

    kind = "settings"

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (tuples as lists)."""
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        return settings_from_dict(cls, data, cls.kind)
