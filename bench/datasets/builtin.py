"""Registers the built-in datasets (imported by the registry on first use)."""

from . import cifar, cub, digits  # noqa: F401
