"""Implementations of the ``lumos`` sub-commands, one module each, imported lazily."""
