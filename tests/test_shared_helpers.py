"""The helpers that several modules share: settings dictionaries, row counts, failed rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from lumos.classical.common import mark_failed
from lumos.flags import Flag
from lumos.rows import Rows
from lumos.settings import Settings, check_optimiser, check_positive_integers


@dataclass(frozen=True)
class _Example(Settings, kind="example"):
    size: int = 3
    grid: tuple[float, ...] = (0.5, 1.0)
    name: str = "a"

    def __post_init__(self) -> None:
        check_positive_integers(self, ("size",))


def test_settings_round_trip_through_json_types():
    config = _Example(size=4, grid=(0.1, 0.2, 0.3))
    data = config.to_dict()
    assert data == {"size": 4, "grid": [0.1, 0.2, 0.3], "name": "a"}
    assert _Example.from_dict(data) == config


def test_settings_refuse_unknown_keys_and_bad_counts():
    with pytest.raises(ValueError, match="unknown example configuration keys: bad, worse"):
        _Example.from_dict({"size": 1, "worse": 0, "bad": 2})
    for value in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match=r"_Example\.size must be a positive integer"):
            _Example(size=value)


def test_check_optimiser_names_the_setting():
    @dataclass
    class Opt:
        learning_rate: float = 1e-3
        lr_decay: float = 0.5
        max_grad_norm: float | None = None

    check_optimiser(Opt())
    for name, value in (("learning_rate", 0.0), ("lr_decay", 1.5), ("max_grad_norm", 0.0)):
        with pytest.raises(ValueError, match=name):
            check_optimiser(Opt(**{name: value}))


def test_rows_length_is_that_of_the_first_field():
    @dataclass
    class Batch(Rows):
        values: torch.Tensor
        extra: np.ndarray

    assert len(Batch(torch.zeros(5, 2), np.zeros(5))) == 5

    @dataclass
    class Outer(Rows):
        inner: Batch

    assert len(Outer(Batch(torch.zeros(3), np.zeros(3)))) == 3


def test_mark_failed_flags_and_blanks_the_unmeasured_rows():
    flux = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    err = np.array([0.1, 0.1, np.inf, 0.1, 0.1])
    flags = np.array([0, 0, 0, int(Flag.FAILED), int(Flag.EDGE)], dtype=np.int64)
    extra = np.array([False, False, False, False, True])
    failed = mark_failed(flux, err, flags, extra)
    np.testing.assert_array_equal(failed, [False, True, True, True, True])
    assert flux[0] == 1.0 and err[0] == 0.1 and flags[0] == 0
    assert np.all(np.isnan(flux[1:])) and np.all(np.isnan(err[1:]))
    assert np.all(flags[1:] & int(Flag.FAILED))
    assert flags[4] & int(Flag.EDGE)
