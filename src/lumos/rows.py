"""Dataclasses of per-row arrays: one entry per galaxy, stamp or object along the first axis."""

from __future__ import annotations

from dataclasses import fields

__all__ = ["Rows"]


class Rows:
    """Base of the dataclasses whose fields all hold one entry per row.

    The number of rows is the length of the first field (an array, a tensor or another
    :class:`Rows`); the other fields have the same length.
    """

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))
