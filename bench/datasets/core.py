"""Datasets as in-memory uint8 tensors, and the dataset registry.

Images are (N, 3, H, W) uint8; the trainer moves them to the device once and converts batches to
[0, 1] floats there. The built-in datasets (`digits.py`, `cifar.py`, `cub.py`) register themselves
when the registry is first used; third-party ones come in through the entry-point group
`robustbench_lite.datasets`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..registry import Registry
from .files import ImageFiles


@dataclass
class Split:
    """Images (N, 3, H, W) uint8 and labels (N,) int64; the images in memory, or `ImageFiles`
    decoded batch by batch for a split too large to hold (ImageNet)."""

    x: Tensor | ImageFiles
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4 or self.x.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(self.x.shape)} {self.x.dtype}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"{self.x.shape[0]} images but labels of shape {tuple(self.y.shape)}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> Split:
        x = self.x.subset(index) if isinstance(self.x, ImageFiles) else self.x[index]
        return Split(x, self.y[index])

    def fingerprint(self) -> str:
        """A digest of the images and labels (16 hex digits): what a cache of derived data is
        keyed by."""
        streamed = isinstance(self.x, ImageFiles)
        digest = hashlib.sha256(self.x.fingerprint().encode() if streamed
                                else self.x.numpy().tobytes())
        digest.update(self.y.numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass
class ImageDataset:
    """A classification dataset: train and test splits plus what models need to know about it."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.test.x.shape[-1]


DatasetLoader = Callable[[Path], ImageDataset]


def _check_loader(obj: object) -> None:
    if not callable(obj) or not (obj.__doc__ or "").strip():
        raise TypeError("a dataset loader must be a documented callable taking the data root")


DATASETS: Registry[DatasetLoader] = Registry(
    "dataset", builtins="robustbench_lite.bench.datasets.builtin", group="robustbench_lite.datasets",
    check=_check_loader)


def load_dataset(name: str, data_root: str | Path, cache_dir: str | Path | None = None
                 ) -> ImageDataset:
    """The registered dataset `name` from `data_root`; a loader that takes `cache_dir` (where it may
    keep decoded images, e.g. CUB) is given it (None: its default under $RBL_CACHE)."""
    loader = DATASETS.get(name)
    if cache_dir is not None and "cache_dir" in inspect.signature(loader).parameters:
        return loader(Path(data_root).expanduser(), cache_dir=Path(cache_dir).expanduser())
    return loader(Path(data_root).expanduser())
