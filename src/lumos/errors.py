"""Exceptions for user mistakes: the CLI turns these into one-line messages."""

from __future__ import annotations

__all__ = ["LumosError", "CatalogueError", "ImageError"]


class LumosError(ValueError):
    """A problem with the user's input (file, option or value), described in one line."""


class CatalogueError(LumosError):
    """The input catalogue cannot be used (unreadable, missing column, duplicate ids, ...)."""


class ImageError(LumosError):
    """The input image cannot be used (unreadable, no image HDU, missing metadata, ...)."""
