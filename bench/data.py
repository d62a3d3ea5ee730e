"""Datasets as in-memory uint8 tensors, and the dataset registry.

Images are (N, 3, H, W) uint8; the trainer moves them to the device once and converts batches to
[0, 1] floats there. `digits` (scikit-learn's bundled handwritten digits) needs no download;
CIFAR-10/100 (`cifar.py`) and CUB-200-2011 (`cub.py`) register themselves at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry


@dataclass
class Split:
    """Images (N, 3, H, W) uint8 and labels (N,) int64."""

    x: Tensor
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
        return Split(self.x[index], self.y[index])


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
        return self.train.x.shape[-1]


DatasetLoader = Callable[[Path], ImageDataset]


def _check_loader(obj: object) -> None:
    if not callable(obj) or not (obj.__doc__ or "").strip():
        raise TypeError("a dataset loader must be a documented callable taking the data root")


DATASETS: Registry[DatasetLoader] = Registry("dataset", check=_check_loader)


def load_dataset(name: str, data_root: str | Path) -> ImageDataset:
    return DATASETS.get(name)(Path(data_root).expanduser())


@DATASETS.register("digits")
def digits(data_root: Path) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32 RGB; fixed 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.25,
                                           stratify=bunch.target, random_state=0)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ImageDataset("digits", Split(images[train_idx], labels[train_idx]),
                        Split(images[test_idx], labels[test_idx]), 10,
                        mean=(0.21, 0.21, 0.21), std=(0.33, 0.33, 0.33),
                        class_names=[str(i) for i in range(10)])


from . import cifar  # noqa: E402,F401  registers "cifar10" and "cifar100"
from . import cub  # noqa: E402,F401  registers "cub200"
