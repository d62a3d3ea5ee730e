"""Registers the built-in datasets (imported by the registry on first use)."""

from . import cifar, cub, digits, imagenet  # noqa: F401
